"""Fixtures for the Airflow tests. They run in the AIRFLOW venv only:

    .venv/airflow/bin/python -m pytest tests/airflow -q -p no:cacheprovider

Under any other interpreter (the pipeline venv's `pytest` collects tests/ too) this folder is ignored.
Nothing here imports pipeline code, and the repository root stays off sys.path; only dags/ is put on
it, as Airflow's dags-folder bundle does when it parses DAG files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO_ROOT / "dags"
ENV_SCRIPT = REPO_ROOT / "scripts" / "airflow_env.sh"
# The venv running these tests (not resolved: the venv's python is usually a symlink).
AIRFLOW_VENV = Path(sys.executable).parent.parent
AIRFLOW_BIN = AIRFLOW_VENV / "bin" / "airflow"

# pytest puts tests/ on sys.path, so `airflow` can resolve to the namespace package tests/airflow/:
# only a real module (one with an origin) means this is the Airflow venv. Elsewhere: skip the folder
# and change nothing.
_airflow_spec = importlib.util.find_spec("airflow")
IN_AIRFLOW_VENV = _airflow_spec is not None and _airflow_spec.origin is not None
if not IN_AIRFLOW_VENV:
    collect_ignore_glob = ["test_*.py"]


def airflow_env(airflow_home: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment `source scripts/airflow_env.sh` gives, for a given AIRFLOW_HOME.

    Starts from ``base`` (default os.environ) without any AIRFLOW*, CITYSAFE_* or DAGS_CITYSAFE_* variable,
    so that nothing from the caller's shell leaks into the run.
    """
    base = os.environ if base is None else base
    clean = {k: v for k, v in base.items() if not k.startswith(("AIRFLOW", "CITYSAFE_", "DAGS_CITYSAFE_"))}
    clean.update(AIRFLOW_HOME=str(airflow_home), AIRFLOW_VENV=str(AIRFLOW_VENV))
    out = subprocess.run(
        ["bash", "-c", '. "$1" && env -0', "bash", str(ENV_SCRIPT)],
        env=clean,
        capture_output=True,
        check=True,
    ).stdout.decode()
    env = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    for shell_var in ("_", "SHLVL", "PWD", "OLDPWD"):  # set by bash itself, not by the script
        env.pop(shell_var, None)
    return env


_SESSION_HOME: Path | None = None
if IN_AIRFLOW_VENV:
    # `python -m pytest` puts the repository root on sys.path (its dbt/ folder would shadow the dbt
    # package): take it off. Put dags/ on it instead, as Airflow's dags-folder bundle does.
    sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != REPO_ROOT]
    if str(DAGS_DIR) not in sys.path:
        sys.path.insert(0, str(DAGS_DIR))
    # In-process Airflow (the DagBag test) reads its config at import: point it at a throwaway
    # AIRFLOW_HOME with the settings of scripts/airflow_env.sh, before anything imports airflow.
    _SESSION_HOME = Path(tempfile.mkdtemp(prefix="citysafe-airflow-pytest-"))
    os.environ.update(airflow_env(_SESSION_HOME / "home"))


def pytest_unconfigure(config):
    if _SESSION_HOME is not None:
        shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def migrated_airflow_db(tmp_path_factory) -> Path:
    """One `airflow db migrate` per session (through the env script's helper, which also creates the lake
    pool); tests copy the file."""
    home = tmp_path_factory.mktemp("airflow-template")
    proc = subprocess.run(
        ["bash", "-c", '. "$1" && citysafe_airflow_db_migrate', "bash", str(ENV_SCRIPT)],
        env=airflow_env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"airflow db migrate failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    db = home / "airflow.db"
    assert db.is_file()
    return db


@pytest.fixture(scope="session")
def airflow_env_for():
    """``airflow_env`` (a conftest module is not importable by name from the test modules)."""
    return airflow_env


@pytest.fixture
def airflow_home(tmp_path, migrated_airflow_db) -> Path:
    """A fresh AIRFLOW_HOME holding a copy of the session's migrated metadata DB."""
    home = tmp_path / "airflow"
    home.mkdir()
    shutil.copy2(migrated_airflow_db, home / "airflow.db")
    return home


class DagTestResult:
    """Outcome of one `airflow dags test` subprocess, read back from its metadata DB."""

    def __init__(self, proc: subprocess.CompletedProcess, db: Path, dag_id: str):
        self.returncode = proc.returncode
        self.output = proc.stdout
        with sqlite3.connect(db) as con:
            runs = con.execute("SELECT run_id, state FROM dag_run WHERE dag_id = ?", (dag_id,)).fetchall()
            assert len(runs) == 1, f"expected one DAG run, found {runs}\n{self.output[-6000:]}"
            self.run_id, self.dag_run_state = runs[0]
            rows = con.execute(
                "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
                (dag_id, self.run_id),
            ).fetchall()
        self.states = {task_id: state for task_id, state, _ in rows}
        self.tries = {task_id: tries for task_id, _, tries in rows}

    def cli_output(self) -> list[str]:
        """The lines the CLI printed (BashOperator logs each one through its SubprocessHook)."""
        marker = re.compile(
            r"^\S+ \[info\s*\] (.*) \[airflow\.task\.hooks\.\S+SubprocessHook\] loc=subprocess\.py:106$"
        )
        return [m.group(1) for m in map(marker.match, self.output.splitlines()) if m]

    def tail(self, lines: int = 60) -> str:
        """Failure report: task states, then the end of the CLI's own output and of Airflow's."""
        return "\n".join(
            [f"dag run {self.run_id}: {self.dag_run_state}; tasks {self.states}", "--- CLI output (end):"]
            + self.cli_output()[-lines:]
            + ["--- airflow output (end):", self.output[-3000:]]
        )


@pytest.fixture
def run_dag_test(airflow_home):
    """Run `airflow dags test DAG_ID DATE` in a subprocess with AIRFLOW_HOME=airflow_home."""

    def run(dag_id: str, logical_date: str, extra_env: Mapping[str, str], timeout: float = 900):
        env = airflow_env(airflow_home)
        env.update(extra_env)
        proc = subprocess.run(
            [str(AIRFLOW_BIN), "dags", "test", dag_id, logical_date],
            env=env,
            cwd=airflow_home,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        return DagTestResult(proc, airflow_home / "airflow.db", dag_id)

    return run


# --------------------------------------------------------------------------- a stub pipeline CLI

STUB_CLI = """#!{python}
import json, os, sys
with open({log!r}, "a") as f:
    env = {{k: v for k, v in os.environ.items() if k.startswith("CITYSAFE_")}}
    f.write(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": env}}) + "\\n")
if sys.argv[1:2] == [{fail_on!r}]:
    sys.exit("stub citysafe: " + sys.argv[1] + " fails")
"""


class StubCli:
    """A stand-in for the pipeline CLI that appends each call (argv, cwd, CITYSAFE_* env) to a JSON-lines
    log and exits 1 for the sub-command ``fail_on``."""

    def __init__(self, folder: Path, fail_on: str | None = None):
        self.log = folder / "cli_calls.jsonl"
        self.path = folder / "bin" / "citysafe"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(STUB_CLI.format(python=sys.executable, log=str(self.log), fail_on=fail_on))
        self.path.chmod(0o755)

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def stub_cli(tmp_path):
    """Factory: ``stub_cli(fail_on="silver")`` -> a StubCli in its own folder under tmp_path."""
    made = []

    def make(fail_on: str | None = None) -> StubCli:
        folder = tmp_path / f"stub{len(made)}"
        made.append(StubCli(folder, fail_on))
        return made[-1]

    return make
