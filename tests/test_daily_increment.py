"""Daily increments of the synthetic city (`citysafe generate --next-day`, synthetic_city/increment.py).

A day after the window is delivered as new files beside the earlier ones, which stay byte-identical;
the same day is the same bytes; asking for it again changes nothing; a day that is not the next one
gets one line and exit 2. On a copy of the built test city, the day is picked up as new deliveries,
reaches silver and fct_incident, and every source still reconciles with the generator's truth (the
window's expected counts plus the day's).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from deltalake import DeltaTable

import synthetic_city
from citysafe import lake_lock, warehouse
from citysafe.config import load_settings
from citysafe.sources import load_registry

from city_fixture import city_env, run_cli

WINDOW = dict(scale=0.005, seed=5, start_date=date(2025, 1, 1), days=30, timezone="Asia/Shanghai", h3_resolution=8)
DAY1, DAY2 = date(2025, 1, 31), date(2025, 2, 1)  # the window is 2025-01-01..2025-01-30
SYNTHETIC = {name: s for name, s in load_registry().items() if "synthetic" in s.tags}


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def window(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("increment_window") / "synthetic"
    synthetic_city.generate(root, **WINDOW)
    return root


@pytest.fixture(scope="module")
def two_days(window, tmp_path_factory):
    """A copy of the window with two days added; the digests from before."""
    root = tmp_path_factory.mktemp("increment_days") / "synthetic"
    shutil.copytree(window, root)
    before = _digests(root)
    days = [synthetic_city.generate_day(root), synthetic_city.generate_day(root)]
    return root, before, days


def test_days_are_new_files_beside_unchanged_earlier_ones(two_days):
    root, before, days = two_days
    after = _digests(root)
    assert {k: after[k] for k in before} == before, "an earlier file changed"
    assert [d["day"] for d in days] == [DAY1.isoformat(), DAY2.isoformat()]
    assert all(d["generated"] for d in days)
    new = set(after) - set(before)
    delivered = {f for d in days for f in d["files"]}
    assert {f for f in new if not f.startswith("truth/")} == delivered
    for d in days:
        assert (root / "truth" / "increments" / d["day"] / "expected_counts.json").is_file()
        assert len(d["files"]) == 7  # every source but the device registry (no installation in a day)
    # each new file is a delivery of exactly one synthetic source, found by its connector's pattern
    settings = load_settings(environ={"CITYSAFE_SYNTHETIC_ROOT": str(root)})
    claimed = {}
    for name, source in SYNTHETIC.items():
        folder = source.connector.folder(settings)
        for path in folder.glob(source.connector.pattern):
            rel = str(path.relative_to(root))
            if rel in delivered:
                assert rel not in claimed, f"{rel} matches {claimed.get(rel)} and {name}"
                claimed[rel] = name
    assert set(claimed) == delivered
    assert "device_registry" not in claimed.values()


def test_a_day_is_the_same_bytes_every_time(window, two_days, tmp_path):
    root, before, _ = two_days
    again = tmp_path / "synthetic"
    shutil.copytree(window, again)
    synthetic_city.generate_day(again, DAY1)
    synthetic_city.generate_day(again)
    assert _digests(again) == _digests(root)


def test_asking_for_a_day_again_changes_nothing(two_days):
    root, _, days = two_days
    before = _digests(root)
    result = synthetic_city.generate_day(root, DAY1)
    assert result["generated"] is False and result["files"] == days[0]["files"]
    assert _digests(root) == before
    assert synthetic_city.next_day(root) == DAY2 + timedelta(days=1)
    assert synthetic_city.generated_days(root) == [DAY1, DAY2]


def _rows(path: Path) -> int:
    data = path.read_bytes()
    if path.suffix == ".jsonl":
        return len(data.splitlines())
    encoding = "gbk" if path.parent.name == "hotline" else "utf-8-sig"
    return sum(1 for _ in csv.reader(io.StringIO(data.decode(encoding)))) - 1


def test_a_days_truth_counts_its_files(two_days):
    root, _, days = two_days
    for d in days:
        truth = json.loads((root / "truth" / "increments" / d["day"] / "expected_counts.json").read_text())
        by_source = {}
        for rel in d["files"]:
            name = next(n for n, s in SYNTHETIC.items() if Path(rel).match(s.connector.pattern))
            by_source[name] = _rows(root / rel)
        details = truth["details"]
        revised = {  # rows that change a record silver already holds: candidates for its MERGE too
            "police_incidents": details["police_incidents"]["revisions_of_the_day_before"],
            "fire_calls": details["fire_calls"]["revisions_of_the_day_before"],
            "hotline_tickets": details["hotline_tickets"]["revisions_of_the_day_before"],
            "hazard_inspections": details["hazard_inspections"]["rectified"]
            + details["hazard_inspections"]["accepted"],
            "enterprise_registry": details["enterprise_registry"]["deregistered"],
        }
        for name, c in truth["sources"].items():
            assert c["rows_delivered"] == by_source.get(name, 0), (d["day"], name)
            assert c["rows_delivered"] == c["duplicates"] + c["published"] + sum(c["quarantined"].values())
            if name != "device_registry":  # the silver gates take no new batch without a candidate
                assert c["published"] + revised.get(name, 0) >= 1, (d["day"], name)
        # the day's records move on: some of the day before's come again with a new status (revisions)
        assert sum(truth["details"][s]["revisions_of_the_day_before"] for s in ("fire_calls", "hotline_tickets")) > 0


def test_a_day_not_over_yet_is_refused(window, tmp_path):
    root = tmp_path / "synthetic"
    shutil.copytree(window, root)
    with pytest.raises(synthetic_city.IncrementError, match="not over yet"):
        synthetic_city.generate_day(root, today=DAY1)
    assert synthetic_city.generated_days(root) == []


def _one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("citysafe: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_the_cli_adds_days_and_refuses_bad_ones_in_one_line(cli, window, tmp_path):
    root = tmp_path / "synthetic"
    shutil.copytree(window, root)
    env = {
        "CITYSAFE_SYNTHETIC_ROOT": str(root),
        "CITYSAFE_SCALE": str(WINDOW["scale"]),
        "CITYSAFE_SEED": str(WINDOW["seed"]),
        "CITYSAFE_CITY__DAYS": str(WINDOW["days"]),
    }
    bad = {
        ("--day", "2025-01-15"): "inside the generated window 2025-01-01..2025-01-30",
        ("--day", "2025-02-03"): "not the next day to generate: that is 2025-01-31",
        ("--day", "2025-13-01"): "--day '2025-13-01': not a date",
        ("--day", "2025-01-31", "--next-day"): "--next-day and --day name the day twice",
        ("--next-day", "--force"): "--force regenerates the whole window",
    }
    for args, message in bad.items():
        code, _, err = cli("generate", *args, env=env)
        assert code == 2 and message in _one_line_error(err), (args, err)
    code, _, err = cli("generate", "--next-day", env={**env, "CITYSAFE_SCALE": "0.01"})
    assert code == 2 and "holds another synthetic city" in _one_line_error(err)
    code, _, err = cli("generate", "--next-day", env={**env, "CITYSAFE_SYNTHETIC_ROOT": str(tmp_path / "none")})
    assert code == 2 and "run `citysafe generate`" in _one_line_error(err)
    assert synthetic_city.generated_days(root) == []

    code, out, _ = cli("generate", "--next-day", env=env)
    assert code == 0 and "day 2025-01-31 delivered in 7 new files" in out
    before = _digests(root)
    code, out, _ = cli("generate", "--day", "2025-01-31", env=env)
    assert code == 0 and "day 2025-01-31 was already generated" in out and "nothing changed" in out
    assert _digests(root) == before


# ------------------------------------------------------------------------------------------ the lake


@pytest.fixture(scope="module")
def day_in_the_lake(built_city, tmp_path_factory):
    """A copy of the built test city (taken under its lake lock: other tests run commands on it), one
    day added and run through the stages that carry its data: ingest, silver and reconcile (the CLI, as
    `citysafe run` runs them), then fct_incident and the models it reads (dbt, with their tests, swapped
    into the served warehouse as build-marts does). The whole marts build and the ml, report and alerts
    stages on a day are what benchmarks/increment_benchmark.py times; here they would double the cost."""
    root = tmp_path_factory.mktemp("increment_city")
    with lake_lock.lake_lock(built_city.lake, run_id="copy-for-daily-increment", wait_seconds=900):
        for name in ("lake", "synthetic", "warehouse"):
            shutil.copytree(built_city.root / name, root / name, symlinks=True)
    env = city_env(root)
    added = run_cli(["generate", "--next-day"], env, "day")
    for command in (["ingest", "--tag", "synthetic"], ["silver", "--tag", "synthetic"], ["reconcile"]):
        run_cli(command, env, "day")
    warehouse.build_marts(load_settings(environ=env), "day-marts", select=["+fct_incident"])
    day = synthetic_city.generated_days(root / "synthetic")[0]
    summary = json.loads((root / "lake" / "runs" / "day" / "summary.json").read_text())
    return root, day, summary, added.stdout


@pytest.mark.slow
def test_the_lake_reconciles_after_a_day(day_in_the_lake, built_city):
    root, day, summary, stdout = day_in_the_lake
    assert f"day {day} delivered" in stdout
    assert day == date.fromisoformat(built_city.truth["generator"]["start_date"]) + timedelta(
        days=built_city.truth["generator"]["days"]
    )
    rec = summary["tables"]["reconciliation"]
    assert rec["ok"] and rec["days_added"] == [day.isoformat()]
    assert all(item["ok"] for item in rec["sources"].values()) and len(rec["sources"]) == len(SYNTHETIC)
    # only the day's files were new deliveries: bronze read exactly what the day's truth says it delivered
    truth = json.loads(
        (root / "synthetic" / "truth" / "increments" / day.isoformat() / "expected_counts.json").read_text()
    )
    for name, counts in truth["sources"].items():
        assert summary["tables"][f"bronze.{name}"]["rows_read"] == counts["rows_delivered"], name
    # The incident sources leave the cross-department links to one refresh after all of them, computed
    # from the silver.incident they left.
    for name in ("police_incidents", "fire_calls", "hotline_tickets"):
        assert "incident_link" not in summary["tables"][f"silver.incident[{name}]"], name
    # The served warehouse was built, and its dbt unit tests passed, with this project: the day's build
    # runs the data tests only.
    results = json.loads((root / "lake" / "runs" / "day-marts" / "dbt_target" / "run_results.json").read_text())
    kinds = {r["unique_id"].split(".")[0] for r in results["results"]}
    assert "test" in kinds and "unit_test" not in kinds, kinds
    links = summary["tables"]["silver.incident_link"]
    assert "unchanged" not in links and links["rows"] > 0
    assert links["incident_version"] == DeltaTable(str(root / "lake" / "silver" / "incident")).version()


@pytest.mark.slow
def test_the_days_records_are_in_silver_and_the_marts(day_in_the_lake):
    root, day, _, _ = day_in_the_lake
    truth_dir = root / "synthetic" / "truth" / "increments" / day.isoformat()
    silver = root / "lake" / "silver"
    incidents = DeltaTable(str(silver / "incident")).to_pandas(columns=["incident_id", "source_record_id", "status"])
    ymd = day.strftime("%Y%m%d")
    new_ids = []
    for name, key in (("police_incidents", "case_no"), ("fire_calls", "call_id"), ("hotline_tickets", "ticket_no")):
        # new records of the day and the day before's records it revised, each with its status as of the day
        t = pd.read_csv(truth_dir / f"{name}_clean.csv.gz", dtype=str, keep_default_na=False)
        got = t.merge(incidents, left_on=key, right_on="source_record_id", how="left")
        assert got.incident_id.notna().all(), f"{name}: not in silver: {list(got[key][got.incident_id.isna()])}"
        assert (got.status_x == got.status_y).all(), name
        new_ids += list(got.incident_id[got[key].str[2:10] == ymd])
    assert new_ids
    con = duckdb.connect(str(root / "warehouse" / "marts.duckdb"), read_only=True)
    in_marts = {r[0] for r in con.execute("select unnest(source_incident_ids) from fct_incident").fetchall()}
    assert set(new_ids) <= in_marts
    assert con.execute("select count(*) from fct_incident where occurred_date_local = ?", [day]).fetchone()[0] > 0
    weather = DeltaTable(str(silver / "weather_daily")).to_pandas(columns=["date"])
    assert day in set(weather.date)
    readings = DeltaTable(str(silver / "device_reading")).to_pandas(columns=["reading_ts_utc"])
    midnight = pd.Timestamp(day).tz_localize(WINDOW["timezone"]).tz_convert("UTC")  # the city's local day
    assert (readings.reading_ts_utc >= midnight).sum() > 0
    hazards = DeltaTable(str(silver / "hazard")).to_pandas(columns=["hazard_id", "rectified_date", "accepted_date"])
    moved = pd.read_csv(truth_dir / "hazards_truth.csv.gz", dtype=str, keep_default_na=False)
    moved = moved[moved.delivery == "clean"].merge(hazards, on="hazard_id", how="left")
    assert len(moved) and moved.rectified_date_y.notna().eq(moved.rectified_date_x != "").all()
    enterprises = DeltaTable(str(silver / "enterprise")).to_pandas(columns=["enterprise_id", "status_raw"])
    registered = pd.read_csv(truth_dir / "enterprises_truth.csv.gz", dtype=str, keep_default_na=False)
    registered = registered[registered.delivery == "clean"]
    assert set(registered.credit_code) <= set(enterprises.enterprise_id)


@pytest.mark.slow
def test_the_hourly_table_after_a_day_equals_a_recompute_from_every_reading(day_in_the_lake, spark):
    """A day refreshes only the hours its readings can change (silver_device.changed_hours): the stored
    hourly table must equal the aggregate over every reading, gaps and spans included."""
    from citysafe import delta_io
    from spark_jobs import silver_device, tables

    root, _, _, _ = day_in_the_lake
    settings = load_settings(environ=city_env(root))
    readings = delta_io.read(spark, tables.device_reading(settings.silver_dir))
    stored = delta_io.read(spark, tables.device_reading_hourly(settings.silver_dir)).drop("_changed_at")
    expected = silver_device.hourly(readings).select(*stored.columns)
    assert stored.count() == expected.count() > 0
    assert stored.exceptAll(expected).count() == 0 and expected.exceptAll(stored).count() == 0
