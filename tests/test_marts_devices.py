"""Device marts (dim_device, fct_device_reading_hourly, fct_device_alert) against independent computations
on the small synthetic city (`built_city`):

- hourly aggregates recomputed in pandas from the silver `device_reading` Delta table (read with deltalake);
- the device registry against the generator's truth (devices_truth.csv);
- alert episodes recomputed by a plain-Python state machine implementing the documented rule
  (dbt/seeds/device_alert_thresholds.yml, int_device_hourly_alert_state.yml) and compared exactly;
- the anomalies the generator delivered (its raw reading files, which the truth folder does not list):
  every delivered reading that reaches a grade shows up as an alert of at least that grade.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from deltalake import DeltaTable

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "dbt" / "seeds" / "device_alert_thresholds.csv"
UNITS = REPO / "reference" / "units" / "device_units.csv"
CITY_TZ = "Asia/Shanghai"  # config `timezone` of the fixture city (dbt var city_timezone)
MAX_BRIDGED_GAP_HOURS = 3  # documented default of dbt var device_alert_max_bridged_gap_hours
GRADES = ["blue", "yellow", "orange", "red"]
HOUR = pd.Timedelta(hours=1)


# --- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def warehouse(built_city):
    con = duckdb.connect(str(built_city.warehouse), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    frames = {
        name: con.sql(f"select * from {name}").df()
        for name in ("dim_device", "fct_device_reading_hourly", "fct_device_alert")
    }
    con.close()
    return frames


@pytest.fixture(scope="module")
def thresholds() -> dict[str, dict]:
    with SEED.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        r["device_type"]: {
            "direction": r["direction"],
            "unit": r["unit"],
            "margin": float(r["clear_margin"]),
            "levels": [float(r[f"{g}_threshold"]) for g in GRADES],
        }
        for r in rows
    }


@pytest.fixture(scope="module")
def hourly(warehouse) -> pd.DataFrame:
    return warehouse["fct_device_reading_hourly"].sort_values(["device_id", "hour_utc"], ignore_index=True)


# --- an independent implementation of the documented alert rule ---------------------------------------


def reaches(value: float, level: float, direction: str) -> bool:
    return value >= level if direction == "above" else value <= level


def clears(value: float, level: float, margin: float, direction: str) -> bool:
    return value < level - margin if direction == "above" else value > level + margin


def value_grade(value: float, spec: dict) -> int:
    return max([g + 1 for g, level in enumerate(spec["levels"]) if reaches(value, level, spec["direction"])], default=0)


def recompute_alerts(device_hours: pd.DataFrame, spec: dict) -> tuple[list[int], list[dict]]:
    """Walk one device's hours in order. Returns the held grade per hour and the episodes."""
    direction, margin, levels = spec["direction"], spec["margin"], spec["levels"]
    rows = device_hours.to_dict("records")
    # length of the run of consecutive gap hours each hour is in
    run_len = [0] * len(rows)
    i = 0
    while i < len(rows):
        if rows[i]["is_gap"]:
            j = i
            while j < len(rows) and rows[j]["is_gap"]:
                j += 1
            run_len[i:j] = [j - i] * (j - i)
            i = j
        else:
            i += 1

    held = [False] * 4
    grades: list[int] = []
    episodes: list[dict] = []
    current: dict | None = None
    for k, row in enumerate(rows):
        if row["is_gap"]:
            if run_len[k] > MAX_BRIDGED_GAP_HOURS:
                held = [False] * 4  # silent too long: the alert is over
            # a short gap carries every grade over unchanged
        else:
            value = row["value_max"] if direction == "above" else row["value_min"]
            for g, level in enumerate(levels):
                if reaches(value, level, direction):
                    held[g] = True
                elif clears(value, level, margin, direction):
                    held[g] = False
        grade = max([g + 1 for g in range(4) if held[g]], default=0)
        grades.append(grade)
        hour = row["hour_utc"]
        if grade and current is None:
            current = {"start": hour, "hours": []}
        if grade:
            current["hours"].append((hour, grade, row))
        elif current is not None:
            episodes.append(close_episode(current, spec, end=hour, reason="data_gap" if row["is_gap"] else "cleared"))
            current = None
    if current is not None:
        episodes.append(close_episode(current, spec, end=None, reason=None))
    return grades, episodes


def close_episode(ep: dict, spec: dict, end, reason) -> dict:
    below = spec["direction"] == "below"
    values = [
        (row["value_min"] if below else row["value_max"], hour) for hour, _, row in ep["hours"] if not row["is_gap"]
    ]
    peak_value = min(v for v, _ in values) if below else max(v for v, _ in values)
    sequence: list[str] = []
    for _, grade, _ in ep["hours"]:
        if not sequence or sequence[-1] != GRADES[grade - 1]:
            sequence.append(GRADES[grade - 1])
    device = ep["hours"][0][2]["device_id"]
    return {
        "alert_id": f"{device}@{ep['start']:%Y-%m-%dT%H:00Z}",
        "device_id": device,
        "start_hour_utc": ep["start"],
        "last_alert_hour_utc": ep["hours"][-1][0],
        "end_hour_utc": end,
        "is_open": end is None,
        "end_reason": reason,
        "duration_hours": len(ep["hours"]),
        "start_grade": GRADES[ep["hours"][0][1] - 1],
        "peak_grade": GRADES[max(g for _, g, _ in ep["hours"]) - 1],
        "peak_value": peak_value,
        "peak_hour_utc": min(hour for v, hour in values if v == peak_value),
        **{
            f"hours_{name}": sum(1 for _, g, row in ep["hours"] if g == rank + 1 and not row["is_gap"])
            for rank, name in enumerate(GRADES)
        },
        "gap_hours": sum(1 for _, _, row in ep["hours"] if row["is_gap"]),
        "grade_sequence": ">".join(sequence),
    }


@pytest.fixture(scope="module")
def recomputed(hourly, thresholds):
    grades, episodes = {}, []
    for device_id, device_hours in hourly.groupby("device_id", sort=True):
        spec = thresholds[device_hours.device_type.iloc[0]]
        device_grades, device_episodes = recompute_alerts(device_hours, spec)
        grades[device_id] = device_grades
        episodes += device_episodes
    return grades, episodes


# --- tests --------------------------------------------------------------------------------------------


def test_dim_device_is_the_registry_of_the_generator(warehouse, built_city, thresholds):
    truth = pd.read_csv(built_city.truth_dir / "devices_truth.csv", dtype={"h3_cell": str})
    registered = truth[truth.in_registry].set_index("device_id")
    dim = warehouse["dim_device"].set_index("device_id")
    assert sorted(dim.index) == sorted(registered.index)
    assert dim.device_type.to_dict() == registered.device_type.to_dict()
    assert dim.h3_cell.to_dict() == registered.h3_cell.to_dict()
    assert dim.is_clock_skew_known.to_dict() == registered.skew_in_registry.to_dict()
    known = registered[registered.skew_in_registry]
    assert dim.loc[known.index, "clock_skew_seconds"].astype(int).to_dict() == known.true_clock_skew_seconds.to_dict()
    assert (dim.alert_direction == dim.device_type.map(lambda t: thresholds[t]["direction"])).all()
    # no personal data: the owner is one of the operating organisations
    assert set(dim.owner_organisation) <= {"气象局", "水务局", "燃气集团", "城建局", "消防救援支队"}


def test_hourly_aggregates_match_silver_readings(built_city, hourly, thresholds):
    readings = DeltaTable(str(built_city.silver / "device_reading")).to_pandas(
        columns=["device_id", "reading_hour_utc", "value"]
    )
    readings["reading_hour_utc"] = pd.to_datetime(readings.reading_hour_utc, utc=True)
    per_hour = (
        readings.groupby(["device_id", "reading_hour_utc"])["value"]
        .agg(reading_count="count", value_mean="mean", value_min="min", value_max="max")
        .reset_index()
    )
    spans = per_hour.groupby("device_id").reading_hour_utc.agg(["min", "max"])
    grid = pd.concat(
        [
            pd.DataFrame({"device_id": d, "reading_hour_utc": pd.date_range(s["min"], s["max"], freq="h")})
            for d, s in spans.iterrows()
        ],
        ignore_index=True,
    )
    expected = grid.merge(per_hour, on=["device_id", "reading_hour_utc"], how="left")
    expected["is_gap"] = expected.reading_count.isna()
    expected["reading_count"] = expected.reading_count.fillna(0).astype(int)
    expected = expected.rename(columns={"reading_hour_utc": "hour_utc"}).sort_values(
        ["device_id", "hour_utc"], ignore_index=True
    )

    got = hourly
    assert len(got) == len(expected) > 1000
    assert expected.is_gap.any(), "the generator's outages should leave gap hours"
    assert (got.device_id == expected.device_id).all()
    assert (pd.to_datetime(got.hour_utc, utc=True) == expected.hour_utc).all()
    assert (got.reading_count.astype(int) == expected.reading_count).all()
    assert (got.is_gap == expected.is_gap).all()
    for col in ("value_min", "value_max"):
        pd.testing.assert_series_equal(got[col], expected[col], check_names=False, rtol=0, atol=0)
    pd.testing.assert_series_equal(got.value_mean, expected.value_mean, check_names=False, rtol=1e-12)

    # the city's local time: Asia/Shanghai
    local = expected.hour_utc.dt.tz_convert(CITY_TZ).dt.tz_localize(None)
    assert (pd.to_datetime(got.hour_local) == local).all()
    assert (pd.to_datetime(got.date_local) == local.dt.normalize()).all()
    assert (got.hour_of_day_local == local.dt.hour).all()

    # the hour's own grade, from the seed thresholds
    for row in got.itertuples():
        spec = thresholds[row.device_type]
        if row.is_gap:
            assert pd.isna(row.value_grade_rank) and pd.isna(row.graded_value)
        else:
            value = row.value_max if spec["direction"] == "above" else row.value_min
            assert row.graded_value == value
            assert row.value_grade_rank == value_grade(value, spec), row


def test_alert_episodes_equal_independent_recomputation(warehouse, hourly, recomputed):
    grades, expected = recomputed
    held = [g for device_id in sorted(grades) for g in grades[device_id]]
    assert hourly.alert_grade_rank.astype(int).tolist() == held

    alerts = warehouse["fct_device_alert"]
    assert len(expected) >= 1, "the synthetic city should raise at least one device alert"
    columns = list(expected[0])
    got = alerts[columns].copy()
    for col in ("start_hour_utc", "last_alert_hour_utc", "end_hour_utc", "peak_hour_utc"):
        got[col] = pd.to_datetime(got[col], utc=True)
    got = got.astype(object).where(got.notna(), None)
    got_rows = sorted((dict(r) for _, r in got.iterrows()), key=lambda r: r["alert_id"])
    want_rows = sorted(expected, key=lambda r: r["alert_id"])
    assert [r["alert_id"] for r in got_rows] == [r["alert_id"] for r in want_rows]
    for g, w in zip(got_rows, want_rows):
        g = {k: (v.item() if hasattr(v, "item") else v) for k, v in g.items()}
        assert g == w

    # the hourly fact links every alert hour to its episode
    in_alert = hourly[hourly.alert_grade_rank >= 1]
    per_episode = in_alert.groupby("alert_id").size()
    assert per_episode.to_dict() == {r["alert_id"]: r["duration_hours"] for r in expected}


def delivered_readings(built_city) -> pd.DataFrame:
    """The readings exactly as the generator delivered them (before any lake processing)."""
    records = []
    for path in sorted((built_city.synthetic / "devices" / "readings").glob("*.jsonl")):
        with path.open(encoding="utf-8") as f:
            records += [json.loads(line) for line in f if line.strip()]
    return pd.DataFrame.from_records(records)


def test_every_delivered_exceedance_raises_an_alert(built_city, hourly, thresholds):
    truth = pd.read_csv(built_city.truth_dir / "devices_truth.csv").set_index("device_id")
    factor = {(r["device_type"], r["unit"]): float(r["factor"]) for r in csv.DictReader(UNITS.open(newline=""))}
    raw = delivered_readings(built_city)
    raw = raw[raw.device_id.map(truth.in_registry).fillna(False).astype(bool)]  # unregistered: quarantined
    raw = raw[~raw.value.isin([-9999, -999, 9999])]  # sentinels: quarantined
    device_ts = pd.to_datetime(raw.ts, utc=True)
    raw = raw[device_ts >= pd.Timestamp("2000-01-01", tz="UTC")]  # clock resets: quarantined
    raw = raw.assign(device_type=raw.device_id.map(truth.device_type))
    raw = raw.assign(value_canonical=[v * factor[(t, u)] for v, t, u in zip(raw.value, raw.device_type, raw.unit)])
    # the generator stamps true time (top of the hour) plus the device's clock skew
    skew = pd.to_timedelta(raw.device_id.map(truth.true_clock_skew_seconds), unit="s")
    true_hour = pd.to_datetime(raw.ts, utc=True) - skew
    raw = raw.assign(
        true_hour=true_hour.dt.round("h"),
        grade=[value_grade(v, thresholds[t]) for v, t in zip(raw.value_canonical, raw.device_type)],
    )
    exceedances = raw[raw.grade >= 1].drop_duplicates(["device_id", "seq"])
    assert len(exceedances) >= 1, "the synthetic city should deliver readings beyond the blue thresholds"
    assert exceedances.grade.nunique() >= 2, "expected exceedances of more than one grade"

    held = hourly.set_index(["device_id", "hour_utc"]).alert_grade_rank
    held.index = held.index.set_levels(pd.to_datetime(held.index.levels[1], utc=True), level=1)
    missed = []
    for row in exceedances.itertuples():
        # an unknown clock skew can move a reading into the neighbouring hour in the lake
        hours = (
            [row.true_hour]
            if truth.skew_in_registry[row.device_id]
            else [row.true_hour - HOUR, row.true_hour, row.true_hour + HOUR]
        )
        best = max((held.get((row.device_id, h), 0) for h in hours), default=0)
        if best < row.grade:
            missed.append((row.device_id, row.true_hour, row.value_canonical, row.grade, best))
    assert not missed, f"delivered exceedances without a matching alert: {missed[:10]}"

    red = exceedances[exceedances.grade == 4]
    print(f"delivered exceedances by grade: {exceedances.grade.value_counts().sort_index().to_dict()}; red: {len(red)}")
