"""Declared Delta tables of the lake (bronze tables are declared from the source registry)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from citysafe.delta_io import Column, TableSpec

# Lineage columns carried from bronze into silver and quarantine: where each row came from.
LINEAGE = (
    Column("_batch_id", "string", nullable=False, description="landing batch the row arrived in"),
    Column("_source_file", "string", nullable=False, description="delivered file name inside the batch"),
    Column("_source_row_number", "bigint", nullable=False, description="1-based record number in the file"),
    Column("_ingested_at", "timestamp", nullable=False, description="when the batch was written to bronze"),
)

INCIDENT_COLUMNS = (
    Column("incident_id", "string", nullable=False, description="<source>:<source_record_id>"),
    Column("source_record_id", "string", nullable=False, description="the department's own record id"),
    Column("source_code", "string", description="the department's own category code"),
    Column("source_label", "string", description="the department's own label for that code"),
    Column("domain_code", "string", nullable=False),
    Column("category_code", "string", nullable=False),
    Column("subcategory_code", "string", nullable=False),
    Column("severity", "string", description="taxonomy default severity"),
    Column("occurred_at_utc", "timestamp", nullable=False),
    Column("occurred_at_local", "timestamp_ntz", nullable=False, description="wall-clock time in the city zone"),
    Column("occurred_date_local", "date", nullable=False),
    Column("received_at_utc", "timestamp", description="call/report received (fire/EMS, hotline)"),
    Column("dispatched_at_utc", "timestamp", description="first unit dispatched (fire/EMS)"),
    Column("on_scene_at_utc", "timestamp", description="first unit on scene (fire/EMS)"),
    Column("district_code", "string", nullable=False),
    Column("lon", "double"),
    Column("lat", "double"),
    Column("h3_cell", "string", description="H3 cell at the configured resolution; NULL without coordinates"),
    Column("location_quality", "string", nullable=False, description="point | district_only"),
    Column("status", "string"),
    Column("address_scrubbed", "string", description="address with phone and ID numbers removed"),
    Column("reporter_name_hash", "string", description="HMAC-SHA256 of the name (keyed)"),
    Column("reporter_phone_hash", "string", description="HMAC-SHA256 of the normalised phone number"),
    Column("reporter_id_hash", "string", description="HMAC-SHA256 of the ID number"),
    Column(
        "classification_confidence",
        "double",
        description="1.0 for a crosswalked code; the classifier's confidence for free-text categories",
    ),
    Column("updated_at_utc", "timestamp", nullable=False, description="source's last update; MERGE keeps the newest"),
    *LINEAGE,
    # the partition column, last (see citysafe.delta_io.TableSpec)
    Column("source", "string", nullable=False, description="source registry name, e.g. police_incidents"),
)

QUARANTINE_COLUMNS = (
    Column("source_record_id", "string"),
    Column("reason", "string", nullable=False, description="machine reason, e.g. unmapped_code"),
    Column("detail", "string", description="human detail naming the field and value"),
    Column("record_json", "string", description="the delivered record as JSON, personal fields hashed"),
    Column("run_id", "string", nullable=False),
    *LINEAGE,
    Column("source", "string", nullable=False),  # the partition column, last
)


def incident(silver_dir: Path) -> TableSpec:
    return TableSpec(
        "incident",
        silver_dir / "incident",
        INCIDENT_COLUMNS,
        key=("incident_id",),
        newer_by="updated_at_utc",
        partition_by=("source",),
        key_fixes_partition=True,  # incident_id = "<source>:<record id>"
    )


def quarantine(silver_dir: Path) -> TableSpec:
    # Keyed by lineage so that re-processing the same bronze batch adds nothing.
    return TableSpec(
        "quarantine",
        silver_dir / "quarantine",
        QUARANTINE_COLUMNS,
        key=("_batch_id", "_source_file", "_source_row_number"),
        newer_by="_ingested_at",
        partition_by=("source",),
        key_fixes_partition=True,  # a batch is one source's (its id starts with the source's name)
    )


# --- reference tables (rebuilt from reference/ and the city's district files with merge_sync) -------

TAXONOMY_COLUMNS = (
    Column("subcategory_code", "string", nullable=False),
    Column("subcategory_en", "string", nullable=False),
    Column("subcategory_zh", "string", nullable=False),
    Column("category_code", "string", nullable=False),
    Column("category_en", "string", nullable=False),
    Column("category_zh", "string", nullable=False),
    Column("domain_code", "string", nullable=False),
    Column("domain_en", "string", nullable=False),
    Column("domain_zh", "string", nullable=False),
    Column("severity_default", "string", nullable=False),
)

DISTRICT_COLUMNS = (
    Column("district_code", "string", nullable=False),
    Column("name_zh", "string"),
    Column("name_en", "string"),
    Column("area_km2", "double", nullable=False),
    Column("centroid_lon", "double", nullable=False),
    Column("centroid_lat", "double", nullable=False),
    Column("geometry_wkt", "string", nullable=False, description="polygon in WGS84 (lon lat)"),
)

DISTRICT_ALIAS_COLUMNS = (
    Column("alias_key", "string", nullable=False, description="normalised alias used for matching"),
    Column("district_code", "string", nullable=False),
)

H3_CELL_COLUMNS = (
    Column("h3_cell", "string", nullable=False),
    Column("resolution", "int", nullable=False),
    Column("district_code", "string", nullable=False, description="district holding the cell centre"),
    Column("centroid_lon", "double", nullable=False),
    Column("centroid_lat", "double", nullable=False),
    Column("neighbors", "string", nullable=False, description="JSON array of the ring-1 cells inside the city"),
)


def taxonomy(silver_dir: Path) -> TableSpec:
    return TableSpec("taxonomy", silver_dir / "taxonomy", TAXONOMY_COLUMNS, key=("subcategory_code",))


def district(silver_dir: Path) -> TableSpec:
    return TableSpec("district", silver_dir / "district", DISTRICT_COLUMNS, key=("district_code",))


def district_alias(silver_dir: Path) -> TableSpec:
    return TableSpec("district_alias", silver_dir / "district_alias", DISTRICT_ALIAS_COLUMNS, key=("alias_key",))


def h3_cell(silver_dir: Path) -> TableSpec:
    return TableSpec("h3_cell", silver_dir / "h3_cell", H3_CELL_COLUMNS, key=("h3_cell",))


# --- devices -------------------------------------------------------------------------------------------

DEVICE_COLUMNS = (
    Column("device_id", "string", nullable=False),
    Column("source", "string", nullable=False),
    Column("device_type", "string", nullable=False),
    Column("model", "string"),
    Column("canonical_unit", "string", nullable=False, description="unit every silver reading is stored in"),
    Column("registry_unit", "string", description="unit the registry says the device reports in"),
    Column("district_code", "string", nullable=False),
    Column("lon", "double"),
    Column("lat", "double"),
    Column("h3_cell", "string"),
    Column("location_quality", "string", nullable=False),
    Column("installed_date", "date"),
    Column("clock_skew_seconds", "bigint", description="device clock minus true time; NULL when unknown"),
    Column("owner", "string"),
    Column("updated_at_utc", "timestamp", nullable=False, description="when this registry snapshot arrived"),
    *LINEAGE,
)

# Set by delta_io's MERGEs on the rows they insert or update (TableSpec.changed_at). Declared last (before
# the partition columns of a table that has them): a lake without it then gets it as a metadata-only
# column (delta_io.ensure_table), or by its table's `upgrade`.
CHANGED_AT = Column(
    "_changed_at",
    "timestamp",
    description="when the silver job last inserted or changed the row (NULL: written before the column existed); "
    "the marts find what changed since their last build by it",
)

DEVICE_READING_COLUMNS = (
    Column("device_id", "string", nullable=False),
    Column("seq", "bigint", nullable=False, description="the device's reading counter: the reading's identity"),
    Column("source", "string", nullable=False),
    Column("device_type", "string", nullable=False),
    Column("reading_ts_device", "timestamp", nullable=False, description="as stamped by the device clock"),
    Column("reading_ts_utc", "timestamp", nullable=False, description="device time corrected for known skew"),
    Column("reading_hour_utc", "timestamp", nullable=False, description="the hour the reading belongs to"),
    Column("clock_corrected", "boolean", nullable=False, description="a known skew was applied"),
    Column("value", "double", nullable=False, description="in canonical_unit"),
    Column("unit", "string", nullable=False, description="canonical unit of the device type"),
    Column("value_reported", "double", nullable=False),
    Column("unit_reported", "string", nullable=False),
    Column("received_at_utc", "timestamp"),
    Column("district_code", "string", nullable=False),
    Column("h3_cell", "string"),
    *LINEAGE,
    CHANGED_AT,
)

DEVICE_READING_HOURLY_COLUMNS = (
    Column("device_id", "string", nullable=False),
    Column("hour_utc", "timestamp", nullable=False),
    Column("device_type", "string", nullable=False),
    Column("unit", "string", nullable=False),
    Column("reading_count", "bigint", nullable=False),
    Column("value_mean", "double"),
    Column("value_min", "double"),
    Column("value_max", "double"),
    Column(
        "is_gap", "boolean", nullable=False, description="no reading in an hour between the device's first and last"
    ),
    Column("district_code", "string", nullable=False),
    Column("h3_cell", "string"),
    CHANGED_AT,
    Column("hour_month", "string", nullable=False, description="UTC month of hour_utc (yyyy-MM): the partition"),
)


def _upgrade_device_reading_hourly(rows: pa.Table) -> pa.Table:
    """The rows of a device_reading_hourly written before it was stamped and partitioned by month."""
    if "_changed_at" not in rows.column_names:
        rows = rows.append_column("_changed_at", pa.nulls(rows.num_rows, pa.timestamp("us", tz="UTC")))
    if "hour_month" not in rows.column_names:
        rows = rows.append_column("hour_month", pc.strftime(rows.column("hour_utc"), format="%Y-%m"))
    return rows


def device(silver_dir: Path) -> TableSpec:
    return TableSpec("device", silver_dir / "device", DEVICE_COLUMNS, key=("device_id",), newer_by="updated_at_utc")


def device_reading(silver_dir: Path) -> TableSpec:
    # Immutable facts: a re-delivered reading never changes the stored one (insert-only MERGE).
    return TableSpec(
        "device_reading",
        silver_dir / "device_reading",
        DEVICE_READING_COLUMNS,
        key=("device_id", "seq"),
        changed_at="_changed_at",
    )


def device_reading_hourly(silver_dir: Path) -> TableSpec:
    return TableSpec(
        "device_reading_hourly",
        silver_dir / "device_reading_hourly",
        DEVICE_READING_HOURLY_COLUMNS,
        key=("device_id", "hour_utc"),
        # By UTC month: a day's refresh MERGEs into the current month only (the whole table: 3.7 s of a
        # daily silver stage at scale 1; one month: 0.2 s). hour_utc fixes the month.
        partition_by=("hour_month",),
        key_fixes_partition=True,
        changed_at="_changed_at",
        upgrade=_upgrade_device_reading_hourly,
    )


# --- operations: what the lake holds about its sources and batches (read by the ops marts) ---------

SOURCE_REGISTRY_COLUMNS = (
    Column("source", "string", nullable=False, description="registry name (sources/<source>.yaml)"),
    Column("department", "string", nullable=False),
    Column("kind", "string", nullable=False, description="records | device_log"),
    Column("description", "string"),
    Column("tags", "string", nullable=False, description="the registry's tags joined with ',' ('' for none)"),
    Column("connector_type", "string", nullable=False, description="files | rest | postgres"),
    Column("format_type", "string", nullable=False, description="csv | jsonl | json | xlsx"),
    Column("schedule", "string", nullable=False, description="how often the department delivers (cron or @daily)"),
    Column(
        "freshness_warn_after_hours",
        "int",
        nullable=False,
        description="expected freshness: newest load older than this is late",
    ),
    Column("freshness_error_after_hours", "int", nullable=False, description="newest load older than this is an error"),
    Column("silver_table", "string", description="silver table the source feeds; NULL: bronze only"),
)

INGEST_BATCH_COLUMNS = (
    Column("batch_id", "string", nullable=False, description="landing batch id (<source>-<checksum prefix>)"),
    Column("source", "string", nullable=False),
    Column("connector_type", "string", nullable=False),
    Column("file_count", "int", nullable=False, description="delivered files in the batch"),
    Column("row_count", "bigint", nullable=False, description="records appended to bronze (malformed included)"),
    Column("malformed_row_count", "bigint", nullable=False, description="records kept with a _parse_error"),
    Column("byte_count", "bigint", nullable=False, description="delivered bytes"),
    Column("watermark_from", "string", description="incremental pull: watermark the batch started after"),
    Column("watermark_to", "string", description="incremental pull: newest watermark in the batch"),
    Column("landed_at", "timestamp", nullable=False, description="when the batch folder was landed (UTC)"),
    Column(
        "ingested_at",
        "timestamp",
        nullable=False,
        description="the batch's bronze _ingested_at (UTC): when it was loaded into the lake",
    ),
)


def source_registry(silver_dir: Path) -> TableSpec:
    # Rebuilt from sources/*.yaml with merge_sync (a removed source disappears), like the reference tables.
    return TableSpec("source_registry", silver_dir / "source_registry", SOURCE_REGISTRY_COLUMNS, key=("source",))


def ingest_batch(silver_dir: Path) -> TableSpec:
    # One row per batch committed to bronze; immutable facts (insert-only MERGE on the batch id).
    return TableSpec("ingest_batch", silver_dir / "ingest_batch", INGEST_BATCH_COLUMNS, key=("batch_id",))
