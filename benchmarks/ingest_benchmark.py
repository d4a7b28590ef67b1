"""Ingest benchmark: the synthetic city's deliveries -> landing + bronze Delta, timed per source and per
connector, with DuckDB (or a raw COPY) reading the same data as a yardstick.

    python benchmarks/ingest_benchmark.py [--scales 0.05 0.25] [--days 365] [--seed 20260101]
                                          [--out var/benchmark] [--engine sail]
                                          [--connectors files rest postgres]
                                          [--rest-page-size 5000] [--pg-batch-size 20000]

For each scale: generate the city (skipped when the same city is already in --out), ingest every source
tagged `synthetic` into a fresh lake (one engine session for the whole run), then let DuckDB read the same
CSV / JSON-lines files into an in-memory table. Then the synthetic police incidents (the rows the files
connector ingests) go through the other connectors: served by a loopback Socrata-style HTTP server
(connector `rest`) and loaded with COPY into a local throw-away PostgreSQL (connector `postgres`), each
ingested through a temporary source entry and checked row for row against the delivered CSVs. Prints the
tables (and writes them, with the raw numbers as JSON, under --out). All times are wall-clock seconds from
time.perf_counter. Only loopback traffic. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent  # the packages come from the venv (editable install)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("RUST_LOG", "error")

import duckdb  # noqa: E402
import yaml  # noqa: E402
from loopback_servers import SocrataServer, keyset_skips, start_postgres  # noqa: E402  (sibling script)

import synthetic_city  # noqa: E402
from citysafe.config import load_settings  # noqa: E402
from citysafe.connectors import files as files_connector  # noqa: E402
from citysafe.engine import spark_session  # noqa: E402
from citysafe.sources import Source, load_registry, load_source_file  # noqa: E402
from spark_jobs import bronze  # noqa: E402

CONNECTORS = ("files", "rest", "postgres")
PROBE = "police_incidents"  # the source whose rows every connector ingests
TIE_BREAKER = "case_no"  # unique per (updated_at, case_no) except exact duplicate rows
PG_DSN_ENV = "BENCH_PG_DSN"  # the temporary postgres source's connector.dsn_env
PG_TABLE = "police_incidents"

# Encodings DuckDB's CSV reader handles without the (downloadable) `encodings` extension.
DUCKDB_NATIVE = {"utf-8": "utf-8", "utf8": "utf-8", "utf-8-sig": "utf-8", "latin-1": "latin-1", "utf-16": "utf-16"}


def settings_for(root: Path, synthetic: Path, engine: str):
    return load_settings(
        environ={
            "CITYSAFE_LAKE_ROOT": str(root / "lake"),
            "CITYSAFE_SYNTHETIC_ROOT": str(synthetic),
            "CITYSAFE_DISTRICTS_GEOJSON": str(synthetic / "reference" / "districts.geojson"),
            "CITYSAFE_DISTRICT_ALIASES": str(synthetic / "reference" / "district_aliases.csv"),
            "CITYSAFE_ENGINE": engine,
        }
    )


def generate(synthetic: Path, scale: float, days: int, seed: int) -> tuple[dict, float | None]:
    """The city at `synthetic`; reuse it when the truth file says it is the same city."""
    params = {
        "scale": scale,
        "seed": seed,
        "start_date": "2025-01-01",
        "days": days,
        "timezone": "Asia/Shanghai",
        "h3_resolution": 8,
    }
    truth_file = synthetic / "truth" / "expected_counts.json"
    if truth_file.exists():
        truth = json.loads(truth_file.read_text(encoding="utf-8"))
        if all(str(truth["generator"].get(k)) == str(v) for k, v in params.items()):
            return truth, None
    t0 = time.perf_counter()
    truth = synthetic_city.generate(
        synthetic,
        scale=scale,
        seed=seed,
        start_date=dt.date(2025, 1, 1),
        days=days,
        timezone="Asia/Shanghai",
        h3_resolution=8,
    )
    return truth, time.perf_counter() - t0


def delivered_files(source: Source, settings) -> list[Path]:
    cfg = source.connector
    folder = cfg.folder(settings)
    return sorted(p for p in (folder.rglob if cfg.recursive else folder.glob)(cfg.pattern) if p.is_file())


def duckdb_read(source: Source, files: list[Path], scratch: Path) -> tuple[float, int, str]:
    """Wall time for DuckDB to read `files` (all columns as text) into an in-memory table, its row count,
    and a note. Files in an encoding DuckDB cannot read natively are transcoded to UTF-8 first, inside
    the timing."""
    fmt = source.format
    note = ""
    con = duckdb.connect()
    con.execute("SELECT 1").fetchall()  # connection set-up outside the timing
    t0 = time.perf_counter()
    paths = [str(p) for p in files]
    encoding = fmt.encoding.lower()
    if encoding not in DUCKDB_NATIVE:
        # DuckDB 1.5 reads only UTF-8/UTF-16/Latin-1 natively (GBK needs the `encodings` extension,
        # a download): transcode in Python, counted in DuckDB's time.
        out_dir = Path(tempfile.mkdtemp(prefix=f"{source.name}-utf8-", dir=scratch))
        decode_as = "gb18030" if encoding in ("gbk", "gb2312", "auto") else encoding
        paths = []
        for p in files:
            target = out_dir / p.name
            target.write_bytes(p.read_bytes().decode(decode_as).encode("utf-8"))
            paths.append(str(target))
        note = f"{fmt.encoding}->utf-8 transcode (Python) included"
        encoding = "utf-8"
    else:
        encoding = DUCKDB_NATIVE[encoding]
    if fmt.type == "csv":
        sql = (
            "CREATE TEMP TABLE t AS SELECT * FROM read_csv(?, all_varchar=true, header=true, delim=?, quote=?, "
            f"escape=?, encoding='{encoding}')"
        )
        con.execute(sql, [paths, fmt.delimiter, fmt.quotechar, fmt.quotechar])
    elif fmt.type == "jsonl":
        # All declared columns as VARCHAR: the same "everything as text" contract as bronze (and no
        # type inference across mixed int/string fields such as fire_calls.received).
        columns = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in source.columns) + "}"
        con.execute(
            f"CREATE TEMP TABLE t AS SELECT * FROM read_json(?, format='newline_delimited', columns={columns})", [paths]
        )
    else:
        raise ValueError(f"no DuckDB comparison for format {fmt.type}")
    rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
    seconds = time.perf_counter() - t0
    con.close()
    return seconds, rows, note


def run_scale(spark, args, scale: float, pg) -> tuple[list[dict], list[dict]]:
    root = Path(args.out) / f"scale_{scale:g}_days_{args.days}"
    synthetic = root / "synthetic"
    truth, gen_seconds = generate(synthetic, scale, args.days, args.seed)
    gen = f"generated in {gen_seconds:.1f}s" if gen_seconds is not None else "reused"
    print(f"# scale {scale:g}, {args.days} days: city at {synthetic} ({gen})", file=sys.stderr)
    for stale in (root / "lake", root / "scratch"):
        shutil.rmtree(stale, ignore_errors=True)
    (root / "scratch").mkdir(parents=True)
    settings = settings_for(root, synthetic, args.engine)
    rows_out = []
    registry = load_registry()
    for name, source in registry.items():
        if "synthetic" not in source.tags or (args.sources and name not in args.sources):
            continue
        if "files" not in args.connectors and name != PROBE:
            continue  # only the files baseline for the other connectors
        files = delivered_files(source, settings)
        size = sum(p.stat().st_size for p in files)
        t0 = time.perf_counter()
        failure = None
        try:
            result = bronze.ingest(spark, settings, source)
        except Exception as exc:  # noqa: BLE001 - a failing source is a result too; the others still run
            message = " ".join(str(exc).split())
            grpc = re.search(r'details = "([^"]+)"', message)  # a gRPC error's own text, without the repr
            result = {"rows_read": 0}
            failure = f"{type(exc).__name__}: {grpc.group(1) if grpc else message[:160]}".replace("|", "/")
        seconds = time.perf_counter() - t0
        row = {
            "scale": scale,
            "source": name,
            "connector": source.connector.type,
            "format": source.format.type,
            "encoding": source.format.encoding,
            "files": len(files),
            "rows": result["rows_read"],
            "bytes": size,
            "seconds": seconds,
            "expected_rows": truth["sources"].get(name, {}).get("rows_delivered"),
            "duckdb_seconds": None,
            "duckdb_rows": None,
            "note": "",
            "failed": failure,
        }
        if failure:
            row["note"] = f"FAILED after {seconds:.1f}s: {failure}"
        elif row["expected_rows"] is not None and row["rows"] != row["expected_rows"]:
            row["note"] = f"MISMATCH: truth rows_delivered {row['expected_rows']}"
        if source.format.type in ("csv", "jsonl"):
            d_seconds, d_rows, note = duckdb_read(source, files, root / "scratch")
            row.update(duckdb_seconds=d_seconds, duckdb_rows=d_rows)
            if d_rows != row["rows"] and not failure:
                note = (note + "; " if note else "") + f"DuckDB read {d_rows} rows"
            row["note"] = "; ".join(n for n in (row["note"], note) if n)
        print(f"  {name}: {row['rows']} rows in {seconds:.2f}s", file=sys.stderr)
        rows_out.append(row)
    connector_rows = []
    if PROBE in registry and any(r["source"] == PROBE for r in rows_out):
        connector_rows = run_connectors(
            spark,
            args,
            scale,
            settings,
            registry[PROBE],
            root / "scratch",
            pg,
            next(r for r in rows_out if r["source"] == PROBE),
        )
    shutil.rmtree(root / "scratch", ignore_errors=True)
    return rows_out, connector_rows


# --- the same rows through every connector ---------------------------------------------------------


def read_delivered_rows(source: Source, files: list[Path]) -> list[dict]:
    """The delivered CSV records as {declared column: text} (what bronze must hold, row for row)."""
    fmt = source.format
    rows = []
    for path in files:
        with path.open(encoding=fmt.encoding, newline="") as fh:
            reader = csv.reader(fh, delimiter=fmt.delimiter, quotechar=fmt.quotechar)
            header = [fmt.rename.get(h, h) for h in next(reader)]
            if header != source.columns:
                raise ValueError(f"{path}: header {header} is not the declared schema {source.columns}")
            rows += [dict(zip(header, record, strict=True)) for record in reader]
    return rows


def temp_source(base: Source, name: str, folder: Path, connector: dict, fmt: dict) -> Source:
    """`base` with another connector and format, written as <folder>/<name>.yaml and loaded like any entry."""
    entry = base.model_dump(mode="json", by_alias=True, exclude={"file"}, exclude_none=True)
    entry.update(
        name=name,
        tags=["benchmark"],
        connector=connector,
        format=fmt,
        description=f"{base.name} rows through the {connector['type']} connector (ingest benchmark)",
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(entry, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return load_source_file(path)


def bronze_check(settings, source: Source, expected: list[dict]) -> str:
    """'' when bronze.<source> holds exactly the expected records (as a multiset of all declared
    columns, none malformed), else what differs."""
    from citysafe import delta_io

    cols = source.columns
    bronze_table = delta_io.open_table(bronze.bronze_spec(settings, source).path)
    table = delta_io.table_rows(bronze_table, [*cols, "_parse_error"])
    got = Counter(zip(*(table.column(c).to_pylist() for c in cols), strict=True))
    want = Counter(tuple(r[c] for c in cols) for r in expected)
    malformed = table.num_rows - table.column("_parse_error").null_count
    problems = []
    if got != want:
        missing, extra = sum((want - got).values()), sum((got - want).values())
        problems.append(
            f"bronze {table.num_rows:,} rows vs {len(expected):,} delivered: {missing:,} missing, {extra:,} extra"
        )
    if malformed:
        problems.append(f"{malformed:,} malformed")
    return "; ".join(problems)


def landed_bytes(settings, source: Source) -> int:
    from citysafe.landing import list_batches

    return sum(f["bytes"] for m in list_batches(settings.landing_dir / source.name) for f in m["files"])


def _timed_ingest(spark, settings, source: Source) -> tuple[dict, float, str | None]:
    t0 = time.perf_counter()
    try:
        result, failure = bronze.ingest(spark, settings, source), None
    except Exception as exc:  # noqa: BLE001 - a failing connector is a result too
        message = " ".join(str(exc).split())
        grpc = re.search(r'details = "([^"]+)"', message)
        result = {"rows_read": 0}
        failure = f"{type(exc).__name__}: {grpc.group(1) if grpc else message[:200]}".replace("|", "/")
    return result, time.perf_counter() - t0, failure


def _connector_row(scale, connector, source_name, source_rows, **kw) -> dict:
    row = {
        "scale": scale,
        "connector": connector,
        "source": source_name,
        "source_rows": source_rows,
        "rows": 0,
        "landed_bytes": 0,
        "seconds": None,
        "yardstick": "",
        "yardstick_seconds": None,
        "yardstick_rows": None,
        "check": "",
        "note": "",
        "failed": None,
        "skipped": None,
    }
    row.update(kw)
    return row


def run_connectors(spark, args, scale, settings, base: Source, scratch: Path, pg, files_row: dict) -> list[dict]:
    """The probe source's delivered rows through files (already ingested above), rest and postgres."""
    files = delivered_files(base, settings)
    rows = read_delivered_rows(base, files)
    n = len(rows)
    out = []

    # files: the run above; its yardstick is DuckDB's read_csv of the same files
    check = "" if files_row["failed"] else bronze_check(settings, base, rows)
    out.append(
        _connector_row(
            scale,
            "files",
            base.name,
            n,
            rows=files_row["rows"],
            seconds=files_row["seconds"],
            landed_bytes=landed_bytes(settings, base),
            yardstick="DuckDB read_csv (files)",
            yardstick_seconds=files_row["duckdb_seconds"],
            yardstick_rows=files_row["duckdb_rows"],
            check=check,
            failed=files_row["failed"],
            note="" if "files" in args.connectors else "baseline for the other connectors",
        )
    )

    if "rest" in args.connectors:
        out.append(run_rest(spark, args, scale, settings, base, rows, scratch))
    if "postgres" in args.connectors:
        out.append(run_postgres(spark, args, scale, settings, base, files, rows, scratch, pg))
    return out


def run_rest(spark, args, scale, settings, base: Source, rows: list[dict], scratch: Path) -> dict:
    """Serve `rows` from a loopback Socrata-style API; ingest through a temporary `rest` source."""
    server = SocrataServer(rows, base.watermark, TIE_BREAKER, dataset=base.name).start(args.rest_page_size)
    try:
        source = temp_source(
            base,
            f"{base.name}_rest",
            scratch / "sources",
            {
                "type": "rest",
                "url": server.url,
                "page_size": args.rest_page_size,
                "tie_breaker": TIE_BREAKER,
                "timeout_seconds": 60,
                "max_retries": 2,
                "backoff_seconds": 0.2,
            },
            {"type": "json"},
        )
        result, seconds, failure = _timed_ingest(spark, settings, source)
    finally:
        server.stop()
    skips = server.keyset_skips(args.rest_page_size)
    notes = [f"{server.requests} requests, {server.bytes_sent / 1e6:,.2f} MB served"]
    if skips:
        notes.append(
            f"{skips} exact-duplicate (updated_at, {TIE_BREAKER}) row(s) across a page boundary: "
            "keyset paging skips them"
        )
    row = _connector_row(
        scale,
        "rest",
        source.name,
        len(rows),
        rows=result["rows_read"],
        seconds=seconds,
        failed=failure,
        yardstick="DuckDB read_json (landed pages)",
    )
    if failure:
        row["note"] = f"FAILED after {seconds:.1f}s: {failure}"
        return row
    row["check"] = bronze_check(settings, source, rows)
    row["landed_bytes"] = landed_bytes(settings, source)
    pages = sorted((settings.landing_dir / source.name).glob("*/page-*.json"))
    con = duckdb.connect()
    con.execute("SELECT 1").fetchall()
    columns = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in source.columns) + "}"
    t0 = time.perf_counter()
    con.execute(
        f"CREATE TEMP TABLE t AS SELECT * FROM read_json(?, format='array', columns={columns})",
        [[str(p) for p in pages]],
    )
    row["yardstick_rows"] = con.execute("SELECT count(*) FROM t").fetchone()[0]
    row["yardstick_seconds"] = time.perf_counter() - t0
    con.close()
    row["note"] = "; ".join(notes)
    print(f"  {source.name}: {row['rows']} rows in {seconds:.2f}s", file=sys.stderr)
    return row


def run_postgres(
    spark, args, scale, settings, base: Source, files: list[Path], rows: list[dict], scratch: Path, pg
) -> dict:
    """COPY the delivered CSVs into a table of a local PostgreSQL; ingest through a temporary `postgres`
    source; the yardstick is psycopg's COPY TO STDOUT of that table (the raw extract)."""
    import psycopg

    name = f"{base.name}_pg"
    if pg["server"] is None:
        return _connector_row(scale, "postgres", name, len(rows), skipped=pg["error"], note=f"SKIPPED: {pg['error']}")
    server = pg["server"]
    db = "bench_" + re.sub(r"\W", "_", f"{scale:g}")
    cols = ", ".join(base.columns)
    with server.connect() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {db}")
        admin.execute(f"CREATE DATABASE {db}")
    t0 = time.perf_counter()
    fmt = base.format
    with server.connect(db) as conn:
        conn.execute("SET client_encoding TO 'UTF8'")
        # Every column as text: the same strings the CSV delivers (empty stays '', not NULL).
        conn.execute(f"CREATE TABLE {PG_TABLE} ({', '.join(f'{c} text' for c in base.columns)})")
        copy_in = (
            f"COPY {PG_TABLE} ({cols}) FROM STDIN WITH (FORMAT csv, HEADER true, DELIMITER "
            f"'{fmt.delimiter}', QUOTE '{fmt.quotechar}', FORCE_NOT_NULL ({cols}))"
        )
        with conn.cursor() as cur:
            for path in files:
                with cur.copy(copy_in) as copy:
                    copy.write(path.read_bytes())
        conn.execute(f"CREATE INDEX ON {PG_TABLE} ({base.watermark}, {TIE_BREAKER})")
        conn.execute(f"ANALYZE {PG_TABLE}")
        loaded = conn.execute(f"SELECT count(*) FROM {PG_TABLE}").fetchone()[0]
        table_mb = conn.execute(f"SELECT pg_total_relation_size('{PG_TABLE}')").fetchone()[0] / 1e6
    load_seconds = time.perf_counter() - t0
    os.environ[PG_DSN_ENV] = server.dsn(db)
    source = temp_source(
        base,
        name,
        scratch / "sources",
        {
            "type": "postgres",
            "dsn_env": PG_DSN_ENV,
            "table": PG_TABLE,
            "batch_size": args.pg_batch_size,
            "tie_breaker": TIE_BREAKER,
        },
        {"type": "jsonl"},
    )
    result, seconds, failure = _timed_ingest(spark, settings, source)
    notes = [f"table {loaded:,} rows, {table_mb:,.1f} MB with index, loaded by COPY in {load_seconds:.2f}s (not timed)"]
    if loaded != len(rows):
        notes.insert(0, f"MISMATCH: COPY loaded {loaded:,} rows")
    skips = keyset_skips(sorted((r[base.watermark], r[TIE_BREAKER]) for r in rows), args.pg_batch_size)
    if skips:
        notes.append(
            f"{skips} exact-duplicate (updated_at, {TIE_BREAKER}) row(s) across a chunk boundary: "
            "keyset paging skips them"
        )
    row = _connector_row(
        scale,
        "postgres",
        name,
        len(rows),
        rows=result["rows_read"],
        seconds=seconds,
        failed=failure,
        yardstick="psycopg COPY TO STDOUT (table)",
    )
    if failure:
        row["note"] = f"FAILED after {seconds:.1f}s: {failure}"
        return row
    row["check"] = bronze_check(settings, source, rows)
    row["landed_bytes"] = landed_bytes(settings, source)
    with psycopg.connect(server.dsn(db), autocommit=True) as conn:
        conn.execute("SELECT 1").fetchall()  # connection set-up outside the timing
        t0 = time.perf_counter()
        nbytes = lines = 0
        with conn.cursor() as cur, cur.copy(f"COPY {PG_TABLE} ({cols}) TO STDOUT") as copy:
            for data in copy:
                nbytes += len(data)
                lines += bytes(data).count(b"\n")
        row["yardstick_seconds"] = time.perf_counter() - t0
        row["yardstick_rows"] = lines
    notes.append(f"COPY TO STDOUT {nbytes / 1e6:,.2f} MB")
    row["note"] = "; ".join(notes)
    with server.connect() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {db}")
    print(f"  {source.name}: {row['rows']} rows in {seconds:.2f}s", file=sys.stderr)
    return row


def _rate(rows, seconds):
    return f"{rows / seconds:,.0f}" if seconds else "-"


def _fmt_row(label_scale, source, cf, files, rows, size, seconds, d_seconds, note="", failed=False):
    ratio = f"{seconds / d_seconds:.1f}x" if d_seconds and not failed else "-"
    d = f"{d_seconds:.3f}" if d_seconds is not None else "-"
    return (
        f"| {label_scale} | {source} | {cf} | {files:,} | {rows:,} | {size / 1e6:,.2f} | {seconds:.3f} | "
        f"{_rate(rows, seconds)} | {d} | {ratio} | {note} |"
    )


def table(results: list[dict]) -> str:
    lines = [
        "| scale | source | connector/format | files | rows | MB | seconds | rows/s | DuckDB s | ours/DuckDB | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            _fmt_row(
                f"{r['scale']:g}",
                r["source"],
                f"{r['connector']}/{r['format']}",
                r["files"],
                r["rows"],
                r["bytes"],
                r["seconds"],
                r["duckdb_seconds"],
                r["note"],
                bool(r["failed"]),
            )
        )
    lines += [
        "",
        "Per connector/format (DuckDB and ratio over the sources DuckDB read):",
        "",
        "| scale | connector/format | sources | files | rows | MB | seconds | rows/s | DuckDB s | ours/DuckDB (same sources) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    groups = defaultdict(list)
    for r in results:
        groups[(r["scale"], f"{r['connector']}/{r['format']}")].append(r)
        groups[(r["scale"], f"{r['connector']}/all")].append(r)
    for (scale, cf), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1].endswith("/all"), kv[0][1])):
        failed = sum(bool(r["failed"]) for r in rs)
        rs = [r for r in rs if not r["failed"]]
        secs = sum(r["seconds"] for r in rs)
        compared = [r for r in rs if r["duckdb_seconds"] is not None]
        d = sum(r["duckdb_seconds"] for r in compared) if compared else None
        ours_cmp = sum(r["seconds"] for r in compared)
        ratio = f"{ours_cmp / d:.1f}x" if d else "-"
        lines.append(
            f"| {scale:g} | {cf} | {len(rs)} | {sum(r['files'] for r in rs):,} | {sum(r['rows'] for r in rs):,} | "
            f"{sum(r['bytes'] for r in rs) / 1e6:,.2f} | {secs:.3f} | {_rate(sum(r['rows'] for r in rs), secs)} | "
            f"{f'{d:.3f}' if d is not None else '-'} | {ratio}{f' ({failed} failed source(s) left out)' if failed else ''} |"
        )
    return "\n".join(lines)


def connector_table(rows: list[dict]) -> str:
    lines = [
        f"Per connector, the same rows ({PROBE} as delivered; rest: loopback Socrata-style API, postgres: "
        "local PostgreSQL table):",
        "",
        "| scale | connector | rows | bronze = delivered | landed MB | seconds | rows/s | time vs files | "
        "yardstick | yardstick s | ours/yardstick | note |",
        "|---|---|---:|---|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    files_seconds = {r["scale"]: r["seconds"] for r in rows if r["connector"] == "files" and not r["failed"]}
    for r in rows:
        ok = not (r["failed"] or r["skipped"])
        if not ok:
            check = "-"
        elif r["check"]:
            check = f"MISMATCH: {r['check']}"
        else:
            check = f"yes ({r['source_rows']:,})"
        base = files_seconds.get(r["scale"])
        vs_files = (
            f"{r['seconds'] / base:.2f}x"
            if ok and base and r["connector"] != "files"
            else ("1.00x" if ok and r["connector"] == "files" else "-")
        )
        y = r["yardstick_seconds"]
        ratio = f"{r['seconds'] / y:.1f}x" if ok and y else "-"
        note = r["note"]
        secs = f"{r['seconds']:.3f}" if r["seconds"] is not None else "-"
        if ok and r["yardstick_rows"] is not None and r["yardstick_rows"] != r["source_rows"]:
            note = (note + "; " if note else "") + f"yardstick read {r['yardstick_rows']:,} rows"
        lines.append(
            f"| {r['scale']:g} | {r['connector']} | {r['rows']:,} | {check} | {r['landed_bytes'] / 1e6:,.2f} | "
            f"{secs} | "
            f"{_rate(r['rows'], r['seconds']) if ok else '-'} | {vs_files} | {r['yardstick'] or '-'} | "
            f"{f'{y:.3f}' if y is not None else '-'} | {ratio} | {note} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scales", type=float, nargs="+", default=[0.05, 0.25], help="city scales (default 0.05 0.25)")
    parser.add_argument("--days", type=int, default=365, help="days of deliveries (default 365)")
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument(
        "--out",
        default=str(REPO_ROOT / "var" / "benchmark"),
        help="work folder: cities, lakes, results (default var/benchmark)",
    )
    parser.add_argument("--engine", default="sail", help="'sail' (in process) or sc://host:port")
    parser.add_argument(
        "--max-batch-mb",
        type=int,
        default=None,
        help="override the files connector's batch cap (citysafe.connectors.files.MAX_BATCH_BYTES, "
        f"default {files_connector.MAX_BATCH_BYTES >> 20} MB) for this run only",
    )
    parser.add_argument(
        "--connectors",
        nargs="+",
        choices=CONNECTORS,
        default=list(CONNECTORS),
        help="connectors to time (default: all). files: every synthetic source; rest / postgres: "
        f"the {PROBE} rows (the files connector still ingests {PROBE} as their baseline)",
    )
    parser.add_argument("--rest-page-size", type=int, default=5000, help="rest connector page_size (default 5000)")
    parser.add_argument(
        "--pg-batch-size", type=int, default=20000, help="postgres connector batch_size (default 20000)"
    )
    parser.add_argument(
        "--sources", nargs="+", default=None, help="only these synthetic sources (default: all), e.g. device_readings"
    )
    args = parser.parse_args(argv)
    if args.max_batch_mb:
        files_connector.MAX_BATCH_BYTES = args.max_batch_mb << 20
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    results, connector_results = [], []
    pg = {"server": None, "error": None, "version": None, "base": None}
    try:
        if "postgres" in args.connectors:
            pg["base"] = Path(tempfile.mkdtemp(prefix="citysafe-bench-pg-"))
            try:
                pg["server"] = start_postgres(pg["base"])
                with pg["server"].connect() as conn:
                    pg["version"] = conn.execute("SHOW server_version").fetchone()[0]
                print(
                    f"# PostgreSQL {pg['version']} on 127.0.0.1:{pg['server'].port} started in "
                    f"{pg['server'].start_seconds:.1f}s",
                    file=sys.stderr,
                )
            except Exception as exc:  # noqa: BLE001 - no server here: the postgres lines say so
                pg["error"] = " ".join(f"{type(exc).__name__}: {exc}".split())[:200].replace("|", "/")
                print(f"# postgres connector skipped: {pg['error']}", file=sys.stderr)
        t0 = time.perf_counter()
        with spark_session(args.engine, app_name="citysafe-ingest-benchmark") as spark:
            started = time.perf_counter() - t0
            print(f"# engine {args.engine} session started in {started:.1f}s", file=sys.stderr)
            for scale in args.scales:
                by_source, by_connector = run_scale(spark, args, scale, pg)
                results += by_source
                connector_results += by_connector
    finally:
        if pg["server"] is not None:
            pg["server"].stop()
        if pg["base"] is not None:
            shutil.rmtree(pg["base"], ignore_errors=True)

    header = (
        f"CitySafe ingest benchmark: {dt.datetime.now().isoformat(timespec='seconds')}, {platform.node()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, DuckDB {duckdb.__version__}, "
        f"engine {args.engine} (session start {started:.1f}s, not in the table), days={args.days}, "
        f"seed={args.seed}, files batch cap {files_connector.MAX_BATCH_BYTES >> 20} MB"
        f"{' (--max-batch-mb override)' if args.max_batch_mb else ''}, connectors {' '.join(args.connectors)}"
        + (f", rest page_size {args.rest_page_size}" if "rest" in args.connectors else "")
        + (
            f", postgres batch_size {args.pg_batch_size} (PostgreSQL {pg['version'] or 'not available'})"
            if "postgres" in args.connectors
            else ""
        )
    )
    text = header + "\n\n" + table(results)
    if connector_results:
        text += "\n\n" + connector_table(connector_results)
    print(text)
    (out / "results.md").write_text(text + "\n", encoding="utf-8")
    (out / "results.json").write_text(
        json.dumps({"header": header, "results": results, "connectors": connector_results}, indent=2), encoding="utf-8"
    )
    bad = any(r["failed"] or "MISMATCH" in r["note"] for r in results) or any(
        r["failed"] or r["check"] or "MISMATCH" in r["note"] for r in connector_results
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
