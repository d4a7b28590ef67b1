"""Silver: a department's bronze records -> the unified `incident` table (and `quarantine`).

Transforms are pure functions of DataFrames (tested on small fixtures and on two engines):
parse -> dedupe -> crosswalk/taxonomy -> locate (district, H3) -> classify -> mask PII -> split.
Every bronze row ends in exactly one place: published, quarantined with a reason, or counted as a
duplicate. The job (`run`) writes the candidates to a staging table, gates them with Great
Expectations and only then MERGEs them into silver (write-audit-publish).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import shutil
import time

from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from citysafe import delta_io, reference
from citysafe.config import Settings
from citysafe.sources import Source
from spark_jobs import tables, udfs
from spark_jobs.bronze import bronze_spec

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

# Free-text scrubbing: ID numbers first (they contain phone-like runs), then mobiles and landlines.
# No look-around (Sail's regex engine has none): the digit boundary is captured and put back.
_ID_PATTERN = r"(^|[^0-9])[1-9][0-9]{16}[0-9Xx]([^0-9]|$)"
_MOBILE_PATTERN = r"(^|[^0-9])(?:\+?86[- ]?)?1[3-9][0-9]{9}([^0-9]|$)"
_LANDLINE_PATTERN = r"(^|[^0-9])0[0-9]{2,3}-?[0-9]{7,8}([^0-9]|$)"


@dataclasses.dataclass(frozen=True)
class Reference:
    """Small reference DataFrames and values the transforms join against."""

    crosswalk: DataFrame         # source_code, source_label_ref, subcategory_code
    taxonomy: DataFrame          # subcategory_code, category_code, domain_code, severity
    aliases: DataFrame           # alias_key, district_code
    districts: list[dict]        # district_code, wkb
    h3_resolution: int
    timezone: str


def load_reference(spark: SparkSession, settings: Settings, source: Source) -> Reference:
    xw = reference.crosswalk(source.silver.crosswalk)
    tax = reference.taxonomy()
    aliases = reference.district_aliases(settings.district_aliases)
    return Reference(
        crosswalk=spark.createDataFrame(xw.rename(columns={"source_label": "source_label_ref"})),
        taxonomy=spark.createDataFrame(tax.rename(columns={"severity_default": "severity"})[
            ["subcategory_code", "category_code", "domain_code", "severity"]]),
        aliases=spark.createDataFrame(aliases),
        districts=reference.districts(settings.districts_geojson),
        h3_resolution=settings.h3_resolution,
        timezone=settings.timezone,
    )


def _blank_to_null(c: SparkColumn) -> SparkColumn:
    trimmed = F.trim(c)
    return F.when(trimmed == "", None).otherwise(trimmed)


def parse_timestamp(c: SparkColumn, timezone: str) -> SparkColumn:
    """UTC instant from the formats departments use: local 'yyyy-MM-dd HH:mm:ss', local 'yyyy/MM/dd HH:mm',
    ISO with 'Z', ISO with an offset. Anything else is NULL (the caller quarantines it)."""
    s = F.trim(c)
    return F.coalesce(
        F.to_utc_timestamp(F.try_to_timestamp(s, F.lit("yyyy-MM-dd HH:mm:ss")), timezone),
        F.to_utc_timestamp(F.try_to_timestamp(s, F.lit("yyyy/MM/dd HH:mm:ss")), timezone),
        F.to_utc_timestamp(F.try_to_timestamp(s, F.lit("yyyy/MM/dd HH:mm")), timezone),
        F.to_utc_timestamp(F.try_to_timestamp(s, F.lit("yyyy-MM-dd HH:mm")), timezone),
        F.try_to_timestamp(s, F.lit("yyyy-MM-dd'T'HH:mm:ss'Z'")),
        F.try_to_timestamp(s, F.lit("yyyy-MM-dd'T'HH:mm:ssXXX")),
    )


def parse(bronze: DataFrame, source: Source, timezone: str) -> DataFrame:
    """Typed working columns (prefixed w_) next to the delivered ones."""
    f = source.silver.fields
    opt = lambda name: _blank_to_null(F.col(name)) if name else F.lit(None).cast("string")  # noqa: E731
    lon_raw, lat_raw = opt(f.lon), opt(f.lat)
    return (
        bronze
        .withColumn("w_record_id", opt(f.record_id))
        .withColumn("w_occurred_raw", opt(f.occurred_at))
        .withColumn("w_updated_raw", opt(f.updated_at))
        .withColumn("w_occurred_at", parse_timestamp(F.col(f.occurred_at), timezone))
        .withColumn("w_updated_at", parse_timestamp(F.col(f.updated_at), timezone))
        .withColumn("w_code", opt(f.code))
        .withColumn("w_label", opt(f.label))
        .withColumn("w_district_raw", opt(f.district))
        .withColumn("w_lon_raw", lon_raw)
        .withColumn("w_lat_raw", lat_raw)
        .withColumn("w_lon", F.expr("try_cast(w_lon_raw AS double)"))
        .withColumn("w_lat", F.expr("try_cast(w_lat_raw AS double)"))
        .withColumn("w_address", opt(f.address))
        .withColumn("w_status", opt(f.status))
    )


def content_hash(columns: list[str]) -> SparkColumn:
    return F.sha2(F.concat_ws("\u001f", *[F.coalesce(F.col(c), F.lit("\u0000")) for c in columns]), 256)


def dedupe_latest(parsed: DataFrame, source: Source) -> tuple[DataFrame, DataFrame]:
    """One row per record id: the latest update wins; ties by content hash, then file and row number,
    so every engine keeps the same row. Returns (kept, dropped duplicates). Rows without an id or
    that failed to parse are kept (the classifier quarantines them)."""
    keyed = parsed.where(F.col("w_record_id").isNotNull() & F.col("_parse_error").isNull())
    unkeyed = parsed.where(F.col("w_record_id").isNull() | F.col("_parse_error").isNotNull())
    window = Window.partitionBy("w_record_id").orderBy(
        F.col("w_updated_at").desc_nulls_last(), F.col("w_hash").desc(),
        F.col("_source_file").asc(), F.col("_source_row_number").asc(),
    )
    ranked = keyed.withColumn("w_hash", content_hash(source.columns)).withColumn("w_rank", F.row_number().over(window))
    kept = ranked.where("w_rank = 1").drop("w_rank", "w_hash").unionByName(unkeyed)
    dropped = ranked.where("w_rank > 1").drop("w_rank", "w_hash")
    return kept, dropped


def attach_codes(df: DataFrame, ref: Reference) -> DataFrame:
    return (
        df.join(ref.crosswalk.withColumnRenamed("source_code", "w_code"), on="w_code", how="left")
        .join(ref.taxonomy, on="subcategory_code", how="left")
    )


def locate(df: DataFrame, ref: Reference) -> DataFrame:
    """District from the point when there is one, else from the name via the alias table; H3 cell."""
    missing_point = (
        (F.col("w_lon_raw").isNull() & F.col("w_lat_raw").isNull())
        | ((F.col("w_lon") == 0) & (F.col("w_lat") == 0))  # the (0, 0) sentinel
    )
    point_ok = ~missing_point & F.col("w_lon").isNotNull() & F.col("w_lat").isNotNull()
    with_point = (
        df.withColumn("w_missing_point", missing_point)
        .withColumn("w_point_ok", point_ok)
        .withColumn("w_px", F.when(point_ok, F.col("w_lon")))
        .withColumn("w_py", F.when(point_ok, F.col("w_lat")))
        .withColumn("w_point_district", udfs.district_of_point_udf(ref.districts)("w_px", "w_py"))
        .withColumn("alias_key", udfs.normalize_name_udf()("w_district_raw"))
    )
    named = with_point.join(ref.aliases.withColumnRenamed("district_code", "w_name_district"),
                            on="alias_key", how="left").drop("alias_key")
    inside = F.col("w_point_district").isNotNull()
    return (
        named.withColumn("district_code", F.when(inside, F.col("w_point_district"))
                         .when(F.col("w_missing_point"), F.col("w_name_district")))
        .withColumn("lon", F.when(inside, F.col("w_lon")))
        .withColumn("lat", F.when(inside, F.col("w_lat")))
        .withColumn("h3_cell", udfs.h3_cell_udf(ref.h3_resolution)("lon", "lat"))
        .withColumn("location_quality", F.when(inside, F.lit("point")).otherwise(F.lit("district_only")))
    )


def classify(df: DataFrame, now: dt.datetime) -> DataFrame:
    """Add `reason` (NULL = publishable) and a `detail` naming the field and the value."""
    rules = [
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
        ("invalid_coordinates", ~F.col("w_missing_point") & ~F.col("w_point_ok"),
         F.concat(F.lit("lon/lat: not numbers: "), F.coalesce(F.col("w_lon_raw"), F.lit("")), F.lit(","),
                  F.coalesce(F.col("w_lat_raw"), F.lit("")))),
        ("coordinates_outside_city", F.col("w_point_ok") & F.col("w_point_district").isNull(),
         F.concat(F.lit("lon/lat outside every district: "), F.col("w_lon_raw"), F.lit(","), F.col("w_lat_raw"))),
        ("unknown_district", F.col("district_code").isNull(),
         F.concat(F.lit("district: no coordinates and unknown name "),
                  F.coalesce(F.col("w_district_raw"), F.lit("(empty)")))),
    ]
    reason, detail = F.lit(None).cast("string"), F.lit(None).cast("string")
    for name, condition, text in reversed(rules):
        reason = F.when(condition, F.lit(name)).otherwise(reason)
        detail = F.when(condition, text).otherwise(detail)
    return df.withColumn("reason", reason).withColumn("detail", detail)


def scrub_text(c: SparkColumn) -> SparkColumn:
    out = F.regexp_replace(c, _ID_PATTERN, "$1[id]$2")
    out = F.regexp_replace(out, _MOBILE_PATTERN, "$1[phone]$2")
    return F.regexp_replace(out, _LANDLINE_PATTERN, "$1[phone]$2")


def mask_personal(df: DataFrame, source: Source, key: bytes) -> DataFrame:
    """Replace every personal column by its keyed hash, in place, and scrub the address text."""
    keyed_hash = udfs.hmac_udf(key)
    p = source.silver.personal
    out = df
    if p.reporter_phone:  # one number, whatever the punctuation or country prefix
        digits = F.regexp_replace(F.col(p.reporter_phone), r"[^0-9]", "")
        out = out.withColumn(p.reporter_phone, F.regexp_replace(digits, r"^86(1[0-9]{10})$", "$1"))
    if p.reporter_id:
        out = out.withColumn(p.reporter_id, F.upper(F.col(p.reporter_id)))
    for column in source.personal_columns:
        out = out.withColumn(column, keyed_hash(_blank_to_null(F.col(column))))
    if source.silver.fields.address:
        out = out.withColumn("w_address", scrub_text(F.col("w_address")))
        out = out.withColumn(source.silver.fields.address, scrub_text(F.col(source.silver.fields.address)))
    return out


def transform(bronze: DataFrame, source: Source, ref: Reference, pii_key: bytes, now: dt.datetime
              ) -> tuple[DataFrame, DataFrame, DataFrame]:
    """bronze -> (publishable incidents, quarantine rows, dropped duplicates)."""
    parsed = parse(bronze, source, ref.timezone)
    kept, duplicates = dedupe_latest(parsed, source)
    classified = classify(locate(attach_codes(kept, ref), ref), now)
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
        "district_code", "lon", "lat", "h3_cell", "location_quality",
        F.col("w_status").alias("status"),
        F.col("w_address").alias("address_scrubbed"),
        hashed(p.reporter_name).alias("reporter_name_hash"),
        hashed(p.reporter_phone).alias("reporter_phone_hash"),
        hashed(p.reporter_id).alias("reporter_id_hash"),
        F.col("w_updated_at").alias("updated_at_utc"),
        "_batch_id", "_source_file", "_source_row_number", "_ingested_at",
    )


def to_quarantine(df: DataFrame, source: Source, run_id: str = "") -> DataFrame:
    record = F.to_json(F.struct(*[F.col(c) for c in source.columns]))
    return df.select(
        F.lit(source.name).alias("source"),
        F.col("w_record_id").alias("source_record_id"),
        "reason", "detail",
        F.when(F.col("_parse_error").isNotNull(), F.lit(None).cast("string")).otherwise(record).alias("record_json"),
        F.lit(run_id).alias("run_id"),
        "_batch_id", "_source_file", "_source_row_number", "_ingested_at",
    )


class QualityGateFailed(Exception):
    def __init__(self, message: str, result_path):
        super().__init__(message)
        self.result_path = result_path


def _silver_state(settings: Settings, source: Source):
    return settings.state_dir / "silver" / f"{source.name}.json"


def run(spark: SparkSession, settings: Settings, source: Source, run_id: str, progress=print) -> dict:
    """Process bronze batches not yet published to silver; returns the reconciliation counts."""
    import json

    from citysafe import quality
    from citysafe.runs import write_json_atomic
    from spark_jobs.bronze import committed_batches

    started = time.monotonic()
    state_path = _silver_state(settings, source)
    done = json.loads(state_path.read_text())["published_batches"] if state_path.exists() else []
    pending = [b for b in committed_batches(settings, source) if b not in done]
    incident_spec = tables.incident(settings.silver_dir)
    quarantine_spec = tables.quarantine(settings.silver_dir)
    if not pending:
        progress(f"  silver {source.name}: no new bronze batches")
        return {"rows_read": 0, "published": 0, "quarantined": {}, "duplicates": 0, "batches": [],
                "delta_version": delta_io.version(incident_spec), "seconds": round(time.monotonic() - started, 3)}

    bronze = delta_io.read(spark, bronze_spec(settings, source)).where(F.col("_batch_id").isin(pending))
    rows_read = bronze.count()
    ref = load_reference(spark, settings, source)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    published, quarantined, duplicates = transform(bronze, source, ref, settings.pii_key(), now)
    quarantined = quarantined.withColumn("run_id", F.lit(run_id))

    # Write: candidates to a staging table of this run (audit happens on what was actually written).
    staging_spec = dataclasses.replace(incident_spec, name=f"staging_incident_{source.name}",
                                       path=settings.staging_dir / "incident" / run_id / source.name)
    staged = delta_io.append(published, staging_spec)
    progress(f"  silver {source.name}: {rows_read} bronze rows -> {staged.rows_written} candidates staged")
    staged_df = delta_io.read(spark, staging_spec)
    n_duplicates = duplicates.count()
    reasons = {r["reason"]: r["count"] for r in quarantined.groupBy("reason").count().collect()}

    # Audit: the Great Expectations suite gates publishing.
    outcome = quality.validate_incident_staging(spark, settings, staging_spec, run_id, source.name)
    if not outcome["success"]:
        raise QualityGateFailed(
            f"silver {source.name}: Great Expectations suite {outcome['suite']} failed "
            f"({outcome['failed']} of {outcome['evaluated']} expectations); nothing published; staging kept at "
            f"{staging_spec.path}; result {outcome['result_path']}", outcome["result_path"])
    progress(f"  silver {source.name}: suite {outcome['suite']} passed ({outcome['evaluated']} expectations)")

    # Publish: MERGE (only if newer) into silver, quarantine keyed by lineage.
    merged = delta_io.merge_upsert(spark, staged_df, incident_spec)
    q = delta_io.merge_upsert(spark, quarantined, quarantine_spec)
    write_json_atomic(state_path, {"published_batches": [*done, *pending]})
    # Published: the staging copy has served its purpose (a failed gate keeps it for inspection).
    shutil.rmtree(staging_spec.path, ignore_errors=True)
    with contextlib.suppress(OSError):
        staging_spec.path.parent.rmdir()  # the run's folder, once no source of it is left
    n_quarantined = sum(reasons.values())
    entry = {
        "rows_read": rows_read,
        "published": merged.rows_inserted + merged.rows_updated,
        "inserted": merged.rows_inserted, "updated": merged.rows_updated,
        "quarantined": dict(sorted(reasons.items())),
        # In-batch duplicates plus rows no newer than what silver already holds.
        "duplicates": n_duplicates + merged.rows_unchanged,
        "batches": pending,
        "delta_version": merged.version_after,
        "quarantine_delta_version": q.version_after,
        "validation": {k: outcome[k] for k in ("suite", "success", "evaluated", "failed", "result_path")},
        "seconds": round(time.monotonic() - started, 3),
    }
    accounted = entry["published"] + n_quarantined + entry["duplicates"]
    entry["reconciled"] = accounted == rows_read
    if not entry["reconciled"]:
        raise RuntimeError(f"silver {source.name}: rows do not reconcile: read {rows_read} != published "
                           f"{entry['published']} + quarantined {n_quarantined} + duplicates {entry['duplicates']}")
    return entry
