"""Silver for safety-hazard inspections -> `hazard`: one row per hazard with its rectification lifecycle.

A hazard is delivered again in each later month in which it was rectified or accepted: one row per
`hazard_id`, the latest `updated_at` wins (exact duplicate lines are ties, broken by content hash);
across runs MERGE replaces a row only with a newer `updated_at_utc`.

Enterprise: the delivered `enterprise_id` is normalised (NFKC, no spaces/hyphens, upper case). An
18-character credit code is looked up as `uscc`, a 15-digit legacy registration number as
`legacy_reg_no` in silver.enterprise_identifier. Only when the delivered id is empty or not shaped like
either identifier is the hazard matched by its normalised enterprise name (`name_normalized`, which
holds only names belonging to exactly one enterprise). A well-formed id that has a wrong check
character or is not in the registry is not overridden by a name guess: the row is quarantined
(unknown_enterprise). `enterprise_match` records which identifier linked the row.

Codes: `hazard_code` -> taxonomy subcategory through reference/crosswalks/<crosswalk>.csv.
Severity: 一般 -> general, 重大 -> major. Dates are local calendar dates in three spellings.

Lifecycle (dates are local calendar days):
    status            accepted (accepted_date) | rectified (rectified_date) | open, from the dates
    is_closed         rectified (or accepted) on or before as_of_date
    is_overdue_open   not closed and rectify_deadline < as_of_date (the deadline day itself is in time)
    closed_late       rectified after the deadline (False while open; NULL without a deadline)
    days_to_rectify   rectified_date - found_date; days_to_accept: accepted_date - found_date
    as_of_date        the data's own latest date: the latest local date of updated_at_utc over every
                      published hazard (never the wall clock, so a re-run or back-fill gives the same
                      flags). When a later delivery moves it forward, `is_overdue_open` and `as_of_date`
                      of the rows already published are refreshed after the publish.

Quarantine reasons, in the order they are checked:
    malformed_record, missing_key (no hazard_id),
    invalid_timestamp        found_date unparseable, another delivered date unparseable, or updated_at
    timestamp_out_of_range   found_date before 2000 or after the row's own update date; updated_at more
                             than a day in the future (the only use of the wall clock)
    time_order_violation     rectified before found, accepted before found or rectified, deadline before found
    unmapped_code            hazard_code not in the crosswalk
    invalid_value            severity not 一般/重大 (general/major)
    unknown_enterprise       the enterprise reference resolves to no published enterprise
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from citysafe import delta_io, reference
from citysafe.config import Settings
from citysafe.delta_io import Column, TableSpec
from citysafe.sources import Source
from spark_jobs import common, udfs
from spark_jobs.common import parse_timestamp, raw
from spark_jobs.publish import Materialize, SilverOutput, no_barrier, run_job
from spark_jobs.silver_enterprise import (
    check_roles,
    enterprise,
    enterprise_identifier,
    enterprise_name_key_udf,
    identifier_kind_udf,
    normalize_code_udf,
    parse_local_date,
    role,
)
from spark_jobs.tables import LINEAGE

log = logging.getLogger(__name__)

JOB = "hazard"
REQUIRED_ROLES = ("record_id", "enterprise_id", "code", "found_date", "updated_at")
OPTIONAL_ROLES = (
    "enterprise_name",
    "label",
    "severity",
    "rectify_deadline",
    "rectified_date",
    "accepted_date",
    "status",
    "inspector_id",
    "district",
)
DATE_ROLES = ("found_date", "rectify_deadline", "rectified_date", "accepted_date")
SEVERITY = {
    "一般": "general",
    "一般隐患": "general",
    "general": "general",
    "重大": "major",
    "重大隐患": "major",
    "major": "major",
}
EARLIEST = dt.date(2000, 1, 1)

# Only the identity columns are NOT NULL in the Delta schema: Sail's MERGE plans take time exponential in
# the number of NOT NULL target columns (~2x per column: 18 of them take ~100 s for 138 rows). The other
# always-present columns are NOT NULL by construction and checked by the GX suite (silver_hazard.yaml).
HAZARD_COLUMNS = (
    Column("hazard_id", "string", nullable=False),
    Column("source", "string", nullable=False),
    Column("enterprise_id", "string", nullable=False, description="silver.enterprise key (credit code)"),
    Column("enterprise_match", "string", description="uscc | legacy_reg_no | name_normalized"),
    Column("enterprise_ref", "string", description="the enterprise id as delivered, normalised"),
    Column("enterprise_name", "string", description="enterprise name as typed by the inspector"),
    Column("source_code", "string", description="the bureau's hazard code"),
    Column("source_label", "string"),
    Column("domain_code", "string"),
    Column("category_code", "string"),
    Column("subcategory_code", "string", nullable=False),
    Column("severity", "string", description="general | major"),
    Column("found_date", "date", nullable=False),
    Column("rectify_deadline", "date"),
    Column("rectified_date", "date"),
    Column("accepted_date", "date"),
    Column("status", "string", description="open | rectified | accepted (from the dates)"),
    Column("status_raw", "string", description="status as delivered (待整改/已整改/已验收)"),
    Column("is_closed", "boolean", description="rectified (or accepted)"),
    Column("is_overdue_open", "boolean", description="open and rectify_deadline < as_of_date"),
    Column("closed_late", "boolean", description="rectified after the deadline; False while open"),
    Column("days_to_rectify", "int", description="rectified_date - found_date"),
    Column("days_to_accept", "int", description="accepted_date - found_date"),
    Column(
        "as_of_date",
        "date",
        description="local date the lifecycle flags hold for: the latest updated_at date in the data",
    ),
    Column("inspector_id", "string", description="staff number"),
    Column("district_code", "string", description="district name as delivered, else the enterprise's"),
    Column("h3_cell", "string", description="the enterprise's cell"),
    Column("updated_at_utc", "timestamp", nullable=False, description="bureau's last update; MERGE keeps the newest"),
    *LINEAGE,
)


def hazard(silver_dir) -> TableSpec:
    return TableSpec("hazard", silver_dir / "hazard", HAZARD_COLUMNS, key=("hazard_id",), newer_by="updated_at_utc")


@dataclasses.dataclass(frozen=True)
class Reference:
    crosswalk: DataFrame  # source_code, source_label_ref, subcategory_code
    taxonomy: DataFrame  # subcategory_code, category_code, domain_code
    identifiers: DataFrame  # silver.enterprise_identifier: identifier_type, identifier, enterprise_id
    enterprises: DataFrame  # silver.enterprise (enterprise_id, district_code, h3_cell are used)
    aliases: DataFrame  # alias_key, district_code
    timezone: str


def load_reference(spark: SparkSession, settings: Settings, source: Source) -> Reference:
    if not source.silver.crosswalk:
        raise ValueError(f"{source.file}: silver.crosswalk is required for a hazard source")
    ids_spec, ent_spec = enterprise_identifier(settings.silver_dir), enterprise(settings.silver_dir)
    if delta_io.version(ids_spec) is None or delta_io.version(ent_spec) is None:
        raise RuntimeError(
            f"silver hazard <- {source.name}: silver.enterprise / enterprise_identifier do not "
            "exist yet; run the silver job of the enterprise registry first"
        )
    xw = reference.crosswalk(source.silver.crosswalk).rename(columns={"source_label": "source_label_ref"})
    tax = reference.taxonomy()[["subcategory_code", "category_code", "domain_code"]]
    return Reference(
        crosswalk=spark.createDataFrame(xw),
        taxonomy=spark.createDataFrame(tax),
        identifiers=delta_io.read(spark, ids_spec),
        enterprises=delta_io.read(spark, ent_spec),
        aliases=common.load_places(spark, settings).aliases,
        timezone=settings.timezone,
    )


def local_date(ts_column: str, timezone: str):
    return F.to_date(F.from_utc_timestamp(F.col(ts_column), timezone))


def lifecycle(df: DataFrame, as_of) -> DataFrame:
    """is_overdue_open and as_of_date for rows with is_closed / rectify_deadline (`as_of`: a date or column)."""
    as_of = as_of if isinstance(as_of, SparkColumn) else F.lit(as_of).cast("date")
    return df.withColumn("as_of_date", as_of).withColumn(
        "is_overdue_open", ~F.col("is_closed") & F.coalesce(F.col("rectify_deadline") < as_of, F.lit(False))
    )


def parse(bronze: DataFrame, source: Source, timezone: str) -> DataFrame:
    f = check_roles(source, REQUIRED_ROLES, OPTIONAL_ROLES)
    severity = F.create_map(*[F.lit(x) for kv in SEVERITY.items() for x in kv])
    parsed = (
        bronze.withColumn("w_record_id", F.upper(role(f, "record_id")))
        .withColumn("w_eid_raw", role(f, "enterprise_id"))
        .withColumn("w_eid", normalize_code_udf()("w_eid_raw"))
        .withColumn("w_eid_kind", identifier_kind_udf()("w_eid_raw"))
        .withColumn("w_name", role(f, "enterprise_name"))
        .withColumn("w_name_key", enterprise_name_key_udf()("w_name"))
        .withColumn("w_code", F.upper(role(f, "code")))
        .withColumn("w_label", role(f, "label"))
        .withColumn("w_severity_raw", role(f, "severity"))
        .withColumn("w_severity", severity[F.lower(F.col("w_severity_raw"))])
        .withColumn("w_status_raw", role(f, "status"))
        .withColumn("w_inspector", role(f, "inspector_id"))
        .withColumn("w_district_raw", role(f, "district"))
        .withColumn("w_updated_raw", role(f, "updated_at"))
        .withColumn("w_updated_at", parse_timestamp(F.col(f["updated_at"]), timezone))
    )
    for name in DATE_ROLES:
        parsed = parsed.withColumn(f"w_{name}_raw", role(f, name)).withColumn(
            f"w_{name}", parse_local_date(F.col(f"w_{name}_raw"))
        )
    return parsed


def resolve_enterprise(df: DataFrame, ref: Reference) -> DataFrame:
    """w_enterprise_id / w_enterprise_match from the delivered id, else (no usable id) from the name;
    w_ent_district / w_ent_h3 from silver.enterprise."""
    ids = ref.identifiers
    by_id = ids.where(F.col("identifier_type").isin("uscc", "legacy_reg_no")).select(
        F.col("identifier_type").alias("w_eid_kind"),
        F.col("identifier").alias("w_eid"),
        F.col("enterprise_id").alias("w_id_match"),
    )
    by_name = ids.where(F.col("identifier_type") == "name_normalized").select(
        F.col("identifier").alias("w_name_key"), F.col("enterprise_id").alias("w_name_match")
    )
    shaped = F.col("w_eid_kind").isNotNull()
    matched = (
        df.join(by_id, on=["w_eid_kind", "w_eid"], how="left")
        .join(by_name, on="w_name_key", how="left")
        .withColumn("w_match_id", F.when(shaped, F.col("w_id_match")).otherwise(F.col("w_name_match")))
        .withColumn("w_match_kind", F.when(shaped, F.col("w_eid_kind")).otherwise(F.lit("name_normalized")))
    )
    ents = ref.enterprises.select(
        F.col("enterprise_id").alias("w_match_id"),
        F.col("district_code").alias("w_ent_district"),
        F.col("h3_cell").alias("w_ent_h3"),
    )
    return (
        matched.join(ents, on="w_match_id", how="left")
        .withColumn("w_enterprise_id", F.when(F.col("w_ent_district").isNotNull(), F.col("w_match_id")))
        .withColumn("w_enterprise_match", F.when(F.col("w_enterprise_id").isNotNull(), F.col("w_match_kind")))
    )


def _unknown_enterprise_detail():
    kind = F.col("w_eid_kind")
    why = (
        F.when(kind.isin("uscc_bad_check", "legacy_bad_check"), F.lit("wrong check character"))
        .when(kind.isNotNull(), F.lit("not a published enterprise"))
        .when(F.col("w_name_key").isNull(), F.lit("no usable id and no name"))
        .otherwise(F.lit("no usable id and the name matches no single enterprise"))
    )
    return F.concat(F.lit("enterprise_id: "), why, F.lit(": "), raw("w_eid_raw"), F.lit(" / "), raw("w_name"))


def classify(df: DataFrame, now: dt.datetime | None = None) -> DataFrame:
    found, dl, rect, acc = (F.col(f"w_{n}") for n in DATE_ROLES)
    unreadable = None
    for name in DATE_ROLES[1:]:
        cond = F.col(f"w_{name}_raw").isNotNull() & F.col(f"w_{name}").isNull()
        unreadable = cond if unreadable is None else unreadable | cond
    return common.classify(
        df,
        [
            ("malformed_record", F.col("_parse_error").isNotNull(), F.col("_parse_error")),
            ("missing_key", F.col("w_record_id").isNull(), F.lit("hazard_id is empty")),
            (
                "invalid_timestamp",
                found.isNull(),
                F.concat(F.lit("found_date: cannot parse "), raw("w_found_date_raw")),
            ),
            (
                "invalid_timestamp",
                unreadable,
                F.concat(
                    F.lit("rectify_deadline/rectified_date/accepted_date: cannot parse "),
                    raw("w_rectify_deadline_raw"),
                    F.lit(" / "),
                    raw("w_rectified_date_raw"),
                    F.lit(" / "),
                    raw("w_accepted_date_raw"),
                ),
            ),
            (
                "invalid_timestamp",
                F.col("w_updated_at").isNull(),
                F.concat(F.lit("updated_at: cannot parse "), raw("w_updated_raw")),
            ),
            (
                "timestamp_out_of_range",
                (found < F.lit(EARLIEST)) | (found > F.col("w_updated_date")),
                F.concat(F.lit("found_date: before 2000 or after the row's update: "), raw("w_found_date_raw")),
            ),
            (
                "timestamp_out_of_range",
                F.col("w_updated_at") > F.lit(now + dt.timedelta(days=1)) if now else F.lit(False),
                F.concat(F.lit("updated_at: in the future: "), raw("w_updated_raw")),
            ),
            (
                "time_order_violation",
                F.coalesce((rect < found) | (acc < found) | (acc < rect) | (dl < found), F.lit(False)),
                F.concat(
                    F.lit("dates out of order: found "),
                    raw("w_found_date_raw"),
                    F.lit(", rectified "),
                    raw("w_rectified_date_raw"),
                    F.lit(", accepted "),
                    raw("w_accepted_date_raw"),
                    F.lit(", deadline "),
                    raw("w_rectify_deadline_raw"),
                ),
            ),
            (
                "unmapped_code",
                F.col("subcategory_code").isNull(),
                F.concat(F.lit("hazard_code: no crosswalk entry for "), raw("w_code")),
            ),
            (
                "invalid_value",
                F.col("w_severity_raw").isNotNull() & F.col("w_severity").isNull(),
                F.concat(F.lit("severity: not 一般/重大: "), raw("w_severity_raw")),
            ),
            ("unknown_enterprise", F.col("w_enterprise_id").isNull(), _unknown_enterprise_detail()),
        ],
    )


def transform(
    bronze: DataFrame,
    source: Source,
    ref: Reference,
    pii_key: bytes | None,
    previous_as_of: dt.date | None = None,
    now: dt.datetime | None = None,
    materialize: Materialize = no_barrier,
) -> SilverOutput:
    """bronze inspection rows -> (hazard candidates, quarantine rows, dropped duplicates).
    `previous_as_of`: silver.hazard's as_of_date before this run (the flags never go back in time).
    `now` (naive UTC): an updated_at more than a day after it is impossible (it would drag as_of_date
    into the future and flag every open hazard overdue). One barrier, as in the incident job: the
    classified rows, which the as-of date, the published and the quarantined rows all read."""
    parsed = parse(bronze, source, ref.timezone).withColumn("w_updated_date", local_date("w_updated_at", ref.timezone))
    kept, duplicates = common.dedupe(parsed, ["w_record_id"], [F.col("w_updated_at").desc_nulls_last()], source.columns)
    coded = kept.join(ref.crosswalk.withColumnRenamed("source_code", "w_code"), on="w_code", how="left").join(
        ref.taxonomy, on="subcategory_code", how="left"
    )
    aliases = ref.aliases.select("alias_key", F.col("district_code").alias("w_name_district"))
    placed = (
        resolve_enterprise(coded, ref)
        .withColumn("alias_key", udfs.normalize_name_udf()("w_district_raw"))
        .join(aliases, on="alias_key", how="left")
        .drop("alias_key")
    )
    classified = classify(placed, now)
    if source.personal_columns:
        if pii_key is None:
            raise ValueError(f"{source.name}: personal columns need the PII key")
        classified = common.hash_personal(classified, source, pii_key)
    classified = materialize(classified, "classified")

    candidates = classified.where("reason IS NULL")
    latest = candidates.agg(F.max("w_updated_date").alias("d")).collect()[0]["d"]
    as_of = max([d for d in (latest, previous_as_of) if d is not None], default=None) or EARLIEST
    closed_on = F.coalesce(F.col("w_rectified_date"), F.col("w_accepted_date"))
    shaped = (
        candidates.withColumn("is_closed", closed_on.isNotNull())
        .withColumn("rectify_deadline", F.col("w_rectify_deadline"))
        .withColumn(
            "closed_late", F.when(~F.col("is_closed"), F.lit(False)).otherwise(closed_on > F.col("w_rectify_deadline"))
        )
    )
    published = lifecycle(shaped, as_of).select(
        F.col("w_record_id").alias("hazard_id"),
        F.lit(source.name).alias("source"),
        F.col("w_enterprise_id").alias("enterprise_id"),
        F.col("w_enterprise_match").alias("enterprise_match"),
        F.col("w_eid").alias("enterprise_ref"),
        F.col("w_name").alias("enterprise_name"),
        F.col("w_code").alias("source_code"),
        F.coalesce(F.col("w_label"), F.col("source_label_ref")).alias("source_label"),
        "domain_code",
        "category_code",
        "subcategory_code",
        F.col("w_severity").alias("severity"),
        F.col("w_found_date").alias("found_date"),
        "rectify_deadline",
        F.col("w_rectified_date").alias("rectified_date"),
        F.col("w_accepted_date").alias("accepted_date"),
        F.when(F.col("w_accepted_date").isNotNull(), F.lit("accepted"))
        .when(F.col("w_rectified_date").isNotNull(), F.lit("rectified"))
        .otherwise(F.lit("open"))
        .alias("status"),
        F.col("w_status_raw").alias("status_raw"),
        "is_closed",
        "is_overdue_open",
        "closed_late",
        F.datediff(F.col("w_rectified_date"), F.col("w_found_date")).cast("int").alias("days_to_rectify"),
        F.datediff(F.col("w_accepted_date"), F.col("w_found_date")).cast("int").alias("days_to_accept"),
        "as_of_date",
        F.col("w_inspector").alias("inspector_id"),
        F.coalesce(F.col("w_name_district"), F.col("w_ent_district")).alias("district_code"),
        F.col("w_ent_h3").alias("h3_cell"),
        F.col("w_updated_at").alias("updated_at_utc"),
        "_batch_id",
        "_source_file",
        "_source_row_number",
        "_ingested_at",
    )
    quarantined = common.quarantine_rows(classified.where("reason IS NOT NULL"), source, F.col("w_record_id"), "")
    return SilverOutput(published, quarantined, duplicates)


# --- after publish ----------------------------------------------------------------------------------------


def refresh_lifecycle(spark: SparkSession, spec: TableSpec, timezone: str) -> dict:
    """Move every published hazard's flags to the table's own latest date (rows already there were
    evaluated at an earlier as_of_date). Only changed rows are written; nothing when none changed."""
    table = delta_io.read(spark, spec)
    as_of = table.agg(F.max(local_date("updated_at_utc", timezone)).alias("d")).collect()[0]["d"]
    if as_of is None:
        return {"as_of_date": None, "lifecycle_rows_refreshed": 0}
    stale = lifecycle(table.where(F.col("as_of_date") != F.lit(as_of).cast("date")), as_of).select(*spec.column_names)
    # Materialised first: the MERGE must not read the table it rewrites while it rewrites it.
    rows = stale.toArrow()
    written = 0
    if rows.num_rows:
        written = delta_io.merge_sync(spark, spark.createDataFrame(rows), spec, delete_missing=False).rows_written
    return {"as_of_date": as_of.isoformat(), "lifecycle_rows_refreshed": written}


def link_rate(spark: SparkSession, spec: TableSpec, enterprise_spec: TableSpec) -> float | None:
    """Share of silver.hazard rows whose enterprise_id is a row of silver.enterprise."""
    hazards = delta_io.read(spark, spec).select("enterprise_id")
    known = delta_io.read(spark, enterprise_spec).select("enterprise_id", F.lit(1).alias("k"))
    r = (
        hazards.join(known, on="enterprise_id", how="left")
        .agg(F.count(F.lit(1)).alias("n"), F.count("k").alias("linked"))
        .collect()[0]
    )
    return None if not r["n"] else r["linked"] / r["n"]


def run(spark: SparkSession, settings: Settings, source: Source, run_id: str) -> dict:
    ref = load_reference(spark, settings, source)
    key = settings.pii_key() if source.personal_columns else None
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    target = hazard(settings.silver_dir)
    previous = None
    if delta_io.version(target) is not None:
        previous = delta_io.read(spark, target).agg(F.max("as_of_date").alias("d")).collect()[0]["d"]

    def after_publish(_staged: DataFrame) -> dict:
        out = refresh_lifecycle(spark, target, settings.timezone)
        out["enterprise_link_rate"] = link_rate(spark, target, enterprise(settings.silver_dir))
        return out

    return run_job(
        spark,
        settings,
        source,
        run_id,
        job=JOB,
        target=target,
        suite="silver_hazard",
        after_publish=after_publish,
        lookup_tables=[enterprise_identifier(settings.silver_dir).path],
        transform=lambda bronze, materialize: transform(bronze, source, ref, key, previous, now, materialize),
    )
