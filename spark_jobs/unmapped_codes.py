"""silver.unmapped_codes: the stewards' review queue of codes the silver jobs could not map.

Built from silver.quarantine rows whose reason is `unmapped_code` (a code missing from its crosswalk,
or a catch-all label the classifier knows has no taxonomy counterpart) or `needs_review` (a free-text
category below the classifier's confidence threshold). One row per (source, reason, code) with the
number of quarantined rows, when the code was first and last ingested, and one example (the earliest
row by lineage, so the choice never changes between runs).

The code is taken from the quarantine `detail` the job wrote ("... no crosswalk entry for X",
"category: X has no taxonomy counterpart (...)", "category: X: classifier confidence ..."); when the
detail names none, from the delivered record (`record_json`) by the source's code rule: the `code` role
of its silver section, or its `code:` section for the real public datasets.

`refresh(spark, settings)` recomputes the whole table from quarantine and writes it with
`delta_io.merge_sync`: the table becomes exactly the current groups, and a refresh that changes nothing
commits nothing (same Delta version). Call it after every silver run.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from citysafe import code_mapping, delta_io, reference
from citysafe.config import Settings
from citysafe.delta_io import Column, TableSpec
from citysafe.sources import Source, load_registry
from spark_jobs import tables

REASONS = ("unmapped_code", "needs_review")
UNKNOWN = "(unknown)"  # neither the detail nor the record names a code

# Detail texts of the silver jobs that carry the code; the first capture group is the code.
DETAIL_PATTERNS = (
    r"no crosswalk entry for (.+)$",
    r"^category: (.+) has no taxonomy counterpart \(",
    r"^category: (.+): classifier confidence ",
)

COLUMNS = (
    Column("source", "string", nullable=False),
    Column("reason", "string", nullable=False, description="unmapped_code | needs_review"),
    Column(
        "code",
        "string",
        nullable=False,
        description="code or category as found ('(empty)': the record had none; '(unknown)': not found)",
    ),
    Column("count", "bigint", nullable=False, description="quarantine rows with this source, reason and code"),
    Column("first_seen", "timestamp", nullable=False, description="earliest _ingested_at of those rows"),
    Column("last_seen", "timestamp", nullable=False, description="latest _ingested_at of those rows"),
    Column("example_source_record_id", "string", description="record id of the example row"),
    Column("example_detail", "string", description="quarantine detail of the example row"),
    Column("example_record_json", "string", description="the example row as delivered (personal fields hashed)"),
    Column("lookup", "string", description="crosswalk (or classifier:<rules>) the code was looked up in"),
    Column(
        "mapped_now",
        "string",
        description="subcategory the current crosswalk gives the code (fixed since; re-run silver), else NULL",
    ),
    Column("review_note", "string", description="steward decision on record (reference/crosswalks/decisions)"),
)


def spec(silver_dir: Path) -> TableSpec:
    return TableSpec("unmapped_codes", silver_dir / "unmapped_codes", COLUMNS, key=("source", "reason", "code"))


# --- which field holds each source's code -----------------------------------------------------------


def _code_rule(source: Source) -> tuple[str | None, code_mapping.CodeSpec | str | None]:
    """(lookup name, code rule): a CodeSpec for the real datasets, else the column of the `code` role."""
    cs = code_mapping.spec_of(source)
    if cs is not None:
        return cs.crosswalk, cs
    silver = source.silver
    if silver is None:
        return None, None
    fields = silver.fields if isinstance(silver.fields, dict) else silver.fields.model_dump()
    crosswalk = getattr(silver, "crosswalk", None)
    classifier = getattr(silver, "classifier", None)
    lookup = crosswalk or (f"classifier:{classifier.rules}" if classifier is not None else None)
    return lookup, fields.get("code")


def record_code(registry: dict[str, Source], record_json: str = "record_json"):
    """Spark column: each quarantine row's code read from its delivered record, by its source's rule."""

    def field(name):
        return F.get_json_object(F.col(record_json), f"$.{name}")

    out = None
    for name, source in sorted(registry.items()):
        _, rule = _code_rule(source)
        if rule is None:
            continue
        if isinstance(rule, code_mapping.CodeSpec):
            expr = code_mapping.spark_code(rule, field)
        else:
            trimmed = F.trim(field(rule))
            expr = F.when(trimmed != "", trimmed)
        cond = F.col("source") == F.lit(name)
        out = F.when(cond, expr) if out is None else out.when(cond, expr)
    return out if out is not None else F.lit(None).cast("string")


def detail_code(detail: str = "detail"):
    """Spark column: the code named in a quarantine detail, NULL when the detail names none."""
    found = [F.regexp_extract(F.col(detail), pattern, 1) for pattern in DETAIL_PATTERNS]
    return F.coalesce(*[F.when(f != "", f) for f in found])


# --- the table --------------------------------------------------------------------------------------


def build(spark: SparkSession, quarantine: DataFrame, registry: dict[str, Source]) -> DataFrame:
    """silver.unmapped_codes rows from silver.quarantine rows (any reasons; filtered here)."""
    coded = quarantine.where(F.col("reason").isin(*REASONS)).withColumn(
        "code", F.coalesce(detail_code(), record_code(registry), F.lit(UNKNOWN))
    )
    key = ["source", "reason", "code"]
    order = Window.partitionBy(*key).orderBy(
        F.col("_ingested_at").asc(),
        F.col("_batch_id").asc(),
        F.col("_source_file").asc(),
        F.col("_source_row_number").asc(),
    )
    examples = (
        coded.withColumn("__rank", F.row_number().over(order))
        .where("__rank = 1")
        .select(
            *key,
            F.col("source_record_id").alias("example_source_record_id"),
            F.col("detail").alias("example_detail"),
            F.col("record_json").alias("example_record_json"),
        )
    )
    groups = coded.groupBy(*key).agg(
        F.count(F.lit(1)).alias("count"),
        F.min("_ingested_at").alias("first_seen"),
        F.max("_ingested_at").alias("last_seen"),
    )
    joined = groups.join(examples, on=key, how="inner")
    lookups = _lookups(
        spark, [(r["source"], r["code"]) for r in joined.select("source", "code").distinct().collect()], registry
    )
    return joined.join(lookups, on=["source", "code"], how="left").select(*[c.name for c in COLUMNS])


def _lookups(spark: SparkSession, pairs: list[tuple[str, str]], registry: dict[str, Source]) -> DataFrame:
    """(source, code) -> lookup name, the current crosswalk's subcategory, the steward's note."""
    crosswalks: dict[str, dict[str, str]] = {}
    rows = []
    for source_name, code in sorted(pairs):
        source = registry.get(source_name)
        lookup, _ = _code_rule(source) if source is not None else (None, None)
        mapped = None
        if lookup and not lookup.startswith("classifier:"):
            if lookup not in crosswalks:
                try:
                    xw = reference.crosswalk(lookup)
                    crosswalks[lookup] = dict(zip(xw["source_code"], xw["subcategory_code"]))
                except reference.ReferenceError:
                    crosswalks[lookup] = {}
            mapped = crosswalks[lookup].get(code)
        note = code_mapping.review_note(lookup, code) if lookup else None
        rows.append((source_name, code, lookup, mapped, note))
    schema = "source string, code string, lookup string, mapped_now string, review_note string"
    return spark.createDataFrame(rows, schema=schema)


def refresh(spark: SparkSession, settings: Settings, registry: dict[str, Source] | None = None) -> dict:
    """Recompute silver.unmapped_codes from silver.quarantine (merge_sync: no change, no commit)."""
    target = spec(settings.silver_dir)
    quarantine_spec = tables.quarantine(settings.silver_dir)
    if delta_io.version(quarantine_spec) is None:
        table = delta_io.ensure_table(target)
        return {
            "table": target.name,
            "operation": "none",
            "codes": 0,
            "quarantine_rows": 0,
            "by_source": {},
            "version_before": table.version(),
            "version_after": table.version(),
            "note": "no silver.quarantine table yet",
        }
    registry = registry if registry is not None else load_registry()
    # One row per code: small, and the scan of the whole quarantine runs once.
    rows = delta_io.held(build(spark, delta_io.read(spark, quarantine_spec), registry))
    result = delta_io.merge_sync(spark, rows, target)
    written = delta_io.table_rows(delta_io.open_table(target.path), ["source", "count"]).to_pylist()
    summary: dict[str, dict[str, int]] = {}
    for r in written:
        entry = summary.setdefault(r["source"], {"codes": 0, "rows": 0})
        entry["codes"] += 1
        entry["rows"] += r["count"]
    return {
        "table": target.name,
        "operation": result.operation,
        "codes": sum(v["codes"] for v in summary.values()),
        "quarantine_rows": sum(v["rows"] for v in summary.values()),
        "by_source": dict(sorted(summary.items())),
        "inserted": result.rows_inserted,
        "updated": result.rows_updated,
        "deleted": result.rows_deleted,
        "version_before": result.version_before,
        "version_after": result.version_after,
    }
