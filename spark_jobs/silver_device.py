"""Silver for devices: the registry -> `device`; device logs -> `device_reading` (+ hourly aggregates).

Readings are immutable facts identified by (device_id, seq): duplicates and re-sends are dropped
(first arrival wins) and a re-delivered reading never changes the stored one, so re-delivery of a
batch changes nothing. Values are converted to one canonical unit per device type
(reference/units/device_units.csv); a known clock skew is removed; each reading is assigned to the
nearest hour (devices report on the hour, clocks drift by minutes). `device_reading_hourly` holds one
row per device and hour between its first and last reading, with gaps flagged.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from citysafe import delta_io, reference, storage
from citysafe.config import Settings
from citysafe.sources import Source
from spark_jobs import common, tables
from spark_jobs.common import Places, blank_to_null, parse_timestamp, raw
from spark_jobs.publish import Materialize, SilverOutput, no_barrier, run_job

log = logging.getLogger(__name__)

EARLIEST = dt.datetime(2000, 1, 1)
SENTINELS = (-9999.0, -999.0, 9999.0)  # "no value" codes devices send instead of a reading


# Readings per pass (see reading_transform and run_readings): the engine holds a pass's rows at once in
# the dedupe window and in the hourly aggregate. At scale 1.35 (11.8M readings in one cold run) a single
# pass peaked at 7.8 GB RSS in the window and 7.9 GB in the hourly refresh; four passes of this size at
# 2.7 GB and 1.2 GB.
ROWS_PER_PASS = 3_000_000


def passes_for(rows: int) -> int:
    """How many passes (device buckets) `rows` readings are processed in."""
    return max(1, -(-rows // ROWS_PER_PASS))


def device_bucket(device_id: Column, passes: int) -> Column:
    """The pass (0 .. passes-1) a device's rows belong to: every row of one device in the same one,
    rows without a device id included."""
    return F.pmod(F.xxhash64(F.coalesce(device_id, F.lit(""))), F.lit(passes))


def split_passes(df: DataFrame, device_column: str, passes: int) -> list[DataFrame]:
    """`df` cut into `passes` frames by `device_bucket` of `device_column`."""
    if passes <= 1:
        return [df]
    bucket = device_bucket(F.col(device_column), passes)
    return [df.where(bucket == p) for p in range(passes)]


def union_passes(parts: list[DataFrame], empty: DataFrame) -> DataFrame:
    """The passes' barriers as one frame. A pass without rows reads back without columns (the engine
    writes no file for it), so it is left out; `empty` (the plan with no rows) when every pass was."""
    written = [part for part in parts if part.columns]
    return functools.reduce(DataFrame.unionByName, written) if written else empty.limit(0)


def units_frame(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame(reference.device_units())


# --- registry -----------------------------------------------------------------------------------------


def registry_transform(
    bronze: DataFrame, source: Source, places: Places, units: DataFrame, pii_key: bytes
) -> SilverOutput:
    f = source.silver.fields
    opt = lambda name: blank_to_null(F.col(name)) if name else F.lit(None).cast("string")  # noqa: E731
    parsed = (
        common.with_point(bronze, f.lon, f.lat, f.district)
        .withColumn("w_record_id", opt(f.device_id))
        .withColumn("w_type", F.lower(opt(f.device_type)))
        .withColumn("w_unit", opt(f.unit))
        .withColumn("w_skew_raw", opt(f.clock_skew_seconds))
        .withColumn("w_skew", F.expr("try_cast(w_skew_raw AS bigint)"))
        .withColumn("w_installed_raw", opt(f.installed_date))
        .withColumn("w_installed", F.to_date(F.try_to_timestamp(F.col("w_installed_raw"), F.lit("yyyy-MM-dd"))))
    )
    kept, duplicates = common.dedupe(parsed, ["w_record_id"], [F.col("_ingested_at").desc()], source.columns)
    canonical = units.select(F.col("device_type").alias("w_type"), "canonical_unit").distinct()
    located = common.locate(kept.join(canonical, on="w_type", how="left"), places)
    classified = common.classify(
        located,
        [
            ("malformed_record", F.col("_parse_error").isNotNull(), F.col("_parse_error")),
            ("missing_key", F.col("w_record_id").isNull(), F.lit("device id is empty")),
            (
                "invalid_device_type",
                F.col("canonical_unit").isNull(),
                F.concat(F.lit("device_type: not in reference/units/device_units.csv: "), raw("w_type")),
            ),
            (
                "invalid_value",
                F.col("w_skew_raw").isNotNull() & F.col("w_skew").isNull(),
                F.concat(F.lit("clock_skew_seconds: not an integer: "), raw("w_skew_raw")),
            ),
            (
                "invalid_timestamp",
                F.col("w_installed_raw").isNotNull() & F.col("w_installed").isNull(),
                F.concat(F.lit("installed_date: cannot parse "), raw("w_installed_raw")),
            ),
            *common.location_rules(),
        ],
    )
    masked = common.hash_personal(classified, source, pii_key)
    published = masked.where("reason IS NULL").select(
        F.col("w_record_id").alias("device_id"),
        F.lit(source.name).alias("source"),
        F.col("w_type").alias("device_type"),
        opt(f.model).alias("model"),
        "canonical_unit",
        F.col("w_unit").alias("registry_unit"),
        "district_code",
        "lon",
        "lat",
        "h3_cell",
        "location_quality",
        F.col("w_installed").alias("installed_date"),
        F.col("w_skew").alias("clock_skew_seconds"),
        opt(f.owner).alias("owner"),
        F.col("_ingested_at").alias("updated_at_utc"),
        "_batch_id",
        "_source_file",
        "_source_row_number",
        "_ingested_at",
    )
    quarantined = common.quarantine_rows(masked.where("reason IS NOT NULL"), source, F.col("w_record_id"), "")
    return SilverOutput(published, quarantined, duplicates)


# --- readings -----------------------------------------------------------------------------------------


def reading_transform(
    bronze: DataFrame,
    source: Source,
    devices: DataFrame,
    units: DataFrame,
    timezone: str,
    now: dt.datetime,
    materialize: Materialize = no_barrier,
    passes: int = 1,
) -> SilverOutput:
    """bronze readings -> (published readings, quarantine rows, duplicates). `devices` is silver.device.
    One barrier: the ranked (deduplicated) and enriched readings, duplicates included, so the dedupe
    window and the joins run once, not once for the published rows, again for the quarantine and again
    for the duplicates.

    With `passes` > 1 the rows are ranked and enriched in that many passes, one per bucket of
    device ids (`device_bucket`), each written to its own barrier: the engine holds one bucket's rows
    in its window at a time, not all of them. Exact: the dedupe key holds the device id, and the joins
    and the rules read one row at a time."""
    f = source.silver.fields
    opt = lambda name: blank_to_null(F.col(name)) if name else F.lit(None).cast("string")  # noqa: E731
    # Only what the dedupe window needs is parsed before it: the window sorts whole rows, so every
    # column parsed before it is carried through the sort.
    parsed = (
        bronze.withColumn("w_device", opt(f.device_id))
        .withColumn("w_seq_raw", opt(f.seq))
        .withColumn("w_seq", F.expr("try_cast(w_seq_raw AS bigint)"))
        .withColumn(
            "w_received",
            parse_timestamp(F.col(f.received_at), timezone) if f.received_at else F.lit(None).cast("timestamp"),
        )
    )

    def parse_rest(rows: DataFrame) -> DataFrame:
        return (
            rows.withColumn("w_ts_raw", opt(f.reading_ts))
            .withColumn("w_ts", parse_timestamp(F.col(f.reading_ts), timezone))
            .withColumn("w_value_raw", opt(f.value))
            .withColumn("w_value", F.expr("try_cast(w_value_raw AS double)"))
            .withColumn("w_unit", opt(f.unit))
            .withColumn("w_record_id", F.concat_ws("/", F.col("w_device"), F.col("w_seq_raw")))
        )

    device_info = devices.select(
        F.col("device_id").alias("w_device"),
        F.col("device_type").alias("w_type"),
        F.col("clock_skew_seconds").alias("w_skew"),
        F.col("district_code"),
        F.col("h3_cell"),
        F.lit(True).alias("w_known_device"),
    )
    conversion = units.select(
        F.col("device_type").alias("w_type"),
        F.col("unit").alias("w_unit"),
        "canonical_unit",
        "factor",
        "min_valid",
        "max_valid",
    )

    def enrich(rows: DataFrame) -> DataFrame:
        # First arrival wins: a re-sent reading differs only in its arrival time.
        ranked = common.rank_duplicates(
            rows,
            ["w_device", "w_seq"],
            [F.col("w_received").asc_nulls_last()],
            [c for c in source.columns if c != f.received_at],
        )
        joined = (
            parse_rest(ranked)
            .join(device_info, on="w_device", how="left")
            .join(conversion, on=["w_type", "w_unit"], how="left")
        )
        corrected = F.when(
            F.col("w_skew").isNotNull(),
            F.timestamp_micros(F.unix_micros("w_ts") - F.col("w_skew") * F.lit(1_000_000)),
        )
        return (
            joined.withColumn("w_ts_utc", F.coalesce(corrected, F.col("w_ts")))
            .withColumn("w_hour", F.date_trunc("hour", F.col("w_ts_utc") + F.expr("INTERVAL 30 MINUTES")))
            .withColumn("w_canonical", F.col("w_value") * F.col("factor"))
        )

    parts = split_passes(parsed, "w_device", passes)
    enriched = union_passes(
        [materialize(enrich(part), f"enriched_{p}") for p, part in enumerate(parts)], enrich(parsed)
    )
    duplicates = common.duplicate_rows(enriched)
    classified = common.classify(
        common.kept_rows(enriched),
        [
            ("malformed_record", F.col("_parse_error").isNotNull(), F.col("_parse_error")),
            (
                "missing_key",
                F.col("w_device").isNull() | F.col("w_seq").isNull(),
                F.concat(F.lit("device_id/seq missing or not an integer: "), raw("w_record_id")),
            ),
            (
                "invalid_timestamp",
                F.col("w_ts").isNull(),
                F.concat(F.lit("reading time: cannot parse "), raw("w_ts_raw")),
            ),
            (
                "timestamp_out_of_range",
                (F.col("w_ts") < F.lit(EARLIEST))
                | (F.col("w_ts") > F.lit(now))
                | (F.col("w_ts") > F.col("w_received") + F.expr("INTERVAL 1 DAY")),
                F.concat(F.lit("reading time: impossible "), raw("w_ts_raw")),
            ),
            (
                "unknown_device",
                F.col("w_known_device").isNull(),
                F.concat(F.lit("device_id: not in the device registry: "), raw("w_device")),
            ),
            ("invalid_value", F.col("w_value").isNull(), F.concat(F.lit("value: not a number: "), raw("w_value_raw"))),
            (
                "sentinel_value",
                F.col("w_value").isin(*SENTINELS),
                F.concat(F.lit("value: sentinel "), raw("w_value_raw")),
            ),
            (
                "unknown_unit",
                F.col("factor").isNull(),
                F.concat(F.lit("unit: not listed for this device type: "), raw("w_unit")),
            ),
            (
                "value_out_of_range",
                (F.col("w_canonical") < F.col("min_valid")) | (F.col("w_canonical") > F.col("max_valid")),
                F.concat(F.lit("value: outside physical limits: "), raw("w_value_raw"), F.lit(" "), raw("w_unit")),
            ),
        ],
    )
    published = classified.where("reason IS NULL").select(
        F.col("w_device").alias("device_id"),
        F.col("w_seq").alias("seq"),
        F.lit(source.name).alias("source"),
        F.col("w_type").alias("device_type"),
        F.col("w_ts").alias("reading_ts_device"),
        F.col("w_ts_utc").alias("reading_ts_utc"),
        F.col("w_hour").alias("reading_hour_utc"),
        F.col("w_skew").isNotNull().alias("clock_corrected"),
        F.col("w_canonical").alias("value"),
        F.col("canonical_unit").alias("unit"),
        F.col("w_value").alias("value_reported"),
        F.col("w_unit").alias("unit_reported"),
        F.col("w_received").alias("received_at_utc"),
        "district_code",
        "h3_cell",
        "_batch_id",
        "_source_file",
        "_source_row_number",
        "_ingested_at",
    )
    quarantined = common.quarantine_rows(classified.where("reason IS NOT NULL"), source, F.col("w_record_id"), "")
    return SilverOutput(published, quarantined, duplicates)


def hourly(readings: DataFrame) -> DataFrame:
    """One row per device and hour from its first to its last reading; hours without one are gaps."""
    per_hour = readings.groupBy("device_id", F.col("reading_hour_utc").alias("hour_utc")).agg(
        F.count(F.lit(1)).alias("reading_count"),
        F.avg("value").alias("value_mean"),
        F.min("value").alias("value_min"),
        F.max("value").alias("value_max"),
    )
    span = readings.groupBy("device_id", "device_type", "unit", "district_code", "h3_cell").agg(
        F.min("reading_hour_utc").alias("first"), F.max("reading_hour_utc").alias("last")
    )
    hours = span.select(
        "device_id",
        "device_type",
        "unit",
        "district_code",
        "h3_cell",
        F.explode(F.sequence("first", "last", F.expr("INTERVAL 1 HOUR"))).alias("hour_utc"),
    )
    return hours.join(per_hour, on=["device_id", "hour_utc"], how="left").select(
        "device_id",
        "hour_utc",
        "device_type",
        "unit",
        F.coalesce(F.col("reading_count"), F.lit(0)).cast("bigint").alias("reading_count"),
        "value_mean",
        "value_min",
        "value_max",
        F.col("reading_count").isNull().alias("is_gap"),
        "district_code",
        "h3_cell",
        # the table's partition (the session's time zone is UTC: engine.py)
        F.date_format("hour_utc", "yyyy-MM").alias("hour_month"),
    )


def changed_hours(staged: DataFrame, stored_hourly: DataFrame) -> DataFrame:
    """Per device with new readings, the hour range [__from, __to] whose hourly rows they can change:
    their own hours, plus the gap hours between them and the device's stored span when they lie
    outside it. Both ends are hours with a reading (a new one, or the stored first / last), so the
    hourly rows recomputed from the readings in the range are the ones a full recompute would give."""
    new = staged.groupBy("device_id").agg(
        F.min("reading_hour_utc").alias("new_first"), F.max("reading_hour_utc").alias("new_last")
    )
    stored = stored_hourly.groupBy("device_id").agg(
        F.min("hour_utc").alias("old_first"), F.max("hour_utc").alias("old_last")
    )
    joined = new.join(stored, on="device_id", how="left")
    return joined.select(
        "device_id",
        F.when(F.col("old_last").isNotNull() & (F.col("new_first") > F.col("old_last")), F.col("old_last"))
        .otherwise(F.col("new_first"))
        .alias("__from"),
        F.when(F.col("old_first").isNotNull() & (F.col("new_last") < F.col("old_first")), F.col("old_first"))
        .otherwise(F.col("new_last"))
        .alias("__to"),
    )


# --- jobs ---------------------------------------------------------------------------------------------


def run_registry(spark: SparkSession, settings: Settings, source: Source, run_id: str) -> dict:
    places, units, key = common.load_places(spark, settings), units_frame(spark), settings.pii_key()
    return run_job(
        spark,
        settings,
        source,
        run_id,
        job="device",
        target=tables.device(settings.silver_dir),
        suite="silver_device",
        transform=lambda bronze, materialize: registry_transform(bronze, source, places, units, key),
    )


def run_readings(spark: SparkSession, settings: Settings, source: Source, run_id: str) -> dict:
    device_spec = tables.device(settings.silver_dir)
    if delta_io.version(device_spec) is None:
        raise RuntimeError(
            f"silver device_reading <- {source.name}: silver.device is empty; run the silver job "
            f"of its registry ({source.silver.registry}) first"
        )
    devices = delta_io.read(spark, device_spec)
    units = units_frame(spark)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    hourly_spec = tables.device_reading_hourly(settings.silver_dir)
    reading_spec = tables.device_reading(settings.silver_dir)

    def refresh_hourly(staged: DataFrame) -> dict:
        delta_io.ensure_table(hourly_spec)  # the first delivery: no stored span yet
        # Collected once (one row per device): every later plan (the count, each pass, the MERGE) would
        # otherwise aggregate the staged rows and scan the stored hourly table again.
        changed = changed_hours(staged, delta_io.read(spark, hourly_spec))
        rows = changed.collect()
        if not rows:
            return {"hourly_rows_written": 0}
        windows = spark.createDataFrame(rows, schema=changed.schema)
        # Only the hours a delivery can change are recomputed (changed_hours): a daily delivery touches
        # every device, and recomputing each one's whole history made the MERGE rewrite the whole
        # table (16.2 GB at scale 1.35). They are recomputed in passes of whole devices (the aggregate
        # holds one pass's readings at a time), each written to scratch once; then one MERGE reads them
        # (merge_sync reads its source four times: an inline aggregate would run four times).
        readings = (
            delta_io.read(spark, reading_spec)
            .join(F.broadcast(windows), on="device_id", how="inner")
            .where(F.col("reading_hour_utc").between(F.col("__from"), F.col("__to")))
            .drop("__from", "__to")
        )
        passes = passes_for(readings.count())
        scratch = settings.staging_dir / reading_spec.name / run_id / f"{source.name}__hourly"
        try:
            parts = [
                delta_io.materialize(hourly(part), scratch / f"pass_{p}")
                for p, part in enumerate(split_passes(readings, "device_id", passes))
            ]
            result = delta_io.merge_sync(
                spark, union_passes(parts, hourly(readings)), hourly_spec, delete_missing=False
            )
        finally:
            storage.remove_tree(scratch)
        return {"hourly_rows_written": result.rows_written, "hourly_delta_version": result.version_after}

    def transform(bronze: DataFrame, materialize: Materialize) -> SilverOutput:
        passes = passes_for(bronze.count())
        if passes > 1:
            log.info(f"  silver device_reading <- {source.name}: ranking and enriching in {passes} passes")
        return reading_transform(bronze, source, devices, units, settings.timezone, now, materialize, passes)

    return run_job(
        spark,
        settings,
        source,
        run_id,
        job="device_reading",
        target=reading_spec,
        suite="silver_device_reading",
        after_publish=refresh_hourly,
        lookup_tables=[device_spec.path],
        transform=transform,
    )
