"""A department's operational PostgreSQL table, pulled incrementally by watermark.

Each run reads the rows after the committed watermark in chunks of `batch_size`:

    SELECT <declared columns> FROM <table>
    WHERE (<watermark>, <tie_breaker>) > (%s, %s)      -- first run: WHERE <watermark> IS NOT NULL
    ORDER BY <watermark>, <tie_breaker> LIMIT <batch_size>

one REPEATABLE READ, READ ONLY transaction per chunk. The compound position (watermark, tie-breaker)
means rows sharing a watermark value are neither skipped nor read twice at a chunk boundary. Without
a tie-breaker the query is `<watermark> > %s`, and a full chunk is cut before its last watermark value
when that value goes on past the chunk (or, if the whole chunk shares one value, extended to every
row with it), so that no tie is split.

Every chunk becomes one FetchBatch holding one JSON-lines file (an object per row, keyed by the table's
column names, values as text: timestamps ISO 8601 with their offset, in UTC; numerics exactly as
PostgreSQL spells them; NULL as null), named from its watermark range. `watermark_from`/`watermark_to`
are the position before/after the chunk as a JSON list (`["<watermark>", "<tie-breaker>"]`, or
`["<watermark>"]` without a tie-breaker); `connector.start_watermark` may be such a list or a plain
watermark value. Rows whose watermark is NULL are never pulled.

The DSN comes from the environment variable named by `connector.dsn_env`; it (and its password) never
appears in a message, manifest or file. Values are always query parameters; identifiers are quoted
with psycopg.sql.
"""

from __future__ import annotations

import codecs
import contextlib
import datetime as dt
import json
import os
import re
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from citysafe.config import Settings
from citysafe.connectors import ConnectorError, FetchBatch, Fetched
from citysafe.sources import Source

APPLICATION_NAME = "citysafe-lake"


# --- values as text ---------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    """A loaded value as the text bronze keeps (see `_configure` for the types loaded as text)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, Decimal):
        return format(value, "f") if value.is_finite() else str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return json.dumps([_text(v) for v in value], ensure_ascii=False)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


# str.splitlines() (which parse_jsonl uses) also breaks at these; json.dumps leaves them raw.
_LINE_BREAKS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}
_LINE_BREAK_RE = re.compile("[\u2028\u2029\x85]")


def _json_line(obj: dict[str, str | None]) -> str:
    line = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return _LINE_BREAK_RE.sub(lambda m: _LINE_BREAKS[m.group()], line)


def _configure(conn) -> None:
    """Session settings and loaders so that every value arrives in a spelling that round-trips."""
    from psycopg import DataError
    from psycopg.types import datetime as pgdt
    from psycopg.types.string import TextLoader

    # UTC output for timestamptz: the same row always gives the same bytes, whatever the server's zone.
    conn.execute("SET TIME ZONE 'UTC'")
    conn.execute("SET DateStyle TO 'ISO, YMD'")
    conn.execute("SET IntervalStyle TO 'iso_8601'")
    conn.execute("SET extra_float_digits TO 1")
    # Exactly as PostgreSQL spells them: numeric (no float rounding, no 1E-7), json, interval, money.
    for name in ("numeric", "json", "jsonb", "interval", "money"):
        conn.adapters.register_loader(name, TextLoader)

    # 'infinity' and BC dates do not fit Python's datetime: keep PostgreSQL's text for those.
    def tolerant(base):
        class Loader(base):
            def load(self, data):
                try:
                    return super().load(data)
                except DataError:
                    return bytes(data).decode()

        return Loader

    conn.adapters.register_loader("timestamptz", tolerant(pgdt.TimestamptzLoader))
    conn.adapters.register_loader("timestamp", tolerant(pgdt.TimestampLoader))
    conn.adapters.register_loader("date", tolerant(pgdt.DateLoader))


# --- watermark --------------------------------------------------------------------------------------


def parse_watermark(watermark: str | None) -> list[str] | None:
    """The committed position: a JSON list of one or two texts, or a plain watermark value."""
    if watermark is None or watermark == "":
        return None
    try:
        value = json.loads(watermark)
    except json.JSONDecodeError:
        return [watermark]
    if isinstance(value, list) and 1 <= len(value) <= 2 and all(isinstance(v, str) for v in value):
        return value
    return [watermark]


def dump_watermark(position: list[str]) -> str:
    return json.dumps(position, ensure_ascii=False)


def _slug(position: list[str] | None) -> str:
    if position is None:
        return "start"
    return re.sub(r"[^A-Za-z0-9.-]+", "-", "_".join(position)).strip("-") or "x"


def chunk_name(table: str, start: list[str] | None, end: list[str]) -> str:
    """`<table>__<from>__<to>.jsonl`, file-system safe, deterministic for the range."""
    name = f"{table}__{_slug(start)}__{_slug(end)}"
    if len(name) > 200:
        import hashlib

        name = name[:180] + "-" + hashlib.sha256(name.encode()).hexdigest()[:16]
    return name + ".jsonl"


# --- the connector ----------------------------------------------------------------------------------


class PostgresTableConnector:
    def batches(
        self, source: Source, settings: Settings, watermark: str | None, seen_checksums: set[str]
    ) -> Iterator[FetchBatch]:
        # seen_checksums is not needed: the position only moves forward, and a chunk re-read after a
        # crash has the same bytes, so landing recognises it.
        pull = _Pull(source)
        conn = pull.connect()
        try:
            pull.check_columns(conn)
            position = parse_watermark(watermark)
            while True:
                rows, end = pull.chunk(conn, position)
                if not rows:
                    return
                lines = [_json_line({c: _text(r[i]) for i, c in enumerate(pull.output)}) for r in rows]
                content = ("\n".join(lines) + "\n").encode("utf-8")
                start_text = None if position is None else dump_watermark(position)
                end_text = dump_watermark(end)
                meta = {"table": pull.cfg.table, "query_watermark_from": start_text, "query_watermark_to": end_text}
                yield FetchBatch(
                    (Fetched(chunk_name(pull.cfg.table, position, end), content, meta),),
                    watermark_from=start_text,
                    watermark_to=end_text,
                )
                if pull.last_chunk:
                    return
                position = end
        finally:
            conn.close()


class _Pull:
    """One run's query plan for a source, and its error messages."""

    def __init__(self, source: Source):
        self.source, self.cfg = source, source.connector
        where = f"{source.file}" if source.file else f"source {source.name}'s entry"
        self.where = where
        self.prefix = f"source {source.name}: "
        if source.format.type != "jsonl":
            raise ConnectorError(
                f"{self.prefix}the postgres connector delivers JSON lines: set format.type to "
                f"jsonl in {where} (it is {source.format.type!r})"
            )
        if source.format.encoding != "auto" and codecs.lookup(source.format.encoding).name != "utf-8":
            raise ConnectorError(
                f"{self.prefix}the postgres connector delivers UTF-8: set format.encoding to "
                f"utf-8 in {where} (it is {source.format.encoding!r})"
            )
        if not source.watermark:
            raise ConnectorError(
                f"{self.prefix}the postgres connector pulls by watermark: set `watermark:` "
                f"(e.g. the updated_at column) in {where}"
            )
        delivered = {declared: raw for raw, declared in source.format.rename.items()}
        self.output = [delivered.get(c, c) for c in source.columns]  # table column names, in order
        self.w = delivered.get(source.watermark, source.watermark)
        self.tb = delivered.get(self.cfg.tie_breaker, self.cfg.tie_breaker) if self.cfg.tie_breaker else None
        self.selected = [*self.output, *([self.tb] if self.tb and self.tb not in self.output else [])]
        self.w_index = self.selected.index(self.w)
        self.tb_index = self.selected.index(self.tb) if self.tb else None
        # Without a tie-breaker, the key orders ties, so the same rows always give the same bytes.
        keys = [delivered.get(k, k) for k in source.primary_key if delivered.get(k, k) != self.w]
        self.order = [self.w, self.tb] if self.tb else [self.w, *keys]
        self.last_chunk = False
        self.target = "PostgreSQL"

    # connection -------------------------------------------------------------------------------------

    def connect(self):
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict
        except ImportError:
            raise ConnectorError(
                f"{self.prefix}the postgres connector needs psycopg 3 (`pip install "
                "'psycopg[binary]'`, in requirements/pipeline.in)"
            ) from None
        env = self.cfg.dsn_env
        dsn = os.environ.get(env)
        if not dsn:
            raise ConnectorError(
                f"{self.prefix}environment variable {env} is not set; it must hold the "
                f"connection string (DSN) for table {self.cfg.table} (connector.dsn_env in "
                f"{self.where})"
            )
        try:
            info = conninfo_to_dict(dsn)
        except psycopg.Error:
            # libpq's message may quote part of the string, password included: do not repeat it.
            raise ConnectorError(
                f"{self.prefix}the DSN in environment variable {env} is not a valid PostgreSQL "
                "connection string (expected postgresql://user:password@host:port/dbname or "
                "'host=... dbname=... user=...'); fix the variable"
            ) from None
        host = info.get("host") or info.get("hostaddr") or "localhost"
        self.target = f"PostgreSQL at {host}:{info.get('port') or 5432}/{info.get('dbname') or info.get('user') or ''}"
        extra = {}
        if "connect_timeout" not in info:
            extra["connect_timeout"] = self.cfg.connect_timeout_seconds
        if "application_name" not in info:
            extra["application_name"] = APPLICATION_NAME
        try:
            conn = psycopg.connect(dsn, autocommit=True, **extra)
        except psycopg.OperationalError as exc:
            raise ConnectorError(self._connect_problem(str(exc), info.get("user"))) from None
        try:
            _configure(conn)
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
        except psycopg.Error as exc:
            conn.close()
            raise ConnectorError(f"{self.prefix}{self.target}: cannot set up the session: {_one_line(exc)}") from None
        return conn

    def _connect_problem(self, message: str, user: str | None) -> str:
        detail = _one_line((message.rsplit("failed:", 1)[-1].strip().splitlines() or [""])[0])  # libpq's reason
        low = message.lower()
        check = f"check the DSN in environment variable {self.cfg.dsn_env}"
        if (
            "password authentication failed" in low
            or "authentication failed" in low
            or "no password supplied" in low
            or "password" in low
            and "required" in low
        ):
            return (
                f"{self.prefix}{self.target} refused the login for user {user!r} (authentication failed): "
                f"{check} (user and password)"
            )
        if "no pg_hba.conf entry" in low or re.search(r'role ".*" does not exist', low):
            return f"{self.prefix}{self.target} refused the login for user {user!r} ({detail}): {check}"
        if re.search(r'database ".*" does not exist', low):
            return f"{self.prefix}{self.target}: {detail}: {check} (database name)"
        return (
            f"{self.prefix}cannot reach {self.target} ({detail}): is the server up and reachable from "
            f"here? {check} (host and port)"
        )

    # queries ----------------------------------------------------------------------------------------

    def _table(self):
        from psycopg import sql

        return sql.Identifier(*self.cfg.table.split("."))

    @contextlib.contextmanager
    def _reading(self, conn):
        """One REPEATABLE READ, READ ONLY transaction (set on the connection); errors as ConnectorError."""
        import psycopg

        try:
            with conn.transaction():
                yield
        except psycopg.errors.UndefinedTable:
            raise ConnectorError(
                f"{self.prefix}table {self.cfg.table} does not exist in {self.target}: check "
                f"connector.table in {self.where} (schema.table, as named in the database)"
            ) from None
        except psycopg.errors.InvalidSchemaName:
            raise ConnectorError(
                f"{self.prefix}the schema of table {self.cfg.table} does not exist in "
                f"{self.target}: check connector.table in {self.where}"
            ) from None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ConnectorError(
                f"{self.prefix}{self.target} denies reading {self.cfg.table} ({_one_line(exc)}): "
                f"grant SELECT to the DSN's user, or check {self.cfg.dsn_env}"
            ) from None
        except psycopg.OperationalError as exc:
            raise ConnectorError(
                f"{self.prefix}lost the connection to {self.target} ({_one_line(exc)}); the "
                "chunks already committed stay, re-run to go on from there"
            ) from None
        except psycopg.Error as exc:
            raise ConnectorError(
                f"{self.prefix}query on {self.cfg.table} failed in {self.target}: {_one_line(exc)}"
            ) from None

    def check_columns(self, conn) -> None:
        from psycopg import sql

        with self._reading(conn):
            cur = conn.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(self._table()))
            names = [d.name for d in cur.description or []]
        missing = [c for c in self.output if c not in names]
        if missing:
            raise ConnectorError(
                f"{self.prefix}table {self.cfg.table} has no column(s) {missing} declared in "
                f"{self.where}; it has {names}: fix the schema (or format.rename)"
            )
        if self.tb and self.tb not in names:
            raise ConnectorError(
                f"{self.prefix}table {self.cfg.table} has no tie_breaker column {self.tb!r}: "
                f"fix connector.tie_breaker in {self.where}"
            )

    def chunk(self, conn, position: list[str] | None) -> tuple[list[tuple], list[str]]:
        """The next rows after `position` and the position after them (empty: nothing new)."""
        from psycopg import sql

        w, tb = sql.Identifier(self.w), sql.Identifier(self.tb) if self.tb else None
        if position is None:
            where, params = sql.SQL("{} IS NOT NULL").format(w), []
        elif tb is not None and len(position) == 2:
            where, params = sql.SQL("({}, {}) > (%s, %s)").format(w, tb), list(position)
        elif len(position) == 2:
            # Pulled with a tie-breaker that is now gone: the rest of that watermark value is re-read
            # (a duplicate in bronze is better than a lost row).
            where, params = sql.SQL("{} >= %s").format(w), [position[0]]
        else:
            where, params = sql.SQL("{} > %s").format(w), [position[0]]
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in self.selected)
        order = sql.SQL(", ").join(sql.Identifier(c) for c in self.order)
        size = self.cfg.batch_size
        query = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {} LIMIT %s").format(columns, self._table(), where, order)
        with self._reading(conn):
            if tb is not None:
                rows = conn.execute(query, [*params, size]).fetchall()
                self.last_chunk = len(rows) < size
            else:  # one row more shows whether the last watermark value goes on past the chunk
                rows = conn.execute(query, [*params, size + 1]).fetchall()
                self.last_chunk = len(rows) <= size
                if not self.last_chunk:
                    rows = self._whole_ties(conn, rows, columns, where, order, params)
        if not rows:
            return [], []
        last = rows[-1]
        if last[self.w_index] is None:
            raise AssertionError("a NULL watermark row was selected")  # excluded by the WHERE clause
        end = [_text(last[self.w_index])]
        if self.tb_index is not None:
            nulls = sum(r[self.tb_index] is None for r in rows)
            if nulls:
                raise ConnectorError(
                    f"{self.prefix}tie_breaker column {self.tb!r} is NULL in {nulls} row(s) of "
                    f"{self.cfg.table}: it must be a unique NOT NULL column (e.g. the key); fix "
                    f"connector.tie_breaker in {self.where}"
                )
            end.append(_text(last[self.tb_index]))
        return rows, end

    def _whole_ties(self, conn, rows, columns, where, order, params):
        """Without a tie-breaker a full chunk must not split the rows of its last watermark value."""
        from psycopg import sql

        rows, following = rows[:-1], rows[-1]
        last = rows[-1][self.w_index]
        if following[self.w_index] != last:
            return rows
        kept = [r for r in rows if r[self.w_index] != last]
        if kept:
            return kept
        # The whole chunk shares one watermark value: take every row with it (more than batch_size).
        query = sql.SQL("SELECT {} FROM {} WHERE {} AND {} = %s ORDER BY {}").format(
            columns, self._table(), where, sql.Identifier(self.w), order
        )
        return conn.execute(query, [*params, _text(last)]).fetchall()


def _one_line(message: Any) -> str:
    return re.sub(r"\s+", " ", str(message)).strip()
