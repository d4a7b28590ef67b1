"""Airflow beyond the LocalExecutor: the CeleryExecutor with a Redis broker and PostgreSQL metadata runs one
source DAG of the tiny synthetic city end to end with the REAL pipeline CLI.

Everything is real and local: Debian's redis-server (127.0.0.1, a free port, no persistence) and a throw-away
PostgreSQL (citysafe/pg_local.py, the server the connector tests use) holding Airflow's metadata DB and
Celery's result backend; then `airflow db migrate`, the api-server (Airflow 3 workers run tasks through its
execution API), the scheduler, the dag-processor and ONE `airflow celery worker` (concurrency 1).

The DAG is the weather station's (`citysafe_source__weather_daily`: ingest -> silver, 90 rows, the cheapest
source; its silver needs no reference table). The city's deliveries come from `citysafe generate` run
directly, as the city DAG's first task would. Asserted: the manual DAG run succeeded in the PostgreSQL
metadata DB; the scheduler that queued each task ran the CeleryExecutor; each task instance went through
Celery (its Celery task id recorded by the scheduler, a SUCCESS row in the result backend, named in the
worker's log, queue `default`) and succeeded on the first try, or after tries that never started the
pipeline command (printed: an Airflow hiccup on a loaded CI machine); the silver table holds exactly
the delivered rows (the generator's truth count, every value of the CSV) and the run summary carries the
Airflow run id.

Skipped when redis-server or the PostgreSQL server binaries are missing (fails instead when $CI is set: CI
installs them, .ci/run). The CLI is $CITYSAFE_BIN when set, else <repo>/.venv/pipeline/bin/citysafe.
"""

from __future__ import annotations

import csv
import glob
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from airflow_deployment import (  # tests/ is on sys.path (tests/conftest.py); stdlib and pytest only
    AirflowProcesses,
    citysafe_cli,
    free_port,
)

from city_fixture import city_env  # tests/ is on sys.path (tests/conftest.py); stdlib only

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE = "weather_daily"
DAG_ID = f"citysafe_source__{SOURCE}"
TIMEOUT_S = 300
METADATA_DB = "airflow"
# The deployment's setup after `airflow db migrate`, in one Airflow process: the lake pool (as
# scripts/airflow_env.sh's citysafe_airflow_db_migrate sets it: one slot), then, as soon as the dag-processor
# has stored the DAG, a manual run of it (the client `airflow dags trigger` calls), and the DAG unpaused.
SETUP = """
import sys, time
from airflow.api.client import get_current_api_client
from airflow.exceptions import DagNotFound
from airflow.models.dag import DagModel
from airflow.utils.session import create_session

dag_id, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
client = get_current_api_client()
client.create_pool(name="citysafe_lake", slots=1, include_deferred=False,
                   description="CitySafe: tasks that write the lake, one at a time")
while True:
    try:
        client.trigger_dag(dag_id=dag_id, triggering_user_name="pytest")
        break
    except DagNotFound:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.5)
with create_session() as session:
    session.get(DagModel, dag_id).is_paused = False
"""


def _missing(what: str) -> None:
    """Skip (or fail under CI, which installs everything: .ci/run) for a missing system binary."""
    if os.environ.get("CI"):
        pytest.fail(what)
    pytest.skip(what)


def _pg_local():
    """citysafe/pg_local.py, the tests' throw-away PostgreSQL (stdlib only), loaded from its file: this venv
    has no pipeline package, and the repository root stays off sys.path here (see conftest.py)."""
    name = "citysafe_pg_local"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "citysafe" / "pg_local.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


def _attempts_that_ran_the_command(home: Path, tasks: list[tuple]) -> list[str]:
    """Logs of the tries before each task's last one in which BashOperator started the citysafe command."""
    ran = []
    for _, run_id, task_id, _, try_number, *_ in tasks:
        for attempt in range(1, try_number):
            for log in (home / "logs").glob(
                f"dag_id={DAG_ID}/run_id={glob.escape(run_id)}/task_id={task_id}/attempt={attempt}.log"
            ):
                if "Running command" in log.read_text(errors="replace"):
                    ran.append(str(log.relative_to(home)))
    return ran


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no file)"


class Redis:
    """redis-server on 127.0.0.1 in its own folder and process group: no RDB snapshots, no AOF."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True)
        self.folder, self.port = folder, free_port()
        self.log = folder / "redis.log"
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(folder), "--logfile", str(self.log), "--daemonize", "no", "--databases", "1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def wait_ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"redis-server exited {self.proc.returncode}\n{_tail(self.log)}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server did not answer PING on port {self.port}\n{_tail(self.log)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


class Deployment(AirflowProcesses):
    """The Airflow components as process groups, CLI calls, and the PostgreSQL metadata DB read directly."""

    def __init__(self, home: Path, env: dict[str, str], pg_url: str, extra_logs: dict[str, Path]):
        super().__init__(home, env)
        self.pg_url, self.extra_logs = pg_url, extra_logs

    def cli(self, *args: str, timeout: float = 180) -> None:
        """An Airflow CLI call; must exit 0."""
        proc = subprocess.run(
            [self.airflow, *args], env=self.env, cwd=self.home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=timeout,
        )  # fmt: skip
        assert proc.returncode == 0, f"airflow {' '.join(args)}: exit {proc.returncode}\n{proc.stdout[-4000:]}"

    def run_python(self, script: str, *args: str, timeout: float = TIMEOUT_S) -> None:
        """A Python script in this (the Airflow) venv with the deployment's environment; must exit 0."""
        proc = subprocess.run(
            [sys.executable, "-c", script, *args], env=self.env, cwd=self.home, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=timeout,
        )  # fmt: skip
        assert proc.returncode == 0, f"setup script: exit {proc.returncode}\n{proc.stdout[-4000:]}\n{self.report()}"

    def query(self, sql: str, *params) -> list[tuple]:
        import psycopg2

        con = psycopg2.connect(self.pg_url, connect_timeout=5)
        try:
            with con.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            con.close()

    def table_exists(self, name: str) -> bool:
        return bool(self.query("SELECT to_regclass(%s) IS NOT NULL", name)[0][0])

    def runs(self) -> list[tuple]:
        if not self.table_exists("dag_run"):
            return []
        return self.query("SELECT dag_id, run_id, run_type, state FROM dag_run ORDER BY id")

    def tasks(self) -> list[tuple]:
        if not self.table_exists("task_instance"):
            return []
        return self.query(
            "SELECT dag_id, run_id, task_id, state, try_number, hostname, queue, external_executor_id,"
            " queued_by_job_id FROM task_instance ORDER BY start_date"
        )

    def report(self) -> str:
        """Failure report: runs and task instances, the end of each task's log and of every component's."""
        try:
            lines = ["--- dag runs:"] + [" | ".join(map(str, r)) for r in self.runs()]
            lines += ["--- task instances:"] + [" | ".join(map(str, t)) for t in self.tasks()]
        except Exception as exc:  # noqa: BLE001 - the report must not hide the failure it reports
            lines = [f"--- metadata DB not readable: {exc!r}"]
        for log in sorted((self.home / "logs").glob(f"dag_id={DAG_ID}/**/*.log")):
            lines += [f"--- {log.relative_to(self.home)} (end):", _tail(log, 5000)]
        for name in self.procs:
            lines += [f"--- {name}.log (end):", _tail(self.home / f"{name}.log")]
        for name, path in self.extra_logs.items():
            lines += [f"--- {name} (end):", _tail(path, 1500)]
        return "\n".join(lines)

    def wait(self, done, what: str, deadline: float, poll: float = 1.0) -> None:
        while time.monotonic() < deadline:
            assert not self.dead(), f"{self.dead()} exited\n{self.report()}"
            if done():
                return
            time.sleep(poll)
        raise AssertionError(f"timed out waiting for {what}\n{self.report()}")


def _pipeline_python(cli: str) -> str:
    """The CLI's interpreter (its shebang: a console script), else the python beside it."""
    with open(cli, "rb") as f:
        first = f.readline().decode(errors="replace")
    if first.startswith("#!") and "python" in Path(first[2:].split()[0]).name:
        return first[2:].split()[0]
    return str(Path(cli).parent / "python")


def _silver_rows(cli: str, table: Path) -> list[dict]:
    """The silver table's rows, read with delta-rs in the pipeline's venv (this venv has no Delta reader)."""
    script = (
        "import json, os, sys\n"
        "from deltalake import DeltaTable\n"
        "rows = DeltaTable(sys.argv[1]).to_pyarrow_table().to_pylist()\n"
        "sys.stdout.write(json.dumps(rows, default=str))\n"
        "sys.stdout.flush()\n"
        "os._exit(0)\n"  # delta-rs' runtime can abort at interpreter exit
    )
    proc = subprocess.run(
        [_pipeline_python(cli), "-c", script, str(table)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_celery_worker_runs_a_source_dag(airflow_env_for, tmp_path, tmp_path_factory):
    if shutil.which("redis-server") is None:
        _missing("redis-server not found (Debian: apt-get install redis-server)")
    pg_local = _pg_local()
    if pg_local.find_bin_dir() is None:
        _missing("PostgreSQL server binaries not found (apt-get install postgresql, or set PG_BIN_DIR)")
    cli = citysafe_cli()
    t0 = time.monotonic()
    deadline = t0 + TIMEOUT_S
    home = tmp_path / "airflow"
    home.mkdir()
    root = tmp_path / "city"

    # The city's deliveries (the city DAG's `generate`), while the broker and the metadata DB start.
    city = {**city_env(root, base={}), "CITYSAFE_SOURCES": f"[{SOURCE}]"}
    generate = subprocess.Popen(
        [cli, "generate", "--run-id", "setup"],
        env={"PATH": os.environ["PATH"], "SPARK_LOCAL_IP": "127.0.0.1", **city},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    redis = Redis(tmp_path / "redis")
    temp_root = tmp_path_factory.getbasetemp()
    if temp_root.parent.name.startswith("pytest-of-"):  # pytest's own 0700 root (as root, postgres runs as nobody)
        temp_root = temp_root.parent
    pg = None
    af = None
    try:
        (tmp_path / "postgres").mkdir()
        pg = pg_local.start_server(tmp_path / "postgres", allow_chmod=temp_root)
        pg_auth = f"{urllib.parse.quote(pg.superuser)}:{urllib.parse.quote(pg.password)}@127.0.0.1:{pg.port}"
        import psycopg2

        con = psycopg2.connect(f"postgresql://{pg_auth}/postgres", connect_timeout=5)
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(f"CREATE DATABASE {METADATA_DB}")
        con.close()
        pg_url = f"postgresql://{pg_auth}/{METADATA_DB}"
        redis.wait_ready()
        out, _ = generate.communicate(timeout=120)
        assert generate.returncode == 0, f"citysafe generate: exit {generate.returncode}\n{out[-4000:]}"

        api_port = free_port()
        env = {
            **airflow_env_for(home),
            **city,
            "CITYSAFE_BIN": cli,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{pg_auth}/{METADATA_DB}",
            "AIRFLOW__CELERY__BROKER_URL": redis.url,
            # the driver named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, not in this venv
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{pg_auth}/{METADATA_DB}",
            "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",  # no process pool in the scheduler to send 1-2 tasks
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            # one secret for every component (each would otherwise write its own airflow.cfg on first start)
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__CITYSAFE__RETRY_DELAY_SECONDS": "5",
        }
        af = Deployment(home, env, pg_url, {"redis.log": redis.log, "postgres server.log": pg.log_file})
        af.cli("db", "migrate")
        t_migrated = time.monotonic() - t0
        af.start("api-server", "api-server", "--port", str(api_port))
        af.start("dag-processor", "dag-processor")
        af.start("scheduler", "scheduler")
        af.start("celery-worker", "celery", "worker", "--concurrency", "1", "--skip-serve-logs",
                 "--without-mingle", "--without-gossip")  # fmt: skip
        # The lake pool, then (once the dag-processor stored the DAG) a run of it and the DAG unpaused: one
        # process instead of `airflow pools set`, `dags trigger` and `dags unpause` (~8 s of both cores here).
        af.run_python(SETUP, DAG_ID, str(TIMEOUT_S))
        t_triggered = time.monotonic() - t0

        def finished() -> bool:
            states = [state for dag, _, run_type, state in af.runs() if dag == DAG_ID and run_type == "manual"]
            assert "failed" not in states, f"the DAG run failed\n{af.report()}"
            if states != ["success"]:
                return False
            # and the worker done with each Celery task (it records the result after the task's own end)
            [(pending,)] = af.query(
                "SELECT count(*) FROM task_instance ti LEFT JOIN celery_taskmeta c ON c.task_id = ti.external_executor_id"
                " WHERE ti.dag_id = %s AND c.status IS DISTINCT FROM 'SUCCESS'",
                DAG_ID,
            )
            return pending == 0

        af.wait(finished, f"the {DAG_ID} run", deadline)
        wall = time.monotonic() - t0
        [(run_id,)] = af.query("SELECT run_id FROM dag_run WHERE dag_id = %s AND run_type = 'manual'", DAG_ID)
        tasks = [t for t in af.tasks() if t[0] == DAG_ID and t[1] == run_id]
        schedulers = [job for (job,) in af.query("SELECT id FROM job WHERE job_type = 'SchedulerJob'")]
        celery_results = dict(af.query("SELECT task_id, status FROM celery_taskmeta"))
        worker_log = af.log("celery-worker")
        scheduler_log = af.log("scheduler")
        # A retried task: the report carries every attempt's log (the first one's error), read before teardown.
        retried = af.report() if any(t[4] != 1 for t in tasks) else ""
        command_failed = _attempts_that_ran_the_command(home, tasks)
    except BaseException as exc:
        if af is not None and not isinstance(exc, AssertionError):  # the assertions carry the report
            print(af.report())
        raise
    finally:
        if af is not None:
            af.stop()
        redis.stop()
        if pg is not None:
            pg.stop()
        if generate.poll() is None:
            generate.kill()

    from airflow.utils.net import get_hostname

    print(
        f"\ncelery executor: {wall:.0f} s wall (metadata DB migrated at {t_migrated:.0f} s, "
        f"DAG triggered at {t_triggered:.0f} s); tasks: {[(t[2], t[3], t[5], t[6], t[7]) for t in tasks]}"
    )
    report = f"tasks: {tasks}\nscheduler jobs: {schedulers}\ncelery results: {celery_results}\n--- worker log (end):\n{worker_log[-3000:]}"
    # The DAG's two tasks.
    assert sorted(t[2] for t in tasks) == ["ingest", "silver"], report
    # Every task succeeded, on its first try, or after a try that never started the pipeline command (an
    # Airflow / Celery hiccup on a loaded machine, which the DAG's retries exist for: reported, not hidden).
    # A retried try that had started the command fails the test.
    assert {t[3] for t in tasks} == {"success"}, report
    assert not command_failed, f"earlier tries ran the pipeline command: {command_failed}\n{report}\n{retried}"
    if retried:
        print(f"\nretried before the pipeline command ran (accepted):\n{retried[-6000:]}")
    # One scheduler, and the only executor it loaded is the CeleryExecutor (job.executor_class stays empty in
    # Airflow 3: its log says which executors it loaded).
    assert len(schedulers) == 1, report
    loaded = re.findall(r"Loaded executor: (\S+)", scheduler_log)
    assert loaded and set(loaded) == {":CeleryExecutor:"}, loaded
    for _, _, task_id, _, _, hostname, queue, celery_id, queued_by in tasks:
        # queued by that scheduler, through Celery's default queue
        assert queued_by == schedulers[0] and queue == "default", report
        # the Celery task: recorded by the scheduler, run by the worker (its log names it and the Airflow task),
        # its result stored in the PostgreSQL result backend
        assert celery_id and celery_results.get(celery_id) == "SUCCESS", report
        executed = [line for line in worker_log.splitlines() if f"[{celery_id}] Executing workload in Celery" in line]
        assert len(executed) == 1 and f"task_id='{task_id}'" in executed[0] and DAG_ID in executed[0], report
        assert f"Task execute_workload[{celery_id}] succeeded" in worker_log, report
        assert hostname == get_hostname(), report  # the worker's host, by the same [core] hostname_callable

    # The lake: the run summary under the Airflow run id, and silver holding exactly the delivered rows.
    runs = root / "lake" / "runs"
    folder = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._")  # citysafe/runs.py sanitize_run_id
    assert sorted(p.name for p in runs.iterdir()) == sorted(["setup", folder])  # `generate`, then the DAG run
    summary = json.loads((runs / folder / "summary.json").read_text())
    assert {summary["stages"][stage]["status"] for stage in ("ingest", "silver")} == {"ok"}, summary
    truth = json.loads((root / "synthetic" / "truth" / "expected_counts.json").read_text())["sources"][SOURCE]
    silver = _silver_rows(cli, root / "lake" / "silver" / SOURCE)
    assert len(silver) == truth["published"] == truth["rows_delivered"] > 0, truth
    delivered = {}  # the deliveries (sources/weather_daily.yaml: weather/weather_daily*.csv), by primary key
    for path in sorted((root / "synthetic" / "weather").glob("weather_daily*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            delivered.update({(r["station_id"], r["date"]): r for r in csv.DictReader(f)})
    assert {(r["station_id"], r["date"]) for r in silver} == set(delivered)
    for row in silver:
        sent = delivered[(row["station_id"], row["date"])]
        for column in ("precip_mm", "tmax_c", "tmin_c", "wind_max_ms"):
            assert row[column] == (float(sent[column]) if sent[column] else None), (row, sent)
    assert {row["_batch_id"] for row in silver} == set(summary["tables"][f"silver.{SOURCE}[{SOURCE}]"]["batches"])
