"""The lake on S3-compatible object storage (`lake_root: s3://bucket/prefix`), against a real S3 server
on 127.0.0.1 (moto's, behind a socat relay the test cuts; tests/s3_server.py).

One tiny city, two runs of `citysafe run`:
1. the object store goes away in the middle of the run's first lake writes to silver (the relay and
   every connection through it are killed, and stay down): the run must fail with exit 9 and one line
   saying the storage failed, no traceback;
2. the store comes back (same endpoint, same objects) and `citysafe run` again completes: every count
   reconciles with the generator's truth (the reconcile stage fails the run otherwise), bronze holds
   each delivered row once, and the marts read the lake from S3 (DuckDB's httpfs).
Nothing of the lake is on the local disk: the state_root holds only the host's own folders.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
from s3_server import S3Server

from city_fixture import CLI, city_env

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("socat") is None, reason="needs socat (Debian)")]

BUCKET = "citysafe"
# Four of the eight sources keep the test at a few minutes (moto answers every request in Python) and still
# take each kind of silver job through the store: incidents, report-to-incident links (the GBK hotline),
# a registry and the device readings with their hourly table.
CITY_SOURCES = ["police_incidents", "hotline_tickets", "device_registry", "device_readings"]


@pytest.fixture
def s3(tmp_path):
    server = S3Server(log_path=tmp_path / "moto.log").start()
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


def _env(root, s3: S3Server) -> dict:
    env = city_env(root)
    env.update(s3.env())
    env["CITYSAFE_LAKE_ROOT"] = f"s3://{BUCKET}/lake"
    env["CITYSAFE_STATE_ROOT"] = str(root / "state")
    env["CITYSAFE_LAKE_LOCK_WAIT_SECONDS"] = "0"
    env["CITYSAFE_SOURCES"] = "[" + ", ".join(CITY_SOURCES) + "]"
    return env


def _wait_for(predicate, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, "the run ended before the point the test waits for"
        assert time.monotonic() < deadline, "timed out waiting for the run to reach its silver writes"
        time.sleep(0.2)


def test_a_city_on_s3_survives_a_storage_outage_mid_write(tmp_path, s3, monkeypatch):
    env = _env(tmp_path, s3)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # for this process's own reads below
        monkeypatch.setenv(name, env[name])
    err_path = tmp_path / "run1.err"

    # Run 1: cut the store as soon as silver stages its first write-audit-publish candidates (ingest and
    # reference are done, silver is writing), and keep it down until the run gives up.
    with open(err_path, "w") as err:
        proc = subprocess.Popen([str(CLI), "run", "--run-id", "outage"], env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            _wait_for(lambda: bool(s3.keys(BUCKET, "lake/staging/")), proc, 600)
            s3.relay.cut()
            cut_at = time.monotonic()
            code = proc.wait(timeout=600)
            print(f"the run gave up {time.monotonic() - cut_at:.1f} s after the outage")
        finally:
            if proc.poll() is None:
                proc.kill()
    stderr = err_path.read_text()
    assert code == 9, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    last = [line for line in stderr.splitlines() if line.startswith("citysafe: error:")]
    assert len(last) == 1 and "object storage" in last[0], stderr[-2000:]

    # Run 2: the same endpoint is back with every object written before; the run completes.
    s3.relay.restore()
    proc = subprocess.run([str(CLI), "run", "--run-id", "after"], env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]

    # The lake is in the bucket: landing, bronze, silver, gold and the lake's state.
    keys = s3.keys(BUCKET, "lake/")
    areas = {k.split("/")[1] for k in keys}
    assert {"landing", "bronze", "silver", "gold", "_state"} <= areas, areas
    # ... and not on the local disk: the state_root holds only the host's folders.
    local = {p.name for p in (tmp_path / "state").iterdir()}
    assert not local & {"landing", "bronze", "silver", "gold", "staging"}, local
    assert {"runs", "gx"} <= local, local

    # Every count reconciles (reconcile is a stage of `citysafe run`; it would have failed the run),
    # and the summary says so for run 2.
    summary = json.loads((tmp_path / "state" / "runs" / "after" / "summary.json").read_text())
    assert summary["stages"]["reconcile"]["status"] in ("ok", "skipped"), summary["stages"]["reconcile"]
    # Three times: a read of the S3 lake once left pyarrow's read-ahead running at exit, and about one
    # `citysafe reconcile` in three aborted after its work was done (exit -6; see delta_io.table_rows).
    for _ in range(3):
        check = subprocess.run([str(CLI), "reconcile"], env=env, capture_output=True, text=True, timeout=300)
        assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]

    # Bronze holds each delivered row once: its rows equal the landed manifests' rows, source by source.
    from citysafe import delta_io
    from citysafe.config import load_settings

    settings = load_settings(environ=env)
    for source_dir in sorted(settings.landing_dir.iterdir()):
        manifests = [json.loads(m.read_text()) for m in source_dir.glob("*/manifest.json")]
        landed = sum(m["rows"] for m in manifests)
        bronze = delta_io.open_table(settings.bronze_dir / source_dir.name).to_pyarrow_table(columns=["_batch_id"])
        assert bronze.num_rows == landed, f"{source_dir.name}: bronze {bronze.num_rows} rows, landed {landed}"
        assert len(set(bronze.column("_batch_id").to_pylist())) == len(manifests), source_dir.name

    # The marts were built from the lake on S3 (DuckDB's httpfs): one row per silver incident record,
    # read here with delta-rs.
    import duckdb

    silver_incidents = delta_io.open_table(settings.silver_dir / "incident").to_pyarrow_table(columns=["incident_id"])
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        records = con.execute("select count(*), count(distinct incident_id) from int_incident_event_records").fetchone()
    assert silver_incidents.num_rows > 0
    assert records == (silver_incidents.num_rows, silver_incidents.num_rows)
