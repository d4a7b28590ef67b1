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

Other cities (real public sources): a `geography` block in the source's silver section replaces the
synthetic city's polygons and alias table. Its time zone reads the naive timestamps, the source's own
area code (police district, beat, borough, zip, census block prefix) goes through
reference/districts/<crosswalk>.csv (unknown -> unknown_district), and a point inside the city's
`bounds` keeps lon/lat and gets an H3 cell (outside -> coordinates_outside_city; no point ->
district_only). `time_formats` (Spark patterns) are tried before the built-in forms, and
`occurred_at_parts` joins split date/hour columns. When the source's YAML has a `code:` section holding the
source, its `spark_code` is the code (composite, constant or derived codes) with the crosswalk named
there.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from citysafe import code_mapping, reference
from citysafe.config import Settings
from citysafe.sources import Geography, Source, SourceError
from spark_jobs import common, incident_links, tables, text_classifier, udfs
from spark_jobs.common import Places, blank_to_null
from spark_jobs.publish import (  # noqa: F401 (re-exported)
    Materialize,
    QualityGateFailed,
    SilverOutput,
    no_barrier,
    run_job,
)

log = logging.getLogger(__name__)

JOB = "incident"
# Quarantine reasons, checked in this order; the first that applies is recorded.
REASONS = (
    "malformed_record",  # the record could not be split into the declared fields
    "missing_key",  # no record id
    "invalid_timestamp",  # occurred_at or updated_at unparseable
    "timestamp_out_of_range",  # before 2000, after the record's own last update, or in the future
    "time_order_violation",  # dispatched before received, or on scene before dispatched (fire/EMS)
    "out_of_scope",  # a steward decided the code is not a safety incident (crosswalks/decisions)
    "unclassifiable_code",  # a steward decided the code does not say which subcategory
    "unmapped_code",  # code not in its crosswalk (nor decided) / category is a known catch-all label
    "invalid_coordinates",  # lon/lat present but not numbers
    "coordinates_outside_city",  # valid coordinates outside every district
    "unknown_district",  # no usable coordinates and the district name is not in the alias table
    "needs_review",  # free-text category below the classifier's confidence threshold (steward queue)
)
EARLIEST = dt.datetime(2000, 1, 1)
NAME_MASK = "[name]"


@dataclasses.dataclass(frozen=True)
class Reference:
    """Small reference DataFrames and values the transforms join against."""

    crosswalk: DataFrame | None  # source_code, source_label_ref, subcategory_code (None: classifier)
    taxonomy: DataFrame  # subcategory_code, category_code, domain_code, severity
    places: Places
    timezone: str
    classifier: text_classifier.RuleSet | None = None  # free-text categories instead of a crosswalk
    min_confidence: float = 1.0  # below: needs_review (from the source's YAML)
    # Another city (silver.geography): its district crosswalk instead of `places` (then None).
    geography: Geography | None = None
    districts: DataFrame | None = None  # w_dkey (upper-cased source value), w_dcode
    h3_resolution: int = 9
    time_formats: tuple[str, ...] = ()  # the source's own local patterns, tried first
    code_spec: code_mapping.CodeSpec | None = None  # the source's `code:` section (real sources)
    # Steward decisions for codes the crosswalk leaves out (reference/crosswalks/decisions/<crosswalk>.csv):
    # exact codes as a frame (w_code, w_decision, w_decision_note), patterns as (regex, decision, note).
    decisions: DataFrame | None = None
    decision_patterns: tuple[tuple[str, str, str], ...] = ()


def code_spec_of(source: Source) -> code_mapping.CodeSpec | None:
    """The code rule the source declares in its YAML `code:` section (the registry checks its crosswalk
    is silver.crosswalk), or None when the code is a delivered column named by silver.fields.code."""
    spec = code_mapping.spec_of(source)
    if spec is None and not source.silver.fields.code:
        raise SourceError(f"{source.file}: silver.fields.code is required (or a `code:` section)")
    return spec


def check_geography_columns(source: Source) -> None:
    """Columns the silver section names outside `fields` (the registry checks `fields` itself)."""
    silver = source.silver
    geo = silver.geography
    named = {f"occurred_at_parts[{i}]": c for i, c in enumerate(silver.occurred_at_parts)}
    if geo:
        named.update({f"geography.district.column[{i}]": c for i, c in enumerate(geo.district.columns)})
        if geo.point:
            named["geography.point"] = geo.point
    bad = {role: c for role, c in named.items() if c not in source.columns}
    if bad:
        raise SourceError(f"{source.file}: silver: {bad} not column(s) in schema")


def load_reference(spark: SparkSession, settings: Settings, source: Source) -> Reference:
    import pandas as pd

    tax = reference.taxonomy()
    silver = source.silver
    check_geography_columns(source)
    spec = code_spec_of(source) if silver.crosswalk else None
    crosswalk, decisions, patterns = None, None, ()
    if silver.crosswalk:
        xw = reference.crosswalk(silver.crosswalk)
        crosswalk = spark.createDataFrame(xw.rename(columns={"source_label": "source_label_ref"}))
        found = code_mapping.decisions(silver.crosswalk)
        exact = [d for d in found if not d.is_pattern]
        if exact:
            decisions = spark.createDataFrame(
                pd.DataFrame(
                    {
                        "w_code": [d.pattern for d in exact],
                        "w_decision": [d.decision for d in exact],
                        "w_decision_note": [d.note for d in exact],
                    }
                )
            )
        patterns = tuple((code_mapping.glob_regex(d.pattern), d.decision, d.note) for d in found if d.is_pattern)
    geo = silver.geography
    districts = None
    if geo:
        rows = geo.district.table()
        districts = spark.createDataFrame(
            pd.DataFrame(
                {
                    "w_dkey": [r["source_value"].strip().upper() for r in rows],
                    "w_dcode": [r["district_code"].strip() for r in rows],
                }
            )
        )
    return Reference(
        crosswalk=crosswalk,
        taxonomy=spark.createDataFrame(
            tax.rename(columns={"severity_default": "severity"})[
                ["subcategory_code", "category_code", "domain_code", "severity"]
            ]
        ),
        places=None if geo else common.load_places(spark, settings),
        timezone=geo.timezone if geo else settings.timezone,
        classifier=text_classifier.load_rules(silver.classifier.rules) if silver.classifier else None,
        min_confidence=silver.classifier.min_confidence if silver.classifier else 1.0,
        geography=geo,
        districts=districts,
        h3_resolution=settings.h3_resolution,
        time_formats=tuple(silver.time_formats),
        code_spec=spec,
        decisions=decisions,
        decision_patterns=patterns,
    )


def parse_time(c, timezone: str, formats=()):
    """common.parse_timestamp plus two department habits: the hotline's `YYYY年MM月DD日 HH:MM` (read as
    `YYYY-MM-DD HH:MM`) and an epoch value of exactly 0 (a JSON 0 = 1970-01-01, which the range rule then
    rejects as timestamp_out_of_range rather than as unreadable). `formats`: the source's own Spark
    patterns for local wall-clock time in `timezone`, tried first."""
    s = F.trim(c)
    dashed = F.regexp_replace(F.regexp_replace(s, "[年月]", "-"), "日", "")
    own = [F.to_utc_timestamp(F.try_to_timestamp(s, F.lit(fmt)), timezone) for fmt in formats]
    return F.coalesce(
        *own, common.parse_timestamp(dashed, timezone), F.when(s == "0", F.timestamp_millis(F.lit(0).cast("bigint")))
    )


_DECIMAL_ZERO = r"^(-?[0-9]+)\.0+$"
_LAT_LON = r"^\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\)$"


def _parts(columns) -> F.Column:
    """Split date/time columns joined with a space (each trimmed, '6.0' read as '6'); NULL when all are blank."""
    parts = [blank_to_null(F.regexp_replace(F.trim(F.col(c)), _DECIMAL_ZERO, "$1")) for c in columns]
    any_part = parts[0].isNotNull()
    for p in parts[1:]:
        any_part = any_part | p.isNotNull()
    return F.when(any_part, F.concat_ws(" ", *parts))


def _record_id(source: Source):
    """The record id column, or (no record_id field) the primary key columns joined with '|'."""
    f = source.silver.fields
    if f.record_id:
        return blank_to_null(F.col(f.record_id))
    key = F.concat_ws(code_mapping.SEPARATOR, *[F.coalesce(F.trim(F.col(c)), F.lit("")) for c in source.primary_key])
    return F.when(F.length(F.regexp_replace(key, r"[|]", "")) > 0, key)


def parse(bronze: DataFrame, source: Source, timezone: str, formats=(), code_spec=None) -> DataFrame:
    """Typed working columns (prefixed w_) next to the delivered ones."""
    silver = source.silver
    f = silver.fields
    geo = silver.geography
    opt = lambda name: blank_to_null(F.col(name)) if name else F.lit(None).cast("string")  # noqa: E731
    if geo is None:
        df = common.with_point(bronze, f.lon, f.lat, f.district)
    elif geo.point and not (f.lon and f.lat):  # '(lat, lon)' in one column
        df = bronze.withColumn("w_point_lat_src", F.regexp_extract(F.trim(F.col(geo.point)), _LAT_LON, 1)).withColumn(
            "w_point_lon_src", F.regexp_extract(F.trim(F.col(geo.point)), _LAT_LON, 2)
        )
        df = common.with_point(df, "w_point_lon_src", "w_point_lat_src", None).drop(
            "w_point_lat_src", "w_point_lon_src"
        )
    else:
        df = common.with_point(bronze, f.lon, f.lat, None)
    if geo is not None:  # the delivered area code(s), for the detail text
        df = df.withColumn(
            "w_district_raw", F.concat_ws(" / ", *[blank_to_null(F.col(c)) for c in geo.district.columns])
        )
    occurred = F.col(f.occurred_at) if f.occurred_at else F.col("w_occurred_raw")
    df = (
        df.withColumn("w_record_id", _record_id(source))
        .withColumn("w_occurred_raw", opt(f.occurred_at) if f.occurred_at else _parts(silver.occurred_at_parts))
        .withColumn("w_occurred_at", parse_time(occurred, timezone, formats))
    )
    if f.updated_at:
        df = df.withColumn("w_updated_raw", opt(f.updated_at)).withColumn(
            "w_updated_at", parse_time(F.col(f.updated_at), timezone, formats)
        )
    else:  # no update time delivered: the occurrence stands in
        df = df.withColumn("w_updated_raw", F.col("w_occurred_raw")).withColumn("w_updated_at", F.col("w_occurred_at"))
    df = (
        df.withColumn("w_code", code_mapping.spark_code(code_spec) if code_spec else opt(f.code))
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
            f"w_{role}",
            parse_time(F.col(f"w_{role}_raw"), timezone, formats) if column else F.lit(None).cast("timestamp"),
        )
    return df


def dedupe_latest(parsed: DataFrame, source: Source) -> tuple[DataFrame, DataFrame]:
    """One row per record id, the latest update wins."""
    return common.dedupe(parsed, ["w_record_id"], [F.col("w_updated_at").desc_nulls_last()], source.columns)


def attach_codes(df: DataFrame, ref: Reference) -> DataFrame:
    """Subcategory (+ taxonomy) for each row, with `w_confidence`, `w_needs_review` and `w_unmapped_detail`.

    Crosswalk: a reviewed code -> confidence 1.0. Classifier: the rules' subcategory is kept only at or
    above `ref.min_confidence`; below it the row needs review (the best guess goes to the detail)."""
    if ref.classifier is None:
        coded = _attach_decisions(
            df.join(ref.crosswalk.withColumnRenamed("source_code", "w_code"), on="w_code", how="left"), ref
        )
        coded = (
            coded.withColumn("w_confidence", F.lit(1.0))
            .withColumn("w_needs_review", F.lit(False))
            .withColumn(
                "w_unmapped_detail",
                F.concat(F.lit("code: no crosswalk entry for "), F.coalesce(F.col("w_code"), F.lit("(empty)"))),
            )
            .withColumn("w_review_detail", F.lit(None).cast("string"))
        )
        return coded.join(ref.taxonomy, on="subcategory_code", how="left")
    text = F.coalesce(F.col("w_code"), F.lit("(empty)"))
    df = df.withColumn("w_decision", F.lit(None).cast("string")).withColumn(
        "w_decision_note", F.lit(None).cast("string")
    )
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
        .withColumn(
            "w_unmapped_detail",
            F.concat(
                F.lit("category: "),
                text,
                F.lit(" has no taxonomy counterpart ("),
                F.col("w_rule"),
                F.lit(f"; rules {ref.classifier.version})"),
            ),
        )
        .withColumn(
            "w_review_detail",
            F.concat(
                F.lit("category: "),
                text,
                F.lit(": classifier confidence "),
                F.format_string("%.2f", F.col("w_confidence")),
                F.lit(f" < {ref.min_confidence:g}; best guess "),
                F.coalesce(F.col("w_guess"), F.lit("none")),
                F.lit(" ("),
                F.col("w_rule"),
                F.lit(f"; rules {ref.classifier.version})"),
            ),
        )
    )
    return classified.join(ref.taxonomy, on="subcategory_code", how="left")


def _time_order_rules() -> list[tuple]:
    """received <= dispatched <= on scene (missing links of the chain are skipped)."""
    received = F.col("w_received_at")
    dispatched, on_scene = F.col("w_dispatched_at"), F.col("w_on_scene_at")
    text = lambda a, b: F.concat(  # noqa: E731
        F.lit(f"{a} "), F.col(f"w_{a}_raw"), F.lit(f" is before {b} "), F.col(f"w_{b}_raw")
    )
    return [
        ("time_order_violation", dispatched < received, text("dispatched_at", "received_at")),
        ("time_order_violation", on_scene < dispatched, text("on_scene_at", "dispatched_at")),
        ("time_order_violation", on_scene < received, text("on_scene_at", "received_at")),
    ]


def _district_key(c, district: Geography.District):
    """A delivered area code as its crosswalk key: trimmed, upper-cased, optionally extracted/de-floated."""
    key = F.trim(c)
    if district.extract:
        key = F.regexp_extract(key, district.extract, 1)
    if district.strip_decimal_zero:
        key = F.regexp_replace(key, _DECIMAL_ZERO, "$1")
    return blank_to_null(F.upper(key))


def locate_geography(df: DataFrame, ref: Reference) -> DataFrame:
    """`common.locate` for another city: district from the source's area code(s) through its district
    crosswalk (the first column that maps wins), the point kept (with its H3 cell) when inside `bounds`.
    Adds the same columns and flags as common.locate (w_point_district: the district of a point inside)."""
    geo = ref.geography
    min_lon, min_lat, max_lon, max_lat = geo.bounds
    missing_point = (
        (F.col("w_lon_raw").isNull() & F.col("w_lat_raw").isNull())
        | ((F.col("w_lon") == 0) & (F.col("w_lat") == 0))  # the (0, 0) sentinel
    )
    point_ok = ~missing_point & F.col("w_lon").isNotNull() & F.col("w_lat").isNotNull()
    out = df.withColumn("w_missing_point", missing_point).withColumn("w_point_ok", point_ok)
    codes = []
    for i, column in enumerate(geo.district.columns):
        out = out.withColumn(f"w_dkey{i}", _district_key(F.col(column), geo.district)).join(
            ref.districts.withColumnRenamed("w_dkey", f"w_dkey{i}").withColumnRenamed("w_dcode", f"w_dcode{i}"),
            on=f"w_dkey{i}",
            how="left",
        )
        codes.append(F.col(f"w_dcode{i}"))
    inside = F.col("w_point_ok") & F.col("w_lon").between(min_lon, max_lon) & F.col("w_lat").between(min_lat, max_lat)
    out = (
        out.withColumn("district_code", F.coalesce(*codes))
        .withColumn("w_inside", F.coalesce(inside, F.lit(False)))
        .withColumn("w_point_district", F.when(F.col("w_inside"), F.col("district_code")))
        .withColumn("lon", F.when(F.col("w_inside"), F.col("w_lon")))
        .withColumn("lat", F.when(F.col("w_inside"), F.col("w_lat")))
    )
    return (
        out.withColumn("h3_cell", udfs.h3_cell_udf(ref.h3_resolution)("lon", "lat"))
        .withColumn("location_quality", F.when(F.col("w_inside"), F.lit("point")).otherwise(F.lit("district_only")))
        .drop(*[f"w_dkey{i}" for i in range(len(codes))], *[f"w_dcode{i}" for i in range(len(codes))])
    )


def geography_rules(geo: Geography) -> list[tuple]:
    """common.location_rules for another city (bounds instead of polygons, a district crosswalk instead of
    the alias table)."""
    district = geo.district
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
            F.col("w_point_ok") & ~F.col("w_inside"),
            F.concat(
                F.lit(f"lon/lat outside the city's bounds {list(geo.bounds)}: "),
                F.col("w_lon_raw"),
                F.lit(","),
                F.col("w_lat_raw"),
            ),
        ),
        (
            "unknown_district",
            F.col("district_code").isNull(),
            F.concat(
                F.lit(f"district: {'/'.join(district.columns)} "),
                F.coalesce(F.when(F.col("w_district_raw") != "", F.col("w_district_raw")), F.lit("(empty)")),
                F.lit(f" not in reference/districts/{district.crosswalk}.csv"),
            ),
        ),
    ]


def _attach_decisions(df: DataFrame, ref: Reference) -> DataFrame:
    """`w_decision` / `w_decision_note`: the steward's decision for a code the crosswalk does not map
    (exact codes by join, then the patterns in file order; NULL when mapped or undecided)."""
    if ref.decisions is not None:
        df = df.join(ref.decisions, on="w_code", how="left")
    else:
        df = df.withColumn("w_decision", F.lit(None).cast("string")).withColumn(
            "w_decision_note", F.lit(None).cast("string")
        )
    if ref.decision_patterns:
        decision, note = F.col("w_decision"), F.col("w_decision_note")
        for regex, kind, text in reversed(ref.decision_patterns):  # the first pattern in the file wins
            hit = F.col("w_decision").isNull() & F.col("w_code").rlike(regex)
            decision, note = F.when(hit, F.lit(kind)).otherwise(decision), F.when(hit, F.lit(text)).otherwise(note)
        # the note first: both expressions test the exact-match w_decision, which must not change in between
        df = df.withColumn("w_decision_note", note).withColumn("w_decision", decision)
    mapped = F.col("subcategory_code").isNotNull()
    return df.withColumn("w_decision", F.when(~mapped, F.col("w_decision"))).withColumn(
        "w_decision_note", F.when(~mapped, F.col("w_decision_note"))
    )


def classify(df: DataFrame, now: dt.datetime, location_rules=None) -> DataFrame:
    """Add `reason` (NULL = publishable) and a `detail` naming the field and the value."""
    unreadable = [
        (
            "invalid_timestamp",
            F.col(f"w_{role}_raw").isNotNull() & F.col(f"w_{role}").isNull(),
            F.concat(F.lit(f"{role}: cannot parse "), F.col(f"w_{role}_raw")),
        )
        for role in ("received_at", "dispatched_at", "on_scene_at")
    ]
    return common.classify(
        df,
        [
            ("malformed_record", F.col("_parse_error").isNotNull(), F.col("_parse_error")),
            ("missing_key", F.col("w_record_id").isNull(), F.lit("record id is empty")),
            (
                "invalid_timestamp",
                F.col("w_occurred_at").isNull(),
                F.concat(F.lit("occurred_at: cannot parse "), F.coalesce(F.col("w_occurred_raw"), F.lit("(empty)"))),
            ),
            (
                "invalid_timestamp",
                F.col("w_updated_at").isNull(),
                F.concat(F.lit("updated_at: cannot parse "), F.coalesce(F.col("w_updated_raw"), F.lit("(empty)"))),
            ),
            *unreadable,
            (
                "timestamp_out_of_range",
                (F.col("w_occurred_at") < F.lit(EARLIEST))
                | (F.col("w_occurred_at") > F.lit(now))
                | (F.col("w_occurred_at") > F.col("w_updated_at") + F.expr("INTERVAL 1 HOUR")),
                F.concat(F.lit("occurred_at: impossible date "), F.col("w_occurred_raw")),
            ),
            *_time_order_rules(),
            (
                "out_of_scope",
                F.col("subcategory_code").isNull() & (F.col("w_decision") == "out_of_scope"),
                F.concat(
                    F.lit("code: "),
                    F.coalesce(F.col("w_code"), F.lit("(empty)")),
                    F.lit(" is out of scope by steward decision: "),
                    F.col("w_decision_note"),
                ),
            ),
            (
                "unclassifiable_code",
                F.col("subcategory_code").isNull() & (F.col("w_decision") == "unclassifiable"),
                F.concat(
                    F.lit("code: "),
                    F.coalesce(F.col("w_code"), F.lit("(empty)")),
                    F.lit(" does not tell the subcategory (steward decision: "),
                    F.col("w_decision_note"),
                    F.lit(")"),
                ),
            ),
            (
                "unmapped_code",
                F.col("subcategory_code").isNull() & ~F.col("w_needs_review"),
                F.col("w_unmapped_detail"),
            ),
            *(common.location_rules() if location_rules is None else location_rules),
            ("needs_review", F.col("w_needs_review"), F.col("w_review_detail")),
        ],
    )


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
    out = common.hash_personal(
        out,
        source,
        key,
        phone_columns=[c for c in [p.reporter_phone] if c],
        id_columns=[c for c in [p.reporter_id] if c],
    )
    for column in [*texts, *(["w_address"] if f.address else [])]:
        out = out.withColumn(column, common.scrub_text(F.col(column)))
    return out


def transform(
    bronze: DataFrame,
    source: Source,
    ref: Reference,
    pii_key: bytes,
    now: dt.datetime,
    materialize: Materialize = no_barrier,
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """bronze -> (publishable incidents, quarantine rows, dropped duplicates).
    Two barriers: the located rows (parsed times, codes, the point's district and cell: each used by
    many of classify's rules) and the classified, masked rows (split into published and quarantined)."""
    parsed = parse(bronze, source, ref.timezone, ref.time_formats, ref.code_spec)
    kept, duplicates = dedupe_latest(parsed, source)
    coded = attach_codes(kept, ref)
    if ref.geography is None:
        classified = classify(materialize(common.locate(coded, ref.places), "located"), now)
    else:
        located = materialize(locate_geography(coded, ref), "located")
        classified = classify(located, now, geography_rules(ref.geography))
    masked = materialize(mask_personal(classified, source, pii_key), "masked")
    return (
        to_incident(masked.where("reason IS NULL"), source, ref.timezone),
        to_quarantine(masked.where("reason IS NOT NULL"), source),
        duplicates,
    )


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
        "domain_code",
        "category_code",
        "subcategory_code",
        "severity",
        F.col("w_occurred_at").alias("occurred_at_utc"),
        local.cast("timestamp_ntz").alias("occurred_at_local"),
        F.to_date(local).alias("occurred_date_local"),
        F.col("w_received_at").cast("timestamp").alias("received_at_utc"),
        F.col("w_dispatched_at").cast("timestamp").alias("dispatched_at_utc"),
        F.col("w_on_scene_at").cast("timestamp").alias("on_scene_at_utc"),
        "district_code",
        "lon",
        "lat",
        "h3_cell",
        "location_quality",
        F.col("w_status").alias("status"),
        F.col("w_address").alias("address_scrubbed"),
        hashed(p.reporter_name).alias("reporter_name_hash"),
        hashed(p.reporter_phone).alias("reporter_phone_hash"),
        hashed(p.reporter_id).alias("reporter_id_hash"),
        F.col("w_confidence").cast("double").alias("classification_confidence"),
        F.col("w_updated_at").alias("updated_at_utc"),
        "_batch_id",
        "_source_file",
        "_source_row_number",
        "_ingested_at",
    )


def to_quarantine(df: DataFrame, source: Source, run_id: str = "") -> DataFrame:
    return common.quarantine_rows(df, source, F.col("w_record_id"), run_id)


def run(spark: SparkSession, settings: Settings, source: Source, run_id: str, refresh_links: bool = True) -> dict:
    """Process bronze batches not yet published to silver; returns the reconciliation counts.
    `refresh_links=False`: the caller refreshes silver.incident_link once after several sources."""
    ref = load_reference(spark, settings, source)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    pii_key = settings.pii_key()

    def to_silver(bronze: DataFrame, materialize: Materialize) -> SilverOutput:
        return SilverOutput(*transform(bronze, source, ref, pii_key, now, materialize))

    mapping: dict = {}
    if ref.code_spec is not None:  # real sources: the crosswalk's coverage of the rows read (code_mapping's figure)

        def to_silver(bronze: DataFrame, materialize: Materialize) -> SilverOutput:  # noqa: F811
            mapping.update(mapping_figure(bronze, ref))
            return SilverOutput(*transform(bronze, source, ref, pii_key, now, materialize))

    entry = run_job(
        spark,
        settings,
        source,
        run_id,
        job=JOB,
        target=tables.incident(settings.silver_dir),
        suite="silver_incident",
        transform=to_silver,
    )
    if refresh_links:
        for registry in incident_links.registries_involving([source]):
            entry["incident_link"] = incident_links.refresh_if_stale(spark, settings, registry)
    if mapping:
        entry["mapping"] = mapping
    return entry


def mapping_figure(bronze: DataFrame, ref: Reference) -> dict:
    """Rows, rows whose code the crosswalk maps, and the rate: code_mapping.mapping_stats' rule on
    the same rows, computed in Spark (every bronze row read, duplicates and other quarantines included)."""
    keys = ref.crosswalk.select(F.col("source_code").alias("w_code")).distinct()
    coded = bronze.select(code_mapping.spark_code(ref.code_spec).alias("w_code"))
    row = (
        coded.join(keys.withColumn("w_hit", F.lit(1)), on="w_code", how="left")
        .agg(F.count(F.lit(1)).alias("rows"), F.count("w_hit").alias("mapped"))
        .collect()[0]
    )
    rows, mapped = int(row["rows"]), int(row["mapped"] or 0)
    return {
        "crosswalk": ref.code_spec.crosswalk,
        "rows": rows,
        "rows_mapped": mapped,
        "rate": mapped / rows if rows else 1.0,
    }
