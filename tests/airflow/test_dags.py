"""The CitySafe DAGs: they parse, they are wired as intended, and `airflow dags test` runs them.

The end-to-end test runs the CLI named by $CITYSAFE_BIN (default: the real pipeline CLI,
<repo>/.venv/pipeline/bin/citysafe); the failure test uses a stub CLI written into tmp_path.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO_ROOT / "dags"
DAG_ID = "citysafe_police_path"
STAGES = [
    ("generate", ["generate"]),
    ("reference", ["reference"]),
    ("ingest_police", ["ingest", "police_incidents"]),
    ("silver_police", ["silver", "police_incidents"]),
    ("build_marts", ["build-marts"]),
    ("reconcile", ["reconcile", "police_incidents"]),
]
TASK_IDS = [task_id for task_id, _ in STAGES]
LOGICAL_DATE = "2025-01-02"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_dagbag_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert DAG_ID in dagbag.dags


def test_police_path_tasks_run_in_order(dagbag):
    dag = dagbag.dags[DAG_ID]
    assert sorted(dag.task_ids) == sorted(TASK_IDS)
    assert [t.task_id for t in dag.topological_sort()] == TASK_IDS
    for upstream, downstream in zip(TASK_IDS, TASK_IDS[1:]):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}
    assert dag.get_task(TASK_IDS[0]).upstream_task_ids == set()


def test_police_path_settings(dagbag):
    dag = dagbag.dags[DAG_ID]
    assert dag.schedule == "@daily"
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.doc_md and "summary.json" in dag.doc_md
    for task_id, args in STAGES:
        task = dag.get_task(task_id)
        assert task.retries == 1
        assert timedelta(0) <= task.retry_delay <= timedelta(minutes=2)
        assert task.append_env is True
        assert task.env == {"DAG_RUN_ID": "{{ run_id }}"}
        assert task.skip_on_exit_code == []  # every non-zero exit fails the task
        assert task.cwd == str(REPO_ROOT)
        assert f'{" ".join(args)} --run-id "$DAG_RUN_ID"' in task.bash_command


# --------------------------------------------------------------------------- end to end (subprocess)


@pytest.fixture
def pipeline_env(tmp_path) -> dict[str, str]:
    """Config overrides for a tiny, fast pipeline run, everything under tmp_path."""
    synthetic = tmp_path / "synthetic"
    return {
        "CITYSAFE_LAKE_ROOT": str(tmp_path / "lake"),
        "CITYSAFE_SYNTHETIC_ROOT": str(synthetic),
        "CITYSAFE_DISTRICTS_GEOJSON": str(synthetic / "reference" / "districts.geojson"),
        "CITYSAFE_DISTRICT_ALIASES": str(synthetic / "reference" / "district_aliases.csv"),
        "CITYSAFE_WAREHOUSE_PATH": str(tmp_path / "warehouse" / "citysafe_marts.duckdb"),
        "CITYSAFE_SCALE": "0.005",
        "CITYSAFE_CITY__DAYS": "60",
        "CITYSAFE_PII_KEY": "citysafe-airflow-test-key",
        # Retry a failed stage at once rather than after the DAG's default delay.
        "AIRFLOW__CITYSAFE__RETRY_DELAY_SECONDS": "0",
    }


def _citysafe_cli() -> str:
    from citysafe_dag_support import DEFAULT_CITYSAFE_BIN

    cli = os.environ.get("CITYSAFE_BIN")
    if cli:
        assert Path(cli).is_file(), f"CITYSAFE_BIN={cli} does not exist"
        return cli
    if not DEFAULT_CITYSAFE_BIN.is_file():
        pytest.skip(f"pipeline CLI not installed at {DEFAULT_CITYSAFE_BIN}; set CITYSAFE_BIN")
    return str(DEFAULT_CITYSAFE_BIN)


@pytest.mark.slow
def test_dags_test_runs_every_stage(run_dag_test, pipeline_env):
    result = run_dag_test(DAG_ID, LOGICAL_DATE, {**pipeline_env, "CITYSAFE_BIN": _citysafe_cli()})

    assert result.returncode == 0, result.tail()
    assert result.states == dict.fromkeys(TASK_IDS, "success"), result.tail()
    assert result.dag_run_state == "success"


STUB_CLI = """#!{python}
import json, os, sys
with open({log!r}, "a") as f:
    env = {{k: v for k, v in os.environ.items() if k.startswith("CITYSAFE_")}}
    f.write(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": env}}) + "\\n")
if sys.argv[1] == {fail_on!r}:
    sys.exit("stub citysafe: " + sys.argv[1] + " fails")
"""


@pytest.mark.slow
def test_failing_stage_fails_the_run_and_stops_downstream(run_dag_test, pipeline_env, tmp_path):
    log = tmp_path / "cli_calls.jsonl"
    stub = tmp_path / "bin" / "citysafe"
    stub.parent.mkdir()
    stub.write_text(STUB_CLI.format(python=sys.executable, log=str(log), fail_on="silver"))
    stub.chmod(0o755)

    result = run_dag_test(DAG_ID, LOGICAL_DATE, {**pipeline_env, "CITYSAFE_BIN": str(stub)})

    assert result.returncode != 0 and "DagRun failed" in result.output, result.tail()
    assert result.dag_run_state == "failed"
    assert result.states == {
        "generate": "success",
        "reference": "success",
        "ingest_police": "success",
        "silver_police": "failed",
        "build_marts": "upstream_failed",
        "reconcile": "upstream_failed",
    }, result.tail()
    assert result.tries["silver_police"] == 2  # retried once

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    expected = [["generate"], ["reference"], ["ingest", "police_incidents"]] + [["silver", "police_incidents"]] * 2
    # Same quoted run id for every stage, so all of them write into one run summary.
    assert [c["argv"] for c in calls] == [args + ["--run-id", result.run_id] for args in expected]
    for call in calls:
        assert call["cwd"] == str(REPO_ROOT)
        # The worker's CITYSAFE_* config reaches the CLI; CITYSAFE_BIN (not a config key) does not.
        assert "CITYSAFE_BIN" not in call["env"]
        expected_env = {k: v for k, v in pipeline_env.items() if k.startswith("CITYSAFE_")}
        assert call["env"] == expected_env
