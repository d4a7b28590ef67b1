"""Every silver table of the lake by name: the declarations the dbt sources read.

The marts read every silver table, but a lake only gets a table when a job first writes it (a city that
has not loaded devices yet has no silver/device). The reference stage (`citysafe reference`, the first
silver step of every run and DAG) therefore creates each missing table empty from its declaration, so
the marts build on a partial lake (empty device marts) instead of failing. `citysafe build-marts`
itself stays strict: a missing table there means a wrong lake_root, not an empty city.
"""

from __future__ import annotations

from citysafe import delta_io, quality
from citysafe.config import Settings
from citysafe.delta_io import TableSpec
from spark_jobs import incident_links, silver_enterprise, silver_hazard, silver_weather, tables, unmapped_codes


def silver_tables(settings: Settings) -> dict[str, TableSpec]:
    """Declared silver tables, by table name (= folder under <lake_root>/silver)."""
    silver = settings.silver_dir
    specs = [
        tables.incident(silver),
        tables.quarantine(silver),
        tables.taxonomy(silver),
        tables.district(silver),
        tables.district_alias(silver),
        tables.h3_cell(silver),
        tables.device(silver),
        tables.device_reading(silver),
        tables.device_reading_hourly(silver),
        tables.source_registry(silver),
        tables.ingest_batch(silver),
        incident_links.incident_link(silver),
        silver_enterprise.enterprise(silver),
        silver_enterprise.enterprise_identifier(silver),
        silver_hazard.hazard(silver),
        silver_weather.weather_daily(silver),
        unmapped_codes.spec(silver),
        quality.validation_result_spec(settings),
    ]
    return {s.name: s for s in specs}


def ensure_silver_tables(settings: Settings) -> list[str]:
    """Create every declared silver table that does not exist yet (empty, from its declaration; an
    existing table is only checked against it). Returns the names created."""
    created = []
    for name, spec in silver_tables(settings).items():
        if delta_io.version(spec) is None:
            created.append(name)
        delta_io.ensure_table(spec)
    return created
