"""One real Airflow deployment runs the whole chain on a tiny synthetic city with the REAL pipeline CLI.

api-server + scheduler + dag-processor (LocalExecutor, SQLite metadata, the settings of
scripts/airflow_env.sh). The city DAG and the city's source DAGs are triggered with `airflow dags trigger`
(the sources' through the client that command calls); the assets then start marts -> ml -> report ->
alerts, whose notifications go to a loopback HTTP receiver this test runs. It ends with the warehouse
built, a model run, the quarterly report and delivered alerts, every DAG run successful.

The CLI is $CITYSAFE_BIN when set, else <repo>/.venv/pipeline/bin/citysafe.
"""

from __future__ import annotations

import http.server
import json
import re
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from airflow_deployment import (  # tests/ is on sys.path (tests/conftest.py); stdlib and pytest only
    AirflowProcesses,
    citysafe_cli,
    free_port,
)

from city_fixture import city_env  # tests/ is on sys.path (tests/conftest.py); stdlib only

REPO_ROOT = Path(__file__).resolve().parents[2]
CITY_DAG = "citysafe_city_reference"
CHAIN = ["citysafe_marts", "citysafe_ml", "citysafe_report", "citysafe_alerts"]
TIMEOUT_S = 900
TRIGGER = """
import sys
from airflow.api.client import get_current_api_client
client = get_current_api_client()
for dag_id in sys.argv[1:]:
    client.trigger_dag(dag_id=dag_id, triggering_user_name="pytest")
"""


# The city's sources (config `sources`): 3 of the 8 synthetic ones, enough for the whole chain (incidents for
# the models and the report; the device registry and its readings, and the published risk map, for the
# alerts). The other five run under dag.test in test_dag_runs.py only, to keep the suite in budget (each
# source costs two pipeline processes and two Airflow task runners here).
CITY_SOURCES = ["police_incidents", "device_registry", "device_readings"]


def _city_sources() -> list[str]:
    """CITY_SOURCES in the stage graph's silver order (registries first)."""
    order = yaml.safe_load((REPO_ROOT / "pipeline" / "stage_graph.yaml").read_text())["dags"]["source"]["silver_order"]
    entries = [yaml.safe_load((REPO_ROOT / "sources" / f"{name}.yaml").read_text()) for name in CITY_SOURCES]
    assert all("synthetic" in e["tags"] and e.get("silver") for e in entries)
    return [e["name"] for e in sorted(entries, key=lambda e: (order.index(e["silver"]["table"]), e["name"]))]


class Receiver(http.server.ThreadingHTTPServer):
    """Records every POST body (the alert channel `json://127.0.0.1:<port>/`)."""

    def __init__(self):
        self.bodies: list[bytes] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                server.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def pipeline_env(root: Path, receiver_port: int) -> dict[str, str]:
    """The pipeline suite's test city (tests/city_fixture.py: everything under root, scale 0.005, its ML
    settings), over 95 days and CITY_SOURCES; alerts go to the loopback receiver."""
    return {
        **city_env(root, base={}),
        "CITYSAFE_CITY__DAYS": "95",  # 2025-01-01 .. 2025-04-05: 2025Q1 is complete, so there is a report
        "CITYSAFE_SOURCES": "[" + ", ".join(CITY_SOURCES) + "]",
        "CITYSAFE_ALERTS__CHANNELS": (
            f'[{{name: test_http, url: "json://127.0.0.1:{receiver_port}/", districts: all, min_level: blue}}]'
        ),
        "CITYSAFE_ALERTS__CLOCK": "latest_data",
        "CITYSAFE_ALERTS__NOTIFY_WITHIN_HOURS": "100000",
        # matplotlib's font list of this run (a user cache written before fonts-noto-cjk was installed would
        # hide the CJK font from the Chinese report)
        "MPLCONFIGDIR": str(root / "matplotlib"),
    }


class Deployment(AirflowProcesses):
    """The Airflow components as process groups; CLI calls; the metadata DB read directly."""

    def __init__(self, home: Path, env: dict[str, str]):
        super().__init__(home, env)
        self.db = home / "airflow.db"

    def cli(self, *args: str) -> str:
        proc = subprocess.run(
            [self.airflow, *args], env=self.env, cwd=self.home, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, f"airflow {' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
        return proc.stdout

    def parallel(self, calls: list[list[str]]) -> None:
        """Airflow CLI calls (or whole argv lists) side by side."""
        argvs = [args if Path(args[0]).is_absolute() else [self.airflow, *args] for args in calls]
        procs = [
            subprocess.Popen(argv, env=self.env, cwd=self.home, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
            for argv in argvs
        ]  # fmt: skip
        for args, proc in zip(calls, procs):
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"airflow {' '.join(args)}: exit {proc.returncode}\n{err[-3000:]}"

    def wait_http(self, url: str, deadline: float) -> None:
        import urllib.request

        while time.monotonic() < deadline:
            assert not self.dead(), f"{self.dead()} exited\n{self.report()}"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"{url} did not answer\n{self.report()}")

    def states(self, dag_id: str) -> list[str]:
        """States of the DAG's runs started by hand or by an asset (not by a cron tick)."""
        return [state for dag, _, run_type, state, *_ in self.runs() if dag == dag_id and run_type != "scheduled"]

    def query(self, sql: str, *params) -> list[tuple]:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30) as con:
            return con.execute(sql, params).fetchall()

    def runs(self) -> list[tuple]:
        return self.query("SELECT dag_id, run_id, run_type, state, start_date, end_date FROM dag_run ORDER BY id")

    def tasks(self) -> list[tuple]:
        return self.query("SELECT dag_id, run_id, task_id, state, try_number, start_date, end_date FROM task_instance")

    def report(self) -> str:
        """Failure report: runs, task states, then the end of each failed task's log and of each component's."""
        lines = ["--- dag runs:"] + [" | ".join(map(str, r)) for r in self.runs()]
        lines += ["--- task instances:"] + [" | ".join(map(str, t)) for t in self.tasks()]
        for dag_id, run_id, task_id, state, *_ in self.tasks():
            if state not in ("success", None):
                for log in sorted(
                    (self.home / "logs").glob(f"dag_id={dag_id}/run_id={run_id}/task_id={task_id}/*.log")
                ):
                    lines += [f"--- {log.relative_to(self.home)} (end):", log.read_text(errors="replace")[-5000:]]
        for name in self.procs:
            lines += [f"--- {name}.log (end):", (self.home / f"{name}.log").read_text(errors="replace")[-3000:]]
        return "\n".join(lines)

    def wait(self, done, what: str, deadline: float, poll: float = 2.0) -> None:
        while time.monotonic() < deadline:
            assert not self.dead(), f"{self.dead()} exited\n{self.report()}"
            failed = [r for r in self.runs() if r[3] == "failed" and r[2] != "scheduled"]
            assert not failed, f"DAG runs failed: {failed}\n{self.report()}"
            if done():
                return
            time.sleep(poll)
        raise AssertionError(f"timed out waiting for {what}\n{self.report()}")


@pytest.mark.slow
def test_scheduler_runs_the_whole_chain(airflow_home, airflow_env_for, tmp_path):
    t0 = time.monotonic()
    deadline = t0 + TIMEOUT_S
    cli = citysafe_cli()
    receiver = Receiver()
    port = free_port()
    root = tmp_path / "city"
    env = {
        **airflow_env_for(airflow_home),
        **pipeline_env(root, receiver.server_address[1]),
        "CITYSAFE_BIN": cli,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # one secret for every component (each would otherwise write its own airflow.cfg on first start)
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__CITYSAFE__RETRY_DELAY_SECONDS": "5",
    }
    sources = _city_sources()
    last = sources[-1]  # device_readings: its silver comes last (it needs the device registry)
    af = Deployment(airflow_home, env)
    try:
        af.start("api-server", "api-server", "--port", str(port))  # boots while the CLI calls below run
        # The DAGs into the metadata DB; a run of the city DAG and of each source DAG, the sources still paused.
        af.cli("dags", "reserialize")
        # `airflow dags trigger` for the city; the sources' runs through the client that command calls,
        # in one process (eight CLI start-ups would cost ~10 s of both cores here)
        trigger_sources = [sys.executable, "-c", TRIGGER, *(f"citysafe_source__{s}" for s in sources)]
        af.parallel([["dags", "unpause", CITY_DAG], ["dags", "trigger", CITY_DAG], trigger_sources])
        af.wait_http(f"http://127.0.0.1:{port}/api/v2/monitor/health", deadline)
        t_setup = time.monotonic() - t0
        af.start("scheduler", "scheduler")
        af.start("dag-processor", "dag-processor")

        af.wait(lambda: af.states(CITY_DAG) == ["success"], "the city DAG", deadline)
        t_city = time.monotonic() - t0
        # Every source but one at once: their ingest and silver tasks queue for the one-slot lake pool, in
        # stage order and the registries' silver first (reconcile checks the outcome against the truth).
        first = [s for s in sources if s != last]
        af.cli("dags", "unpause", "-y", "--treat-dag-id-as-regex", f"^citysafe_source__({'|'.join(first)})$")
        af.wait(
            lambda: all(af.states(f"citysafe_source__{s}") == ["success"] for s in first),
            f"{len(first)} sources",
            deadline,
        )
        t_sources = time.monotonic() - t0
        # Then the chain, started by the last source's silver asset alone: ONE marts build over every source.
        # (Unpaused during the burst, the marts would start on the first silver asset and run again for
        # the assets that arrived meanwhile: same outcome, ~1 min more here.)
        af.cli(
            "dags", "unpause", "-y", "--treat-dag-id-as-regex", f"^({'|'.join([*CHAIN, f'citysafe_source__{last}'])})$"
        )

        def chain_done() -> bool:
            runs = af.runs()
            if any(r[3] not in ("success", "failed") for r in runs):
                return False
            if af.query("SELECT count(*) FROM asset_dag_run_queue")[0][0]:
                return False  # an asset event still waits to start a run
            return all(any(r[0] == dag_id and r[3] == "success" for r in runs) for dag_id in CHAIN)

        af.wait(chain_done, "marts -> ml -> report -> alerts", deadline)
        time.sleep(3)  # nothing new starts after a quiet moment
        af.wait(chain_done, "a quiet deployment", deadline)
        wall = time.monotonic() - t0
        runs, tasks = af.runs(), af.tasks()
    except BaseException:
        print(af.report())
        raise
    finally:
        af.stop()
        receiver.shutdown()

    summary = {}
    for dag_id, _, run_type, state, *_ in runs:
        summary.setdefault(dag_id, []).append(f"{run_type}:{state}")
    timing = {}
    for dag_id, _, task_id, _, _, start, end in tasks:
        if start and end:
            seconds = (_ts(end) - _ts(start)).total_seconds()
            timing[f"{dag_id}.{task_id}"] = timing.get(f"{dag_id}.{task_id}", 0) + seconds
    print(
        f"\nscheduler run: {wall:.0f} s wall (setup {t_setup:.0f} s, city DAG done at {t_city:.0f} s, "
        f"{len(sources) - 1} sources at {t_sources:.0f} s); "
        f"{len(runs)} DAG runs, {len(tasks)} task instances\n  runs: {summary}\n  task seconds: "
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(timing.items(), key=lambda kv: -kv[1]))
    )

    # A cron tick that falls inside the test (the hourly alerts, say) adds a scheduled run: reported, not
    # judged (before the marts exist, an alerts run fails: no warehouse). Everything else succeeded.
    started = {r[1] for r in runs if r[2] != "scheduled"}
    assert {r[3] for r in runs if r[1] in started} == {"success"}, summary
    assert {t[3] for t in tasks if t[1] in started} == {"success"}, tasks
    by_dag = {dag_id: [r for r in runs if r[0] == dag_id] for dag_id in (CITY_DAG, *CHAIN)}
    assert [r[2] for r in by_dag[CITY_DAG] if r[2] != "scheduled"] == ["manual"]
    for source in sources:
        assert [r[2] for r in runs if r[0] == f"citysafe_source__{source}" and r[2] != "scheduled"] == ["manual"]
    for dag_id in CHAIN:  # started by assets
        assert {r[2] for r in by_dag[dag_id]} - {"scheduled"} == {"asset_triggered"}, (dag_id, summary)

    lake = root / "lake"
    assert Path(env["CITYSAFE_WAREHOUSE_PATH"]).is_file()
    assert (lake / "gold").is_dir() and any((lake / "gold").glob("*/_delta_log"))
    assert any((root / "mlflow").iterdir())
    assert (lake / "reports" / "2025Q1" / "report_en.pdf").is_file()
    assert receiver.bodies, "no alert notification reached the loopback channel"
    assert all(json.loads(body)["message"] for body in receiver.bodies)  # Apprise's json:// payload
    assert (lake / "alerts" / "alert" / "_delta_log").is_dir()
    # one run summary per DAG run, written by every task of the run under its Airflow run id
    assert len(list((lake / "runs").iterdir())) >= len(sources) + 1


def _ts(text: str):
    from datetime import datetime

    return datetime.fromisoformat(re.sub(r"\.\d+", "", str(text)))
