"""mart_cell_week_features (the risk models' feature table) recomputed independently (issue 5).

Expected values come from the generator's own files and silver's reference tables, never from dbt:

* the grid: silver's h3_cell Delta table (the city grid cells), ring-1 neighbours from the `h3` library
  (h3.grid_disk), kept when they are grid cells;
* incidents: truth/*_clean.csv.gz (every published record with its cell) minus the hotline tickets that
  duplicate a published police/fire record (truth linked_record_id): one row per real event, in the
  city-local week (Monday start) of its local date;
* hazards: truth/hazards_truth.csv.gz (every published hazard, its dates and cell); the state date is
  the week's Sunday, or silver hazard's as_of_date when earlier;
* weather: the generator's weather/weather_daily.csv.

The checks are functions of (warehouse file, generator folder, silver folder), so they can be pointed
at a development lake too:  python tests/test_marts_features.py WAREHOUSE SYNTHETIC_ROOT SILVER_ROOT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import duckdb
import h3
import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable

pytestmark = pytest.mark.slow

DOMAINS = ["PS", "FE", "TR", "NH", "PR", "UL", "PH", "PO"]


# --- independent recomputation -------------------------------------------------------------------------


def _timezone(synthetic: Path) -> str:
    return json.loads((synthetic / "truth" / "expected_counts.json").read_text())["generator"]["timezone"]


def _local_week(utc: pd.Series, timezone: str) -> pd.Series:
    """Monday (datetime64, midnight) of the city-local week holding each UTC instant."""
    local_day = (
        pd.to_datetime(utc, utc=True, format="ISO8601").dt.tz_convert(timezone).dt.tz_localize(None).dt.normalize()
    )
    return local_day - pd.to_timedelta(local_day.dt.weekday, unit="D")


def truth_events(synthetic: Path) -> pd.DataFrame:
    """One row per real event: source, record_id, h3_cell ('' when none), domain_code, week_start."""
    truth = synthetic / "truth"
    tz = _timezone(synthetic)
    read = lambda name: pd.read_csv(truth / name, dtype=str, keep_default_na=False)  # noqa: E731
    police, fire, hotline = (
        read("police_incidents_clean.csv.gz"),
        read("fire_calls_clean.csv.gz"),
        read("hotline_tickets_clean.csv.gz"),
    )
    records = pd.concat(
        [
            pd.DataFrame(
                {
                    "source": "police_incidents",
                    "record_id": police.case_no,
                    "occurred": police.occurred_at_utc,
                    "h3_cell": police.h3_cell,
                    "subcategory_code": police.subcategory_code,
                    "linked": "",
                }
            ),
            pd.DataFrame(
                {
                    "source": "fire_calls",
                    "record_id": fire.call_id,
                    "occurred": fire.received_at_utc,
                    "h3_cell": fire.h3_cell,
                    "subcategory_code": fire.subcategory_code,
                    "linked": "",
                }
            ),
            pd.DataFrame(
                {
                    "source": "hotline_tickets",
                    "record_id": hotline.ticket_no,
                    "occurred": hotline.accepted_at_utc,
                    "h3_cell": hotline.h3_cell,
                    "subcategory_code": hotline.subcategory_code,
                    "linked": hotline.linked_record_id,
                }
            ),
        ],
        ignore_index=True,
    )
    department_ids = set(records.loc[records.source != "hotline_tickets", "record_id"])
    duplicate = (records.source == "hotline_tickets") & records.linked.isin(department_ids)
    events = records[~duplicate].reset_index(drop=True)
    # taxonomy subcategory codes start with their domain code (PS0401 -> PS)
    events["domain_code"] = events.subcategory_code.str[:2]
    events["week_start"] = _local_week(events.occurred, tz)
    return events


def city_grid(silver: Path) -> tuple[list[str], dict[str, list[str]]]:
    """Silver's city grid cells, and each cell's ring-1 neighbours inside the grid (via the h3 library)."""
    cells = sorted(DeltaTable(str(silver / "h3_cell")).to_pandas(columns=["h3_cell"]).h3_cell)
    grid = set(cells)
    neighbours = {c: sorted((set(h3.grid_disk(c, 1)) - {c}) & grid) for c in cells}
    return cells, neighbours


def expected_incident_counts(synthetic: Path, silver: Path) -> pd.DataFrame:
    """Dense (h3_cell, week_start) frame: incident_count, per-domain counts, lag 1, trailing 4-week mean
    of past weeks, neighbour sum and its lag 1, the next week's count."""
    events = truth_events(synthetic)
    cells, neighbours = city_grid(silver)
    weeks = pd.date_range(events.week_start.min(), events.week_start.max(), freq="7D")
    in_grid = events[events.h3_cell.isin(set(cells))]
    cell_index = {c: i for i, c in enumerate(cells)}
    week_index = {w: i for i, w in enumerate(weeks)}

    def matrix(frame: pd.DataFrame) -> np.ndarray:
        m = np.zeros((len(cells), len(weeks)), dtype=np.int64)
        np.add.at(m, (frame.h3_cell.map(cell_index).to_numpy(), frame.week_start.map(week_index).to_numpy()), 1)
        return m

    total = matrix(in_grid)
    by_domain = {d: matrix(in_grid[in_grid.domain_code == d]) for d in DOMAINS}
    adjacency = np.zeros((len(cells), len(cells)), dtype=np.int64)
    for cell, ns in neighbours.items():
        for n in ns:
            adjacency[cell_index[cell], cell_index[n]] = 1
    neighbour_sum = adjacency @ total

    def shifted(m: np.ndarray, k: int) -> np.ndarray:
        """Value k weeks earlier (k > 0) or later (k < 0); NaN outside the data."""
        out = np.full(m.shape, np.nan)
        if k > 0:
            out[:, k:] = m[:, :-k]
        else:
            out[:, :k] = m[:, -k:]
        return out

    # mean over the (up to) 4 weeks BEFORE each week that lie inside the data; NaN in the first week
    past = np.stack([shifted(total, k) for k in range(1, 5)])
    weeks_seen = (~np.isnan(past)).sum(axis=0)
    mean_past_4w = np.where(weeks_seen > 0, np.nansum(past, axis=0) / np.maximum(weeks_seen, 1), np.nan)

    frame = pd.DataFrame(
        {
            "h3_cell": np.repeat(cells, len(weeks)),
            "week_start": np.tile(weeks, len(cells)),
            "incident_count": total.ravel(),
            **{f"incident_count_{d.lower()}": m.ravel() for d, m in by_domain.items()},
            "incident_count_lag_1w": shifted(total, 1).ravel(),
            "incident_count_lag_4w": shifted(total, 4).ravel(),
            "incident_count_mean_past_4w": mean_past_4w.ravel(),
            "neighbor_cell_count": np.repeat([len(neighbours[c]) for c in cells], len(weeks)),
            "neighbor_incident_count": neighbour_sum.ravel(),
            "neighbor_incident_count_lag_1w": shifted(neighbour_sum, 1).ravel(),
            "target_next_week_count": shifted(total, -1).ravel(),
        }
    )
    return frame


def expected_open_hazards(synthetic: Path, silver: Path, weeks: pd.DatetimeIndex, cells: list[str]) -> pd.DataFrame:
    """(h3_cell, week_start) -> hazards open / overdue at the week's end, from the generator's hazards."""
    hz = pd.read_csv(synthetic / "truth" / "hazards_truth.csv.gz", dtype=str, keep_default_na=False)
    hz = hz[hz.delivery == "clean"]
    dates = {
        c: pd.to_datetime(hz[c].replace("", None))
        for c in ("found_date", "rectify_deadline", "rectified_date", "accepted_date")
    }
    closed = dates["rectified_date"].fillna(dates["accepted_date"])
    as_of = pd.Timestamp(DeltaTable(str(silver / "hazard")).to_pandas(columns=["as_of_date"]).as_of_date.max())
    grid = set(cells)
    rows = []
    for week in weeks:
        state = min(week + pd.Timedelta(days=6), as_of)
        is_open = (dates["found_date"] <= state) & (closed.isna() | (closed > state))
        overdue = is_open & (dates["rectify_deadline"] < state)
        for cell, group in pd.DataFrame({"cell": hz.h3_cell, "open": is_open, "overdue": overdue}).groupby("cell"):
            if cell in grid and group["open"].any():
                rows.append((cell, week, int(group["open"].sum()), int(group["overdue"].sum())))
    return pd.DataFrame(rows, columns=["h3_cell", "week_start", "open_hazard_count", "overdue_open_hazard_count"])


def expected_weather(synthetic: Path) -> pd.DataFrame:
    w = pd.read_csv(synthetic / "weather" / "weather_daily.csv", parse_dates=["date"])
    daily = w.groupby("date")[["precip_mm", "tmax_c", "wind_max_ms"]].mean()
    daily["week_start"] = daily.index - pd.to_timedelta(daily.index.weekday, unit="D")
    return (
        daily.groupby("week_start")
        .agg(
            precipitation_mm_total=("precip_mm", "sum"),
            temperature_max_c=("tmax_c", "max"),
            wind_speed_max_ms=("wind_max_ms", "max"),
            weather_day_count=("precip_mm", "size"),
        )
        .reset_index()
    )


# --- the mart ------------------------------------------------------------------------------------------


def read_sql(warehouse: Path, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.sql(sql).df()


def read_mart(warehouse: Path) -> pd.DataFrame:
    mart = read_sql(warehouse, "select * from mart_cell_week_features order by h3_cell, week_start")
    mart["week_start"] = pd.to_datetime(mart.week_start)
    return mart


# --- checks (plain functions, also runnable against a development lake) --------------------------------


def check_grid_and_incident_counts(warehouse: Path, synthetic: Path, silver: Path) -> dict:
    expected = expected_incident_counts(synthetic, silver)
    mart = read_mart(warehouse)
    n_cells, n_weeks = expected.h3_cell.nunique(), expected.week_start.nunique()
    assert len(mart) == n_cells * n_weeks, (len(mart), n_cells, n_weeks)
    assert not mart.duplicated(["h3_cell", "week_start"]).any()
    merged = expected.merge(
        mart,
        on=["h3_cell", "week_start"],
        how="outer",
        suffixes=("_expected", ""),
        indicator=True,
        validate="one_to_one",
    )
    assert (merged._merge == "both").all(), merged._merge.value_counts()
    columns = [
        "incident_count",
        *(f"incident_count_{d.lower()}" for d in DOMAINS),
        "incident_count_lag_1w",
        "incident_count_lag_4w",
        "neighbor_cell_count",
        "neighbor_incident_count",
        "neighbor_incident_count_lag_1w",
        "target_next_week_count",
    ]
    for column in columns:
        want = merged[f"{column}_expected"].astype(float)
        got = merged[column].astype(float)
        differs = ~((want == got) | (want.isna() & got.isna()))
        assert not differs.any(), (
            column,
            merged.loc[differs, ["h3_cell", "week_start", f"{column}_expected", column]].head(),
        )
    want, got = merged.incident_count_mean_past_4w_expected, merged.incident_count_mean_past_4w.astype(float)
    assert np.allclose(want, got, equal_nan=True), "incident_count_mean_past_4w"
    return {
        "rows": len(mart),
        "cells": n_cells,
        "weeks": n_weeks,
        "incidents": int(mart.incident_count.sum()),
        "nonzero_cell_weeks": int((mart.incident_count > 0).sum()),
    }


def check_total_matches_fct_incident(warehouse: Path) -> dict:
    counts = read_sql(
        warehouse,
        """
        select
            (select sum(incident_count) from mart_cell_week_features)                        as mart_total,
            (select count(*) from fct_incident where h3_cell is not null)                     as events_with_cell,
            (select count(*) from fct_incident f join dim_h3_cell d using (h3_cell)
              where not d.is_city_grid_cell)                                                  as events_in_edge_cells,
            (select count(*) from fct_incident f
              where h3_cell is not null and h3_cell not in (select h3_cell from dim_h3_cell)) as events_in_unknown_cells
    """,
    ).iloc[0]
    # every event with a cell is a row's incident, except those in the edge cells outside the city grid
    assert counts.events_in_unknown_cells == 0
    assert counts.mart_total == counts.events_with_cell - counts.events_in_edge_cells, counts.to_dict()
    return {k: int(v) for k, v in counts.items()}


def check_open_hazards(warehouse: Path, synthetic: Path, silver: Path) -> dict:
    mart = read_mart(warehouse)
    weeks = pd.DatetimeIndex(sorted(mart.week_start.unique()))
    expected = expected_open_hazards(synthetic, silver, weeks, sorted(mart.h3_cell.unique()))
    got = mart.loc[
        mart.open_hazard_count > 0, ["h3_cell", "week_start", "open_hazard_count", "overdue_open_hazard_count"]
    ]
    merged = expected.merge(got, on=["h3_cell", "week_start"], how="outer", suffixes=("_expected", ""))
    for column in ("open_hazard_count", "overdue_open_hazard_count"):
        differs = merged[f"{column}_expected"].fillna(-1) != merged[column].fillna(-1)
        assert not differs.any(), (column, merged[differs].head())
    assert expected.open_hazard_count.sum() > 0, "the city has open hazards to count"
    return {
        "open_hazard_cell_weeks": len(expected),
        "open_hazards_summed": int(expected.open_hazard_count.sum()),
        "overdue_summed": int(expected.overdue_open_hazard_count.sum()),
    }


def check_weather(warehouse: Path, synthetic: Path) -> dict:
    mart = read_mart(warehouse)
    weekly = mart.groupby("week_start")[
        ["precipitation_mm_total", "temperature_max_c", "wind_speed_max_ms", "weather_day_count"]
    ].agg(["min", "max"])
    for column in ("precipitation_mm_total", "temperature_max_c", "wind_speed_max_ms", "weather_day_count"):
        assert (weekly[(column, "min")] == weekly[(column, "max")]).all(), f"{column}: one city value per week"
    got = mart.drop_duplicates("week_start")[
        ["week_start", "precipitation_mm_total", "temperature_max_c", "wind_speed_max_ms", "weather_day_count"]
    ]
    merged = got.merge(expected_weather(synthetic), on="week_start", suffixes=("", "_expected"))
    assert len(merged) == len(got), "every week of the mart has weather"
    for column in ("precipitation_mm_total", "temperature_max_c", "wind_speed_max_ms", "weather_day_count"):
        assert np.allclose(merged[column].astype(float), merged[f"{column}_expected"].astype(float)), column
    return {"weather_weeks": len(merged)}


def check_device_alerts_add_up(warehouse: Path) -> dict:
    """Per cell, the weekly alert hours and episodes add up to fct_device_alert's (all episodes lie in
    the data's weeks on the synthetic city)."""
    got = read_sql(
        warehouse,
        """
        select h3_cell, sum(device_alert_hours) as hours, sum(device_alert_episodes_started) as episodes,
               sum(device_alert_episodes_peak_red) as red
        from mart_cell_week_features group by h3_cell having sum(device_alert_hours) > 0 order by h3_cell""",
    )
    want = read_sql(
        warehouse,
        """
        select h3_cell, sum(duration_hours) as hours, count(*) as episodes, count(*) filter (where peak_grade = 'red') as red
        from fct_device_alert
        where h3_cell in (select h3_cell from dim_h3_cell where is_city_grid_cell)
        group by h3_cell order by h3_cell""",
    )
    pd.testing.assert_frame_equal(
        got.astype({"hours": int, "episodes": int, "red": int}).reset_index(drop=True),
        want.astype({"hours": int, "episodes": int, "red": int}).reset_index(drop=True),
    )
    return {"alert_cells": len(want), "alert_hours": int(want.hours.sum()), "episodes": int(want.episodes.sum())}


def intensity_correlation(warehouse: Path, synthetic: Path) -> dict:
    """Pearson correlation of the mart's incident_count with the generator's true intensity (expected real
    events per cell and week, summed over domains), over the grid's complete weeks."""
    intensity = pd.read_csv(synthetic / "truth" / "intensity_cell_week.csv.gz", parse_dates=["week_start"])
    intensity = intensity.groupby(["h3_cell", "week_start"], as_index=False).expected_count.sum()
    mart = read_mart(warehouse)
    mart = mart[mart.is_complete_week]
    merged = mart.merge(intensity, on=["h3_cell", "week_start"], how="left")
    merged["expected_count"] = merged.expected_count.fillna(0.0)
    per_cell = merged.groupby("h3_cell")[["incident_count", "expected_count"]].sum()
    return {
        "cell_weeks": len(merged),
        "pearson_cell_week": float(np.corrcoef(merged.incident_count, merged.expected_count)[0, 1]),
        "pearson_cell_total": float(np.corrcoef(per_cell.incident_count, per_cell.expected_count)[0, 1]),
        "incidents": int(merged.incident_count.sum()),
        "expected": float(merged.expected_count.sum()),
    }


# --- tests on the session's synthetic city -------------------------------------------------------------


def test_grid_incident_counts_lags_and_neighbours_match_truth(built_city):
    summary = check_grid_and_incident_counts(built_city.warehouse, built_city.synthetic, built_city.silver)
    assert summary["incidents"] > 0 and summary["weeks"] >= 12


def test_incident_total_equals_fct_incident_events_with_a_cell(built_city):
    check_total_matches_fct_incident(built_city.warehouse)


def test_open_hazards_at_week_end_match_truth(built_city):
    check_open_hazards(built_city.warehouse, built_city.synthetic, built_city.silver)


def test_city_weather_per_week_matches_generator(built_city):
    check_weather(built_city.warehouse, built_city.synthetic)


def test_device_alert_hours_and_episodes_add_up(built_city):
    check_device_alerts_add_up(built_city.warehouse)


def test_incident_counts_follow_true_intensity(built_city):
    # Sanity bound only: the cells' totals over the window must follow the generator's intensity surface.
    result = intensity_correlation(built_city.warehouse, built_city.synthetic)
    assert result["pearson_cell_total"] > 0.5, result


if __name__ == "__main__":
    warehouse_path, synthetic_root, silver_root = (Path(p) for p in sys.argv[1:4])
    for name, result in [
        ("grid and incident counts", check_grid_and_incident_counts(warehouse_path, synthetic_root, silver_root)),
        ("total vs fct_incident", check_total_matches_fct_incident(warehouse_path)),
        ("open hazards", check_open_hazards(warehouse_path, synthetic_root, silver_root)),
        ("weather", check_weather(warehouse_path, synthetic_root)),
        ("device alerts", check_device_alerts_add_up(warehouse_path)),
        ("correlation with true intensity", intensity_correlation(warehouse_path, synthetic_root)),
    ]:
        print(f"{name}: {result}")
