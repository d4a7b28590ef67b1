"""Silver for an enterprise registry -> `enterprise` (one row per enterprise) and the
`enterprise_identifier` lookup other jobs resolve enterprise references with.

`enterprise_id` is the unified social credit code (GB 32100-2015), normalised (NFKC, no spaces or
hyphens, upper case) and valid. Rules, in the order they are checked (the first that holds is recorded):

    malformed_record          the record could not be split into the declared fields
    missing_key               no credit code
    invalid_credit_code       not 18 characters of the GB 32100 alphabet, or a wrong check character
    invalid_timestamp         updated_at unparseable
    timestamp_out_of_range    updated_at more than a day in the future (wall clock)
    invalid_value             no enterprise name
    invalid_coordinates       lon/lat present but not numbers
    coordinates_outside_city  valid lon/lat outside every district
    unknown_district          no usable point and the district name is not in the alias table

Duplicates: one row per credit code, the latest `updated_at` wins (stale rows carry older name
spellings); ties (exact duplicate lines) are broken by content hash. Across runs MERGE keeps a row only
if its `updated_at_utc` is newer. Values that are not the enterprise's identity are published as NULL
when they cannot be read (an unreadable established date, a negative or unreadable capital, an invalid
legacy registration number) rather than quarantining the enterprise, which every hazard of it would
then miss.
The legal representative is personal: hashed (keyed HMAC) before anything leaves bronze.

`enterprise_identifier` (identifier_type, identifier -> enterprise_id) is rebuilt from the whole
`enterprise` table after each publish (merge_sync): every credit code (uscc), every legacy registration
number (legacy_reg_no) and every normalised name (name_normalized) that maps to exactly one enterprise;
a name or number shared by several enterprises is left out rather than guessed.
"""

from __future__ import annotations

import datetime as dt
import logging
import re

import pandas as pd
from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf

from citysafe import delta_io
from citysafe.config import Settings
from citysafe.delta_io import Column, TableSpec
from citysafe.sources import Source
from spark_jobs import common
from spark_jobs.common import Places, blank_to_null, parse_timestamp, raw
from spark_jobs.publish import Materialize, SilverOutput, no_barrier, run_job
from spark_jobs.tables import LINEAGE

log = logging.getLogger(__name__)

JOB = "enterprise"
REQUIRED_ROLES = ("credit_code", "name", "updated_at")
OPTIONAL_ROLES = (
    "legacy_reg_no",
    "industry_code",
    "industry_name",
    "district",
    "address",
    "lon",
    "lat",
    "established_date",
    "registered_capital",
    "status",
    "legal_representative",
)
# Registration status (登记状态) as the market regulator writes it -> one English word.
STATUS = {
    "存续": "active",
    "在业": "active",
    "开业": "active",
    "在营": "active",
    "注销": "deregistered",
    "吊销": "revoked",
    "吊销未注销": "revoked",
    "撤销": "revoked",
    "迁出": "moved_out",
    "停业": "suspended",
}
IDENTIFIER_TYPES = ("uscc", "legacy_reg_no", "name_normalized")

# Only the identity columns are NOT NULL in the Delta schema (Sail's MERGE slows down ~2x per NOT NULL
# target column); name_normalized, district_code and location_quality are checked by the GX suite.
ENTERPRISE_COLUMNS = (
    Column(
        "enterprise_id",
        "string",
        nullable=False,
        description="unified social credit code (GB 32100-2015), normalised upper case, check character valid",
    ),
    Column("source", "string", nullable=False, description="source registry name"),
    Column("legacy_reg_no", "string", description="15-digit pre-2015 registration number (GB/T 17710), when valid"),
    Column(
        "name", "string", nullable=False, description="registered name as delivered in the most recent row (trimmed)"
    ),
    Column("name_normalized", "string", description="citysafe.identifiers.normalize_enterprise_name"),
    Column("industry_code", "string"),
    Column("industry_name", "string"),
    Column("district_code", "string", description="from the point, else from the district name"),
    Column("lon", "double"),
    Column("lat", "double"),
    Column("h3_cell", "string"),
    Column("location_quality", "string", description="point | district_only"),
    Column("address_scrubbed", "string", description="registered address, phone and ID numbers removed"),
    Column("established_date", "date"),
    Column("registered_capital_wan", "double", description="registered capital in 10,000 CNY"),
    Column("status", "string", description="active | deregistered | revoked | moved_out | suspended | other"),
    Column("status_raw", "string", description="registration status as delivered"),
    Column("legal_representative_hash", "string", description="HMAC-SHA256 of the legal representative (keyed)"),
    Column("updated_at_utc", "timestamp", nullable=False, description="registry's last update; MERGE keeps the newest"),
    *LINEAGE,
)

IDENTIFIER_COLUMNS = (
    Column("identifier_type", "string", nullable=False, description="uscc | legacy_reg_no | name_normalized"),
    Column("identifier", "string", nullable=False, description="normalised code, or normalised name"),
    Column("enterprise_id", "string", nullable=False),
)


def enterprise(silver_dir) -> TableSpec:
    return TableSpec(
        "enterprise", silver_dir / "enterprise", ENTERPRISE_COLUMNS, key=("enterprise_id",), newer_by="updated_at_utc"
    )


def enterprise_identifier(silver_dir) -> TableSpec:
    return TableSpec(
        "enterprise_identifier",
        silver_dir / "enterprise_identifier",
        IDENTIFIER_COLUMNS,
        key=("identifier_type", "identifier"),
    )


# --- identifiers and dates (shared with silver_hazard) ---------------------------------------------------


def _identifier_kind(value) -> str | None:
    """uscc | uscc_bad_check | legacy_reg_no | legacy_bad_check for values shaped like a complete
    identifier (18 characters of the credit-code alphabet, or 15 digits); None for anything else."""
    from citysafe.identifiers import USCC_CHARS, legacy_reg_no_is_valid, normalize_code, uscc_is_valid

    if value is None or value != value:
        return None
    code = normalize_code(str(value))
    if code is None:
        return None
    if len(code) == 18 and all(c in USCC_CHARS for c in code):
        return "uscc" if uscc_is_valid(code) else "uscc_bad_check"
    if re.fullmatch(r"[0-9]{15}", code):
        return "legacy_reg_no" if legacy_reg_no_is_valid(code) else "legacy_bad_check"
    return None


def identifier_kind_udf():
    @pandas_udf("string")
    def identifier_kind(values: pd.Series) -> pd.Series:
        return pd.Series([_identifier_kind(v) for v in values], index=values.index, dtype=object)

    return identifier_kind


def normalize_code_udf():
    """citysafe.identifiers.normalize_code: NFKC, spaces and hyphens removed, upper case."""

    @pandas_udf("string")
    def normalize(values: pd.Series) -> pd.Series:
        from citysafe.identifiers import normalize_code

        return pd.Series(
            [None if v is None or v != v else normalize_code(str(v)) for v in values], index=values.index, dtype=object
        )

    return normalize


def enterprise_name_key_udf():
    """citysafe.identifiers.normalize_enterprise_name: the matching key for enterprise names."""

    @pandas_udf("string")
    def name_key(values: pd.Series) -> pd.Series:
        from citysafe.identifiers import normalize_enterprise_name

        return pd.Series(
            [None if v is None or v != v else normalize_enterprise_name(str(v)) for v in values],
            index=values.index,
            dtype=object,
        )

    return name_key


_DATE = r"^([0-9]{4})\s*[-/.年]\s*([0-9]{1,2})\s*[-/.月]\s*([0-9]{1,2})\s*日?(\s+[0-9]{1,2}:[0-9]{2}(:[0-9]{2})?)?$"


def parse_local_date(c: SparkColumn) -> SparkColumn:
    """A calendar date from `YYYY-MM-DD`, `YYYY/MM/DD`, `YYYY年MM月DD日` (also without leading zeros, with
    a trailing time of day, or as `YYYYMMDD`). Impossible dates (2025-02-30, 0000-00-00) and anything
    else are NULL. Dates are local calendar days: no time-zone conversion."""
    s = F.trim(c)
    iso = F.when(
        s.rlike(_DATE),
        F.concat_ws(
            "-",
            F.regexp_extract(s, _DATE, 1),
            F.lpad(F.regexp_extract(s, _DATE, 2), 2, "0"),
            F.lpad(F.regexp_extract(s, _DATE, 3), 2, "0"),
        ),
    )
    compact = F.when(
        s.rlike(r"^[0-9]{8}$"), F.concat_ws("-", F.substring(s, 1, 4), F.substring(s, 5, 2), F.substring(s, 7, 2))
    )
    return F.to_date(F.try_to_timestamp(F.coalesce(iso, compact), F.lit("yyyy-MM-dd")))


def role(fields: dict[str, str], name: str) -> SparkColumn:
    """The delivered column playing `name`, blank -> NULL (NULL when the source has no such column)."""
    column = fields.get(name)
    return blank_to_null(F.col(column)) if column else F.lit(None).cast("string")


def check_roles(source: Source, required: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, str]:
    fields = source.silver.fields
    missing = [r for r in required if r not in fields]
    unknown = [r for r in fields if r not in required and r not in optional]
    if missing or unknown:
        raise ValueError(
            f"{source.file}: silver.fields: "
            + "; ".join(
                ([f"missing the roles {missing}"] if missing else [])
                + ([f"unknown roles {unknown}"] if unknown else [])
            )
        )
    return fields


# --- transform --------------------------------------------------------------------------------------------


def transform(
    bronze: DataFrame,
    source: Source,
    places: Places,
    pii_key: bytes,
    timezone: str,
    now: dt.datetime | None = None,
    materialize: Materialize = no_barrier,
) -> SilverOutput:
    """bronze registry rows -> (enterprise candidates, quarantine rows, dropped duplicates).
    `now` (naive UTC): updated_at later than a day after it is impossible (timestamp_out_of_range).
    Two barriers, as in the incident job: the located rows (the point-in-polygon and H3 UDFs, used by
    several rules) and the classified, masked rows (split into published and quarantined)."""
    f = check_roles(source, REQUIRED_ROLES, OPTIONAL_ROLES)
    representative = f.get("legal_representative")
    if representative and representative not in source.personal_columns:
        raise ValueError(
            f"{source.file}: legal_representative column {representative!r} must be declared "
            "sensitivity: personal (it is published only as a keyed hash)"
        )
    status_map = F.create_map(*[F.lit(x) for kv in STATUS.items() for x in kv])
    parsed = (
        common.with_point(bronze, f.get("lon"), f.get("lat"), f.get("district"))
        .withColumn("w_code_raw", role(f, "credit_code"))
        .withColumn("w_record_id", normalize_code_udf()("w_code_raw"))
        .withColumn("w_code_kind", identifier_kind_udf()("w_code_raw"))
        .withColumn("w_legacy_raw", role(f, "legacy_reg_no"))
        .withColumn("w_legacy_kind", identifier_kind_udf()("w_legacy_raw"))
        .withColumn("w_legacy", F.when(F.col("w_legacy_kind") == "legacy_reg_no", normalize_code_udf()("w_legacy_raw")))
        .withColumn("w_name", role(f, "name"))
        .withColumn("w_name_key", enterprise_name_key_udf()("w_name"))
        .withColumn("w_updated_raw", role(f, "updated_at"))
        .withColumn("w_updated_at", parse_timestamp(F.col(f["updated_at"]), timezone))
        .withColumn("w_established", parse_local_date(role(f, "established_date")))
        .withColumn("w_capital_raw", role(f, "registered_capital"))
        .withColumn(
            "w_capital",
            F.expr("CASE WHEN try_cast(w_capital_raw AS double) >= 0 THEN try_cast(w_capital_raw AS double) END"),
        )
        .withColumn("w_status_raw", role(f, "status"))
        .withColumn(
            "w_status",
            F.when(F.col("w_status_raw").isNotNull(), F.coalesce(status_map[F.col("w_status_raw")], F.lit("other"))),
        )
        .withColumn("w_address", common.scrub_text(role(f, "address")))
    )
    kept, duplicates = common.dedupe(parsed, ["w_record_id"], [F.col("w_updated_at").desc_nulls_last()], source.columns)
    located = materialize(common.locate(kept, places), "located")
    classified = common.classify(
        located,
        [
            ("malformed_record", F.col("_parse_error").isNotNull(), F.col("_parse_error")),
            ("missing_key", F.col("w_record_id").isNull(), F.lit("credit_code is empty")),
            (
                "invalid_credit_code",
                F.coalesce(F.col("w_code_kind"), F.lit("")) != "uscc",
                F.concat(
                    F.lit("credit_code: not a valid unified social credit code (GB 32100-2015"),
                    F.when(F.col("w_code_kind") == "uscc_bad_check", F.lit(", wrong check character")).otherwise(
                        F.lit(", not 18 characters of its alphabet")
                    ),
                    F.lit("): "),
                    raw("w_code_raw"),
                ),
            ),
            (
                "invalid_timestamp",
                F.col("w_updated_at").isNull(),
                F.concat(F.lit("updated_at: cannot parse "), raw("w_updated_raw")),
            ),
            (
                "timestamp_out_of_range",
                F.coalesce(F.col("w_updated_at") > F.lit(now + dt.timedelta(days=1)), F.lit(False))
                if now
                else F.lit(False),
                F.concat(F.lit("updated_at: in the future: "), raw("w_updated_raw")),
            ),
            ("invalid_value", F.col("w_name_key").isNull(), F.concat(F.lit("enterprise_name: empty: "), raw("w_name"))),
            *common.location_rules(),
        ],
    )
    masked = materialize(common.hash_personal(classified, source, pii_key), "masked")
    published = masked.where("reason IS NULL").select(
        F.col("w_record_id").alias("enterprise_id"),
        F.lit(source.name).alias("source"),
        F.col("w_legacy").alias("legacy_reg_no"),
        F.col("w_name").alias("name"),
        F.col("w_name_key").alias("name_normalized"),
        role(f, "industry_code").alias("industry_code"),
        role(f, "industry_name").alias("industry_name"),
        "district_code",
        "lon",
        "lat",
        "h3_cell",
        "location_quality",
        F.col("w_address").alias("address_scrubbed"),
        F.col("w_established").alias("established_date"),
        F.col("w_capital").alias("registered_capital_wan"),
        F.col("w_status").alias("status"),
        F.col("w_status_raw").alias("status_raw"),
        (F.col(representative) if representative else F.lit(None).cast("string")).alias("legal_representative_hash"),
        F.col("w_updated_at").alias("updated_at_utc"),
        "_batch_id",
        "_source_file",
        "_source_row_number",
        "_ingested_at",
    )
    quarantined = common.quarantine_rows(
        masked.where("reason IS NOT NULL"), source, F.coalesce(F.col("w_record_id"), F.col("w_code_raw")), ""
    )
    return SilverOutput(published, quarantined, duplicates)


def identifiers(enterprises: DataFrame) -> DataFrame:
    """enterprise rows -> enterprise_identifier rows. Credit codes always; legacy numbers and normalised
    names only where they point at exactly one enterprise."""
    uscc = enterprises.select(
        F.lit("uscc").alias("identifier_type"), F.col("enterprise_id").alias("identifier"), "enterprise_id"
    )
    others = enterprises.select(
        F.lit("legacy_reg_no").alias("identifier_type"), F.col("legacy_reg_no").alias("identifier"), "enterprise_id"
    ).unionByName(
        enterprises.select(
            F.lit("name_normalized").alias("identifier_type"),
            F.col("name_normalized").alias("identifier"),
            "enterprise_id",
        )
    )
    unique = (
        others.where(F.col("identifier").isNotNull())
        .groupBy("identifier_type", "identifier")
        .agg(F.count_distinct("enterprise_id").alias("n"), F.min("enterprise_id").alias("enterprise_id"))
        .where("n = 1")
        .drop("n")
    )
    return uscc.unionByName(unique)


# --- job --------------------------------------------------------------------------------------------------


def run(spark: SparkSession, settings: Settings, source: Source, run_id: str) -> dict:
    places, key = common.load_places(spark, settings), settings.pii_key()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    target = enterprise(settings.silver_dir)
    lookup = enterprise_identifier(settings.silver_dir)

    def refresh_identifiers(_staged: DataFrame) -> dict:
        result = delta_io.merge_sync(spark, identifiers(delta_io.read(spark, target)), lookup)
        return {
            "identifier_rows_written": result.rows_written,
            "identifier_rows_deleted": result.rows_deleted,
            "identifier_delta_version": result.version_after,
        }

    return run_job(
        spark,
        settings,
        source,
        run_id,
        job=JOB,
        target=target,
        suite="silver_enterprise",
        after_publish=refresh_identifiers,
        transform=lambda bronze, materialize: transform(
            bronze, source, places, key, settings.timezone, now, materialize
        ),
    )
