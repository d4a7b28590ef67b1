"""Bronze: a source's deliveries -> an append-only Delta table, every record with its lineage.

Extract: the source's connector fetches batches from the last committed watermark (files: new files
by checksum). Each batch is landed (immutable bytes + manifest), appended to bronze.<source>, and only
then is its watermark committed: a crash in between re-reads the batch, never skips it, and a batch
already in bronze is recognised by its id and not appended twice.

Every committed batch also gets one row in silver.ingest_batch (files, rows, bytes, watermark range,
when it was loaded): the operations marts read freshness and volumes from it. The rows are written at
the end of `ingest` for every committed batch the table does not hold yet (so a crash before that write,
or a lake loaded before the table existed, is filled in on the next ingest; nothing new commits nothing).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from pathlib import Path

import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from citysafe import delta_io
from citysafe.config import Settings
from citysafe.connectors import connector_for
from citysafe.delta_io import Column, TableSpec
from citysafe.formats import ParsedFile
from citysafe.landing import land_batch, landed_checksums, list_batches, parse_landed
from citysafe.runs import write_json_atomic
from citysafe.sources import Source
from spark_jobs import tables
from spark_jobs.tables import LINEAGE

log = logging.getLogger(__name__)


def bronze_columns(source: Source) -> tuple[Column, ...]:
    return (
        *(Column(c, "string") for c in source.columns),
        Column("_source", "string", nullable=False),
        Column("_parse_error", "string", description="why the record could not be read into fields"),
        Column("_raw_record", "string", description="the malformed record as delivered"),
        Column("_extra_fields", "string", description="delivered fields not in the schema, as JSON"),
        *LINEAGE,
    )


def bronze_spec(settings: Settings, source: Source) -> TableSpec:
    return TableSpec(f"bronze_{source.name}", settings.bronze_dir / source.name, bronze_columns(source))


# --- ingest state: committed batches and the watermark ---------------------------------------------


def _state_path(settings: Settings, source: Source) -> Path:
    return settings.state_dir / "bronze" / f"{source.name}.json"


def load_state(settings: Settings, source: Source) -> dict:
    path = _state_path(settings, source)
    if path.exists():
        return json.loads(path.read_text())
    start = getattr(source.connector, "start_watermark", None)
    return {"committed_batches": [], "watermark": start}


def committed_batches(settings: Settings, source: Source) -> list[str]:
    return load_state(settings, source)["committed_batches"]


def _commit(settings: Settings, source: Source, manifest: dict) -> None:
    state = load_state(settings, source)
    if manifest["batch_id"] not in state["committed_batches"]:
        state["committed_batches"].append(manifest["batch_id"])
    if manifest.get("watermark_to") is not None:
        state["watermark"] = manifest["watermark_to"]
    write_json_atomic(_state_path(settings, source), state)


# --- load ------------------------------------------------------------------------------------------


def to_arrow(source: Source, batch_id: str, files: dict[str, ParsedFile], ingested_at: dt.datetime) -> pa.Table:
    """The parsed files of one batch as bronze rows: each file's table plus the lineage columns."""
    order = [c.name for c in bronze_columns(source)]
    parts = []
    for name in sorted(files):
        table = files[name].table
        n = table.num_rows
        parts.append(
            table.append_column("_source", pa.repeat(pa.scalar(source.name, pa.string()), n))
            .append_column("_batch_id", pa.repeat(pa.scalar(batch_id, pa.string()), n))
            .append_column("_source_file", pa.repeat(pa.scalar(name, pa.string()), n))
            .append_column("_ingested_at", pa.repeat(pa.scalar(ingested_at, pa.timestamp("us", tz="UTC")), n))
            .select(order)
        )
    return pa.concat_tables(parts)


class _Load:
    def __init__(self, spark: SparkSession, settings: Settings, source: Source):
        self.spark, self.settings, self.source = spark, settings, source
        self.spec = bronze_spec(settings, source)
        delta_io.ensure_table(self.spec)
        self.rows = self.appended = self.malformed = 0
        self.batches: list[str] = []
        self.ingested_at: dict[str, dt.datetime] = {}  # batch id -> the _ingested_at it was appended with

    def __call__(self, manifest: dict, files: dict[str, ParsedFile]) -> None:
        batch_id = manifest["batch_id"]
        if batch_id in committed_batches(self.settings, self.source):
            return
        already = delta_io.read(self.spark, self.spec).where(F.col("_batch_id") == batch_id).limit(1).count() > 0
        if not already:
            self.ingested_at[batch_id] = dt.datetime.now(dt.UTC)
            table = to_arrow(self.source, batch_id, files, self.ingested_at[batch_id])
            result = self._append(batch_id, table)
            self.rows += table.num_rows
            self.appended += result.rows_written
            self.malformed += sum(f.malformed for f in files.values())
            log.info(
                f"  bronze {self.source.name}: batch {batch_id}: {result.rows_written} rows "
                f"(version {result.version_after})"
            )
        _commit(self.settings, self.source, manifest)
        self.batches.append(batch_id)

    def _append(self, batch_id: str, table: pa.Table):
        """Append one batch in one commit. The rows travel as a Parquet file the engine reads, not as a
        Spark Connect message (those are capped at 128 MB; a device batch can be larger)."""
        import pyarrow.parquet as pq

        tmp = self.settings.cache_dir / "tmp" / f"{batch_id}.parquet"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp)
        try:
            frame = self.spark.read.parquet(str(tmp))
            return delta_io.append(frame, self.spec, expected_rows=table.num_rows)
        finally:
            tmp.unlink(missing_ok=True)


# --- silver.ingest_batch: one row per committed batch ------------------------------------------------


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def ingest_batch_row(source: Source, manifest: dict, ingested_at: dt.datetime) -> dict:
    """The ingest_batch row of a landed batch (from its manifest) loaded into bronze at `ingested_at`."""
    files = manifest["files"]
    return {
        "batch_id": manifest["batch_id"],
        "source": source.name,
        "connector_type": manifest.get("connector", source.connector.type),
        "file_count": len(files),
        "row_count": int(manifest["rows"]),
        "malformed_row_count": sum(int(f.get("malformed_rows", 0)) for f in files),
        "byte_count": sum(int(f["bytes"]) for f in files),
        "watermark_from": None if manifest.get("watermark_from") is None else str(manifest["watermark_from"]),
        "watermark_to": None if manifest.get("watermark_to") is None else str(manifest["watermark_to"]),
        "landed_at": dt.datetime.fromisoformat(manifest["landed_at"]),
        "ingested_at": ingested_at,
    }


def record_ingest_batches(
    spark: SparkSession, settings: Settings, source: Source, known_ingested_at: dict[str, dt.datetime] | None = None
) -> int:
    """Add an ingest_batch row for every committed batch of `source` that the table lacks; returns how many.

    `known_ingested_at`: batch id -> _ingested_at of batches appended by this process; for the others the
    time is read back from bronze (a batch that appended no rows falls back to its landing time).
    """
    committed = committed_batches(settings, source)
    if not committed:
        return 0
    spec = tables.ingest_batch(settings.silver_dir)
    have: set[str] = set()
    if delta_io.version(spec) is not None:
        have = {
            r.batch_id
            for r in delta_io.read(spark, spec).where(F.col("source") == source.name).select("batch_id").collect()
        }
    missing = [b for b in committed if b not in have]
    if not missing:
        return 0
    known = dict(known_ingested_at or {})
    unknown = [b for b in missing if b not in known]
    if unknown:
        bronze = delta_io.read(spark, bronze_spec(settings, source))
        for r in (
            bronze.where(F.col("_batch_id").isin(unknown))
            .groupBy("_batch_id")
            .agg(F.unix_micros(F.min("_ingested_at")).alias("us"))
            .collect()
        ):
            # epoch microseconds: a collected timestamp would come back naive, in the client's zone
            known[r["_batch_id"]] = _EPOCH + dt.timedelta(microseconds=r["us"])
    manifests = {m["batch_id"]: m for m in list_batches(settings.landing_dir / source.name)}
    lost = [b for b in missing if b not in manifests]
    if lost:
        raise RuntimeError(f"source {source.name}: committed batch(es) {lost} have no landing manifest")
    rows = []
    for b in missing:
        at = known.get(b) or dt.datetime.fromisoformat(manifests[b]["landed_at"])
        rows.append(ingest_batch_row(source, manifests[b], at))
    frame = spark.createDataFrame(pa.Table.from_pylist(rows, schema=spec.arrow_schema()))
    return delta_io.merge_upsert(spark, frame, spec).rows_inserted


def ingest(spark: SparkSession, settings: Settings, source: Source) -> dict:
    """Fetch, land and append every new batch of `source`; returns the run-summary counts."""
    started = time.monotonic()
    landing_dir = settings.landing_dir / source.name
    load = _Load(spark, settings, source)
    # First, batches landed by an earlier run that crashed before its bronze commit.
    done = set(committed_batches(settings, source))
    for manifest in list_batches(landing_dir):
        if manifest["batch_id"] not in done:
            load(manifest, parse_landed(source, landing_dir, manifest))
    # Then whatever the connector has that is new since the committed watermark.
    state = load_state(settings, source)
    connector = connector_for(source)
    for batch in connector.batches(source, settings, state["watermark"], landed_checksums(landing_dir)):
        manifest, files = land_batch(source, landing_dir, batch)
        log.info(f"  landed {manifest['batch_id']}: {len(manifest['files'])} file(s), {manifest['rows']} rows")
        load(manifest, files)
    if not load.batches:
        log.info(f"  nothing new for {source.name}")
    recorded = record_ingest_batches(spark, settings, source, load.ingested_at)
    if recorded:
        log.info(f"  ingest_batch: {recorded} batch(es) of {source.name} recorded")
    return {
        "rows_read": load.rows,
        "published": load.appended,
        "malformed_kept_with_parse_error": load.malformed,
        "quarantined": {},
        "duplicates": 0,
        "batches": load.batches,
        "watermark": load_state(settings, source)["watermark"],
        "delta_version": delta_io.version(load.spec),
        "seconds": round(time.monotonic() - started, 3),
    }
