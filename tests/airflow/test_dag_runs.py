"""Every generated DAG runs (`dag.test()`, the engine of `airflow dags test`) against a migrated SQLite
metadata DB with a stub CLI that logs its argv: each DAG ran exactly its stage graph's commands, in order,
with one run id. One real `airflow dags test` subprocess checks a failing stage: retries, downstream
upstream_failed, and the failure callback's `citysafe alerts notify-failure`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCES_DIR = REPO_ROOT / "sources"
LOGICAL_DATE = "2025-01-02T05:00:00+00:00"
GROUP_COMMANDS = {
    "citysafe_city_reference": [["generate"], ["reference"]],
    "citysafe_marts": [["build-marts", "--skip-unchanged"], ["reconcile"]],
    "citysafe_ml": [["ml", "train", "--skip-unchanged"]],
    "citysafe_report": [["report"]],
    "citysafe_alerts": [["alerts", "--as-of", LOGICAL_DATE]],
}
# The worker's config reaches the CLI as it is; CITYSAFE_BIN (not a config key) does not.
WORKER_CONFIG = {"CITYSAFE_SCALE": "0.005", "CITYSAFE_PII_KEY": "citysafe-airflow-test-key"}


def _expected_commands() -> dict[str, list[list[str]]]:
    out = dict(GROUP_COMMANDS)
    for path in sorted(SOURCES_DIR.glob("*.yaml")):
        entry = yaml.safe_load(path.read_text(encoding="utf-8"))
        name = entry["name"]
        out[f"citysafe_source__{name}"] = [["ingest", name]] + ([["silver", name]] if entry.get("silver") else [])
    return out


def test_every_dag_runs_its_commands_in_order(airflow_home, airflow_env_for, stub_cli, tmp_path):
    stub = stub_cli()
    expected = _expected_commands()
    # every DAG at one logical date, plus the alerts DAG as started by an asset or by hand (no data interval)
    plan = [[dag_id, LOGICAL_DATE] for dag_id in sorted(expected)] + [["citysafe_alerts", None]]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    env = {**airflow_env_for(airflow_home), **WORKER_CONFIG, "CITYSAFE_BIN": str(stub.path)}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("dag_test_batch.py")), "plan.json", "result.json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    results = json.loads((tmp_path / "result.json").read_text())
    assert [[r["dag_id"], r["logical_date"]] for r in results] == plan

    calls_by_run: dict[str, list[dict]] = defaultdict(list)
    for call in stub.calls():
        assert call["argv"][-2] == "--run-id", call
        calls_by_run[call["argv"][-1]].append(call)
    assert len(calls_by_run) == len(plan)  # one run id per DAG run, shared by its tasks

    for result in results[:-1]:
        dag_id = result["dag_id"]
        assert result["state"] == "success", result
        assert {t: s["state"] for t, s in result["tasks"].items()} == dict.fromkeys(result["tasks"], "success")
        assert all(s["try_number"] == 1 for s in result["tasks"].values()), result
        calls = calls_by_run[result["run_id"]]
        assert [c["argv"][:-2] for c in calls] == expected[dag_id], dag_id
        for call in calls:
            assert call["cwd"] == str(REPO_ROOT)
            assert call["env"] == WORKER_CONFIG

    # A run without a data interval (asset-triggered or manual in Airflow 3) evaluates at its run_after.
    undated = results[-1]
    assert undated["state"] == "success"
    [call] = calls_by_run[undated["run_id"]]
    assert call["argv"][:2] == ["alerts", "--as-of"]
    as_of = datetime.fromisoformat(call["argv"][2])
    assert as_of.tzinfo is not None and as_of.year >= 2026
    assert undated["run_id"].startswith("manual__" + as_of.isoformat())
    print(
        f"\n{len(results)} DAG runs in one process: " + ", ".join(f"{r['dag_id']} {r['seconds']}s" for r in results[:3])
    )


DAG_ID = "citysafe_source__police_incidents"


@pytest.mark.slow
def test_failing_stage_retries_then_notifies(run_dag_test, stub_cli):
    stub = stub_cli(fail_on="ingest")
    env = {
        **WORKER_CONFIG,
        "CITYSAFE_BIN": str(stub.path),
        "AIRFLOW__CITYSAFE__RETRY_DELAY_SECONDS": "0",  # the backoff then waits 1-2 s, then 2-4 s
    }

    result = run_dag_test(DAG_ID, "2025-01-02", env)

    assert result.returncode != 0 and "DagRun failed" in result.output, result.tail()
    assert result.dag_run_state == "failed"
    assert result.states == {"ingest": "failed", "silver": "upstream_failed"}, result.tail()
    assert result.tries["ingest"] == 3  # retries=2
    argv = [c["argv"] for c in stub.calls()]
    tries = [["ingest", "police_incidents", "--run-id", result.run_id]] * 3
    assert argv[:3] == tries, result.tail()
    # after the last try: the failure callback told the data stewards, once
    [notify] = argv[3:]
    assert notify[:10] == [
        "alerts",
        "notify-failure",
        "--dag",
        DAG_ID,
        "--task",
        "ingest",
        "--airflow-run",
        result.run_id,
        "--try",
        "3",
    ], notify
    assert notify[10] == "--log-url" and notify[11].startswith("http") and f"/dags/{DAG_ID}/runs/" in notify[11]
    assert "stub citysafe: ingest fails" in result.output
