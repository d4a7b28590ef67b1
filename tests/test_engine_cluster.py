"""Sail's cluster mode gives the in-process engine's results.

`engine: sail-local-cluster` runs Sail's driver and several workers in one process, talking over RPC:
the plan is split into stages and shipped to workers as it is on Kubernetes (`kubernetes-cluster`, see
infra/k8s). The built test city's deliveries go through ingest, reference and silver on it, into a
lake of their own, and every silver table must hold the same rows as the city's in-process lake.
"""

from __future__ import annotations

import subprocess

import pytest
from deltalake import DeltaTable

from city_fixture import CLI  # tests/ is on sys.path (tests/conftest.py)

WORKERS = "3"
# Columns that record when or in which run a row was processed, not what it says.
RUN_COLUMNS = {
    "_ingested_at",
    "ingested_at",
    "landed_at",
    "run_id",
    "validated_at",
    "first_seen",
    "last_seen",
    "_changed_at",
}
# Snapshot sources (a registry, the daily weather) carry no update time of their own: silver stamps
# the delivery's ingestion time (see the device and weather jobs).
RUN_COLUMNS_BY_TABLE = {"device": {"updated_at_utc"}, "weather_daily": {"updated_at_utc"}}


def test_a_local_cluster_session_runs_on_workers():
    from citysafe.engine import spark_session

    def running_workers(engine):
        with spark_session(engine, app_name="citysafe-cluster-check") as spark:
            assert spark.range(1000).selectExpr("sum(id) AS s").first().s == 499500
            workers = spark.sql("SELECT status FROM system.cluster.workers").collect()
            return sum(w.status == "RUNNING" for w in workers)

    assert running_workers("sail-local-cluster") >= 1
    assert running_workers("sail") == 0  # the in-process engine has no workers


def _rows(path, drop):
    table = DeltaTable(str(path)).to_pyarrow_table()
    table = table.select(sorted(c for c in table.column_names if c not in drop))
    return table.column_names, sorted(repr(sorted(r.items())) for r in table.to_pylist())


@pytest.mark.slow
def test_silver_on_sail_local_cluster_equals_the_in_process_lake(built_city, tmp_path):
    env = {
        **built_city.env,
        "CITYSAFE_ENGINE": "sail-local-cluster",
        "SAIL_CLUSTER__WORKER_INITIAL_COUNT": WORKERS,
        "CITYSAFE_LAKE_ROOT": str(tmp_path / "lake"),
        "CITYSAFE_WAREHOUSE_PATH": str(tmp_path / "warehouse" / "marts.duckdb"),
    }
    for step in (["ingest", "--tag", "synthetic"], ["reference"], ["silver", "--tag", "synthetic"]):
        proc = subprocess.run(
            [str(CLI), *step, "--run-id", f"cluster-{step[0]}"], env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, f"{step}: exit {proc.returncode}\n{proc.stderr[-4000:]}"
    assert "starting engine: sail-local-cluster" in proc.stderr

    cluster_silver = tmp_path / "lake" / "silver"
    tables = sorted(p.name for p in built_city.silver.iterdir() if (p / "_delta_log").is_dir())
    assert {"incident", "quarantine", "device_reading", "hazard", "enterprise"} <= set(tables)
    assert sorted(p.name for p in cluster_silver.iterdir() if (p / "_delta_log").is_dir()) == tables
    for name in tables:
        drop = RUN_COLUMNS | RUN_COLUMNS_BY_TABLE.get(name, set())
        in_process, cluster = _rows(built_city.silver / name, drop), _rows(cluster_silver / name, drop)
        assert cluster[0] == in_process[0], name
        assert len(cluster[1]) == len(in_process[1]), f"{name}: {len(cluster[1])} rows, in-process {len(in_process[1])}"
        assert cluster[1] == in_process[1], f"{name}: rows differ"
