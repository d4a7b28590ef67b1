"""Every exit code the README documents is reachable, and each expected failure is one line.

The CLI runs in-process (click's CliRunner) where a subprocess adds nothing; the lake lock needs a
second process, so that test starts one.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from alerts.run import DeliveryError
from citysafe import errors
from citysafe.errors import EXIT_CODES
from pipeline.cli import main


def _one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("citysafe: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_the_documented_codes_are_the_ones_in_errors():
    assert set(EXIT_CODES) == {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
    assert {
        cls.exit_code
        for cls in (
            errors.ConfigurationError,
            errors.QualityGateError,
            errors.ReconcileError,
            errors.InputError,
            errors.MartsError,
            errors.LakeBusyError,
            DeliveryError,
            errors.StorageError,
        )
    } == {2, 3, 4, 5, 6, 7, 8, 9}


def test_exit_0_ok(cli):
    code, out, _ = cli("config")
    assert code == 0 and json.loads(out)["engine"] == "sail"


def test_exit_1_unexpected_error_keeps_the_traceback(cli, monkeypatch):
    from citysafe import reconcile

    def broken(*_a, **_k):
        raise RuntimeError("a bug")

    monkeypatch.setattr(reconcile, "against_truth", broken)
    code, _, err = cli("reconcile", "police_incidents")
    assert code == 1
    assert "Traceback" in err and "citysafe: error: unexpected error: RuntimeError('a bug')" in err


def test_exit_2_engine_that_cannot_be_reached(cli):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    code, _, err = cli("reference", env={"CITYSAFE_ENGINE": f"sc://127.0.0.1:{port}"})
    assert code == 2 and time.monotonic() - started < 30
    assert f"cannot reach the Spark Connect server at sc://127.0.0.1:{port}" in _one_line_error(err)


HEADER = b"pattern,language,match,subcategory_code,weight,since,note\n"


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"pattern,language\n", "missing column(s)"),
        (
            "pattern,language,match,subcategory_code,weight\n火灾,zh,keyword,FS0101,0.9\n".encode("gbk"),
            "not a readable UTF-8 rules CSV",
        ),
        (b'pattern,language,match,subcategory_code,weight\n"fire,en,keyword,FS0101,0.9\n', "not a readable"),
        (HEADER + b"fire,en,contains,FS0101,2,1.0,\n", "row 2: weight 2.0 outside (0, 1]"),
    ],
)
def test_exit_2_malformed_classifier_file(tmp_path, content, expected):
    from spark_jobs.text_classifier import load_rules

    (tmp_path / "broken.csv").write_bytes(content)
    with pytest.raises(errors.ConfigurationError) as info:
        load_rules("broken", tmp_path)
    assert info.value.exit_code == 2
    assert str(tmp_path / "broken.csv") in str(info.value) and expected in str(info.value)


def test_exit_2_unknown_source(cli):
    code, _, err = cli("ingest", "polise_incidents")
    assert code == 2 and "unknown source 'polise_incidents'" in _one_line_error(err)


def test_exit_4_lake_that_does_not_reconcile(cli, built_city, tmp_path):
    truth = tmp_path / "syn" / "truth"
    truth.mkdir(parents=True)
    expected = json.loads((built_city.truth_dir / "expected_counts.json").read_text())
    expected["sources"]["police_incidents"]["published"] += 1
    (truth / "expected_counts.json").write_text(json.dumps(expected))
    code, _, err = cli("reconcile", "police_incidents", env={"CITYSAFE_LAKE_ROOT": str(built_city.lake)})
    assert code == 4
    assert "does not reconcile" in _one_line_error(err) and "police_incidents" in err
    # a lake that has not loaded a source yet: the same exit, naming what is missing (no traceback)
    code, _, err = cli("reconcile", "police_incidents", env={"CITYSAFE_SYNTHETIC_ROOT": str(built_city.synthetic)})
    assert code == 4 and "police_incidents: not in the lake yet" in _one_line_error(err)


def test_exit_5_unreadable_delivery(cli, tmp_path):
    folder = tmp_path / "syn" / "police"
    folder.mkdir(parents=True)
    (folder / "police_incidents_2025-01.csv").write_bytes("case_no,备注\n1,江岸区\n".encode("gbk"))
    code, _, err = cli("ingest", "police_incidents")
    assert code == 5 and "police_incidents_2025-01.csv: not valid utf-8" in _one_line_error(err)


def test_exit_6_marts_on_a_lake_without_silver_tables(cli, tmp_path):
    code, _, err = cli("build-marts")
    assert code == 6 and "silver table(s) missing under" in _one_line_error(err)
    assert not (tmp_path / "wh" / "marts.duckdb").exists()
    # the alerts read the marts: without them, the same exit and a pointer to what builds them
    code, _, err = cli("alerts")
    assert code == 6 and "run `citysafe build-marts`" in _one_line_error(err)


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from citysafe.lake_lock import lake_lock
    with lake_lock(Path(sys.argv[1]), run_id="holder-run"):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _hold_lock(lake, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lake), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_exit_7_lake_locked_by_another_run(cli, tmp_path):
    holder = _hold_lock(tmp_path / "lake", 60)
    try:
        code, _, err = cli("maintain")
        line = _one_line_error(err)
        assert code == 7 and "is locked by run holder-run" in line and f"pid {holder.pid}" in line
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the killed holder's lock: no stale lock to clean up
    assert cli("maintain")[0] == 0


def test_exit_8_notification_not_delivered(cli):
    from loopback_servers import HttpReceiver

    with HttpReceiver() as http:
        http.refuse_all = True
        env = {
            "CITYSAFE_ALERTS__RETRIES": "1",
            "CITYSAFE_ALERTS__RETRY_BACKOFF_SECONDS": "0",
            "CITYSAFE_ALERTS__CHANNELS": f'[{{name: stewards, url: "{http.url("ops")}", pipeline_failures: true}}]',
        }
        code, _, err = cli("alerts", "notify-failure", "--dag", "d", "--task", "t", "--airflow-run", "r", env=env)
    line = _one_line_error(err)
    assert code == 8 and "not delivered to stewards" in line and http.requests == 2  # tried, then retried once


def test_exit_9_object_storage_that_cannot_be_reached(cli, tmp_path):
    """A lake on S3 whose endpoint does not answer: one line naming the storage, not a traceback. The
    outage in the middle of a run is tests/test_lake_s3.py."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "CITYSAFE_LAKE_ROOT": "s3://citysafe/lake",
        "CITYSAFE_STATE_ROOT": str(tmp_path / "state"),
        "CITYSAFE_S3__ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "citysafe-test",
        "AWS_SECRET_ACCESS_KEY": "citysafe-test-secret",
    }
    started = time.monotonic()
    code, _, err = cli("history", "silver/incident", env=env)
    line = _one_line_error(err)
    assert code == 9 and "object storage" in line and "run the same command again" in line, err
    assert time.monotonic() - started < 60


def test_a_second_run_can_wait_for_the_lock(cli, tmp_path):
    holder = _hold_lock(tmp_path / "lake", 2)
    try:
        code, _, err = cli("maintain", env={"CITYSAFE_LAKE_LOCK_WAIT_SECONDS": "60"})
        assert code == 0 and "waiting up to 60s for the lake lock held by run holder-run" in err
    finally:
        holder.wait(timeout=30)


def test_every_exit_code_is_in_the_help(cli):
    code, out, _ = cli("--help")
    assert code == 0
    for number, text in EXIT_CODES.items():
        assert f"{number}  {text}" in out


def test_concurrent_commits_to_one_table_fail_with_one_line(spark, tmp_path):
    """Two writers MERGE into the same table at once (bypassing the lake lock): the loser's commit
    fails atomically and says so in one line with a retry hint; the winners' rows are all there."""
    import threading

    from deltalake import DeltaTable

    from citysafe import delta_io
    from citysafe.delta_io import Column, TableSpec

    spec = TableSpec(
        "race", tmp_path / "race", (Column("k", "bigint", nullable=False), Column("v", "string")), key=("k",)
    )
    delta_io.append(spark.createDataFrame([(0, "seed")], "k bigint, v string"), spec)
    outcomes: dict[int, object] = {}

    def write(writer: int) -> None:
        rows = [(k, f"w{writer}") for k in range(writer * 1000, writer * 1000 + 300)]
        try:
            outcomes[writer] = delta_io.merge_upsert(spark, spark.createDataFrame(rows, "k bigint, v string"), spec)
        except Exception as exc:  # noqa: BLE001 - collected and checked below
            outcomes[writer] = exc

    for round_no in range(8):
        threads = [threading.Thread(target=write, args=(round_no * 2 + i + 1,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if any(isinstance(o, Exception) for o in outcomes.values()):
            break
    lost = {w: o for w, o in outcomes.items() if isinstance(o, Exception)}
    assert lost, "no commit conflict in 8 rounds of concurrent MERGEs"
    for exc in lost.values():
        assert isinstance(exc, errors.LakeBusyError), repr(exc)
        assert "another writer committed first" in str(exc) and "run the command again" in str(exc)
        assert "\n" not in str(exc)
    keys = set(DeltaTable(str(spec.path)).to_pyarrow_table(columns=["k"])["k"].to_pylist())
    for writer in outcomes:
        written = set(range(writer * 1000, writer * 1000 + 300))
        assert written <= keys if writer not in lost else not written & keys


def test_run_and_stage_commands_share_the_stage_graph():
    """`citysafe run` walks pipeline.stages.STAGES; every stage has a command or is part of run."""
    from pipeline import stages

    assert stages.STAGE_NAMES == (
        "generate",
        "reference",
        "ingest",
        "silver",
        "marts",
        "reconcile",
        "ml",
        "report",
        "alerts",
    )
    commands = set(main.commands)
    assert {
        "generate",
        "reference",
        "ingest",
        "silver",
        "build-marts",
        "reconcile",
        "run",
        "stages",
        "ml",
        "report",
        "alerts",
    } <= (commands)
    assert {"train", "predict", "evaluate"} == set(main.commands["ml"].commands)


def test_stages_command_lists_reads_and_writes(cli):
    code, out, _ = cli("stages")
    assert code == 0
    assert "marts: dbt build" in out and "reads:  silver/*, dbt/" in out
