"""Reference tables: districts, aliases, H3 cells and the taxonomy in silver, re-runs commit nothing."""

from __future__ import annotations

import json

import shapely

from citysafe import delta_io
from citysafe.config import load_settings
from spark_jobs import silver_reference, tables

import silver_fixtures as fx


def test_h3_cells_tile_the_city_once():
    import h3

    frame = silver_reference.h3_cell_frame(fx.DISTRICTS, 8)
    assert frame["h3_cell"].is_unique and set(frame["district_code"]) == {"420102", "420103"}
    cell = frame.iloc[len(frame) // 2]
    lat, lon = h3.cell_to_latlng(cell.h3_cell)
    owner = [d["district_code"] for d in fx.DISTRICTS if shapely.from_wkb(d["wkb"]).contains(shapely.Point(lon, lat))]
    assert owner == [cell.district_code]
    assert set(json.loads(cell.neighbors)) <= set(frame["h3_cell"])
    # Points just inside the city's outer boundary still have their cell in the grid (edge cells whose
    # centre is outside every district belong to the district covering most of them).
    cells = set(frame["h3_cell"])
    city = shapely.union_all([shapely.from_wkb(d["wkb"]) for d in fx.DISTRICTS])
    min_lon, min_lat, max_lon, max_lat = city.bounds
    inside = [
        (x, y)
        for x in [min_lon + 1e-6, max_lon - 1e-6]
        for y in [min_lat + (max_lat - min_lat) * k / 20 for k in range(1, 20)]
    ]
    assert all(city.contains(shapely.Point(x, y)) for x, y in inside)
    assert all(h3.latlng_to_cell(y, x, 8) in cells for x, y in inside)
    centre_only = {
        c
        for d in fx.DISTRICTS
        for c in h3.polygon_to_cells(h3.LatLngPoly([(y, x) for x, y in shapely.from_wkb(d["wkb"]).exterior.coords]), 8)
    }
    assert centre_only < cells
    edge = frame[~frame["h3_cell"].isin(centre_only)]
    assert len(edge) > 0 and set(edge["district_code"]) <= {"420102", "420103"}
    # Two 0.1 x 0.1 degree squares around 30.55N: 9.59 km x 11.06 km = 106 km2 each.
    areas = silver_reference.district_frame(fx.DISTRICTS)["area_km2"]
    assert all(abs(a - 106.0) < 0.5 for a in areas)


def test_reference_tables_load_and_rerun_commits_nothing(spark, tmp_path):
    from tests_support import write_city_reference

    syn = write_city_reference(tmp_path)
    settings = load_settings(
        environ={
            "CITYSAFE_LAKE_ROOT": str(tmp_path / "lake"),
            "CITYSAFE_DISTRICTS_GEOJSON": str(syn / "districts.geojson"),
            "CITYSAFE_DISTRICT_ALIASES": str(syn / "district_aliases.csv"),
        }
    )
    first = silver_reference.run(spark, settings)
    assert first["taxonomy"]["rows"] == 136 and first["district"]["rows"] == 2
    # Every other declared silver table now exists, empty, so the marts can build on this lake.
    from spark_jobs.catalog import silver_tables

    catalog = silver_tables(settings)
    assert "device" in first["created_empty"] and "taxonomy" not in first["created_empty"]
    assert all(delta_io.version(spec) is not None for spec in catalog.values())
    assert delta_io.read(spark, catalog["device"]).count() == 0
    versions = {
        n: delta_io.version(spec)
        for n, spec in [("t", tables.taxonomy(settings.silver_dir)), ("h", tables.h3_cell(settings.silver_dir))]
    }
    again = silver_reference.run(spark, settings)
    assert again["created_empty"] == []
    assert all(
        again[name]["inserted"] == again[name]["updated"] == again[name]["deleted"] == 0
        for name in ("taxonomy", "district", "district_alias", "h3_cell")
    )
    assert versions == {
        n: delta_io.version(spec)
        for n, spec in [("t", tables.taxonomy(settings.silver_dir)), ("h", tables.h3_cell(settings.silver_dir))]
    }
