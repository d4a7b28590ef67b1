"""Ingest benchmark: the synthetic city's deliveries -> landing + bronze Delta, timed per source, with
DuckDB reading the same files as a yardstick.

    python benchmarks/ingest_benchmark.py [--scales 0.05 0.25] [--days 365] [--seed 20260101]
                                          [--out var/benchmark] [--engine sail]

For each scale: generate the city (skipped when the same city is already in --out), ingest every source
tagged `synthetic` into a fresh lake (one engine session for the whole run), then let DuckDB read the same
CSV / JSON-lines files into an in-memory table. Prints one table (and writes it, with the raw numbers as
JSON, under --out). All times are wall-clock seconds from time.perf_counter. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("RUST_LOG", "error")

import duckdb  # noqa: E402

import synthetic_city  # noqa: E402
from citysafe.config import load_settings  # noqa: E402
from citysafe.connectors import files as files_connector  # noqa: E402
from citysafe.engine import spark_session  # noqa: E402
from citysafe.sources import Source, load_registry  # noqa: E402
from spark_jobs import bronze  # noqa: E402

# Encodings DuckDB's CSV reader handles without the (downloadable) `encodings` extension.
DUCKDB_NATIVE = {"utf-8": "utf-8", "utf8": "utf-8", "utf-8-sig": "utf-8", "latin-1": "latin-1",
                 "utf-16": "utf-16"}


def settings_for(root: Path, synthetic: Path, engine: str):
    return load_settings(environ={
        "CITYSAFE_LAKE_ROOT": str(root / "lake"),
        "CITYSAFE_SYNTHETIC_ROOT": str(synthetic),
        "CITYSAFE_DISTRICTS_GEOJSON": str(synthetic / "reference" / "districts.geojson"),
        "CITYSAFE_DISTRICT_ALIASES": str(synthetic / "reference" / "district_aliases.csv"),
        "CITYSAFE_ENGINE": engine,
    })


def generate(synthetic: Path, scale: float, days: int, seed: int) -> tuple[dict, float | None]:
    """The city at `synthetic`; reuse it when the truth file says it is the same city."""
    params = {"scale": scale, "seed": seed, "start_date": "2025-01-01", "days": days,
              "timezone": "Asia/Shanghai", "h3_resolution": 8}
    truth_file = synthetic / "truth" / "expected_counts.json"
    if truth_file.exists():
        truth = json.loads(truth_file.read_text(encoding="utf-8"))
        if all(str(truth["generator"].get(k)) == str(v) for k, v in params.items()):
            return truth, None
    t0 = time.perf_counter()
    truth = synthetic_city.generate(synthetic, scale=scale, seed=seed, start_date=dt.date(2025, 1, 1), days=days,
                                    timezone="Asia/Shanghai", h3_resolution=8)
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
        sql = ("CREATE TEMP TABLE t AS SELECT * FROM read_csv(?, all_varchar=true, header=true, delim=?, quote=?, "
               f"escape=?, encoding='{encoding}')")
        con.execute(sql, [paths, fmt.delimiter, fmt.quotechar, fmt.quotechar])
    elif fmt.type == "jsonl":
        # All declared columns as VARCHAR: the same "everything as text" contract as bronze (and no
        # type inference across mixed int/string fields such as fire_calls.received).
        columns = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in source.columns) + "}"
        con.execute(f"CREATE TEMP TABLE t AS SELECT * FROM read_json(?, format='newline_delimited', "
                    f"columns={columns})", [paths])
    else:
        raise ValueError(f"no DuckDB comparison for format {fmt.type}")
    rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
    seconds = time.perf_counter() - t0
    con.close()
    return seconds, rows, note


def run_scale(spark, args, scale: float) -> list[dict]:
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
    for name, source in load_registry().items():
        if "synthetic" not in source.tags:
            continue
        files = delivered_files(source, settings)
        size = sum(p.stat().st_size for p in files)
        t0 = time.perf_counter()
        failure = None
        try:
            result = bronze.ingest(spark, settings, source, progress=lambda m: None)
        except Exception as exc:  # noqa: BLE001 - a failing source is a result too; the others still run
            message = " ".join(str(exc).split())
            grpc = re.search(r'details = "([^"]+)"', message)  # a gRPC error's own text, without the repr
            result = {"rows_read": 0}
            failure = f"{type(exc).__name__}: {grpc.group(1) if grpc else message[:160]}".replace("|", "/")
        seconds = time.perf_counter() - t0
        row = {"scale": scale, "source": name, "connector": source.connector.type, "format": source.format.type,
               "encoding": source.format.encoding, "files": len(files), "rows": result["rows_read"],
               "bytes": size, "seconds": seconds, "expected_rows": truth["sources"].get(name, {}).get("rows_delivered"),
               "duckdb_seconds": None, "duckdb_rows": None, "note": "", "failed": failure}
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
    shutil.rmtree(root / "scratch", ignore_errors=True)
    return rows_out


def _rate(rows, seconds):
    return f"{rows / seconds:,.0f}" if seconds else "-"


def _fmt_row(label_scale, source, cf, files, rows, size, seconds, d_seconds, note="", failed=False):
    ratio = f"{seconds / d_seconds:.1f}x" if d_seconds and not failed else "-"
    d = f"{d_seconds:.3f}" if d_seconds is not None else "-"
    return (f"| {label_scale} | {source} | {cf} | {files:,} | {rows:,} | {size / 1e6:,.2f} | {seconds:.3f} | "
            f"{_rate(rows, seconds)} | {d} | {ratio} | {note} |")


def table(results: list[dict]) -> str:
    lines = ["| scale | source | connector/format | files | rows | MB | seconds | rows/s | DuckDB s | ours/DuckDB | note |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(_fmt_row(f"{r['scale']:g}", r["source"], f"{r['connector']}/{r['format']}", r["files"], r["rows"],
                              r["bytes"], r["seconds"], r["duckdb_seconds"], r["note"], bool(r["failed"])))
    lines += ["", "Per connector/format (DuckDB and ratio over the sources DuckDB read):", "",
              "| scale | connector/format | sources | files | rows | MB | seconds | rows/s | DuckDB s | ours/DuckDB (same sources) |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
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
        lines.append(f"| {scale:g} | {cf} | {len(rs)} | {sum(r['files'] for r in rs):,} | {sum(r['rows'] for r in rs):,} | "
                     f"{sum(r['bytes'] for r in rs) / 1e6:,.2f} | {secs:.3f} | {_rate(sum(r['rows'] for r in rs), secs)} | "
                     f"{f'{d:.3f}' if d is not None else '-'} | {ratio}{f' ({failed} failed source(s) left out)' if failed else ''} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.05, 0.25], help="city scales (default 0.05 0.25)")
    parser.add_argument("--days", type=int, default=365, help="days of deliveries (default 365)")
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--out", default=str(REPO_ROOT / "var" / "benchmark"),
                        help="work folder: cities, lakes, results (default var/benchmark)")
    parser.add_argument("--engine", default="sail", help="'sail' (in process) or sc://host:port")
    parser.add_argument("--max-batch-mb", type=int, default=None,
                        help="override the files connector's batch cap (citysafe.connectors.files.MAX_BATCH_BYTES, "
                             f"default {files_connector.MAX_BATCH_BYTES >> 20} MB) for this run only")
    args = parser.parse_args(argv)
    if args.max_batch_mb:
        files_connector.MAX_BATCH_BYTES = args.max_batch_mb << 20
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    results = []
    t0 = time.perf_counter()
    with spark_session(args.engine, app_name="citysafe-ingest-benchmark") as spark:
        started = time.perf_counter() - t0
        print(f"# engine {args.engine} session started in {started:.1f}s", file=sys.stderr)
        for scale in args.scales:
            results += run_scale(spark, args, scale)

    header = (f"CitySafe ingest benchmark: {dt.datetime.now().isoformat(timespec='seconds')}, {platform.node()}, "
              f"{os.cpu_count()} CPUs, Python {platform.python_version()}, DuckDB {duckdb.__version__}, "
              f"engine {args.engine} (session start {started:.1f}s, not in the table), days={args.days}, "
              f"seed={args.seed}, files batch cap {files_connector.MAX_BATCH_BYTES >> 20} MB"
              f"{' (--max-batch-mb override)' if args.max_batch_mb else ''}")
    text = header + "\n\n" + table(results)
    print(text)
    (out / "results.md").write_text(text + "\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps({"header": header, "results": results}, indent=2), encoding="utf-8")
    return 1 if any(r["failed"] or "MISMATCH" in r["note"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
