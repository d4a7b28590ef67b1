"""Building blocks shared by the silver jobs (pure functions of DataFrames and columns).

Working columns are prefixed `w_`: every job parses the delivered text into `w_record_id`,
`w_lon_raw` / `w_lat_raw` / `w_district_raw` (when it has a place) and so on, then uses these.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from citysafe import reference
from citysafe.config import ConfigError, Settings
from citysafe.runs import write_json_atomic
from citysafe.sources import Source
from spark_jobs import udfs


def blank_to_null(c: SparkColumn) -> SparkColumn:
    trimmed = F.trim(c)
    return F.when(trimmed == "", None).otherwise(trimmed)


def parse_timestamp(c: SparkColumn, timezone: str) -> SparkColumn:
    """UTC instant from the forms departments use: local 'yyyy-MM-dd HH:mm:ss' (also with '/' and/or
    without seconds), ISO with 'Z', ISO with an offset, epoch milliseconds (13 digits) or seconds (10).
    Local forms are wall-clock time in `timezone`. Anything else is NULL (the caller quarantines it)."""
    s = F.trim(c)
    local = [
        F.to_utc_timestamp(F.try_to_timestamp(s, F.lit(fmt)), timezone)
        for fmt in ("yyyy-MM-dd HH:mm:ss", "yyyy/MM/dd HH:mm:ss", "yyyy/MM/dd HH:mm", "yyyy-MM-dd HH:mm")
    ]
    return F.coalesce(
        *local,
        F.try_to_timestamp(s, F.lit("yyyy-MM-dd'T'HH:mm:ss'Z'")),
        F.try_to_timestamp(s, F.lit("yyyy-MM-dd'T'HH:mm:ssXXX")),
        F.when(s.rlike(r"^[0-9]{13}$"), F.timestamp_millis(s.cast("bigint"))),
        F.when(s.rlike(r"^[0-9]{10}$"), F.timestamp_seconds(s.cast("bigint"))),
    )


def content_hash(columns: Sequence[str]) -> SparkColumn:
    return F.sha2(F.concat_ws("\u001f", *[F.coalesce(F.col(c), F.lit("\u0000")) for c in columns]), 256)


def _has_key(key: Sequence[str]) -> SparkColumn:
    has_key = F.col("_parse_error").isNull()
    for k in key:
        has_key = has_key & F.col(k).isNotNull()
    return has_key


def _ranked(
    keyed: DataFrame, key: Sequence[str], order: Sequence[SparkColumn], hash_columns: Sequence[str]
) -> DataFrame:
    window = Window.partitionBy(*key).orderBy(
        *order, F.col("w_hash").desc(), F.col("_source_file").asc(), F.col("_source_row_number").asc()
    )
    return keyed.withColumn("w_hash", content_hash(hash_columns)).withColumn("w_rank", F.row_number().over(window))


def dedupe(
    parsed: DataFrame, key: Sequence[str], order: Sequence[SparkColumn], hash_columns: Sequence[str]
) -> tuple[DataFrame, DataFrame]:
    """One row per key: the first by `order`; ties by content hash, then file and row number, so every
    engine keeps the same row. Returns (kept, dropped duplicates). Rows with a NULL key part or that
    failed to parse are kept as they are (the classifier quarantines them)."""
    has_key = _has_key(key)
    keyed, unkeyed = parsed.where(has_key), parsed.where(~has_key)
    ranked = _ranked(keyed, key, order, hash_columns)
    kept = ranked.where("w_rank = 1").drop("w_rank", "w_hash").unionByName(unkeyed)
    dropped = ranked.where("w_rank > 1").drop("w_rank", "w_hash")
    return kept, dropped


def rank_duplicates(
    parsed: DataFrame, key: Sequence[str], order: Sequence[SparkColumn], hash_columns: Sequence[str]
) -> DataFrame:
    """`dedupe`'s choice as a column instead of two frames: every row of `parsed` with `w_rank` = 1 for
    the row kept, > 1 for a dropped duplicate, NULL for a row without a key (kept as it is). One frame,
    so a job can put one barrier after it and take both the kept rows and the duplicates from there
    (`kept_rows`, `duplicate_rows`) instead of running the window once for each."""
    has_key = _has_key(key)
    ranked = _ranked(parsed.where(has_key), key, order, hash_columns).drop("w_hash")
    ranked = ranked.withColumn("w_rank", F.col("w_rank").cast("int"))
    return ranked.unionByName(parsed.where(~has_key).withColumn("w_rank", F.lit(None).cast("int")))


def kept_rows(ranked: DataFrame) -> DataFrame:
    """The rows `dedupe` keeps, from a `rank_duplicates` frame (without `w_rank`)."""
    return ranked.where(F.col("w_rank").isNull() | (F.col("w_rank") == 1)).drop("w_rank")


def duplicate_rows(ranked: DataFrame) -> DataFrame:
    """The rows `dedupe` drops as duplicates, from a `rank_duplicates` frame (without `w_rank`)."""
    return ranked.where(F.col("w_rank") > 1).drop("w_rank")


def classify(df: DataFrame, rules: Sequence[tuple[str, SparkColumn, SparkColumn]]) -> DataFrame:
    """Add `reason` (NULL = publishable) and `detail` from the first rule whose condition holds.
    A rule is (reason, condition, detail text naming the field and the value)."""
    reason, detail = F.lit(None).cast("string"), F.lit(None).cast("string")
    for name, condition, text in reversed(rules):
        reason = F.when(condition, F.lit(name)).otherwise(reason)
        detail = F.when(condition, text).otherwise(detail)
    return df.withColumn("reason", reason).withColumn("detail", detail)


def raw(name: str) -> SparkColumn:
    """A delivered value for a detail message ('(empty)' when missing)."""
    return F.coalesce(F.col(name).cast("string"), F.lit("(empty)"))


# --- places ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Places:
    aliases: DataFrame  # alias_key, district_code
    districts: list[dict]  # district_code, wkb
    h3_resolution: int


def load_places(spark: SparkSession, settings: Settings) -> Places:
    if settings.districts_geojson is None or settings.district_aliases is None:
        raise ConfigError(
            f"{settings.config_file}: this city has no district polygons (districts_geojson: null), and a "
            "source without silver.geography locates its records by them; give the source a geography "
            "(time zone, bounds, district crosswalk) in sources/<name>.yaml"
        )
    return Places(
        spark.createDataFrame(reference.district_aliases(settings.district_aliases)),
        reference.districts(settings.districts_geojson),
        settings.h3_resolution,
    )


def with_point(df: DataFrame, lon: str | None, lat: str | None, district: str | None) -> DataFrame:
    """The w_lon_raw / w_lat_raw / w_district_raw working columns `locate` reads."""
    opt = lambda name: blank_to_null(F.col(name)) if name else F.lit(None).cast("string")  # noqa: E731
    return (
        df.withColumn("w_lon_raw", opt(lon))
        .withColumn("w_lat_raw", opt(lat))
        .withColumn("w_lon", F.expr("try_cast(w_lon_raw AS double)"))
        .withColumn("w_lat", F.expr("try_cast(w_lat_raw AS double)"))
        .withColumn("w_district_raw", opt(district))
    )


def locate(df: DataFrame, places: Places) -> DataFrame:
    """District from the point when there is one, else from the name via the alias table; H3 cell.
    Adds district_code, lon, lat (only when inside the city), h3_cell, location_quality and the flags
    the location rules use (w_missing_point, w_point_ok, w_point_district)."""
    missing_point = (
        (F.col("w_lon_raw").isNull() & F.col("w_lat_raw").isNull())
        | ((F.col("w_lon") == 0) & (F.col("w_lat") == 0))  # the (0, 0) sentinel
    )
    point_ok = ~missing_point & F.col("w_lon").isNotNull() & F.col("w_lat").isNotNull()
    pointed = (
        df.withColumn("w_missing_point", missing_point)
        .withColumn("w_point_ok", point_ok)
        .withColumn("w_px", F.when(point_ok, F.col("w_lon")))
        .withColumn("w_py", F.when(point_ok, F.col("w_lat")))
        .withColumn("w_point_district", udfs.district_of_point_udf(places.districts)("w_px", "w_py"))
        .withColumn("alias_key", udfs.normalize_name_udf()("w_district_raw"))
    )
    named = pointed.join(
        places.aliases.withColumnRenamed("district_code", "w_name_district"), on="alias_key", how="left"
    ).drop("alias_key")
    inside = F.col("w_point_district").isNotNull()
    return (
        named.withColumn(
            "district_code",
            F.when(inside, F.col("w_point_district")).when(F.col("w_missing_point"), F.col("w_name_district")),
        )
        .withColumn("lon", F.when(inside, F.col("w_lon")))
        .withColumn("lat", F.when(inside, F.col("w_lat")))
        .withColumn("h3_cell", udfs.h3_cell_udf(places.h3_resolution)("lon", "lat"))
        .withColumn("location_quality", F.when(inside, F.lit("point")).otherwise(F.lit("district_only")))
    )


def location_rules() -> list[tuple[str, SparkColumn, SparkColumn]]:
    """Quarantine rules for a located row (after `locate`)."""
    return [
        (
            "invalid_coordinates",
            ~F.col("w_missing_point") & ~F.col("w_point_ok"),
            F.concat(
                F.lit("lon/lat: not numbers: "),
                F.coalesce(F.col("w_lon_raw"), F.lit("")),
                F.lit(","),
                F.coalesce(F.col("w_lat_raw"), F.lit("")),
            ),
        ),
        (
            "coordinates_outside_city",
            F.col("w_point_ok") & F.col("w_point_district").isNull(),
            F.concat(F.lit("lon/lat outside every district: "), F.col("w_lon_raw"), F.lit(","), F.col("w_lat_raw")),
        ),
        (
            "unknown_district",
            F.col("district_code").isNull(),
            F.concat(
                F.lit("district: no coordinates and unknown name "),
                F.coalesce(F.col("w_district_raw"), F.lit("(empty)")),
            ),
        ),
    ]


# --- personal data -------------------------------------------------------------------------------------

# No look-around (Sail's regex engine has none): the digit boundary is captured and put back.
_ID_PATTERN = r"(^|[^0-9])[1-9][0-9]{16}[0-9Xx]([^0-9]|$)"
_MOBILE_PATTERN = r"(^|[^0-9])(?:\+?86[- ]?)?1[3-9][0-9]{9}([^0-9]|$)"
_LANDLINE_PATTERN = r"(^|[^0-9])0[0-9]{2,3}-?[0-9]{7,8}([^0-9]|$)"


def scrub_text(c: SparkColumn) -> SparkColumn:
    """Free text without ID numbers (first: they contain phone-like runs), mobiles or landlines."""
    out = F.regexp_replace(c, _ID_PATTERN, "$1[id]$2")
    out = F.regexp_replace(out, _MOBILE_PATTERN, "$1[phone]$2")
    return F.regexp_replace(out, _LANDLINE_PATTERN, "$1[phone]$2")


def hash_personal(
    df: DataFrame, source: Source, key: bytes, phone_columns: Sequence[str] = (), id_columns: Sequence[str] = ()
) -> DataFrame:
    """Replace every personal column of the source by its keyed HMAC, in place. Phone numbers are
    reduced to their digits (country prefix dropped) and ID numbers upper-cased first, so one number
    hashes the same whatever the punctuation."""
    keyed_hash = udfs.hmac_udf(key)
    out = df
    for column in phone_columns:
        digits = F.regexp_replace(F.col(column), r"[^0-9]", "")
        out = out.withColumn(column, F.regexp_replace(digits, r"^86(1[0-9]{10})$", "$1"))
    for column in id_columns:
        out = out.withColumn(column, F.upper(F.col(column)))
    for column in source.personal_columns:
        out = out.withColumn(column, keyed_hash(blank_to_null(F.col(column))))
    return out


# --- quarantine and bookkeeping -----------------------------------------------------------------------


def quarantine_rows(df: DataFrame, source: Source, record_id: SparkColumn, run_id: str) -> DataFrame:
    """Rows for silver.quarantine: reason, detail and the delivered record as JSON (personal columns
    already hashed by the caller)."""
    record = F.to_json(F.struct(*[F.col(c) for c in source.columns]))
    return df.select(
        F.lit(source.name).alias("source"),
        record_id.cast("string").alias("source_record_id"),
        "reason",
        "detail",
        F.when(F.col("_parse_error").isNotNull(), F.lit(None).cast("string")).otherwise(record).alias("record_json"),
        F.lit(run_id).alias("run_id"),
        "_batch_id",
        "_source_file",
        "_source_row_number",
        "_ingested_at",
    )


def _published_state(settings: Settings, job: str, source: Source) -> Path:
    return settings.state_dir / "silver" / job / f"{source.name}.json"


def job_state(settings: Settings, job: str, source: Source) -> dict:
    path = _published_state(settings, job, source)
    return json.loads(path.read_text()) if path.exists() else {"published_batches": []}


def pending_batches(settings: Settings, job: str, source: Source) -> tuple[list[str], list[str]]:
    """(bronze batches this job has published, committed bronze batches it has not)."""
    from spark_jobs.bronze import committed_batches

    done = job_state(settings, job, source)["published_batches"]
    return done, [b for b in committed_batches(settings, source) if b not in done]


def mark_published(
    settings: Settings, job: str, source: Source, done: list[str], new: list[str], fingerprint: str | None = None
) -> None:
    write_json_atomic(
        _published_state(settings, job, source),
        {"published_batches": [*done, *new], "reference_fingerprint": fingerprint},
    )


def reference_fingerprint(settings: Settings, tables_read: Sequence[Path] = ()) -> str:
    """A hash of everything a fix to which can release quarantined rows: the reference files (taxonomy,
    crosswalks, classifiers, units), the city's district files, and the versions of the silver tables a
    job looks records up in (devices, enterprises)."""
    import hashlib

    from citysafe import delta_io
    from citysafe.delta_io import TableNotFoundError

    digest = hashlib.sha256()
    files = sorted(p for p in reference.REFERENCE_DIR.rglob("*") if p.is_file())
    for path in [*files, *[p for p in (settings.districts_geojson, settings.district_aliases) if p is not None]]:
        digest.update(str(path).encode())
        digest.update(path.read_bytes() if path.exists() else b"-")
    for table in tables_read:
        try:
            digest.update(f"{table}:{delta_io.open_table(table).version()}".encode())
        except TableNotFoundError:
            digest.update(f"{table}:-".encode())
    return digest.hexdigest()
