"""The incident marts reproduce the synthetic city's truth (issue 5 acceptance).

Everything expected here is recomputed in pandas from the generator's own files, never from the
pipeline: truth/*_clean.csv.gz (the published records of each department), truth/events.csv.gz (one row
per real event), truth/cross_department_links.csv (hotline tickets about another department's event),
truth/expected_counts.json (time zone, published counts) and, for fire/EMS dispatch and on-scene times
that the truth files do not carry, the raw fire/EMS deliveries (fire/*.jsonl, the latest row per call).

Local weeks: the city's wall-clock date (truth generator time zone) of the UTC instant, Monday start.

The checks are plain functions of (warehouse file, generator output folder) so that they can also be
pointed at a development lake; the tests run them on the session's `built_city`.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TAXONOMY_CSV = REPO / "reference" / "taxonomy" / "taxonomy.csv"
# Delivery fates of truth/events.csv.gz that reach silver (synthetic_city police/fire PUBLISHED_KINDS).
PUBLISHED_FATES = {"clean", "missing_coordinates", "unknown_typo_with_coordinates"}


# --- truth, recomputed independently -------------------------------------------------------------------


def _timezone(synthetic: Path) -> str:
    return json.loads((synthetic / "truth" / "expected_counts.json").read_text())["generator"]["timezone"]


def _local_week(utc: pd.Series, timezone: str) -> pd.Series:
    """Monday (as a date) of the city-local week holding each UTC instant."""
    local_day = (
        pd.to_datetime(utc, utc=True, format="ISO8601").dt.tz_convert(timezone).dt.tz_localize(None).dt.normalize()
    )
    return (local_day - pd.to_timedelta(local_day.dt.weekday, unit="D")).dt.date


def truth_records(synthetic: Path) -> pd.DataFrame:
    """Every published record of the three departments: source, record_id, district, week, subcategory,
    and for hotline tickets the department record they duplicate (empty when none)."""
    truth = synthetic / "truth"
    tz = _timezone(synthetic)
    police = pd.read_csv(truth / "police_incidents_clean.csv.gz", dtype=str, keep_default_na=False)
    fire = pd.read_csv(truth / "fire_calls_clean.csv.gz", dtype=str, keep_default_na=False)
    hotline = pd.read_csv(truth / "hotline_tickets_clean.csv.gz", dtype=str, keep_default_na=False)
    frames = [
        pd.DataFrame(
            {
                "source": "police_incidents",
                "record_id": police.case_no,
                "occurred": police.occurred_at_utc,
                "district_code": police.district_code,
                "subcategory_code": police.subcategory_code,
                "linked_record_id": "",
            }
        ),
        pd.DataFrame(
            {
                "source": "fire_calls",
                "record_id": fire.call_id,
                "occurred": fire.received_at_utc,
                "district_code": fire.district_code,
                "subcategory_code": fire.subcategory_code,
                "linked_record_id": "",
            }
        ),
        pd.DataFrame(
            {
                "source": "hotline_tickets",
                "record_id": hotline.ticket_no,
                "occurred": hotline.accepted_at_utc,
                "district_code": hotline.district_code,
                "subcategory_code": hotline.subcategory_code,
                "linked_record_id": hotline.linked_record_id,
            }
        ),
    ]
    records = pd.concat(frames, ignore_index=True)
    records["week_start"] = _local_week(records.occurred, tz)
    return records


def truth_events(records: pd.DataFrame) -> pd.DataFrame:
    """Real events = published records minus the hotline tickets that duplicate another department's
    published record (the department's record stands for the event)."""
    department_ids = set(records.loc[records.source != "hotline_tickets", "record_id"])
    is_duplicate = (records.source == "hotline_tickets") & records.linked_record_id.isin(department_ids)
    return records[~is_duplicate].reset_index(drop=True)


def published_links(synthetic: Path, records: pd.DataFrame) -> pd.DataFrame:
    """truth/cross_department_links.csv restricted to links whose two records were both published."""
    links = pd.read_csv(synthetic / "truth" / "cross_department_links.csv", dtype=str)
    published = set(zip(records.source, records.record_id))
    keep = [
        ("hotline_tickets", t) in published and (s, o) in published
        for t, s, o in zip(links.hotline_ticket_no, links.other_source, links.other_record_id)
    ]
    return links[keep].reset_index(drop=True)


def truth_fire_times(synthetic: Path) -> pd.DataFrame:
    """Published fire/EMS calls with received (truth), dispatched and on-scene instants (UTC).

    The truth file has the call time only; dispatched (ISO UTC) and on_scene (city-local naive) come from
    the department's raw deliveries, the latest row (last_update) of each published call_id."""
    tz = _timezone(synthetic)
    clean = pd.read_csv(synthetic / "truth" / "fire_calls_clean.csv.gz", dtype=str, keep_default_na=False)
    rows = []
    for path in sorted((synthetic / "fire").glob("fire_calls_*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            rows.extend(json.loads(line) for line in handle if line.strip())
    raw = pd.DataFrame(rows)[["call_id", "dispatched", "on_scene", "last_update"]]
    raw["last_update"] = raw.last_update.astype("int64")
    latest = raw.sort_values(["call_id", "last_update"], kind="stable").drop_duplicates("call_id", keep="last")
    calls = clean.merge(latest, on="call_id", how="left", validate="one_to_one")
    assert calls.last_update.notna().all(), "every published call is in the deliveries"
    calls["received"] = pd.to_datetime(calls.received_at_utc, utc=True, format="ISO8601")
    calls["dispatched_utc"] = pd.to_datetime(calls.dispatched, utc=True, format="ISO8601")
    on_scene_local = pd.to_datetime(calls.on_scene, format="%Y-%m-%d %H:%M:%S")
    calls["on_scene_utc"] = on_scene_local.dt.tz_localize(tz).dt.tz_convert("UTC")
    calls["week_start"] = _local_week(calls.received, tz)
    return calls


def _quantiles(seconds: pd.Series) -> tuple[int, float, float]:
    """(count, median, p90) of the non-missing values; pandas' linear interpolation = quantile_cont."""
    values = seconds.dropna()
    if values.empty:
        return 0, np.nan, np.nan
    return len(values), float(values.quantile(0.5)), float(values.quantile(0.9))


def truth_response_times(synthetic: Path) -> pd.DataFrame:
    calls = truth_fire_times(synthetic)
    calls["dispatch"] = (calls.dispatched_utc - calls.received).dt.total_seconds()
    calls["response"] = (calls.on_scene_utc - calls.received).dt.total_seconds()
    calls["travel"] = (calls.on_scene_utc - calls.dispatched_utc).dt.total_seconds()
    out = []
    for (district, week), group in calls.groupby(["district_code", "week_start"]):
        row = {"district_code": district, "week_start": week, "call_count": len(group)}
        for pair in ("dispatch", "response", "travel"):
            n, median, p90 = _quantiles(group[pair])
            row |= {
                f"{pair}_call_count": n,
                f"missing_{pair}_count": len(group) - n,
                f"{pair}_seconds_median": median,
                f"{pair}_seconds_p90": p90,
            }
        out.append(row)
    return pd.DataFrame(out)


# --- the marts -----------------------------------------------------------------------------------------


def read_mart(warehouse: Path, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.sql(sql).df()


def _counts(frame: pd.DataFrame, keys: list[str], value: str | None = None) -> dict:
    if value is None:
        return {tuple(k): int(n) for k, n in frame.groupby(keys).size().items()}
    return {
        tuple(k) if isinstance(k, tuple) else (k,): int(n)
        for k, n in frame.groupby(keys)[value].sum().items()
        if n != 0
    }


def _week_keyed(frame: pd.DataFrame, column: str = "week_start") -> pd.DataFrame:
    frame = frame.copy()
    frame[column] = pd.to_datetime(frame[column]).dt.date
    return frame


def check_records_per_district_week(warehouse: Path, synthetic: Path) -> int:
    """mart_incident_district_week counts every published record (all departments) per district and week."""
    records = truth_records(synthetic)
    mart = _week_keyed(read_mart(warehouse, "select * from mart_incident_district_week"))
    expected = _counts(records, ["district_code", "week_start"])
    assert _counts(mart, ["district_code", "week_start"], "incident_count") == expected
    police = records[records.source == "police_incidents"]
    assert _counts(mart, ["district_code", "week_start"], "police_incidents_count") == _counts(
        police, ["district_code", "week_start"]
    )
    return len(records)


def check_one_row_per_real_event(warehouse: Path, synthetic: Path) -> int:
    records = truth_records(synthetic)
    events = truth_events(records)
    links = published_links(synthetic, records)
    fct = _week_keyed(read_mart(warehouse, "select * from fct_incident"), "week_start_local")

    # the number of real events, two independent ways: published records minus linked duplicates, and
    # the generator's event list (every event is recorded by exactly one department)
    all_events = pd.read_csv(synthetic / "truth" / "events.csv.gz", dtype=str)
    assert len(events) == len(records) - len(links)
    assert len(events) == int(all_events.delivery.isin(PUBLISHED_FATES).sum())

    # every published record is in exactly one event
    fct_records = [i for ids in fct.source_incident_ids for i in ids]
    assert len(fct_records) == len(set(fct_records)) == len(records)
    assert int(fct.source_record_count.sum()) == len(records)

    # the same events: department record <-> the hotline tickets about it
    fct_links = {
        (ids[0].split(":", 1)[1], other.split(":", 1)[1]) for ids in fct.source_incident_ids for other in ids[1:]
    }
    truth_links = set(zip(links.other_record_id, links.hotline_ticket_no))
    assert not truth_links - fct_links, f"duplicates not merged into one event: {sorted(truth_links - fct_links)}"
    assert not fct_links - truth_links, (
        f"records of different real events merged into one (silver.incident_link): {sorted(fct_links - truth_links)}"
    )

    assert len(fct) == len(events)
    assert fct.event_id.is_unique
    primary = set(zip(fct.primary_source, fct.primary_source_record_id))
    assert primary == set(zip(events.source, events.record_id))

    # per district and local week
    assert _counts(fct, ["district_code", "week_start_local"]) == _counts(events, ["district_code", "week_start"])
    return len(fct)


def check_trends(warehouse: Path, synthetic: Path) -> int:
    events = truth_events(truth_records(synthetic))
    taxonomy = pd.read_csv(TAXONOMY_CSV, dtype=str)[["subcategory_code", "category_code"]]
    events = events.merge(taxonomy, on="subcategory_code", how="left", validate="many_to_one")
    assert events.category_code.notna().all()
    trends = _week_keyed(read_mart(warehouse, "select * from mart_incident_trends"))

    # complete grid: every district x category with an event, every week from the first to the last
    first, last = min(events.week_start), max(events.week_start)
    weeks = pd.date_range(first, last, freq="7D").date
    pairs = events[["district_code", "category_code"]].drop_duplicates()
    grid = pairs.merge(pd.DataFrame({"week_start": weeks}), how="cross")
    counts = events.groupby(["district_code", "category_code", "week_start"]).size().rename("expected").reset_index()
    grid = grid.merge(counts, on=["district_code", "category_code", "week_start"], how="left").fillna({"expected": 0})
    grid = grid.sort_values(["district_code", "category_code", "week_start"]).reset_index(drop=True)
    grid["expected_wow"] = grid.groupby(["district_code", "category_code"]).expected.diff()

    assert len(trends) == len(grid)
    merged = grid.merge(trends, on=["district_code", "category_code", "week_start"], how="left", validate="one_to_one")
    assert merged.incident_count.notna().all()
    assert (merged.incident_count == merged.expected).all()
    assert int(trends.incident_count.sum()) == len(events)
    wow = merged.dropna(subset=["expected_wow"])
    assert (wow.week_over_week_change == wow.expected_wow).all()
    assert merged.loc[merged.expected_wow.isna(), "week_over_week_change"].isna().all()
    # a week that drops to zero shows as a negative change (it is not a missing row)
    assert ((merged.expected == 0) & (merged.expected_wow < 0)).any()
    return len(trends)


def check_response_times(warehouse: Path, synthetic: Path) -> int:
    expected = truth_response_times(synthetic)
    mart = _week_keyed(read_mart(warehouse, "select * from mart_response_times"))
    assert len(mart) == len(expected)
    merged = expected.merge(
        mart, on=["district_code", "week_start"], how="left", suffixes=("_truth", ""), validate="one_to_one"
    )
    assert merged.call_count.notna().all()
    for pair in ("dispatch", "response", "travel"):
        for column in (f"{pair}_call_count", f"missing_{pair}_count"):
            assert (merged[column] == merged[f"{column}_truth"]).all(), column
        for column in (f"{pair}_seconds_median", f"{pair}_seconds_p90"):
            np.testing.assert_allclose(
                merged[column].astype(float), merged[f"{column}_truth"].astype(float), rtol=0, atol=1e-6, err_msg=column
            )
    # the truth has calls without an on-scene time (cancelled, dispatched only): counted, not dropped
    assert int(merged.missing_response_count.sum()) > 0
    assert int(mart.call_count.sum()) == len(truth_fire_times(synthetic))
    return len(mart)


# --- tests on the session's synthetic city ------------------------------------------------------------


def test_incident_records_per_district_and_local_week_equal_truth(built_city):
    assert check_records_per_district_week(built_city.warehouse, built_city.synthetic) == sum(
        built_city.truth["sources"][s]["published"] for s in ("police_incidents", "fire_calls", "hotline_tickets")
    )


def test_fct_incident_has_one_row_per_real_event(built_city):
    assert check_one_row_per_real_event(built_city.warehouse, built_city.synthetic) > 0


def test_incident_trends_counts_and_week_over_week_equal_truth(built_city):
    assert check_trends(built_city.warehouse, built_city.synthetic) > 0


def test_response_time_medians_and_p90_equal_truth(built_city):
    assert check_response_times(built_city.warehouse, built_city.synthetic) > 0


def test_dimensions_cover_the_facts(built_city):
    with duckdb.connect(str(built_city.warehouse), read_only=True) as con:
        taxonomy = pd.read_csv(TAXONOMY_CSV, dtype=str)
        dim_category = con.sql("select * from dim_category").df()
        assert set(dim_category.subcategory_code) == set(taxonomy.subcategory_code)
        assert dim_category.subcategory_name_zh.str.len().gt(0).all()
        districts = json.loads((built_city.synthetic / "reference" / "districts.geojson").read_text())
        codes = {f["properties"]["district_code"] for f in districts["features"]}
        assert set(con.sql("select district_code from dim_district").df().district_code) == codes
        # every date of every event has a calendar row, with the same Monday the facts use
        missing = con.sql("""
            select count(*) from fct_incident f left join dim_date d on d.date_day = f.occurred_date_local
            where d.date_day is null or d.week_start <> f.week_start_local""").fetchone()[0]
        assert missing == 0
        unknown_cells = con.sql("""
            select count(*) from fct_incident f left join dim_h3_cell c using (h3_cell)
            where f.h3_cell is not null and c.h3_cell is null""").fetchone()[0]
        assert unknown_cells == 0
