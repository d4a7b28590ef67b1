"""`citysafe run` end to end on the embedded engine: generator -> landing -> bronze -> silver (GX gate)
-> dbt marts, reconciled exactly with the generator's truth; a second run changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deltalake import DeltaTable

from city_fixture import run_cli as _run


def _versions(lake: Path) -> dict:
    return {
        str(p.parent.relative_to(lake)): DeltaTable(str(p.parent)).version()
        for p in sorted(lake.glob("*/*/_delta_log"))
        if "staging" not in str(p)
    }


@pytest.fixture(scope="module")
def first_run(built_city):
    c = built_city
    return c.root, c.env, c, c.summary, c.truth


@pytest.mark.slow
def test_summary_reconciles_exactly_with_truth(first_run):
    _, _, city, summary, truth = first_run
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
    assert "reconciliation with the generator's truth: OK" in city.stdout


@pytest.mark.slow
def test_marts_count_every_published_incident(first_run):
    import duckdb

    tmp, _, _, _, truth = first_run
    con = duckdb.connect(str(tmp / "warehouse" / "marts.duckdb"), read_only=True)
    from citysafe.sources import load_registry

    incident_sources = [
        n for n, s in load_registry().items() if s.silver and s.silver.table == "incident" and "synthetic" in s.tags
    ]
    total = con.execute("select sum(incident_count) from mart_incident_district_week").fetchone()[0]
    assert total == sum(truth["sources"][n]["published"] for n in incident_sources)


@pytest.mark.slow
def test_second_run_changes_nothing(first_run):
    tmp, env, _, _, _ = first_run
    before = _versions(tmp / "lake")
    assert before, "no Delta tables found"
    warehouse = tmp / "warehouse" / "marts.duckdb"
    served = warehouse.stat().st_mtime_ns
    _run(["run"], env, "second")
    summary = json.loads((tmp / "lake" / "runs" / "second" / "summary.json").read_text())
    assert summary["tables"]["bronze.police_incidents"]["rows_read"] == 0
    # nothing new: the stages with a fingerprint are skipped, the marts are not rebuilt
    assert summary["stages"]["silver"]["status"] == "skipped"
    assert summary["stages"]["marts"]["status"] == "skipped"
    assert summary["stages"]["reconcile"]["status"] == "ok"
    assert summary["stages"]["ml"]["status"] == "skipped"
    # early warning evaluates every time (the clock moves) but finds nothing new and sends nothing twice
    assert summary["stages"]["alerts"]["status"] == "ok"
    assert summary["tables"]["alerts"]["alerts_changed"] == 0 and summary["tables"]["alerts"]["deliveries"] == {}
    assert warehouse.stat().st_mtime_ns == served
    assert _versions(tmp / "lake") == before
    # The silver jobs themselves also change nothing when they run with nothing new.
    _run(["silver", "--tag", "synthetic"], env, "third")
    summary = json.loads((tmp / "lake" / "runs" / "third" / "summary.json").read_text())
    assert summary["tables"]["silver.incident[police_incidents]"]["rows_read"] == 0
    assert _versions(tmp / "lake") == before
    # What the marts and ml DAGs run on a burst of asset events: skipped, the warehouse untouched.
    for command, stage in ((["build-marts", "--skip-unchanged"], "marts"), (["ml", "train", "--skip-unchanged"], "ml")):
        out = _run(command, env, f"fourth-{stage}")
        summary = json.loads((tmp / "lake" / "runs" / f"fourth-{stage}" / "summary.json").read_text())
        assert summary["stages"][stage]["status"] == "skipped", out
    assert warehouse.stat().st_mtime_ns == served
    assert _versions(tmp / "lake") == before
