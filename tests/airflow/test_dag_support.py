"""dags/citysafe_dag_support.py: repo location, CLI path, the bash command the tasks run, the failure
callback, and the DAG specs it derives from the stage graph and the source entries (no Airflow needed)."""

from __future__ import annotations

import copy
import logging
import shutil
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import citysafe_dag_support as support  # dags/ is on sys.path (conftest), as Airflow puts it there
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_ID = "scheduled__2025-01-02T00:00:00+00:00"

ECHO_ARGS = """#!/usr/bin/env bash
printf '%s\\n' "$0" "$@"
printf 'CITYSAFE_BIN=%s\\n' "${CITYSAFE_BIN-<unset>}"
"""


def test_repo_root_and_default_cli():
    assert support.REPO_ROOT == REPO_ROOT
    assert (support.REPO_ROOT / "config" / "citysafe.yaml").is_file()
    assert support.DEFAULT_CITYSAFE_BIN == REPO_ROOT / ".venv" / "pipeline" / "bin" / "citysafe"
    assert support.STAGE_GRAPH_FILE == REPO_ROOT / "pipeline" / "stage_graph.yaml"
    assert support.DEFAULT_SOURCES_DIR == REPO_ROOT / "sources"


def test_default_args():
    args = support.default_args()
    assert args["retries"] == 2
    assert args["retry_exponential_backoff"] == 2.0  # Airflow 3: a multiplier (True would be 1.0, constant)
    assert args["retry_delay"] == timedelta(seconds=support.DEFAULT_RETRY_DELAY_SECONDS)
    assert args["max_retry_delay"] == timedelta(seconds=support.DEFAULT_MAX_RETRY_DELAY_SECONDS)
    assert support.default_args(5, 60)["retry_delay"] == timedelta(seconds=5)
    assert support.default_args(5, 60)["max_retry_delay"] == timedelta(seconds=60)
    assert support.default_args(120, 60)["max_retry_delay"] == timedelta(seconds=120)  # never below the delay
    assert support.default_args() is not support.default_args()


def test_task_env_renders_run_id():
    assert support.citysafe_task_env() == {"DAG_RUN_ID": "{{ run_id }}"}
    assert support.citysafe_task_env({"DAG_AS_OF": "{{ x }}"}) == {"DAG_RUN_ID": "{{ run_id }}", "DAG_AS_OF": "{{ x }}"}


def test_command_needs_a_subcommand():
    with pytest.raises(ValueError):
        support.citysafe_command()


@pytest.mark.parametrize("var", ["CITYSAFE_AS_OF", "lower", "A B", "X;rm"])
def test_command_rejects_bad_option_variables(var):
    with pytest.raises(ValueError):
        support.citysafe_command("alerts", env_options={"--as-of": var})


def _run(command: str, env: dict[str, str]) -> list[str]:
    out = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


@pytest.fixture
def echo_cli(tmp_path) -> Path:
    """A CLI stand-in in an awkward folder (space, $, quotes, backslash, braces) that prints its argv."""
    folder = tmp_path / "we`ird $dir \"x\" 'y' \\z {}}"
    folder.mkdir()
    cli = folder / "citysafe"
    cli.write_text(ECHO_ARGS)
    cli.chmod(0o755)
    return cli


def test_command_uses_default_cli_and_quotes_run_id(echo_cli):
    command = support.citysafe_command("ingest", "police_incidents", default_bin=echo_cli)
    lines = _run(command, {"PATH": "/usr/bin:/bin", "DAG_RUN_ID": RUN_ID})
    assert lines == [str(echo_cli), "ingest", "police_incidents", "--run-id", RUN_ID, "CITYSAFE_BIN=<unset>"]


def test_command_prefers_citysafe_bin_and_hides_it_from_the_cli(echo_cli, tmp_path):
    command = support.citysafe_command("build-marts", default_bin=tmp_path / "missing")
    odd_run_id = "manual__2025-01-02T00:00:00+00:00 ; echo 'pwned' $HOME"
    env = {"PATH": "/usr/bin:/bin", "DAG_RUN_ID": odd_run_id, "CITYSAFE_BIN": str(echo_cli)}
    assert _run(command, env) == [str(echo_cli), "build-marts", "--run-id", odd_run_id, "CITYSAFE_BIN=<unset>"]


def test_command_passes_env_options_quoted(echo_cli):
    command = support.citysafe_command("alerts", default_bin=echo_cli, env_options={"--as-of": "DAG_AS_OF"})
    as_of = "2025-01-02T05:00:00+00:00 $(touch /tmp/pwned)"
    lines = _run(command, {"PATH": "/usr/bin:/bin", "DAG_RUN_ID": RUN_ID, "DAG_AS_OF": as_of})
    assert lines == [str(echo_cli), "alerts", "--as-of", as_of, "--run-id", RUN_ID, "CITYSAFE_BIN=<unset>"]


def test_command_fails_when_cli_fails(tmp_path):
    failing = tmp_path / "citysafe"
    failing.write_text("#!/usr/bin/env bash\nexit 3\n")
    failing.chmod(0o755)
    command = support.citysafe_command("reconcile", default_bin=failing)
    proc = subprocess.run(["bash", "-c", command], env={"PATH": "/usr/bin:/bin", "DAG_RUN_ID": RUN_ID})
    assert proc.returncode == 3


# --------------------------------------------------------------------------- the failure callback


class FakeTI:
    dag_id = "citysafe_source__police_incidents"
    task_id = "silver"
    run_id = "scheduled__2025-01-02T00:00:00+00:00"
    try_number = 3
    log_url = "http://localhost:8080/dags/citysafe_source__police_incidents/runs/x/tasks/silver?try_number=3"


def test_notify_failure_runs_the_cli(stub_cli, monkeypatch, caplog):
    stub = stub_cli()
    monkeypatch.setenv("CITYSAFE_BIN", str(stub.path))
    monkeypatch.setenv("CITYSAFE_SCALE", "0.005")
    with caplog.at_level(logging.INFO, logger="citysafe_dag_support"):
        support.notify_failure({"ti": FakeTI()})
    [call] = stub.calls()
    assert call["argv"] == [
        "alerts",
        "notify-failure",
        "--dag",
        FakeTI.dag_id,
        "--task",
        "silver",
        "--airflow-run",
        FakeTI.run_id,
        "--try",
        "3",
        "--log-url",
        FakeTI.log_url,
    ]
    assert call["cwd"] == str(REPO_ROOT)
    assert call["env"] == {"CITYSAFE_SCALE": "0.005"}  # the worker's config reaches it, CITYSAFE_BIN does not


def test_notify_failure_without_log_url(stub_cli, monkeypatch):
    class NoUrl(FakeTI):
        @property
        def log_url(self):
            raise RuntimeError("no base url")

    stub = stub_cli()
    monkeypatch.setenv("CITYSAFE_BIN", str(stub.path))
    support.notify_failure({"ti": NoUrl()})
    assert "--log-url" not in stub.calls()[0]["argv"]


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_notify_failure_never_raises(stub_cli, monkeypatch, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="citysafe_dag_support")
    # the CLI says the message was not delivered
    monkeypatch.setenv("CITYSAFE_BIN", str(stub_cli(fail_on="alerts").path))
    support.notify_failure({"ti": FakeTI()})
    assert "not delivered (exit 1)" in _warnings(caplog)[-1] and "alerts fails" in _warnings(caplog)[-1]
    # no CLI at all
    monkeypatch.setenv("CITYSAFE_BIN", str(tmp_path / "missing" / "citysafe"))
    support.notify_failure({"ti": FakeTI()})
    assert "not sent" in _warnings(caplog)[-1]
    # a context without a task instance
    support.notify_failure({})
    assert "not sent" in _warnings(caplog)[-1]
    assert len(_warnings(caplog)) == 3


def test_notify_failure_does_not_wait_for_a_hanging_cli(tmp_path, monkeypatch, caplog):
    hanging = tmp_path / "citysafe"
    hanging.write_text(f"#!{shutil.which('bash')}\nexec sleep 30\n")
    hanging.chmod(0o755)
    monkeypatch.setenv("CITYSAFE_BIN", str(hanging))
    caplog.set_level(logging.WARNING, logger="citysafe_dag_support")
    t0 = time.monotonic()
    support.notify_failure({"ti": FakeTI()}, timeout=0.5)
    assert time.monotonic() - t0 < 5
    assert "ran past" in _warnings(caplog)[-1]
    assert support.NOTIFY_TIMEOUT_SECONDS <= 60


# --------------------------------------------------------------------------- specs from the YAML files


@pytest.fixture(scope="module")
def graph() -> dict:
    return support.load_stage_graph()


@pytest.fixture(scope="module")
def sources() -> list[dict]:
    entries, errors = support.load_sources(support.DEFAULT_SOURCES_DIR)
    assert errors == []
    return entries


def test_specs_follow_the_stage_graph_order(graph, sources):
    """Swap two stages in (a copy of) the graph: the DAG reorders its tasks, nothing else to change."""
    specs = {s.dag_id: s for s in support.dag_specs(graph, sources)}
    assert [t.task_id for t in specs["citysafe_marts"].tasks] == ["marts", "reconcile"]
    swapped = copy.deepcopy(graph)
    stages = swapped["stages"]
    i, j = [s["name"] for s in stages].index("marts"), [s["name"] for s in stages].index("reconcile")
    stages[i], stages[j] = stages[j], stages[i]
    specs = {s.dag_id: s for s in support.dag_specs(swapped, sources)}
    assert [t.task_id for t in specs["citysafe_marts"].tasks] == ["reconcile", "marts"]


def test_priorities_follow_the_stage_order_and_silver_registries_first(graph, sources):
    specs = support.dag_specs(graph, sources)
    order = [s["name"] for s in graph["stages"]]
    by_stage: dict[str, set[int]] = {}
    for spec in specs:
        for t in spec.tasks:
            by_stage.setdefault(t.task_id, set()).add(t.priority)
    # every task of an earlier stage outranks every task of a later one
    for earlier, later in zip(order, order[1:]):
        assert min(by_stage[earlier]) > max(by_stage[later]), (earlier, later)
    silver = {s.source["silver"]["table"]: s.tasks[-1].priority for s in specs if s.source and s.source.get("silver")}
    assert silver["device"] > silver["device_reading"]
    assert silver["enterprise"] > silver["hazard"]


def test_bad_source_files_are_reported_and_skipped(tmp_path):
    shutil.copy(support.DEFAULT_SOURCES_DIR / "police_incidents.yaml", tmp_path)
    (tmp_path / "broken.yaml").write_text("name: broken\ndepartment: [not, a, name]\n")
    (tmp_path / "unparsable.yaml").write_text("name: x\n  bad: indent: here\n")
    (tmp_path / "twice.yaml").write_text((support.DEFAULT_SOURCES_DIR / "police_incidents.yaml").read_text())
    entries, errors = support.load_sources(tmp_path)
    assert [e["name"] for e in entries] == ["police_incidents"]
    assert len(errors) == 3
    assert any(e.startswith("broken.yaml: `department`") for e in errors)
    assert any("unparsable.yaml" in e for e in errors)
    assert any("twice.yaml" in e and "declared twice" in e for e in errors)
