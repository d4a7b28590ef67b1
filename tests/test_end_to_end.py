"""`citysafe run` end to end on the embedded engine: generator -> landing -> bronze -> silver (GX gate)
-> dbt marts, reconciled exactly with the generator's truth; a second run changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from deltalake import DeltaTable

CLI = Path(sys.executable).parent / "citysafe"


def _env(tmp_path: Path) -> dict:
    syn = tmp_path / "synthetic"
    return {
        **os.environ,
        "CITYSAFE_LAKE_ROOT": str(tmp_path / "lake"),
        "CITYSAFE_SYNTHETIC_ROOT": str(syn),
        "CITYSAFE_DISTRICTS_GEOJSON": str(syn / "reference" / "districts.geojson"),
        "CITYSAFE_DISTRICT_ALIASES": str(syn / "reference" / "district_aliases.csv"),
        "CITYSAFE_WAREHOUSE_PATH": str(tmp_path / "warehouse" / "marts.duckdb"),
        "CITYSAFE_SCALE": "0.005",
        "CITYSAFE_CITY__DAYS": "90",
        "CITYSAFE_PII_KEY": "e2e-test-key-0123456789",
    }


def _run(args, env, run_id):
    proc = subprocess.run([str(CLI), *args, "--run-id", run_id], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _versions(lake: Path) -> dict:
    return {str(p.parent.relative_to(lake)): DeltaTable(str(p.parent)).version()
            for p in sorted(lake.glob("*/*/_delta_log")) if "staging" not in str(p)}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    env = _env(tmp)
    proc = _run(["run"], env, "first")
    summary = json.loads((tmp / "lake" / "runs" / "first" / "summary.json").read_text())
    truth = json.loads((tmp / "synthetic" / "truth" / "expected_counts.json").read_text())
    return tmp, env, proc, summary, truth


@pytest.mark.slow
def test_summary_reconciles_exactly_with_truth(first_run):
    _, _, proc, summary, truth = first_run
    expected = truth["sources"]["police_incidents"]
    bronze = summary["tables"]["bronze.police_incidents"]
    silver = summary["tables"]["silver.incident[police_incidents]"]
    assert bronze["rows_read"] == expected["rows_delivered"] == bronze["published"]
    assert silver["rows_read"] == expected["rows_delivered"]
    assert silver["published"] == expected["published"]
    assert silver["duplicates"] == expected["duplicates"]
    assert silver["quarantined"] == {k: v for k, v in expected["quarantined"].items() if v}
    assert silver["reconciled"] is True and silver["validation"]["success"] is True
    assert summary["tables"]["reconciliation"]["ok"] is True
    assert all(s["status"] == "ok" for s in summary["stages"].values())
    assert "reconciliation with the generator's truth: OK" in proc.stdout


@pytest.mark.slow
def test_marts_count_every_published_incident(first_run):
    import duckdb

    tmp, _, _, _, truth = first_run
    con = duckdb.connect(str(tmp / "warehouse" / "marts.duckdb"), read_only=True)
    from citysafe.sources import load_registry

    incident_sources = [n for n, s in load_registry().items()
                        if s.silver and s.silver.table == "incident" and "synthetic" in s.tags]
    total = con.execute("select sum(incident_count) from mart_incident_district_week").fetchone()[0]
    assert total == sum(truth["sources"][n]["published"] for n in incident_sources)


@pytest.mark.slow
def test_second_run_changes_nothing(first_run):
    tmp, env, _, _, _ = first_run
    before = _versions(tmp / "lake")
    assert before, "no Delta tables found"
    _run(["run"], env, "second")
    summary = json.loads((tmp / "lake" / "runs" / "second" / "summary.json").read_text())
    assert summary["tables"]["bronze.police_incidents"]["rows_read"] == 0
    assert summary["tables"]["silver.incident[police_incidents]"]["rows_read"] == 0
    after = _versions(tmp / "lake")
    assert after == before
