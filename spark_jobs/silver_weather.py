"""Silver for daily weather observations -> `weather_daily` (one row per station and local date)."""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from citysafe.config import Settings
from citysafe.delta_io import Column, TableSpec
from citysafe.sources import Source
from spark_jobs import common
from spark_jobs.common import blank_to_null, raw
from spark_jobs.publish import SilverOutput, run_job
from spark_jobs.tables import LINEAGE

log = logging.getLogger(__name__)

ROLES = ("station_id", "date", "precip_mm", "tmax_c", "tmin_c", "wind_max_ms")
# Physical plausibility for a city station; outside these a value is an instrument or typing error.
LIMITS = {"precip_mm": (0.0, 1000.0), "tmax_c": (-60.0, 60.0), "tmin_c": (-60.0, 60.0), "wind_max_ms": (0.0, 120.0)}

WEATHER_DAILY_COLUMNS = (
    Column("station_id", "string", nullable=False),
    Column("date", "date", nullable=False, description="local calendar date"),
    Column("source", "string", nullable=False),
    Column("precip_mm", "double"),
    Column("tmax_c", "double"),
    Column("tmin_c", "double"),
    Column("wind_max_ms", "double"),
    Column("updated_at_utc", "timestamp", nullable=False, description="arrival of the delivering batch"),
    *LINEAGE,
)


def weather_daily(silver_dir) -> TableSpec:
    return TableSpec(
        "weather_daily",
        silver_dir / "weather_daily",
        WEATHER_DAILY_COLUMNS,
        key=("station_id", "date"),
        newer_by="updated_at_utc",
    )


def transform(bronze: DataFrame, source: Source) -> SilverOutput:
    fields = source.silver.fields
    missing = [r for r in ROLES if r not in fields]
    if missing:
        raise ValueError(f"{source.file}: silver.fields needs the roles {missing}")
    parsed = (
        bronze.withColumn("w_station", blank_to_null(F.col(fields["station_id"])))
        .withColumn("w_date_raw", blank_to_null(F.col(fields["date"])))
        .withColumn("w_date", F.to_date(F.try_to_timestamp(F.col("w_date_raw"), F.lit("yyyy-MM-dd"))))
    )
    for role in LIMITS:
        parsed = parsed.withColumn(f"w_{role}_raw", blank_to_null(F.col(fields[role]))).withColumn(
            f"w_{role}", F.expr(f"try_cast(w_{role}_raw AS double)")
        )
    kept, duplicates = common.dedupe(parsed, ["w_station", "w_date"], [F.col("_ingested_at").desc()], source.columns)
    rules = [
        ("malformed_record", F.col("_parse_error").isNotNull(), F.col("_parse_error")),
        (
            "missing_key",
            F.col("w_station").isNull() | F.col("w_date_raw").isNull(),
            F.lit("station_id or date is empty"),
        ),
        ("invalid_timestamp", F.col("w_date").isNull(), F.concat(F.lit("date: cannot parse "), raw("w_date_raw"))),
    ]
    for role, (low, high) in LIMITS.items():
        rules.append(
            (
                "invalid_value",
                F.col(f"w_{role}_raw").isNotNull() & F.col(f"w_{role}").isNull(),
                F.concat(F.lit(f"{role}: not a number: "), raw(f"w_{role}_raw")),
            )
        )
        rules.append(
            (
                "value_out_of_range",
                (F.col(f"w_{role}") < low) | (F.col(f"w_{role}") > high),
                F.concat(F.lit(f"{role}: outside [{low}, {high}]: "), raw(f"w_{role}_raw")),
            )
        )
    rules.append(
        (
            "value_out_of_range",
            F.col("w_tmax_c") < F.col("w_tmin_c"),
            F.concat(F.lit("tmax_c below tmin_c: "), raw("w_tmax_c_raw"), F.lit(" < "), raw("w_tmin_c_raw")),
        )
    )
    classified = common.classify(kept, rules)
    published = classified.where("reason IS NULL").select(
        F.col("w_station").alias("station_id"),
        F.col("w_date").alias("date"),
        F.lit(source.name).alias("source"),
        *[F.col(f"w_{role}").alias(role) for role in LIMITS],
        F.col("_ingested_at").alias("updated_at_utc"),
        "_batch_id",
        "_source_file",
        "_source_row_number",
        "_ingested_at",
    )
    record_id = F.concat_ws("/", F.col("w_station"), F.col("w_date_raw"))
    quarantined = common.quarantine_rows(classified.where("reason IS NOT NULL"), source, record_id, "")
    return SilverOutput(published, quarantined, duplicates)


def run(spark: SparkSession, settings: Settings, source: Source, run_id: str) -> dict:
    return run_job(
        spark,
        settings,
        source,
        run_id,
        job="weather_daily",
        target=weather_daily(settings.silver_dir),
        suite="silver_weather_daily",
        transform=lambda b, materialize: transform(b, source),
    )
