"""Cross-department duplicates: the same real event reported to two departments -> silver.incident_link.

A citizen who calls the 12345 hotline about a fire or a police matter creates a second record of one
real event. The source YAML of the reporting side declares the rule (`silver.links`):

    links:
      sources: [police_incidents, fire_calls]   # the departments' own records
      max_distance_m: 200
      max_minutes: 30
      min_minutes: -10                          # a report cannot precede the event by much

A record of the reporting source is linked to a record of one of `sources` when both have a point
(an H3 cell), are within `max_distance_m` metres (great-circle), the report's time minus the record's
is within [`min_minutes` (default -max_minutes), `max_minutes`], and
share the taxonomy subcategory (rule `same_subcategory`) or at least the category (`same_category`).
Each reporting record keeps its single best candidate (same subcategory first, then the smallest
distance/max_distance + |minutes|/max_minutes, then the smaller incident id), so one report never
joins two events. `event_id` is the canonical id of the real event: the department record's
incident_id, shared by every report linked to it; the event's source ids are that id plus the
`incident_id`s of its rows.

No cross join: every point is in an H3 cell; two points closer than `max_distance_m` are at most
`ring_size()` cells apart, and two times closer than `max_minutes` fall into the same or adjacent
time buckets of `max_minutes`. Reports are expanded to their grid_disk cells x 3 buckets and
equi-joined with the department records on (cell, bucket); the exact distance and time tests follow.

The table is recomputed from silver.incident when it is stale (`refresh_if_stale`: silver.incident
has a Delta version, or the rules a digest, other than the ones the stored links were computed from;
`_state/silver/incident_link.json`) and written with `merge_sync` (it becomes exactly the computed links;
nothing is committed when nothing changed, so a re-run keeps its Delta version). A source's own silver
job refreshes after its publish (an Airflow task runs one source); `citysafe run`'s silver stage defers
that to once after all its sources. A run that stops in between leaves the links stale, and the next
check recomputes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from citysafe import delta_io, runs
from citysafe.config import Settings
from citysafe.delta_io import Column, TableSpec
from citysafe.sources import SOURCES_DIR, SilverTarget, Source, load_registry
from spark_jobs import tables

log = logging.getLogger(__name__)

EARTH_RADIUS_M = 6_371_008.8
# H3 cells vary in size across the globe: the smallest edge at a resolution is about 0.8 x the average
# (pentagons and far-from-centre cells included), which keeps the ring size a safe upper bound.
_EDGE_SAFETY = 0.8

LINK_COLUMNS = (
    Column("incident_id", "string", nullable=False, description="the report (e.g. a hotline ticket)"),
    Column("linked_incident_id", "string", nullable=False, description="the department record it duplicates"),
    Column(
        "event_id",
        "string",
        nullable=False,
        description="canonical id of the real event: the department record's incident_id",
    ),
    Column("distance_m", "double", nullable=False, description="great-circle distance between the two points"),
    Column(
        "minutes_apart",
        "double",
        nullable=False,
        description="report time minus department record time (occurred_at_utc), in minutes",
    ),
    Column("link_rule", "string", nullable=False, description="e.g. same_subcategory<=200m/30min"),
)


def incident_link(silver_dir: Path) -> TableSpec:
    return TableSpec(
        "incident_link", silver_dir / "incident_link", LINK_COLUMNS, key=("incident_id", "linked_incident_id")
    )


# --- which sources take part --------------------------------------------------------------------------


def _registry_folder(source: Source) -> Path:
    return source.file.parent if source.file else SOURCES_DIR


def registry_of(source: Source) -> dict[str, Source]:
    """The registry the source was loaded from (its file's folder), else the repository's."""
    return load_registry(_registry_folder(source))


def link_rules(registry: dict[str, Source]) -> list[tuple[str, SilverTarget.Links]]:
    """(reporting source, its link rule) for every source that declares one, in name order."""
    return [
        (name, s.silver.links)
        for name, s in sorted(registry.items())
        if isinstance(s.silver, SilverTarget) and s.silver.links
    ]


def participates(source: Source, registry: dict[str, Source]) -> bool:
    return any(source.name == reporter or source.name in rule.sources for reporter, rule in link_rules(registry))


def registries_involving(sources: list[Source]) -> list[dict[str, Source]]:
    """The registries (one per sources folder) whose link rules involve one of `sources`."""
    found: dict[str, dict[str, Source]] = {}
    for source in sources:
        registry = registry_of(source)
        if participates(source, registry):
            found.setdefault(str(_registry_folder(source)), registry)
    return list(found.values())


# --- the link computation (pure DataFrame code) ------------------------------------------------------------


def ring_size(max_distance_m: float, resolution: int) -> int:
    """Smallest k such that two points within `max_distance_m` lie in cells at grid distance <= k.

    Cells at grid distance n have centres at least n * 1.5 * edge apart, and a point lies within one
    edge of its cell's centre, so two points in such cells are at least (1.5 n - 2) * edge apart."""
    import h3

    edge = h3.average_hexagon_edge_length(resolution, unit="m") * _EDGE_SAFETY
    return max(1, math.floor((max_distance_m + 2 * edge) / (1.5 * edge)))


def _haversine_m(lon1, lat1, lon2, lat2):
    dlat = F.radians(lat2 - lat1)
    dlon = F.radians(lon2 - lon1)
    a = F.pow(F.sin(dlat / 2), 2) + F.cos(F.radians(lat1)) * F.cos(F.radians(lat2)) * F.pow(F.sin(dlon / 2), 2)
    return F.lit(2 * EARTH_RADIUS_M) * F.asin(F.sqrt(a))


def find_links(
    spark: SparkSession, incidents: DataFrame, reporter: str, rule: SilverTarget.Links, resolution: int
) -> DataFrame:
    """Links from `reporter`'s records to those of `rule.sources`, in the table's columns.

    `incidents` needs incident_id, source, subcategory_code, category_code, occurred_at_utc, lon, lat,
    h3_cell (silver.incident)."""
    import h3

    bucket_s = int(round(rule.max_minutes * 60))
    micros = F.expr("unix_micros(occurred_at_utc)")
    base = incidents.where(F.col("h3_cell").isNotNull() & F.col("lon").isNotNull() & F.col("lat").isNotNull()).select(
        "incident_id",
        "source",
        "subcategory_code",
        "category_code",
        "lon",
        "lat",
        "h3_cell",
        micros.alias("t_us"),
        F.floor(micros / F.lit(bucket_s * 1_000_000)).alias("bucket"),
    )
    reports = base.where(F.col("source") == reporter)
    targets = base.where(F.col("source").isin(list(rule.sources))).select(
        *[F.col(c).alias(f"o_{c}") for c in base.columns]
    )

    # Neighbourhood table for the reports' cells (at most the city's cells: small, built locally).
    k = ring_size(rule.max_distance_m, resolution)
    cells = sorted(r[0] for r in reports.select("h3_cell").distinct().collect())
    if not cells:
        return _empty(spark)
    disk = spark.createDataFrame(
        [(c, n) for c in cells for n in sorted(h3.grid_disk(c, k))], "h3_cell string, near_cell string"
    )

    expanded = reports.join(disk, on="h3_cell", how="inner").withColumn(
        "near_bucket", F.explode(F.array(F.col("bucket") - 1, F.col("bucket"), F.col("bucket") + 1))
    )
    pairs = expanded.join(
        targets, (F.col("near_cell") == F.col("o_h3_cell")) & (F.col("near_bucket") == F.col("o_bucket")), how="inner"
    )
    level = F.when(F.col("subcategory_code") == F.col("o_subcategory_code"), F.lit("same_subcategory")).when(
        F.col("category_code") == F.col("o_category_code"), F.lit("same_category")
    )
    scored = (
        pairs.withColumn(
            "distance_m", F.round(_haversine_m(F.col("lon"), F.col("lat"), F.col("o_lon"), F.col("o_lat")), 1)
        )
        .withColumn("minutes_apart", F.round((F.col("t_us") - F.col("o_t_us")) / F.lit(60_000_000.0), 2))
        .withColumn("level", level)
        .where(
            F.col("level").isNotNull()
            & (F.col("distance_m") <= F.lit(float(rule.max_distance_m)))
            & (F.col("minutes_apart") >= F.lit(float(rule.earliest_minutes)))
            & (F.col("minutes_apart") <= F.lit(float(rule.max_minutes)))
        )
    )
    window = Window.partitionBy("incident_id").orderBy(
        F.when(F.col("level") == "same_subcategory", 0).otherwise(1),
        F.col("distance_m") / F.lit(float(rule.max_distance_m))
        + F.abs(F.col("minutes_apart")) / F.lit(float(rule.max_minutes)),
        F.col("o_incident_id"),
    )
    suffix = f"<={rule.max_distance_m:g}m/{rule.earliest_minutes:g}..{rule.max_minutes:g}min"
    return (
        scored.withColumn("rank", F.row_number().over(window))
        .where("rank = 1")
        .select(
            "incident_id",
            F.col("o_incident_id").alias("linked_incident_id"),
            F.col("o_incident_id").alias("event_id"),
            "distance_m",
            "minutes_apart",
            F.concat(F.col("level"), F.lit(suffix)).alias("link_rule"),
        )
    )


def _empty(spark: SparkSession) -> DataFrame:
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    types = {"string": StringType(), "double": DoubleType()}
    return spark.createDataFrame([], StructType([StructField(c.name, types[c.type]) for c in LINK_COLUMNS]))


# --- the job step --------------------------------------------------------------------------------------


def _state_path(settings: Settings) -> Path:
    return settings.state_dir / "silver" / "incident_link.json"


def _inputs(settings: Settings, registry: dict[str, Source]) -> dict:
    """What the links are a function of: silver.incident's version, the rules and the H3 resolution."""
    rules = json.dumps(
        [[reporter, rule.model_dump(mode="json")] for reporter, rule in link_rules(registry)], sort_keys=True
    )
    return {
        "incident_version": delta_io.version(tables.incident(settings.silver_dir)),
        "rules_digest": hashlib.sha256(f"{rules}|{settings.h3_resolution}".encode()).hexdigest(),
    }


def refresh_if_stale(spark: SparkSession, settings: Settings, registry: dict[str, Source]) -> dict:
    """`refresh` unless the stored links were computed from the current silver.incident and rules."""
    inputs = _inputs(settings, registry)
    state = _state_path(settings)
    if (
        inputs["incident_version"] is not None
        and state.exists()
        and json.loads(state.read_text()) == inputs
        and delta_io.version(incident_link(settings.silver_dir)) is not None
    ):
        log.info("  silver incident_link: up to date (silver.incident version %s)", inputs["incident_version"])
        return {"unchanged": True, "incident_version": inputs["incident_version"]}
    result = refresh(spark, settings, registry)
    runs.write_json_atomic(state, inputs)
    return {**result, "incident_version": inputs["incident_version"]}


def refresh(spark: SparkSession, settings: Settings, registry: dict[str, Source]) -> dict:
    """Recompute every declared link rule from silver.incident and sync silver.incident_link."""
    spec = incident_link(settings.silver_dir)
    incidents = delta_io.read(spark, tables.incident(settings.silver_dir))
    parts = [
        find_links(spark, incidents, reporter, rule, settings.h3_resolution) for reporter, rule in link_rules(registry)
    ]
    links = parts[0] if parts else _empty(spark)
    for part in parts[1:]:
        links = links.unionByName(part)
    # At most one link per report: small, and the joins over every incident run once.
    result = delta_io.merge_sync(spark, delta_io.held(links), spec)
    rows = delta_io.read(spark, spec).count()
    log.info(
        f"  silver incident_link: {rows} links ({result.rows_inserted} new, {result.rows_updated} changed, "
        f"{result.rows_deleted} removed; version {result.version_after})"
    )
    return {
        "rows": rows,
        "inserted": result.rows_inserted,
        "updated": result.rows_updated,
        "deleted": result.rows_deleted,
        "delta_version": result.version_after,
    }
