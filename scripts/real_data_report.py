"""Ingest every real-data source (sources/real_*.yaml) into a throw-away lake and report what arrived.

    .venv/pipeline/bin/python scripts/real_data_report.py                 # full data in real_data_root
    .venv/pipeline/bin/python scripts/real_data_report.py real_fars_crashes real_houston_crime
    .venv/pipeline/bin/python scripts/real_data_report.py --data-root tests/data/real
    .venv/pipeline/bin/python scripts/real_data_report.py --write-samples tests/data/real --rows 150

Per source: the files its connector picks up, the data records in them (counted here with Python's csv
module, independently of citysafe.formats), the rows that reached bronze (read back with delta-rs),
malformed rows grouped by their `_parse_error`, rows with undeclared fields (`_extra_fields`), seconds
and rows/s of `spark_jobs.bronze.ingest`. Exit status 1 when any source's bronze count differs from
its files, or when a source cannot be ingested.

--write-samples copies the header and the first --rows records of every file (bytes as delivered, gzip
again with mtime 0 so the samples are byte-for-byte reproducible) into DIR/<folder>/<file>; that is how
the test samples under tests/data/real were made.
"""

from __future__ import annotations

import argparse
import collections
import csv
import gzip
import io
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

from citysafe.config import load_settings
from citysafe.sources import Source, load_registry


def real_sources(names: list[str] | None = None) -> dict[str, Source]:
    registry = {n: s for n, s in load_registry().items() if n.startswith("real_")}
    unknown = sorted(set(names or []) - set(registry))
    if unknown:
        sys.exit(f"unknown real source(s): {', '.join(unknown)} (known: {', '.join(registry)})")
    return {n: s for n, s in registry.items() if not names or n in names}


def source_files(source: Source, settings) -> list[Path]:
    cfg = source.connector
    folder = cfg.folder(settings)
    found = folder.rglob(cfg.pattern) if cfg.recursive else folder.glob(cfg.pattern)
    return sorted(p for p in found if p.is_file())


def _text(source: Source, path: Path, keep_bom: bool = False) -> str:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    encodings = ["utf-8", "gb18030"] if source.format.encoding == "auto" else [source.format.encoding]
    for enc in encodings:
        try:
            text = data.decode(enc)
            return text if keep_bom else text.removeprefix("\ufeff")
        except UnicodeDecodeError:
            continue
    raise ValueError(f"{path}: not valid {' or '.join(encodings)}")


def count_records(source: Source, path: Path) -> int:
    """Data records in a delivered CSV file: csv-module records after the header, blank lines skipped."""
    fmt = source.format
    reader = csv.reader(io.StringIO(_text(source, path), newline=""), delimiter=fmt.delimiter, quotechar=fmt.quotechar)
    if fmt.header:
        next(reader, None)
    return sum(1 for record in reader if record)


def write_sample(source: Source, path: Path, target: Path, rows: int) -> int:
    """The header and the first `rows` records of `path`, as delivered, into `target`; returns records."""
    fmt = source.format
    text = _text(source, path, keep_bom=True)
    consumed: list[str] = []

    def lines():
        for line in io.StringIO(text, newline=""):
            consumed.append(line)
            yield line

    def without_bom(it):
        for i, line in enumerate(it):
            yield line.removeprefix("\ufeff") if i == 0 else line

    reader = csv.reader(without_bom(lines()), delimiter=fmt.delimiter, quotechar=fmt.quotechar)
    if fmt.header:
        next(reader, None)
    taken = 0
    for record in reader:
        taken += bool(record)
        if taken == rows:
            break
    data = "".join(consumed).encode(fmt.encoding if fmt.encoding != "auto" else "utf-8")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(gzip.compress(data, compresslevel=9, mtime=0) if target.name.endswith(".gz") else data)
    return taken


def make_samples(sources: dict[str, Source], settings, out: Path, rows: int) -> None:
    root = settings.real_data_root
    for name, source in sources.items():
        for path in source_files(source, settings):
            target = out / path.relative_to(root)
            taken = write_sample(source, path, target, rows)
            print(f"{name:38} {str(target.relative_to(out)):90} {taken:5} records {target.stat().st_size:8} bytes")


def bronze_report(spark, settings, source: Source) -> dict:
    from deltalake.exceptions import TableNotFoundError

    from citysafe import delta_io
    from spark_jobs import bronze

    files = source_files(source, settings)
    result = {"files": len(files), "rows_in": sum(count_records(source, f) for f in files), "error": None}
    started = time.monotonic()
    try:
        bronze.ingest(spark, settings, source)
    except Exception as exc:  # noqa: BLE001 - report every source, then fail
        traceback.print_exc()
        result["error"] = re.sub(r"\s+", " ", f"{type(exc).__name__}: {exc}")[:300]
    result["seconds"] = time.monotonic() - started
    try:
        table = delta_io.table_rows(
            delta_io.open_table(settings.bronze_dir / source.name), ["_parse_error", "_extra_fields"]
        )
    except TableNotFoundError:
        result.update(rows_bronze=0, malformed=collections.Counter(), extra=0)
        return result
    result["rows_bronze"] = table.num_rows
    result["malformed"] = collections.Counter(e for e in table.column("_parse_error").to_pylist() if e is not None)
    result["extra"] = table.num_rows - table.column("_extra_fields").null_count
    return result


def print_table(results: dict[str, dict]) -> None:
    head = (
        "source",
        "files",
        "rows in files",
        "rows in bronze",
        "complete",
        "malformed",
        "extra-field rows",
        "seconds",
        "rows/s",
    )

    def line(name, rs):
        rows, secs = sum(r["rows_bronze"] for r in rs), sum(r["seconds"] for r in rs)
        complete = all(r["rows_in"] == r["rows_bronze"] and not r["error"] for r in rs)
        return (
            name,
            str(sum(r["files"] for r in rs)),
            f"{sum(r['rows_in'] for r in rs):,}",
            f"{rows:,}",
            "yes" if complete else "NO",
            f"{sum(sum(r['malformed'].values()) for r in rs):,}",
            f"{sum(r['extra'] for r in rs):,}",
            f"{secs:.1f}",
            f"{rows / secs:,.0f}" if secs and rows else "-",
        )

    lines = [line(name, [r]) for name, r in results.items()] + [line("total", list(results.values()))]
    widths = [max(len(h), *(len(ln[i]) for ln in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    rule = "  ".join("-" * w for w in widths)
    print(fmt.format(*head), rule, *(fmt.format(*ln) for ln in lines[:-1]), rule, fmt.format(*lines[-1]), sep="\n")
    for name, r in results.items():
        if r["error"]:
            print(f"\n{name}: ingest failed: {r['error']}")
        if r["malformed"]:
            print(f"\n{name}: malformed rows by reason")
            for reason, n in r["malformed"].most_common():
                print(f"  {n:>9,}  {reason}")
    if not any(r["malformed"] for r in results.values()):
        print("\nmalformed rows by reason: none in any source (no bronze row has a _parse_error)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sources", nargs="*", help="real_* sources (default: all of them)")
    parser.add_argument("--data-root", type=Path, help="folder with the datasets (default: real_data_root)")
    parser.add_argument("--lake", type=Path, help="lake folder to ingest into (default: a temporary one, removed)")
    parser.add_argument("--write-samples", type=Path, metavar="DIR", help="write test samples instead of ingesting")
    parser.add_argument("--rows", type=int, default=150, help="records per sample file (default 150)")
    args = parser.parse_args(argv)

    environ = dict(os.environ)
    if args.data_root:
        environ["CITYSAFE_REAL_DATA_ROOT"] = str(args.data_root.resolve())
    sources = real_sources(args.sources)

    if args.write_samples:
        make_samples(sources, load_settings(environ=environ), args.write_samples.resolve(), args.rows)
        return 0

    from citysafe.engine import spark_session

    with tempfile.TemporaryDirectory(prefix="citysafe-real-") as tmp:
        environ["CITYSAFE_LAKE_ROOT"] = str((args.lake or Path(tmp) / "lake").resolve())
        settings = load_settings(environ=environ)
        print(f"real data: {settings.real_data_root}\nlake:      {settings.lake_root}\n")
        results: dict[str, dict] = {}
        with spark_session(settings.engine, app_name="citysafe-real-data-report") as spark:
            for name, source in sources.items():
                print(f"ingesting {name} ...", file=sys.stderr, flush=True)
                results[name] = bronze_report(spark, settings, source)
        print_table(results)
    bad = [n for n, r in results.items() if r["error"] or r["rows_in"] != r["rows_bronze"]]
    if bad:
        print(f"\nINCOMPLETE: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
