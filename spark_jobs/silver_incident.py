"""Silver: a department's bronze records -> the unified `incident` table (and `quarantine`).

Transforms are pure functions of DataFrames (tested on small fixtures and on two engines):
parse -> dedupe -> crosswalk/taxonomy -> locate (district, H3) -> classify -> mask PII -> split.
Every bronze row ends in exactly one place: published, quarantined with a reason, or counted as a
duplicate. The job (`run`) writes the candidates to a staging table, gates them with Great
Expectations and only then MERGEs them into silver (write-audit-publish).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from citysafe import reference
from citysafe.config import Settings
from citysafe.sources import Source
from spark_jobs import common, tables
from spark_jobs.common import Places, blank_to_null, parse_timestamp
from spark_jobs.publish import QualityGateFailed, SilverOutput, run_job  # noqa: F401 (re-exported)

JOB = "incident"
# Quarantine reasons, checked in this order; the first that applies is recorded.
REASONS = (
    "malformed_record",        # the record could not be split into the declared fields
    "missing_key",             # no record id
    "invalid_timestamp",       # occurred_at or updated_at unparseable
    "timestamp_out_of_range",  # before 2000, after the record's own last update, or in the future
    "unmapped_code",           # department code not in its crosswalk
    "invalid_coordinates",     # lon/lat present but not numbers
    "coordinates_outside_city",  # valid coordinates outside every district
    "unknown_district",        # no usable coordinates and the district name is not in the alias table
)
EARLIEST = dt.datetime(2000, 1, 1)


@dataclasses.dataclass(frozen=True)
class Reference:
    """Small reference DataFrames and values the transforms join against."""

    crosswalk: DataFrame         # source_code, source_label_ref, subcategory_code
    taxonomy: DataFrame          # subcategory_code, category_code, domain_code, severity
    places: Places
    timezone: str


def load_reference(spark: SparkSession, settings: Settings, source: Source) -> Reference:
    xw = reference.crosswalk(source.silver.crosswalk)
    tax = reference.taxonomy()
    return Reference(
        crosswalk=spark.createDataFrame(xw.rename(columns={"source_label": "source_label_ref"})),
        taxonomy=spark.createDataFrame(tax.rename(columns={"severity_default": "severity"})[
            ["subcategory_code", "category_code", "domain_code", "severity"]]),
        places=common.load_places(spark, settings),
        timezone=settings.timezone,
    )


def parse(bronze: DataFrame, source: Source, timezone: str) -> DataFrame:
    """Typed working columns (prefixed w_) next to the delivered ones."""
    f = source.silver.fields
    opt = lambda name: blank_to_null(F.col(name)) if name else F.lit(None).cast("string")  # noqa: E731
    return (
        common.with_point(bronze, f.lon, f.lat, f.district)
        .withColumn("w_record_id", opt(f.record_id))
        .withColumn("w_occurred_raw", opt(f.occurred_at))
        .withColumn("w_updated_raw", opt(f.updated_at))
        .withColumn("w_occurred_at", parse_timestamp(F.col(f.occurred_at), timezone))
        .withColumn("w_updated_at", parse_timestamp(F.col(f.updated_at), timezone))
        .withColumn("w_code", opt(f.code))
        .withColumn("w_label", opt(f.label))
        .withColumn("w_address", opt(f.address))
        .withColumn("w_status", opt(f.status))
    )


def dedupe_latest(parsed: DataFrame, source: Source) -> tuple[DataFrame, DataFrame]:
    """One row per record id, the latest update wins."""
    return common.dedupe(parsed, ["w_record_id"], [F.col("w_updated_at").desc_nulls_last()], source.columns)


def attach_codes(df: DataFrame, ref: Reference) -> DataFrame:
    return (
        df.join(ref.crosswalk.withColumnRenamed("source_code", "w_code"), on="w_code", how="left")
        .join(ref.taxonomy, on="subcategory_code", how="left")
    )


def classify(df: DataFrame, now: dt.datetime) -> DataFrame:
    """Add `reason` (NULL = publishable) and a `detail` naming the field and the value."""
    return common.classify(df, [
        ("malformed_record", F.col("_parse_error").isNotNull(), F.col("_parse_error")),
        ("missing_key", F.col("w_record_id").isNull(), F.lit("record id is empty")),
        ("invalid_timestamp", F.col("w_occurred_at").isNull(),
         F.concat(F.lit("occurred_at: cannot parse "), F.coalesce(F.col("w_occurred_raw"), F.lit("(empty)")))),
        ("invalid_timestamp", F.col("w_updated_at").isNull(),
         F.concat(F.lit("updated_at: cannot parse "), F.coalesce(F.col("w_updated_raw"), F.lit("(empty)")))),
        ("timestamp_out_of_range",
         (F.col("w_occurred_at") < F.lit(EARLIEST)) | (F.col("w_occurred_at") > F.lit(now))
         | (F.col("w_occurred_at") > F.col("w_updated_at") + F.expr("INTERVAL 1 HOUR")),
         F.concat(F.lit("occurred_at: impossible date "), F.col("w_occurred_raw"))),
        ("unmapped_code", F.col("subcategory_code").isNull(),
         F.concat(F.lit("code: no crosswalk entry for "), F.coalesce(F.col("w_code"), F.lit("(empty)")))),
        *common.location_rules(),
    ])


def mask_personal(df: DataFrame, source: Source, key: bytes) -> DataFrame:
    """Replace every personal column by its keyed hash, in place, and scrub the address text."""
    p = source.silver.personal
    out = common.hash_personal(df, source, key, phone_columns=[c for c in [p.reporter_phone] if c],
                               id_columns=[c for c in [p.reporter_id] if c])
    if source.silver.fields.address:
        out = out.withColumn("w_address", common.scrub_text(F.col("w_address")))
        out = out.withColumn(source.silver.fields.address, common.scrub_text(F.col(source.silver.fields.address)))
    return out


def transform(bronze: DataFrame, source: Source, ref: Reference, pii_key: bytes, now: dt.datetime
              ) -> tuple[DataFrame, DataFrame, DataFrame]:
    """bronze -> (publishable incidents, quarantine rows, dropped duplicates)."""
    parsed = parse(bronze, source, ref.timezone)
    kept, duplicates = dedupe_latest(parsed, source)
    classified = classify(common.locate(attach_codes(kept, ref), ref.places), now)
    masked = mask_personal(classified, source, pii_key)
    return to_incident(masked.where("reason IS NULL"), source, ref.timezone), \
        to_quarantine(masked.where("reason IS NOT NULL"), source), duplicates


def to_incident(df: DataFrame, source: Source, timezone: str) -> DataFrame:
    p = source.silver.personal
    hashed = lambda name: F.col(name) if name else F.lit(None).cast("string")  # noqa: E731
    local = F.from_utc_timestamp(F.col("w_occurred_at"), timezone)
    return df.select(
        F.concat(F.lit(source.name + ":"), F.col("w_record_id")).alias("incident_id"),
        F.lit(source.name).alias("source"),
        F.col("w_record_id").alias("source_record_id"),
        F.col("w_code").alias("source_code"),
        F.coalesce(F.col("w_label"), F.col("source_label_ref")).alias("source_label"),
        "domain_code", "category_code", "subcategory_code", "severity",
        F.col("w_occurred_at").alias("occurred_at_utc"),
        local.cast("timestamp_ntz").alias("occurred_at_local"),
        F.to_date(local).alias("occurred_date_local"),
        F.lit(None).cast("timestamp").alias("received_at_utc"),
        F.lit(None).cast("timestamp").alias("dispatched_at_utc"),
        F.lit(None).cast("timestamp").alias("on_scene_at_utc"),
        "district_code", "lon", "lat", "h3_cell", "location_quality",
        F.col("w_status").alias("status"),
        F.col("w_address").alias("address_scrubbed"),
        hashed(p.reporter_name).alias("reporter_name_hash"),
        hashed(p.reporter_phone).alias("reporter_phone_hash"),
        hashed(p.reporter_id).alias("reporter_id_hash"),
        F.lit(1.0).alias("classification_confidence"),
        F.col("w_updated_at").alias("updated_at_utc"),
        "_batch_id", "_source_file", "_source_row_number", "_ingested_at",
    )


def to_quarantine(df: DataFrame, source: Source, run_id: str = "") -> DataFrame:
    return common.quarantine_rows(df, source, F.col("w_record_id"), run_id)


def run(spark: SparkSession, settings: Settings, source: Source, run_id: str, progress=print) -> dict:
    """Process bronze batches not yet published to silver; returns the reconciliation counts."""
    ref = load_reference(spark, settings, source)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    pii_key = settings.pii_key()

    def to_silver(bronze: DataFrame) -> SilverOutput:
        return SilverOutput(*transform(bronze, source, ref, pii_key, now))

    return run_job(spark, settings, source, run_id, job=JOB, target=tables.incident(settings.silver_dir),
                   suite="silver_incident", transform=to_silver, progress=progress)
