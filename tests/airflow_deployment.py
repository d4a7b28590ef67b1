"""What the real Airflow deployment tests share (tests/airflow/test_scheduler.py, test_celery_executor.py):
the pipeline CLI they run, free ports, and the Airflow components as process groups that are stopped with
everything they started. Stdlib and pytest only (the Airflow venv has no pipeline code)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest


def citysafe_cli() -> str:
    """The pipeline CLI the tasks run: $CITYSAFE_BIN when set, else <repo>/.venv/pipeline/bin/citysafe."""
    from citysafe_dag_support import DEFAULT_CITYSAFE_BIN

    cli = os.environ.get("CITYSAFE_BIN")
    if cli:
        assert Path(cli).is_file(), f"CITYSAFE_BIN={cli} does not exist"
        return cli
    if not DEFAULT_CITYSAFE_BIN.is_file():
        pytest.skip(f"pipeline CLI not installed at {DEFAULT_CITYSAFE_BIN}; set CITYSAFE_BIN")
    return str(DEFAULT_CITYSAFE_BIN)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AirflowProcesses:
    """Airflow components (`airflow <args>`) started in process groups of their own, logging to
    <home>/<name>.log; `stop` ends them and whatever they left behind."""

    def __init__(self, home: Path, env: dict[str, str]):
        self.home, self.env = home, env
        self.procs: dict[str, subprocess.Popen] = {}
        self.airflow = str(Path(env["AIRFLOW_VENV"]) / "bin" / "airflow")

    def start(self, name: str, *args: str) -> None:
        log = open(self.home / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            [self.airflow, *args],
            env=self.env,
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with everything it started
        )
        log.close()

    def log(self, name: str) -> str:
        return (self.home / f"{name}.log").read_text(errors="replace")

    def dead(self) -> list[str]:
        return [name for name, p in self.procs.items() if p.poll() is not None]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # workers and task processes left in the group
            except ProcessLookupError:
                pass
        # A task's bash may run in a session of its own: whatever is left of this deployment has its AIRFLOW_HOME.
        mark = f"AIRFLOW_HOME={self.home}".encode()
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                pid = int(environ.parent.name)
                if pid != os.getpid() and mark in environ.read_bytes().split(b"\0"):
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
