"""Reference tables in silver: taxonomy, districts, district name aliases, the H3 cells of the city and
the source registry (sources/*.yaml: department, schedule, expected freshness; for the ops marts).

Extract: the versioned taxonomy file, the city's district files (config) and the source registry.
Transform: pure pandas (small tables). Load: merge_sync, so a table equals its reference file and a re-run commits nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

import pandas as pd
from pyspark.sql import SparkSession

from citysafe import city, delta_io, reference
from citysafe.config import Settings
from citysafe.runs import write_json_atomic
from citysafe.sources import load_registry
from spark_jobs import tables

log = logging.getLogger(__name__)


def area_km2(geom) -> float:
    """Area on a local equirectangular projection: within 0.1% at city scale, no projection library."""
    import math

    import shapely

    lat0 = math.radians(geom.centroid.y)
    scaled = shapely.transform(geom, lambda xy: xy * [111.320 * math.cos(lat0), 110.574])
    return scaled.area


def district_frame(districts: list[dict]) -> pd.DataFrame:
    import shapely

    rows = []
    for d in districts:
        geom = shapely.from_wkb(d["wkb"])
        centre = geom.centroid if geom.centroid.within(geom) else geom.representative_point()
        rows.append(
            {
                "district_code": d["district_code"],
                "name_zh": d.get("name_zh"),
                "name_en": d.get("name_en"),
                "area_km2": round(area_km2(geom), 3),
                "centroid_lon": round(centre.x, 6),
                "centroid_lat": round(centre.y, 6),
                "geometry_wkt": shapely.to_wkt(geom, rounding_precision=6),
            }
        )
    return pd.DataFrame(rows)


def h3_cell_frame(districts: list[dict], resolution: int) -> pd.DataFrame:
    """Every cell that overlaps the city, each with exactly one district: the one containing the cell's
    centre, or, for a cell on the city's edge whose centre lies outside every district, the district
    covering most of it. (Centre-only cells would leave points just inside the boundary without a cell
    of the grid: the marts and the risk features need every incident's cell.)"""
    import h3
    import shapely

    def h3_shapes(geom):  # shapely (multi)polygon -> H3 polygons, (lat, lng) order
        for polygon in getattr(geom, "geoms", [geom]):
            yield h3.LatLngPoly(
                [(y, x) for x, y in polygon.exterior.coords],
                *[[(y, x) for x, y in ring.coords] for ring in polygon.interiors],
            )

    owner, shapes = {}, {}
    for d in sorted(districts, key=lambda d: d["district_code"]):
        shapes[d["district_code"]] = shapely.from_wkb(d["wkb"])
        for shape in h3_shapes(shapes[d["district_code"]]):
            for cell in h3.polygon_to_cells(shape, resolution):
                owner.setdefault(cell, d["district_code"])
    edge = {
        cell
        for geom in shapes.values()
        for shape in h3_shapes(geom)
        for cell in h3.h3shape_to_cells_experimental(shape, resolution, contain="overlap")
        if cell not in owner
    }
    for cell in sorted(edge):
        hexagon = shapely.Polygon([(lon, lat) for lat, lon in h3.cell_to_boundary(cell)])
        overlap = {code: geom.intersection(hexagon).area for code, geom in shapes.items()}
        best = max(sorted(overlap), key=lambda code: overlap[code])
        if overlap[best] > 0:
            owner[cell] = best
    return cell_rows(owner, resolution)


def cell_rows(owner: dict[str, str], resolution: int) -> pd.DataFrame:
    """The h3_cell table for cells -> their district: centre and the ring-1 neighbours inside the grid."""
    import h3

    rows = []
    for cell in sorted(owner):
        lat, lon = h3.cell_to_latlng(cell)
        ring = sorted(c for c in h3.grid_disk(cell, 1) if c != cell and c in owner)
        rows.append(
            {
                "h3_cell": cell,
                "resolution": resolution,
                "district_code": owner[cell],
                "centroid_lon": round(lon, 6),
                "centroid_lat": round(lat, 6),
                "neighbors": json.dumps(ring),
            }
        )
    return pd.DataFrame(rows, columns=[c.name for c in tables.H3_CELL_COLUMNS]).astype({"resolution": "int32"})


def source_registry_frame(registry: dict) -> pd.DataFrame:
    """One row per registered source: what the freshness and data-quality marts need from sources/*.yaml."""
    rows = [
        {
            "source": s.name,
            "department": s.department,
            "kind": s.kind,
            "description": s.description or None,
            "tags": ",".join(s.tags),
            "connector_type": s.connector.type,
            "format_type": s.format.type,
            "schedule": s.schedule,
            "freshness_warn_after_hours": s.freshness.warn_after_hours,
            "freshness_error_after_hours": s.freshness.error_after_hours,
            "silver_table": s.silver.table if s.silver else None,
        }
        for s in sorted(registry.values(), key=lambda s: s.name)
    ]
    columns = [c.name for c in tables.SOURCE_REGISTRY_COLUMNS]
    return pd.DataFrame(rows, columns=columns).astype(
        {"freshness_warn_after_hours": "int32", "freshness_error_after_hours": "int32"}
    )


SUITES = {"taxonomy": "silver_taxonomy", "district": "silver_district", "h3_cell": "silver_h3_cell"}


def run(spark: SparkSession, settings: Settings, run_id: str = "reference") -> dict:
    """Validate each reference table (its suite, where it has one) and load it; a failed suite loads nothing.
    A city without district polygons gets its districts and H3 grid from its records after the silver
    jobs (derive_event_grid); here they are left empty."""
    started = time.monotonic()
    frames = {
        tables.taxonomy(settings.silver_dir): reference.taxonomy(),
        tables.source_registry(settings.silver_dir): source_registry_frame(load_registry()),
    }
    if city.has_polygons(settings):
        districts = reference.districts(settings.districts_geojson)
        frames[tables.district(settings.silver_dir)] = district_frame(districts)
        frames[tables.district_alias(settings.silver_dir)] = reference.district_aliases(settings.district_aliases)
        frames[tables.h3_cell(settings.silver_dir)] = h3_cell_frame(districts, settings.h3_resolution)
    out = _validate_and_load(spark, settings, frames, run_id, "reference")
    from spark_jobs.catalog import ensure_silver_tables

    created = ensure_silver_tables(settings)
    if created:
        log.info(f"  created empty silver tables (no job has written them yet): {', '.join(created)}")
    out["created_empty"] = created
    out["seconds"] = round(time.monotonic() - started, 3)
    return out


def _validate_and_load(spark: SparkSession, settings: Settings, frames: dict, run_id: str, state_name: str) -> dict:
    """Load each frame into its table with merge_sync (validated first by its suite, where it has one);
    frames whose content was loaded before (digest in _state/<state_name>.json) are skipped."""
    from citysafe import quality
    from spark_jobs.publish import QualityGateFailed

    frames = {spec: frame[spec.column_names] for spec, frame in frames.items()}
    state_path = settings.state_dir / f"{state_name}.json"
    loaded = json.loads(state_path.read_text()) if state_path.exists() else {}
    digests = {
        spec.name: hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest() for spec, frame in frames.items()
    }
    # Unchanged reference data (same content, table present): nothing to validate or load again.
    frames = {
        spec: frame
        for spec, frame in frames.items()
        if loaded.get(spec.name) != digests[spec.name] or delta_io.version(spec) is None
    }
    out = {
        spec_name: {"rows": None, "inserted": 0, "updated": 0, "deleted": 0, "unchanged": True}
        for spec_name in digests
        if spec_name not in {s.name for s in frames}
    }
    for spec, frame in frames.items():
        if spec.name in SUITES:
            outcome = quality.validate_frame(spark, settings, SUITES[spec.name], frame, run_id, state_name)
            if not outcome["success"]:
                raise QualityGateFailed(
                    f"{state_name} {spec.name}: suite {outcome['suite']} failed "
                    f"({outcome['failed']} of {outcome['evaluated']}); nothing loaded; result "
                    f"{outcome['result_path']}",
                    outcome["result_path"],
                )
    for spec, frame in frames.items():
        result = delta_io.merge_sync(spark, spark.createDataFrame(frame), spec)
        log.info(f"  {state_name} {spec.name}: {len(frame)} rows ({result.operation}, version {result.version_after})")
        out[spec.name] = {
            "rows": len(frame),
            "inserted": result.rows_inserted,
            "updated": result.rows_updated,
            "deleted": result.rows_deleted,
            "delta_version": result.version_after,
        }
        loaded[spec.name] = digests[spec.name]
        write_json_atomic(state_path, loaded)
    if not frames:
        log.info(f"  {state_name} tables unchanged")
    return out


# --- a city known only from its records ---------------------------------------------------------------


def event_grid_frames(
    cell_districts: pd.DataFrame, names: dict[str, str | None], resolution: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(district, h3_cell) frames for a city without district polygons, from the published incidents'
    (h3_cell, district_code) pairs: the grid is every cell with at least one incident; a cell belongs to
    the district most of its incidents carry (ties: the smaller code); a district's polygon is the union
    of its cells (so its area and map shape are those of where its records fall)."""
    import h3
    import shapely

    counts = (
        cell_districts.dropna(subset=["h3_cell", "district_code"])
        .groupby(["h3_cell", "district_code"])
        .size()
        .rename("n")
        .reset_index()
        .sort_values(["h3_cell", "n", "district_code"], ascending=[True, False, True])
    )
    owner = counts.drop_duplicates("h3_cell").set_index("h3_cell")["district_code"].to_dict()
    cells = sorted(owner)
    h3_frame = cell_rows(owner, resolution)
    districts = []
    for code in sorted(set(owner.values())):
        hexes = [
            shapely.Polygon([(lon, lat) for lat, lon in h3.cell_to_boundary(c)]) for c in cells if owner[c] == code
        ]
        # snap to a fine grid first: neighbouring hexagons share edges only up to floating-point noise
        union = shapely.union_all(shapely.set_precision(hexes, 1e-7))
        districts.append({"district_code": code, "name_en": names.get(code), "wkb": shapely.to_wkb(union)})
    district = (
        district_frame(districts) if districts else pd.DataFrame(columns=[c.name for c in tables.DISTRICT_COLUMNS])
    )
    return district, h3_frame


def derive_event_grid(spark: SparkSession, settings: Settings, run_id: str) -> dict:
    """After the silver jobs, for a city without district polygons: silver `district` and `h3_cell` from
    silver `incident` (event_grid_frames), validated by their suites. A re-run on the same incidents loads nothing."""
    started = time.monotonic()
    incidents = delta_io.read_arrow(tables.incident(settings.silver_dir), columns=["h3_cell", "district_code"])
    district, h3_frame = event_grid_frames(incidents.to_pandas(), city.district_names(settings), settings.h3_resolution)
    if h3_frame.empty:
        log.info("  no published incident has a cell yet: the city's grid stays empty")
        return {"cells": 0, "districts": 0}
    out = _validate_and_load(
        spark,
        settings,
        {tables.district(settings.silver_dir): district, tables.h3_cell(settings.silver_dir): h3_frame},
        run_id,
        "event_grid",
    )
    out.update(cells=len(h3_frame), districts=len(district), seconds=round(time.monotonic() - started, 3))
    return out
