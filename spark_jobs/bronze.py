"""Bronze: landed files -> an append-only Delta table per source, every record with its lineage.

Extract: land new files (checksum-deduplicated, manifest). Load: append each landed batch to
bronze.<source> and only then mark it committed (a crash in between re-reads the batch, never skips it;
a batch already in bronze is recognised by its id and not appended twice).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from citysafe import delta_io
from citysafe.config import Settings
from citysafe.delta_io import Column, TableSpec
from citysafe.landing import ParsedFile, land_new_files, list_batches, parse_batch
from citysafe.runs import write_json_atomic
from citysafe.sources import Source
from spark_jobs.tables import LINEAGE


def bronze_spec(settings: Settings, source: Source) -> TableSpec:
    columns = (
        *(Column(c, "string") for c in source.columns),
        Column("_source", "string", nullable=False),
        Column("_parse_error", "string", description="why the record could not be split into fields"),
        Column("_raw_record", "string", description="the malformed record as delivered"),
        *LINEAGE,
    )
    return TableSpec(f"bronze_{source.name}", settings.bronze_dir / source.name, columns)


def _state_path(settings: Settings, source: Source) -> Path:
    return settings.state_dir / "bronze" / f"{source.name}.json"


def committed_batches(settings: Settings, source: Source) -> list[str]:
    path = _state_path(settings, source)
    return json.loads(path.read_text())["committed_batches"] if path.exists() else []


def _mark_committed(settings: Settings, source: Source, batch_id: str) -> None:
    done = committed_batches(settings, source)
    if batch_id not in done:
        write_json_atomic(_state_path(settings, source), {"committed_batches": [*done, batch_id]})


def to_arrow(source: Source, batch_id: str, files: dict[str, ParsedFile], ingested_at: dt.datetime) -> pa.Table:
    parts = []
    for name in sorted(files):
        f = files[name]
        n = f.rows
        data = {c: pa.array(f.columns[c], pa.string()) for c in source.columns}
        data.update({
            "_source": pa.array([source.name] * n, pa.string()),
            "_parse_error": pa.array(f.parse_errors, pa.string()),
            "_raw_record": pa.array(f.raw_records, pa.string()),
            "_batch_id": pa.array([batch_id] * n, pa.string()),
            "_source_file": pa.array([name] * n, pa.string()),
            "_source_row_number": pa.array(f.row_numbers, pa.int64()),
            "_ingested_at": pa.array([ingested_at] * n, pa.timestamp("us", tz="UTC")),
        })
        parts.append(pa.table(data))
    return pa.concat_tables(parts)


def ingest(spark: SparkSession, settings: Settings, source: Source, progress=print) -> dict:
    """Land new files and append every not-yet-committed landed batch to bronze. Returns summary counts."""
    started = time.monotonic()
    landing_dir = settings.landing_dir / source.name
    folder = source.connector.folder(settings)
    manifest, parsed_now = land_new_files(source, folder, landing_dir)
    if manifest:
        progress(f"  landed batch {manifest['batch_id']}: {len(manifest['files'])} file(s), {manifest['rows']} rows")
    else:
        progress(f"  no new files for {source.name} in {folder}")
    spec = bronze_spec(settings, source)
    delta_io.ensure_table(spec)
    done = set(committed_batches(settings, source))
    rows_read = appended = malformed = 0
    batches = []
    for batch in list_batches(landing_dir):
        batch_id = batch["batch_id"]
        if batch_id in done:
            continue
        already = (delta_io.read(spark, spec).where(F.col("_batch_id") == batch_id).limit(1).count() > 0)
        if not already:
            files = parsed_now if manifest and batch_id == manifest["batch_id"] else parse_batch(
                source, landing_dir, batch)
            table = to_arrow(source, batch_id, files, dt.datetime.now(dt.UTC))
            result = delta_io.append(spark.createDataFrame(table), spec, expected_rows=table.num_rows)
            rows_read += table.num_rows
            appended += result.rows_written
            malformed += sum(f["malformed_rows"] for f in batch["files"])
            progress(f"  bronze {source.name}: appended {result.rows_written} rows (version {result.version_after})")
        _mark_committed(settings, source, batch_id)
        batches.append(batch_id)
    return {
        "rows_read": rows_read, "published": appended, "malformed_kept_with_parse_error": malformed,
        "quarantined": {}, "duplicates": 0, "batches": batches,
        "delta_version": delta_io.version(spec), "seconds": round(time.monotonic() - started, 3),
    }
