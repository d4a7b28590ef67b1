"""citysafe.storage against a real S3 server on 127.0.0.1 (moto's, tests/s3_server.py): S3Path does what
the pipeline asks of a folder, delta-rs and DuckDB read the same table, and the configuration puts only
the lake on object storage. The whole city on S3, with an outage, is tests/test_lake_s3.py."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest
from s3_server import S3Server

from citysafe import delta_io, storage, warehouse
from citysafe.config import ConfigError, load_settings
from citysafe.delta_io import Column, TableSpec
from citysafe.runs import write_json_atomic
from citysafe.storage import S3Path, S3Store


@pytest.fixture(scope="module")
def s3():
    server = S3Server().start()
    server.client().create_bucket(Bucket="lake")
    yield server
    server.stop()


@pytest.fixture
def root(s3, monkeypatch, request):
    for name, value in s3.env().items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    store = S3Store(endpoint_url=s3.endpoint_url, region="us-east-1")
    return S3Path(f"s3://lake/{request.node.name}", store)


def test_s3path_reads_writes_lists_and_removes_like_a_folder(root, s3):
    assert not root.exists() and list(root.iterdir()) == []
    (root / "landing" / "b1" / "data.csv").write_bytes(b"a,b\n1,2\n")
    write_json_atomic(root / "landing" / "b1" / "manifest.json", {"rows": 1})
    (root / "landing" / "b2" / "data.csv").write_text("only data, no manifest yet")

    assert (root / "landing" / "b1" / "data.csv").read_bytes() == b"a,b\n1,2\n"
    assert (root / "landing" / "b1").is_dir() and (root / "landing" / "b1" / "data.csv").is_file()
    assert [p.parent.name for p in (root / "landing").glob("*/manifest.json")] == ["b1"]  # complete batches
    assert sorted(p.name for p in (root / "landing").iterdir()) == ["b1", "b2"]
    assert str(root / "landing") == f"s3://lake/{root.name}/landing" and (root / "x").parent == root
    assert (root / "landing" / "b1").relative_to(root).as_posix() == "landing/b1"
    with pytest.raises(FileNotFoundError):
        (root / "nothing").read_bytes()

    with pytest.raises(OSError):
        (root / "landing").rmdir()  # not empty, as os.rmdir
    storage.remove_tree(root / "landing" / "b2")
    storage.remove_tree(root / "landing" / "b2")  # nothing there is fine
    (root / "landing" / "b1" / "data.csv").unlink()
    (root / "landing" / "b1" / "manifest.json").unlink()
    (root / "landing" / "b1").rmdir()
    (root / "landing").rmdir()
    # what is left is the root "folder" itself, as on disk (an empty marker object), nothing under it
    assert s3.keys("lake", root.name) == [f"{root.name}/"]


def test_delta_rs_and_duckdb_read_the_table_the_pipeline_wrote(root, tmp_path):
    spec = TableSpec("t", root / "silver" / "t", (Column("id", "bigint", nullable=False), Column("v", "string")))
    delta_io.ensure_table(spec)
    from deltalake import write_deltalake

    rows = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "v": ["a", "b", None]})
    write_deltalake(str(spec.path), rows, mode="append", storage_options=storage.delta_options(spec.path))
    assert delta_io.version(spec) == 1
    assert delta_io.open_table(spec.path).to_pyarrow_table().num_rows == 3
    assert delta_io.check_table_schema(spec) is not None  # the declared schema, on S3

    settings = load_settings(
        environ={
            **os.environ,
            "CITYSAFE_LAKE_ROOT": str(root),
            "CITYSAFE_STATE_ROOT": str(tmp_path / "state"),
            "CITYSAFE_S3__ENDPOINT_URL": root.store.endpoint_url,
        }
    )
    import duckdb

    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    for statement in warehouse.lake_access_sql(settings):
        con.execute(statement)
    assert con.execute(f"select count(*), sum(id) from delta_scan('{spec.path}')").fetchone() == (3, 6)


def test_only_the_lake_goes_on_object_storage(tmp_path):
    env = {**os.environ, "CITYSAFE_LAKE_ROOT": "s3://bucket/city", "CITYSAFE_STATE_ROOT": str(tmp_path)}
    settings = load_settings(environ=env)
    assert (
        str(settings.silver_dir) == "s3://bucket/city/silver" and str(settings.state_dir) == "s3://bucket/city/_state"
    )
    assert settings.runs_dir == tmp_path / "runs" and settings.reports_dir == tmp_path / "reports"
    assert settings.alerts_outbox == tmp_path / "alerts" / "outbox" and settings.cache_dir == tmp_path / "_state"

    with pytest.raises(ConfigError, match="state_root"):
        load_settings(environ={k: v for k, v in env.items() if k != "CITYSAFE_STATE_ROOT"})
    with pytest.raises(ConfigError, match="only lake_root"):
        load_settings(environ={**env, "CITYSAFE_WAREHOUSE_PATH": "s3://bucket/w.duckdb"})
    with pytest.raises(ConfigError, match="endpoint_url"):
        load_settings(environ={**env, "CITYSAFE_S3__ENDPOINT_URL": "minio:9000"})
    with pytest.raises(ConfigError, match="bucket"):
        load_settings(environ={**env, "CITYSAFE_LAKE_ROOT": "s3://"})
