"""Silver: a department's bronze records -> the unified `incident` table (and `quarantine`).

Transforms are pure functions of DataFrames (tested on small fixtures and on two engines):
parse -> dedupe -> crosswalk/taxonomy (or the free-text classifier) -> locate (district, H3) ->
classify -> mask PII -> split. Every bronze row ends in exactly one place: published, quarantined with
a reason, or counted as a duplicate. The job (`run`) writes the candidates to a staging table, gates
them with Great Expectations and only then MERGEs them into silver (write-audit-publish); sources
that take part in cross-department links then refresh silver.incident_link (spark_jobs.incident_links).

Department habits handled here: fire/EMS dispatch-chain times (received / dispatched / on scene, each
field in its own time format) with a `time_order_violation` rule; the hotline's `YYYY年MM月DD日 HH:MM`
form; free-text categories classified by reviewed rules with a confidence (`needs_review` below the
source's threshold); free text scrubbed of phone/ID numbers and of the record's own reporter name.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from citysafe import reference
from citysafe.config import Settings
from citysafe.sources import Source
from spark_jobs import common, incident_links, tables, text_classifier
from spark_jobs.common import Places, blank_to_null
from spark_jobs.publish import QualityGateFailed, SilverOutput, run_job  # noqa: F401 (re-exported)

JOB = "incident"
# Quarantine reasons, checked in this order; the first that applies is recorded.
REASONS = (
    "malformed_record",        # the record could not be split into the declared fields
    "missing_key",             # no record id
    "invalid_timestamp",       # occurred_at or updated_at unparseable
    "timestamp_out_of_range",  # before 2000, after the record's own last update, or in the future
    "time_order_violation",    # dispatched before received, or on scene before dispatched (fire/EMS)
    "unmapped_code",           # code not in its crosswalk / category is a known catch-all label
    "invalid_coordinates",     # lon/lat present but not numbers
    "coordinates_outside_city",  # valid coordinates outside every district
    "unknown_district",        # no usable coordinates and the district name is not in the alias table
    "needs_review",            # free-text category below the classifier's confidence threshold (steward queue)
)
EARLIEST = dt.datetime(2000, 1, 1)
NAME_MASK = "[name]"


@dataclasses.dataclass(frozen=True)
class Reference:
    """Small reference DataFrames and values the transforms join against."""

    crosswalk: DataFrame | None  # source_code, source_label_ref, subcategory_code (None: classifier)
    taxonomy: DataFrame          # subcategory_code, category_code, domain_code, severity
    places: Places
    timezone: str
    classifier: text_classifier.RuleSet | None = None  # free-text categories instead of a crosswalk
    min_confidence: float = 1.0                        # below: needs_review (from the source's YAML)


def load_reference(spark: SparkSession, settings: Settings, source: Source) -> Reference:
    tax = reference.taxonomy()
    silver = source.silver
    crosswalk = None
    if silver.crosswalk:
        xw = reference.crosswalk(silver.crosswalk)
        crosswalk = spark.createDataFrame(xw.rename(columns={"source_label": "source_label_ref"}))
    return Reference(
        crosswalk=crosswalk,
        taxonomy=spark.createDataFrame(tax.rename(columns={"severity_default": "severity"})[
            ["subcategory_code", "category_code", "domain_code", "severity"]]),
        places=common.load_places(spark, settings),
        timezone=settings.timezone,
        classifier=text_classifier.load_rules(silver.classifier.rules) if silver.classifier else None,
        min_confidence=silver.classifier.min_confidence if silver.classifier else 1.0,
    )


def parse_time(c, timezone: str):
    """common.parse_timestamp plus two department habits: the hotline's `YYYY年MM月DD日 HH:MM` (read as
    `YYYY-MM-DD HH:MM`) and an epoch value of exactly 0 (a JSON 0 = 1970-01-01, which the range rule then
    rejects as timestamp_out_of_range rather than as unreadable)."""
    s = F.trim(c)
    dashed = F.regexp_replace(F.regexp_replace(s, "[年月]", "-"), "日", "")
    return F.coalesce(common.parse_timestamp(dashed, timezone),
                      F.when(s == "0", F.timestamp_millis(F.lit(0).cast("bigint"))))


def parse(bronze: DataFrame, source: Source, timezone: str) -> DataFrame:
    """Typed working columns (prefixed w_) next to the delivered ones."""
    f = source.silver.fields
    opt = lambda name: blank_to_null(F.col(name)) if name else F.lit(None).cast("string")  # noqa: E731
    df = (
        common.with_point(bronze, f.lon, f.lat, f.district)
        .withColumn("w_record_id", opt(f.record_id))
        .withColumn("w_occurred_raw", opt(f.occurred_at))
        .withColumn("w_updated_raw", opt(f.updated_at))
        .withColumn("w_occurred_at", parse_time(F.col(f.occurred_at), timezone))
        .withColumn("w_updated_at", parse_time(F.col(f.updated_at), timezone))
        .withColumn("w_code", opt(f.code))
        .withColumn("w_label", opt(f.label))
        .withColumn("w_address", opt(f.address))
        .withColumn("w_status", opt(f.status))
    )
    # Dispatch chain: JSON null arrives as NULL, and so does the text "null".
    for role in ("received_at", "dispatched_at", "on_scene_at"):
        column = getattr(f, role)
        raw = opt(column)
        raw = F.when(F.lower(raw) == "null", None).otherwise(raw) if column else raw
        df = df.withColumn(f"w_{role}_raw", raw).withColumn(
            f"w_{role}", parse_time(F.col(f"w_{role}_raw"), timezone) if column else F.lit(None).cast("timestamp"))
    return df


def dedupe_latest(parsed: DataFrame, source: Source) -> tuple[DataFrame, DataFrame]:
    """One row per record id, the latest update wins."""
    return common.dedupe(parsed, ["w_record_id"], [F.col("w_updated_at").desc_nulls_last()], source.columns)


def attach_codes(df: DataFrame, ref: Reference) -> DataFrame:
    """Subcategory (+ taxonomy) for each row, with `w_confidence`, `w_needs_review` and `w_unmapped_detail`.

    Crosswalk: a reviewed code -> confidence 1.0. Classifier: the rules' subcategory is kept only at or
    above `ref.min_confidence`; below it the row needs review (the best guess goes to the detail)."""
    if ref.classifier is None:
        coded = (df.join(ref.crosswalk.withColumnRenamed("source_code", "w_code"), on="w_code", how="left")
                 .withColumn("w_confidence", F.lit(1.0))
                 .withColumn("w_needs_review", F.lit(False))
                 .withColumn("w_unmapped_detail", F.concat(F.lit("code: no crosswalk entry for "),
                                                           F.coalesce(F.col("w_code"), F.lit("(empty)"))))
                 .withColumn("w_review_detail", F.lit(None).cast("string")))
        return coded.join(ref.taxonomy, on="subcategory_code", how="left")
    text = F.coalesce(F.col("w_code"), F.lit("(empty)"))
    result = text_classifier.classify_udf(ref.classifier)(F.col("w_code"))
    low = F.col("w_confidence") < F.lit(ref.min_confidence)
    classified = (
        df.withColumn("w_class", result)
        .withColumn("w_guess", F.col("w_class.subcategory_code"))
        .withColumn("w_confidence", F.col("w_class.confidence"))
        .withColumn("w_rule", F.col("w_class.rule"))
        .drop("w_class")
        .withColumn("w_needs_review", low)
        .withColumn("subcategory_code", F.when(~low, F.col("w_guess")))
        .withColumn("source_label_ref", F.lit(None).cast("string"))
        .withColumn("w_unmapped_detail", F.concat(
            F.lit("category: "), text, F.lit(" has no taxonomy counterpart ("), F.col("w_rule"),
            F.lit(f"; rules {ref.classifier.version})")))
        .withColumn("w_review_detail", F.concat(
            F.lit("category: "), text, F.lit(": classifier confidence "),
            F.format_string("%.2f", F.col("w_confidence")), F.lit(f" < {ref.min_confidence:g}; best guess "),
            F.coalesce(F.col("w_guess"), F.lit("none")), F.lit(" ("), F.col("w_rule"),
            F.lit(f"; rules {ref.classifier.version})")))
    )
    return classified.join(ref.taxonomy, on="subcategory_code", how="left")


def _time_order_rules() -> list[tuple]:
    """received <= dispatched <= on scene (missing links of the chain are skipped)."""
    received = F.col("w_received_at")
    dispatched, on_scene = F.col("w_dispatched_at"), F.col("w_on_scene_at")
    text = lambda a, b: F.concat(  # noqa: E731
        F.lit(f"{a} "), F.col(f"w_{a}_raw"), F.lit(f" is before {b} "), F.col(f"w_{b}_raw"))
    return [
        ("time_order_violation", dispatched < received, text("dispatched_at", "received_at")),
        ("time_order_violation", on_scene < dispatched, text("on_scene_at", "dispatched_at")),
        ("time_order_violation", on_scene < received, text("on_scene_at", "received_at")),
    ]


def classify(df: DataFrame, now: dt.datetime) -> DataFrame:
    """Add `reason` (NULL = publishable) and a `detail` naming the field and the value."""
    unreadable = [
        ("invalid_timestamp", F.col(f"w_{role}_raw").isNotNull() & F.col(f"w_{role}").isNull(),
         F.concat(F.lit(f"{role}: cannot parse "), F.col(f"w_{role}_raw")))
        for role in ("received_at", "dispatched_at", "on_scene_at")]
    return common.classify(df, [
        ("malformed_record", F.col("_parse_error").isNotNull(), F.col("_parse_error")),
        ("missing_key", F.col("w_record_id").isNull(), F.lit("record id is empty")),
        ("invalid_timestamp", F.col("w_occurred_at").isNull(),
         F.concat(F.lit("occurred_at: cannot parse "), F.coalesce(F.col("w_occurred_raw"), F.lit("(empty)")))),
        ("invalid_timestamp", F.col("w_updated_at").isNull(),
         F.concat(F.lit("updated_at: cannot parse "), F.coalesce(F.col("w_updated_raw"), F.lit("(empty)")))),
        *unreadable,
        ("timestamp_out_of_range",
         (F.col("w_occurred_at") < F.lit(EARLIEST)) | (F.col("w_occurred_at") > F.lit(now))
         | (F.col("w_occurred_at") > F.col("w_updated_at") + F.expr("INTERVAL 1 HOUR")),
         F.concat(F.lit("occurred_at: impossible date "), F.col("w_occurred_raw"))),
        *_time_order_rules(),
        ("unmapped_code", F.col("subcategory_code").isNull() & ~F.col("w_needs_review"), F.col("w_unmapped_detail")),
        *common.location_rules(),
        ("needs_review", F.col("w_needs_review"), F.col("w_review_detail")),
    ])


def _without_name(text, name):
    """`text` with every occurrence of the record's own reporter name replaced (names of 2+ characters)."""
    usable = F.length(F.trim(name)) >= 2
    return F.when(usable & text.isNotNull(), F.replace(text, F.trim(name), F.lit(NAME_MASK))).otherwise(text)


def mask_personal(df: DataFrame, source: Source, key: bytes) -> DataFrame:
    """Replace every personal column by its keyed hash, in place, and scrub the free text (address,
    description): phone and ID numbers, and the record's own reporter name (before it is hashed)."""
    p = source.silver.personal
    f = source.silver.fields
    texts = [c for c in (f.address, f.description) if c]
    out = df
    if p.reporter_name:
        for column in [*texts, *(["w_address"] if f.address else [])]:
            out = out.withColumn(column, _without_name(F.col(column), F.col(p.reporter_name)))
    out = common.hash_personal(out, source, key, phone_columns=[c for c in [p.reporter_phone] if c],
                               id_columns=[c for c in [p.reporter_id] if c])
    for column in [*texts, *(["w_address"] if f.address else [])]:
        out = out.withColumn(column, common.scrub_text(F.col(column)))
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
        F.col("w_received_at").cast("timestamp").alias("received_at_utc"),
        F.col("w_dispatched_at").cast("timestamp").alias("dispatched_at_utc"),
        F.col("w_on_scene_at").cast("timestamp").alias("on_scene_at_utc"),
        "district_code", "lon", "lat", "h3_cell", "location_quality",
        F.col("w_status").alias("status"),
        F.col("w_address").alias("address_scrubbed"),
        hashed(p.reporter_name).alias("reporter_name_hash"),
        hashed(p.reporter_phone).alias("reporter_phone_hash"),
        hashed(p.reporter_id).alias("reporter_id_hash"),
        F.col("w_confidence").cast("double").alias("classification_confidence"),
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

    registry = incident_links.registry_of(source)
    after_publish = None
    if incident_links.participates(source, registry):
        def after_publish(_staged: DataFrame) -> dict:
            return {"incident_link": incident_links.refresh(spark, settings, registry, progress=progress)}

    return run_job(spark, settings, source, run_id, job=JOB, target=tables.incident(settings.silver_dir),
                   suite="silver_incident", transform=to_silver, progress=progress, after_publish=after_publish)
