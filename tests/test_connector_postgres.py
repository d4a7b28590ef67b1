"""The postgres connector against a real PostgreSQL server: watermark pulls into bronze, exactly once.

A fire department's operational dispatch table (tests/pg_server.py starts the server for the session):
full pull, incremental pull (inserts and updates), ties on the watermark at a chunk boundary, a crash
between the bronze append and the watermark commit, and clear one-line errors that commit nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from deltalake import DeltaTable

from citysafe import delta_io
from citysafe.config import load_settings
from citysafe.connectors import ConnectorError
from citysafe.connectors.postgres import PostgresTableConnector
from citysafe.formats import parse_jsonl
from citysafe.sources import SourceError, load_source_file
from spark_jobs import bronze

from pg_server import free_port

DSN_ENV = "FIRE_DB_DSN"
READER, READER_PASSWORD = "fire_reader", "Rd#pw-4711 'x'"  # quotes and spaces: must survive, never show
TABLE = "fire.dispatch_calls"
COLUMNS = ["call_id", "received_at", "call_type", "district", "lon", "lat", "caller_phone", "updated_at"]
CST = dt.timezone(dt.timedelta(hours=8))
BASE = dt.datetime(2025, 3, 1, 8, 0, tzinfo=CST)
FIRST_ID = 9_007_199_254_740_993  # 2**53 + 1: a float would lose it
TIE = range(14, 25)  # rows 14..24 share updated_at: crosses the row-20 boundary
DISTRICTS = ["江岸区", "江汉区", "硚口区", "武昌区", None]


def _rows(n: int = 50, start: int = 0) -> list[dict]:
    rows = []
    for i in range(start, start + n):
        minute = 14 if i in TIE else i
        rows.append(
            {
                "call_id": FIRST_ID + i,
                "received_at": BASE + dt.timedelta(minutes=i, seconds=7, microseconds=120000 * (i % 3)),
                "call_type": "建筑火灾" if i % 4 == 0 else ("行\u2028分隔" if i == 7 else f"type-{i % 5}"),
                "district": DISTRICTS[i % 5],
                "lon": None if i == 9 else Decimal(f"114.{2500000 + i * 37:07d}"),
                "lat": Decimal("30.5000") if i % 2 else Decimal("30.61234567890123456789"),
                "caller_phone": None if i % 10 == 3 else f"1380013{i:04d}",
                "updated_at": BASE + dt.timedelta(hours=1, minutes=minute),
            }
        )
    return rows


def _expected_text(row: dict) -> dict:
    """What bronze must hold: timestamps ISO 8601 (UTC, with offset), numerics as written, NULL as None."""
    out = {}
    for key, value in row.items():
        if isinstance(value, dt.datetime):
            out[key] = value.astimezone(dt.UTC).isoformat()
        elif value is None:
            out[key] = None
        else:
            out[key] = str(value)
    return out


def _insert(conn, rows: list[dict]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})",
            [[r[c] for c in COLUMNS] for r in rows],
        )


@dataclasses.dataclass
class FireDb:
    conn: Any  # the owner's connection (autocommit): writes like the department's application
    name: str
    reader_dsn: str  # what FIRE_DB_DSN holds: the SELECT-only role


@pytest.fixture
def fire_db(pg_server):
    """A fresh database holding the dispatch table with 50 rows, readable by a SELECT-only role."""
    name = f"fire_{uuid.uuid4().hex[:10]}"
    with pg_server.connect() as admin:
        admin.execute(f"CREATE DATABASE {name}")
        if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [READER]).fetchone():
            admin.execute(f"CREATE ROLE {READER} LOGIN PASSWORD '{READER_PASSWORD.replace(chr(39), chr(39) * 2)}'")
    conn = pg_server.connect(name)
    conn.execute("CREATE SCHEMA fire")
    conn.execute(f"""CREATE TABLE {TABLE} (
        call_id bigint PRIMARY KEY, received_at timestamptz NOT NULL, call_type text, district text,
        lon numeric, lat numeric, caller_phone text, updated_at timestamptz NOT NULL)""")
    conn.execute(f"CREATE INDEX ON {TABLE} (updated_at, call_id)")
    conn.execute(f"GRANT USAGE ON SCHEMA fire TO {READER}")
    conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA fire TO {READER}")
    _insert(conn, _rows())
    yield FireDb(conn, name, pg_server.dsn(name, user=READER, password=READER_PASSWORD))
    conn.close()


@pytest.fixture
def lake(tmp_path, fire_db, monkeypatch):
    monkeypatch.setenv(DSN_ENV, fire_db.reader_dsn)
    return load_settings(environ={"CITYSAFE_LAKE_ROOT": str(tmp_path / "lake")})


def _sensitivity(column: str) -> str:
    return {"caller_phone": "personal", "district": "public"}.get(column, "internal")


def _source(tmp_path: Path, columns=tuple(COLUMNS), primary_key="call_id", **connector):
    """The source entry, written as sources/fire_dispatch.yaml under tmp_path and loaded like any other."""
    entry = {
        "name": "fire_dispatch",
        "department": "fire",
        "kind": "records",
        "description": "Fire dispatch calls from the department's operational database.",
        "connector": {
            "type": "postgres",
            "dsn_env": DSN_ENV,
            "table": TABLE,
            "batch_size": 20,
            "tie_breaker": "call_id",
            **connector,
        },
        "format": {"type": "jsonl"},
        "schema": [
            {
                "name": c,
                "type": "string",
                "sensitivity": _sensitivity(c),
                **({"required": True} if c in (primary_key, "updated_at") else {}),
            }
            for c in columns
        ],
        "primary_key": [primary_key],
        "watermark": "updated_at",
        "schedule": "@hourly",
        "freshness": {"warn_after_hours": 2, "error_after_hours": 6},
    }
    folder = tmp_path / "sources"
    folder.mkdir(exist_ok=True)
    path = folder / "fire_dispatch.yaml"
    path.write_text(yaml.safe_dump(entry, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return load_source_file(path)


def _ingest(spark, settings, source):
    return bronze.ingest(spark, settings, source)


def _bronze_rows(settings, source) -> list[dict]:
    return DeltaTable(str(bronze.bronze_spec(settings, source).path)).to_pyarrow_table().to_pylist()


def _manifests(settings, source) -> list[dict]:
    from citysafe.landing import list_batches

    return list_batches(settings.landing_dir / source.name)


def _by_id(rows: list[dict]) -> dict[str, dict]:
    return {r["call_id"]: {c: r[c] for c in COLUMNS} for r in rows}


def _position(row: dict) -> str:
    return json.dumps([_expected_text(row)["updated_at"], str(row["call_id"])])


# --- 1. full pull -----------------------------------------------------------------------------------


def test_full_pull_lands_every_row_once_with_its_values_as_text(spark, tmp_path, lake):
    source = _source(tmp_path)
    summary = _ingest(spark, lake, source)
    rows = _bronze_rows(lake, source)
    expected = {str(r["call_id"]): _expected_text(r) for r in _rows()}
    assert summary["published"] == 50 and len(rows) == 50 and len(summary["batches"]) == 3
    assert _by_id(rows) == expected  # ids and every value, NULLs and Chinese included
    assert all(r["_parse_error"] is None and r["_extra_fields"] is None for r in rows)
    by_id = _by_id(rows)
    assert by_id[str(FIRST_ID + 7)]["call_type"] == "行\u2028分隔"
    assert by_id[str(FIRST_ID + 9)]["lon"] is None and by_id[str(FIRST_ID + 3)]["caller_phone"] is None
    assert by_id[str(FIRST_ID + 4)]["district"] is None and by_id[str(FIRST_ID)]["district"] == "江岸区"
    assert by_id[str(FIRST_ID)]["lat"] == "30.61234567890123456789" and by_id[str(FIRST_ID + 1)]["lat"] == "30.5000"
    assert by_id[str(FIRST_ID)]["updated_at"] == "2025-03-01T01:00:00+00:00"

    manifests = _manifests(lake, source)
    ordered = sorted(_rows(), key=lambda r: (r["updated_at"], r["call_id"]))
    assert [m["rows"] for m in manifests] == [20, 20, 10]
    assert [m["watermark_from"] for m in manifests] == [None, _position(ordered[19]), _position(ordered[39])]
    assert [m["watermark_to"] for m in manifests] == [
        _position(ordered[19]),
        _position(ordered[39]),
        _position(ordered[49]),
    ]
    for m in manifests:
        (item,) = m["files"]
        assert item["table"] == TABLE and item["query_watermark_from"] == m["watermark_from"]
        assert item["name"].startswith("fire.dispatch_calls__") and item["name"].endswith(".jsonl")
    assert bronze.load_state(lake, source)["watermark"] == summary["watermark"] == _position(ordered[49])
    # The password never reaches the lake.
    assert not [p for p in lake.lake_root.rglob("*") if p.is_file() and READER_PASSWORD.encode() in p.read_bytes()]


# --- 2. incremental ---------------------------------------------------------------------------------


def test_incremental_pull_takes_inserts_and_updates_then_nothing(spark, tmp_path, lake, fire_db):
    source = _source(tmp_path)
    _ingest(spark, lake, source)
    new = _rows(5, start=50)
    for r in new:
        r["updated_at"] = BASE + dt.timedelta(days=1, minutes=r["call_id"] - FIRST_ID)
    _insert(fire_db.conn, new)
    later = BASE + dt.timedelta(days=2)
    fire_db.conn.execute(
        f"UPDATE {TABLE} SET call_type = %s, updated_at = %s WHERE call_id = ANY(%s)",
        ["已处置", later, [FIRST_ID + 2, FIRST_ID + 20]],
    )

    summary = _ingest(spark, lake, source)
    assert summary["published"] == 7 and len(summary["batches"]) == 1
    rows = _bronze_rows(lake, source)
    assert len(rows) == 57
    latest = {}
    for r in sorted(rows, key=lambda r: r["updated_at"]):
        latest[r["call_id"]] = r
    assert len(latest) == 55
    assert latest[str(FIRST_ID + 2)]["call_type"] == latest[str(FIRST_ID + 20)]["call_type"] == "已处置"
    assert summary["watermark"] == json.dumps([later.astimezone(dt.UTC).isoformat(), str(FIRST_ID + 20)])

    spec = bronze.bronze_spec(lake, source)
    version = delta_io.version(spec)
    again = _ingest(spark, lake, source)
    assert again["published"] == 0 and again["batches"] == []
    assert delta_io.version(spec) == version and len(_bronze_rows(lake, source)) == 57


# --- 3. ties on the watermark at a chunk boundary ------------------------------------------------------


def _pull(source, settings, watermark=None):
    batches = list(PostgresTableConnector().batches(source, settings, watermark, set()))
    ids = [r for b in batches for r in parse_jsonl(b.items[0].name, b.items[0].content, source).columns["call_id"]]
    return batches, ids


@pytest.mark.parametrize("tie_breaker, batch_size", [("call_id", 20), (None, 20), (None, 5), ("call_id", 1)])
def test_rows_sharing_a_watermark_are_neither_lost_nor_doubled_at_a_chunk_boundary(
    tmp_path, lake, tie_breaker, batch_size
):
    source = _source(tmp_path, tie_breaker=tie_breaker, batch_size=batch_size)
    batches, ids = _pull(source, lake)
    ordered = sorted(_rows(), key=lambda r: (r["updated_at"], r["call_id"]))
    assert ids == [str(r["call_id"]) for r in ordered]  # each once, in watermark order
    for before, after in zip(batches, batches[1:]):
        assert after.watermark_from == before.watermark_to
    tie_value = _expected_text(ordered[TIE[0]])["updated_at"]
    if tie_breaker:
        assert all(len(b.items[0].content.splitlines()) <= batch_size for b in batches)
        if batch_size == 20:  # the first chunk ends inside the tie, the second goes on from there
            assert json.loads(batches[0].watermark_to) == [tie_value, str(ordered[19]["call_id"])]
    else:
        # No chunk boundary splits the tie: a full chunk stops before its last value, or (all tied) takes all 11.
        chunks = [parse_jsonl(b.items[0].name, b.items[0].content, source).columns["updated_at"] for b in batches]
        assert sum(tie_value in c for c in chunks) == 1
        assert [len(c) for c in chunks] == ([5, 5, 4, 11, 5, 5, 5, 5, 5] if batch_size == 5 else [14, 20, 16])
    # From the committed position, nothing is read again.
    assert _pull(source, lake, batches[-1].watermark_to)[1] == []
    # A position inside the tie goes on with the rest of it.
    if tie_breaker:
        rest = _pull(source, lake, json.dumps([tie_value, str(ordered[17]["call_id"])]))[1]
        assert rest == [str(r["call_id"]) for r in ordered[18:]]


def test_each_chunk_is_read_in_a_repeatable_read_read_only_transaction(tmp_path, lake):
    from citysafe.connectors.postgres import _Pull

    pull = _Pull(_source(tmp_path))
    conn = pull.connect()
    try:
        with pull._reading(conn):
            assert conn.execute(
                "SELECT current_setting('transaction_isolation'), "
                "current_setting('transaction_read_only'), current_setting('TimeZone')"
            ).fetchone() == ("repeatable read", "on", "UTC")
    finally:
        conn.close()


def test_values_python_cannot_hold_keep_the_spelling_postgres_gives_them(tmp_path, lake, fire_db):
    fire_db.conn.execute("""CREATE TABLE fire.odd_values (id int PRIMARY KEY, updated_at timestamptz,
        local_ts timestamp, day date, amount numeric, ratio float8, flag boolean, tags text[], doc jsonb, span interval, ref uuid,
        raw bytea)""")
    fire_db.conn.execute(f"GRANT SELECT ON fire.odd_values TO {READER}")
    fire_db.conn.execute("""INSERT INTO fire.odd_values VALUES
        (1, '2025-03-01 08:00:00.5+08', '2025-03-01 08:00:00', '2025-03-01', 0.0000001, 0.1, true, '{a,"b c"}',
         '{"b": 1, "a": "火"}', '1 day 2 hours', '4b1c0a4e-6c7a-4d4b-9a57-3f1d2a0c9e11', '\\x00ff'),
        (2, 'infinity', '-infinity', 'infinity', 'NaN', 'NaN', false, '{}', 'null', '-3 minutes', NULL, NULL)""")
    columns = ["id", "updated_at", "local_ts", "day", "amount", "ratio", "flag", "tags", "doc", "span", "ref", "raw"]
    source = _source(tmp_path, columns, "id", table="fire.odd_values", tie_breaker="id")
    (batch,) = PostgresTableConnector().batches(source, lake, None, set())
    parsed = parse_jsonl(batch.items[0].name, batch.items[0].content, source).columns
    assert [parsed[c][0] for c in columns] == [
        "1",
        "2025-03-01T00:00:00.500000+00:00",
        "2025-03-01T08:00:00",
        "2025-03-01",
        "0.0000001",
        "0.1",
        "true",
        '["a", "b c"]',
        '{"a": "火", "b": 1}',
        "P1DT2H",
        "4b1c0a4e-6c7a-4d4b-9a57-3f1d2a0c9e11",
        "\\x00ff",
    ]
    assert [parsed[c][1] for c in columns] == [
        "2",
        "infinity",
        "-infinity",
        "infinity",
        "NaN",
        "NaN",
        "false",
        "[]",
        "null",
        "PT-3M",
        None,
        None,
    ]
    assert json.loads(batch.watermark_to) == ["infinity", "2"]
    assert list(PostgresTableConnector().batches(source, lake, batch.watermark_to, set())) == []


# --- 4. crash between the bronze append and the watermark commit -----------------------------------------


def test_crash_after_bronze_before_watermark_commit_does_not_duplicate(spark, tmp_path, lake, monkeypatch):
    source = _source(tmp_path)
    real_commit, calls = bronze._commit, []

    def crash_on_second(settings, src, manifest):
        calls.append(manifest["batch_id"])
        if len(calls) == 2:
            raise RuntimeError("simulated crash before the watermark commit")
        real_commit(settings, src, manifest)

    monkeypatch.setattr(bronze, "_commit", crash_on_second)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _ingest(spark, lake, source)
    assert len(_bronze_rows(lake, source)) == 40  # two chunks appended ...
    assert len(bronze.committed_batches(lake, source)) == 1  # ... the watermark of one committed
    monkeypatch.setattr(bronze, "_commit", real_commit)

    summary = _ingest(spark, lake, source)
    rows = _bronze_rows(lake, source)
    assert len(rows) == 50 and len({r["call_id"] for r in rows}) == 50
    assert summary["published"] == 10

    # Losing the whole state file: landed batches are recognised in bronze, nothing is appended.
    spec = bronze.bronze_spec(lake, source)
    version = delta_io.version(spec)
    (lake.state_dir / "bronze" / "fire_dispatch.json").unlink()
    again = _ingest(spark, lake, source)
    assert again["published"] == 0 and delta_io.version(spec) == version and len(_bronze_rows(lake, source)) == 50
    assert again["watermark"] == summary["watermark"]


# --- 5. errors: one clear line, nothing committed ----------------------------------------------------------


def _nothing_committed(settings, source) -> bool:
    state = settings.state_dir / "bronze" / f"{source.name}.json"
    spec = bronze.bronze_spec(settings, source)  # created empty (version 0) before the connector runs
    return (
        not state.exists()
        and not _manifests(settings, source)
        and delta_io.version(spec) == 0
        and not _bronze_rows(settings, source)
    )


@pytest.mark.parametrize(
    "case, message",
    [
        (
            "wrong_password",
            r"refused the login for user 'fire_reader' \(authentication failed\): check the DSN in "
            r"environment variable FIRE_DB_DSN",
        ),
        (
            "unreachable_port",
            r"cannot reach PostgreSQL at 127\.0\.0\.1:\d+/fire_\w+ \(.*Connection refused.*\).*"
            r"check the DSN in environment variable FIRE_DB_DSN \(host and port\)",
        ),
        (
            "missing_table",
            r"table fire\.no_such_table does not exist in PostgreSQL at .*: check connector\.table in "
            r".*fire_dispatch\.yaml",
        ),
        ("missing_env", r"environment variable FIRE_DB_DSN is not set; .*connector\.dsn_env in .*fire_dispatch\.yaml"),
        (
            "missing_columns",
            r"table fire\.dispatch_calls has no column\(s\) \['units_sent', 'crew'\] declared in "
            r".*fire_dispatch\.yaml",
        ),
        ("bad_dsn", r"the DSN in environment variable FIRE_DB_DSN is not a valid PostgreSQL connection string"),
    ],
)
def test_errors_are_one_clear_line_and_commit_nothing(
    spark,
    tmp_path,
    lake,
    fire_db,
    pg_server,  # noqa: F811
    monkeypatch,
    case,
    message,
):
    columns = [*COLUMNS, "units_sent", "crew"] if case == "missing_columns" else COLUMNS
    source = _source(tmp_path, columns, table="fire.no_such_table" if case == "missing_table" else TABLE)
    if case == "wrong_password":
        monkeypatch.setenv(DSN_ENV, pg_server.dsn(fire_db.name, user=READER, password="not-" + READER_PASSWORD))
    elif case == "unreachable_port":
        monkeypatch.setenv(
            DSN_ENV, pg_server.dsn(fire_db.name, user=READER, password=READER_PASSWORD, port=free_port())
        )
    elif case == "missing_env":
        monkeypatch.delenv(DSN_ENV)
    elif case == "bad_dsn":
        monkeypatch.setenv(DSN_ENV, f"host=127.0.0.1 password={READER_PASSWORD.split()[0]} ,oops")
    with pytest.raises(ConnectorError, match=message) as info:
        _ingest(spark, lake, source)
    text = str(info.value)
    assert "\n" not in text and text.startswith("source fire_dispatch: ")
    assert READER_PASSWORD.split()[0] not in text and "Rd#pw" not in text
    assert _nothing_committed(lake, source)


def test_source_entry_mistakes_are_named(tmp_path, lake):
    with pytest.raises(SourceError, match=r"connector\.postgres\.dsn_env: 'CITYSAFE_FIRE_DSN': CITYSAFE_\* variables"):
        _source(tmp_path, dsn_env="CITYSAFE_FIRE_DSN")
    source = _source(tmp_path)
    entry = yaml.safe_load(source.file.read_text(encoding="utf-8"))
    entry["format"] = {"type": "csv"}
    source.file.write_text(yaml.safe_dump(entry, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConnectorError, match=r"delivers JSON lines: set format\.type to jsonl in .*fire_dispatch"):
        list(PostgresTableConnector().batches(load_source_file(source.file), lake, None, set()))
