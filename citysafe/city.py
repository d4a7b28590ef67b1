"""Where the city is and what feeds it: its sources, districts and bounds.

A city either has district polygons (config `districts_geojson`, the synthetic city) or is known only
from its records (a city profile under config/cities/ with `districts_geojson: null`): then its bounds
come from the profile, its districts from the selected sources' own area codes (their district
crosswalks in reference/districts/) and its H3 grid from the cells the published incidents fall in
(spark_jobs.silver_reference.derive_event_grid).
"""

from __future__ import annotations

from citysafe import reference
from citysafe.config import ConfigError, Settings
from citysafe.sources import get_source, load_registry

SYNTHETIC_TAG = "synthetic"


def source_names(settings: Settings, override: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The sources a run works on: those named on the command line, else the city profile's `sources`,
    else every synthetic source (the embedded default city)."""
    if override is not None:
        return override
    if settings.sources is not None:
        return settings.sources
    return tuple(n for n, s in load_registry().items() if SYNTHETIC_TAG in s.tags)


def has_polygons(settings: Settings) -> bool:
    return settings.districts_geojson is not None


def bounds(settings: Settings) -> tuple[float, float, float, float]:
    """(min_lon, min_lat, max_lon, max_lat): the district polygons' extent, else the profile's bounds."""
    if has_polygons(settings):
        return reference.city_bounds(settings.districts_geojson)
    return settings.bounds


def district_names(settings: Settings) -> dict[str, str | None]:
    """district_code -> English name: from the polygons, else from the district crosswalks of the city's
    sources (the first name a code has in the first source that maps it)."""
    if has_polygons(settings):
        return {d["district_code"]: d.get("name_en") for d in reference.districts(settings.districts_geojson)}
    names: dict[str, str | None] = {}
    for name in source_names(settings):
        geography = getattr(get_source(name).silver, "geography", None)
        if geography is None:
            raise ConfigError(
                f"source {name!r} has no silver.geography (time zone, bounds, district crosswalk) in "
                f"sources/{name}.yaml: a city without district polygons locates records by their own area codes"
            )
        for row in geography.district.table():
            names.setdefault(row["district_code"].strip(), row["district_name"].strip())
    return dict(sorted(names.items()))
