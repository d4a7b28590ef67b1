"""dags/citysafe_dag_support.py: repo location, CLI path and the bash command the tasks run."""

from __future__ import annotations

import subprocess
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


def test_default_args():
    args = support.default_args()
    assert args["retries"] == 1
    assert args["retry_delay"] == timedelta(seconds=support.DEFAULT_RETRY_DELAY_SECONDS)
    assert support.default_args(5)["retry_delay"] == timedelta(seconds=5)
    assert support.default_args() is not support.default_args()


def test_task_env_renders_run_id():
    assert support.citysafe_task_env() == {"DAG_RUN_ID": "{{ run_id }}"}


def test_command_needs_a_subcommand():
    with pytest.raises(ValueError):
        support.citysafe_command()


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


def test_command_fails_when_cli_fails(tmp_path):
    failing = tmp_path / "citysafe"
    failing.write_text("#!/usr/bin/env bash\nexit 3\n")
    failing.chmod(0o755)
    command = support.citysafe_command("reconcile", default_bin=failing)
    proc = subprocess.run(["bash", "-c", command], env={"PATH": "/usr/bin:/bin", "DAG_RUN_ID": RUN_ID})
    assert proc.returncode == 3
