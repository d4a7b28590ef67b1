"""Incremental marts against a full rebuild, row for row, on a copy of the small synthetic city (`built_city`).

The device hours (int_device_hourly_alert_state, fct_device_reading_hourly) are materialized
incrementally: a build starts from a copy of the served warehouse and recomputes, per device whose
silver hours changed, the hours after its last quiet hour before the change. Here silver
`device_reading_hourly` of a copied lake gets what deliveries bring, in two rounds (written with
delta-rs as a MERGE on the key, like the silver job's), each followed by an incremental build:

1. a day appended after a device's last hour (after a bridged gap) with an alert across UTC midnight;
   a gap hour filled by a late reading; the first hour of an old alert revised to a clear value;
2. a revised hour inside that alert on its second day (the recomputation must start before that day,
   at the quiet hour before the alert), more hours after it, hours after a long gap elsewhere, and a
   device whose every hour is removed.

Then the device marts are built in full (dbt --full-refresh) on another copy: every row of both
incremental models and of fct_device_alert must be the same. The builds select the device marts
(build_marts(select=...): the same copy-and-swap path as a build of every model, in a fraction of the
time); how a build of every model starts (full or incremental) is checked on its own.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from citysafe.config import load_settings
from citysafe.warehouse import (
    DBT_PROJECT_DIR,
    WarehouseBuildError,
    build_marker_path,
    build_marts,
    lake_identity,
    plan_build,
    project_fingerprint,
)
from spark_jobs import tables

pytestmark = pytest.mark.slow

INCREMENTAL_MODELS = ("int_device_hourly_alert_state", "fct_device_reading_hourly")
COMPARED = (*INCREMENTAL_MODELS, "fct_device_alert")
DEVICE_MARTS = ["+fct_device_reading_hourly", "+fct_device_alert"]
HOUR = pd.Timedelta(hours=1)


def settings_for(lake: Path, warehouse: Path):
    return load_settings(environ={"CITYSAFE_LAKE_ROOT": str(lake), "CITYSAFE_WAREHOUSE_PATH": str(warehouse)})


def copy_served(source: Path, target: Path) -> Path:
    """The served file and its build marker (which holds the project fingerprint it was built with)."""
    target.parent.mkdir(parents=True)
    shutil.copyfile(source, target)
    shutil.copyfile(build_marker_path(source), build_marker_path(target))
    return target


def read_table(warehouse: Path, name: str) -> list[tuple]:
    """Every row, without the columns that say which build computed it (computed_at,
    alert_state_computed_at): those differ between an incremental and a full build by design."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(f"select columns(c -> c not like '%computed_at') from {name} order by all").fetchall()
    finally:
        con.close()


def recomputed_devices(warehouse: Path, model: str) -> set[str]:
    """The devices with rows that the warehouse's latest build computed."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return {
            device
            for (device,) in con.execute(
                f"select distinct device_id from {model} where computed_at = (select max(computed_at) from {model})"
            ).fetchall()
        }
    finally:
        con.close()


def alert_values() -> dict[str, tuple[float, float]]:
    """Per device type (seeds/device_alert_thresholds.csv): a value that reaches orange and one beyond
    blue's clear level (so it ends any alert)."""
    with (DBT_PROJECT_DIR / "seeds" / "device_alert_thresholds.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    sign = {"above": 1.0, "below": -1.0}
    return {
        r["device_type"]: (
            float(r["orange_threshold"]),
            float(r["blue_threshold"]) - sign[r["direction"]] * 2 * float(r["clear_margin"]),
        )
        for r in rows
    }


class Delivery:
    """Hours for silver device_reading_hourly, on top of what the table holds."""

    def __init__(self, silver: Path):
        self.spec = tables.device_reading_hourly(silver)
        self.hours = DeltaTable(str(self.spec.path)).to_pandas()
        self.hours["hour_utc"] = pd.to_datetime(self.hours.hour_utc, utc=True)
        self.values = alert_values()
        self.rows: list[dict] = []

    def last_hour(self, device: str) -> pd.Timestamp:
        return max(
            [self.hours[self.hours.device_id == device].hour_utc.max()]
            + [r["hour_utc"] for r in self.rows if r["device_id"] == device]
        )

    def hour(self, device: str, hour: pd.Timestamp, value: str | None) -> None:
        """One hour of `device`: a reading of its "alert" or "clear" value, or a gap (None)."""
        template = self.hours[self.hours.device_id == device].iloc[-1].to_dict()
        number = None if value is None else self.values[template["device_type"]][value == "clear"]
        self.rows.append(
            {
                **template,
                "_changed_at": pd.Timestamp.now(tz="UTC"),  # as the silver job stamps what it writes
                "hour_utc": hour,
                "hour_month": f"{hour:%Y-%m}",
                "is_gap": number is None,
                "reading_count": 0 if number is None else 1,
                **dict.fromkeys(("value_mean", "value_min", "value_max"), number),
            }
        )

    def append(self, device: str, values: list[str | None]) -> None:
        last = self.last_hour(device)
        for k, value in enumerate(values, start=1):
            self.hour(device, last + k * HOUR, value)

    def merge(self) -> None:
        frame = pd.DataFrame(self.rows)[list(self.spec.arrow_schema().names)]
        (
            DeltaTable(str(self.spec.path))
            .merge(
                pa.Table.from_pandas(frame, schema=self.spec.arrow_schema(), preserve_index=False),
                "t.device_id = s.device_id and t.hour_utc = s.hour_utc",
                source_alias="s",
                target_alias="t",
            )
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )


def first_delivery(silver: Path, warehouse: Path) -> tuple[str, pd.Timestamp, dict]:
    """Round 1; returns the device whose new alert crosses midnight, that midnight, and what changed."""
    delivery = Delivery(silver)
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        starts = con.execute(
            "select device_id, max(alert_start_hour_utc) from int_device_hourly_alert_state "
            "where alert_start_hour_utc is not null group by all order by all"
        ).fetchall()
    finally:
        con.close()
    devices = sorted(delivery.hours.device_id.unique())
    gapped = sorted(delivery.hours[delivery.hours.is_gap].device_id.unique())
    assert starts and gapped and len(devices) >= 6, "the city should have device alerts and gap hours"

    crossing = devices[0]
    last = delivery.last_hour(crossing)
    midnight = (last + 12 * HOUR).ceil("D")
    quiet_hours = int((midnight - last) / HOUR) - 4  # quiet until 3 h before midnight
    delivery.append(crossing, [None, None] + ["clear"] * (quiet_hours - 2) + ["alert"] * 9 + ["clear"] * 3)
    changes = {crossing: f"alert from {midnight - 3 * HOUR} to {midnight + 5 * HOUR}, after a 2 h gap"}

    filled = next(d for d in gapped if d != crossing)
    gaps = delivery.hours[(delivery.hours.device_id == filled) & delivery.hours.is_gap].hour_utc
    delivery.hour(filled, gaps.iloc[len(gaps) // 2], "clear")
    changes[filled] = f"gap {gaps.iloc[len(gaps) // 2]} filled"

    revised, start = next((d, s) for d, s in starts if d not in changes)
    delivery.hour(revised, pd.Timestamp(start).tz_convert("UTC"), "clear")
    changes[revised] = f"alert start {start} revised to a clear value"
    delivery.merge()
    return crossing, midnight, changes


def second_delivery(silver: Path, crossing: str, midnight: pd.Timestamp, changed: dict) -> dict:
    delivery = Delivery(silver)
    delivery.hour(crossing, midnight + 2 * HOUR, "clear")  # on the alert's second day
    delivery.append(crossing, ["alert", "clear", "clear"])
    other, gone = [d for d in sorted(delivery.hours.device_id.unique()) if d not in changed][:2]
    delivery.append(other, [None] * 5 + ["alert"] * 3 + ["clear"])
    delivery.merge()
    # not something the silver job does, but a served warehouse may come from another lake
    DeltaTable(str(delivery.spec.path)).delete(f"device_id = '{gone}'")
    return {
        crossing: f"{midnight + 2 * HOUR} revised to a clear value, 3 hours appended",
        other: "long gap, alert",
        gone: "every hour removed",
    }


def episodes(warehouse: Path, device: str) -> dict[str, tuple]:
    """{alert_id: (start hour, last alert hour)} of a device's alert episodes."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        rows = con.execute(
            "select alert_id, start_hour_utc, last_alert_hour_utc from fct_device_alert where device_id = ?", [device]
        ).fetchall()
    finally:
        con.close()
    return {alert_id: (pd.Timestamp(start), pd.Timestamp(last)) for alert_id, start, last in rows}


def compiled(result: dict) -> dict[str, str]:
    """The SQL dbt ran per model of a build (its incremental branch shows whether it ran incrementally)."""
    results = json.loads((Path(result["target_path"]) / "run_results.json").read_text())["results"]
    return {r["unique_id"].split(".")[-1]: r.get("compiled_code") or "" for r in results}


@pytest.fixture(scope="module")
def builds(built_city, tmp_path_factory):
    """Two rounds of deliveries, each built incrementally; then the device marts built in full."""
    with pytest.MonkeyPatch.context() as env:
        # dbt builds the selected models without their data and unit tests (dbt reads the variable):
        # this test compares rows, and every test runs in the city's own builds
        env.setenv("DBT_INDIRECT_SELECTION", "empty")
        return _build_rounds(built_city, tmp_path_factory.mktemp("incremental"))


def _build_rounds(built_city, base: Path) -> dict:
    lake = base / "lake"
    shutil.copytree(built_city.silver, lake / "silver")
    incremental = copy_served(built_city.warehouse, base / "incremental" / built_city.warehouse.name)
    full = copy_served(built_city.warehouse, base / "full" / built_city.warehouse.name)

    crossing, midnight, changes = first_delivery(lake / "silver", built_city.warehouse)
    first = build_marts(settings_for(lake, incremental), "inc-1", select=DEVICE_MARTS)
    alerts = episodes(incremental, crossing)
    changes_2 = second_delivery(lake / "silver", crossing, midnight, changes)
    second = build_marts(settings_for(lake, incremental), "inc-2", select=DEVICE_MARTS)
    rebuilt = build_marts(settings_for(lake, full), "full", select=DEVICE_MARTS, full_refresh=True)
    return {
        "changes": [changes, changes_2],
        "crossing": (crossing, midnight, alerts),
        "incremental": (incremental, [first, second]),
        "full": (full, rebuilt),
    }


def test_the_deliveries_make_the_hard_cases(builds):
    assert [len(c) for c in builds["changes"]] == [3, 3], builds["changes"]
    crossing, midnight, alerts = builds["crossing"]
    # round 1 left an alert across UTC midnight, which round 2 revises on its second day
    assert alerts[f"{crossing}@{midnight - 3 * HOUR:%Y-%m-%dT%H:00Z}"] == (midnight - 3 * HOUR, midnight + 5 * HOUR)
    # round 2 cut it short: the part before the revised hour is the same episode, the rest a new one
    after = episodes(builds["incremental"][0], crossing)
    assert after[f"{crossing}@{midnight - 3 * HOUR:%Y-%m-%dT%H:00Z}"] == (midnight - 3 * HOUR, midnight + HOUR)
    assert after[f"{crossing}@{midnight + 3 * HOUR:%Y-%m-%dT%H:00Z}"][0] == midnight + 3 * HOUR


def test_incremental_builds_equal_a_full_rebuild_row_for_row(builds, built_city):
    (incremental, rounds), (full, rebuilt) = builds["incremental"], builds["full"]
    for model in INCREMENTAL_MODELS:
        for result in rounds:
            assert "first_changes" in compiled(result)[model], f"{model} was not built incrementally"
        assert "first_changes" not in compiled(rebuilt)[model], f"{model} was not rebuilt in full"
    for model in COMPARED:
        got, want = read_table(incremental, model), read_table(full, model)
        assert len(got) == len(want) == rounds[-1]["models"][model], model
        assert got == want, f"{model}: the incremental rows differ from a full rebuild's"
    gone = next(d for d, what in builds["changes"][1].items() if what == "every hour removed")
    # the second build recomputed the devices round 2 changed, and no other (silver's _changed_at stamps)
    for model in INCREMENTAL_MODELS:
        assert recomputed_devices(incremental, model) == set(builds["changes"][1]) - {gone}, model
    assert not [r for r in read_table(incremental, "fct_device_reading_hourly") if r[0] == gone]
    assert [r for r in read_table(built_city.warehouse, "fct_device_reading_hourly") if r[0] == gone]


def test_build_plan_continues_the_served_warehouse_only_when_built_the_same_way(built_city, tmp_path):
    fingerprint = project_fingerprint(settings_for(tmp_path / "lake", built_city.warehouse))
    lake = lake_identity(settings_for(built_city.silver.parent, built_city.warehouse))
    assert lake  # the Delta table id of the city's silver.device_reading_hourly
    served = copy_served(built_city.warehouse, tmp_path / "served" / built_city.warehouse.name)
    same = plan_build(served, [], False, fingerprint, lake)
    # the unit tests passed with this project when the served file was built: not run again
    assert same["mode"] == "incremental" and same["unit_tests"] is False
    assert plan_build(served, [], True, fingerprint, lake) == {
        "mode": "full",
        "copy_served": False,
        "refresh_selected": False,
        "reason": "--full-refresh",
        "unit_tests": True,
        "silver_changed_since": "-infinity",  # a full build tests every row
    }
    # continuing the served file, the silver staging tests start where its last full build started
    started = json.loads(build_marker_path(served).read_text())["full_build_started_at"]
    assert same["silver_changed_since"] == started
    assert plan_build(served, ["tag:gold"], False, fingerprint, lake)["silver_changed_since"] == started
    assert plan_build(served, ["tag:gold"], False, "another project", lake)["silver_changed_since"] == "-infinity"
    changed = plan_build(served, [], False, "another project", lake)
    assert changed["mode"] == "full" and not changed["copy_served"] and "changed" in changed["reason"]
    assert changed["unit_tests"] is True
    assert plan_build(tmp_path / "none.duckdb", [], False, fingerprint, lake)["reason"] == "no served warehouse"
    # another lake (or this one's silver re-created): the incremental models' change stamps mean nothing
    # there, so every model is rebuilt; the project is the same, so its unit tests need not run again
    other = plan_build(served, [], False, fingerprint, "another-table-id")
    assert other["mode"] == "full" and "another lake" in other["reason"] and other["unit_tests"] is False
    assert plan_build(served, ["tag:gold"], False, fingerprint, None)["refresh_selected"] is True
    # a selected build keeps the models outside the selection: it always copies, and starts the selected
    # incremental models over (dbt --full-refresh) when asked or when the project changed
    assert plan_build(served, ["tag:gold"], False, fingerprint, lake)["refresh_selected"] is False
    assert plan_build(served, ["tag:gold"], False, fingerprint, lake)["unit_tests"] is False
    assert plan_build(served, ["tag:gold"], False, "another project", lake)["refresh_selected"] is True
    assert plan_build(served, ["tag:gold"], False, "another project", lake)["unit_tests"] is True
    assert plan_build(served, ["tag:gold"], True, fingerprint, lake)["copy_served"] is True


def test_the_silver_staging_tests_check_the_rows_stamped_since_the_served_build(built_city, tmp_path):
    """stg_silver__device_reading's tests, in a build that continues the served file, check the readings
    silver stamped (_changed_at) since that file's last build of every model started; the others passed
    that build. A duplicate reading stamped before it is outside the window; one stamped after fails."""
    lake = tmp_path / "lake"
    shutil.copytree(built_city.silver, lake / "silver")
    served = copy_served(built_city.warehouse, tmp_path / "served" / built_city.warehouse.name)
    since = pd.Timestamp(json.loads(build_marker_path(served).read_text())["full_build_started_at"])
    spec = tables.device_reading(lake / "silver")
    reading = DeltaTable(str(spec.path)).to_pyarrow_table().slice(0, 1)
    stamp_at = reading.schema.get_field_index("_changed_at")

    def duplicate(stamp: pd.Timestamp) -> None:
        write_deltalake(
            str(spec.path),
            reading.set_column(stamp_at, "_changed_at", pa.array([stamp], pa.timestamp("us", tz="UTC"))),
            mode="append",
        )

    settings = settings_for(lake, served)
    duplicate(since - pd.Timedelta(minutes=1))
    build_marts(settings, "before-window", select=["stg_silver__device_reading"])  # its tests pass
    duplicate(since + pd.Timedelta(minutes=1))
    with pytest.raises(WarehouseBuildError) as err:
        build_marts(settings, "in-window", select=["stg_silver__device_reading"])
    assert "test unique_combination_of_columns_stg_silver__device_reading_device_id__seq" in err.value.failed_nodes
