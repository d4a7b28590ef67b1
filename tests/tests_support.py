"""Small helpers shared by test modules."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import shapely

import silver_fixtures as fx


def write_city_reference(tmp_path: Path) -> Path:
    """The fixture's two-district city as the files a real city hands over: GeoJSON + alias table."""
    folder = tmp_path / "reference"
    folder.mkdir(parents=True, exist_ok=True)
    geo = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"district_code": d["district_code"], "name_zh": None, "name_en": None},
                "geometry": shapely.geometry.mapping(shapely.from_wkb(d["wkb"])),
            }
            for d in fx.DISTRICTS
        ],
    }
    (folder / "districts.geojson").write_text(json.dumps(geo))
    (folder / "district_aliases.csv").write_text("alias,district_code\n江岸区,420102\n江汉区,420103\n")
    return folder


def lake_settings(lake: Path, synthetic: Path):
    """Settings for a lake at `lake` fed by the deliveries under `synthetic`, with the city's district
    polygons and alias table where the generator (and `write_city_reference`) put them: <synthetic>/reference."""
    from citysafe.config import load_settings

    return load_settings(
        environ={
            "CITYSAFE_LAKE_ROOT": str(lake),
            "CITYSAFE_SYNTHETIC_ROOT": str(synthetic),
            "CITYSAFE_DISTRICTS_GEOJSON": str(synthetic / "reference" / "districts.geojson"),
            "CITYSAFE_DISTRICT_ALIASES": str(synthetic / "reference" / "district_aliases.csv"),
        }
    )


@contextlib.contextmanager
def captured_log(logger_name: str, level: int = logging.INFO) -> Iterator[list[str]]:
    """Collect the messages logged under `logger_name` inside the block (works in any fixture scope,
    unlike pytest's function-scoped caplog)."""
    lines: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger(logger_name)
    handler, old_level = _Collect(level), logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
