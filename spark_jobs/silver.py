"""Which silver job a source's `silver.table` runs, and in which order (registries before what refers
to them: devices before readings, enterprises before hazards)."""

from __future__ import annotations

import importlib
import logging

from pyspark.sql import SparkSession

from citysafe.config import Settings
from citysafe.sources import Source

log = logging.getLogger(__name__)

# silver.table -> (module in spark_jobs, function run(spark, settings, source, run_id)), in run order.
JOBS: dict[str, tuple[str, str]] = {
    "device": ("silver_device", "run_registry"),
    "enterprise": ("silver_enterprise", "run"),
    "weather_daily": ("silver_weather", "run"),
    "incident": ("silver_incident", "run"),
    "hazard": ("silver_hazard", "run"),
    "device_reading": ("silver_device", "run_readings"),
}
ORDER = list(JOBS)


def ordered(sources: list[Source]) -> list[Source]:
    return sorted(sources, key=lambda s: (ORDER.index(s.silver.table), s.name))


def run(spark: SparkSession, settings: Settings, source: Source, run_id: str, defer_links: bool = False) -> dict:
    """`defer_links`: an incident source leaves silver.incident_link to the caller, which refreshes it
    once after several sources (`incident_links.registries_involving` + `refresh_if_stale`)."""
    module, function = JOBS[source.silver.table]
    job = getattr(importlib.import_module(f"spark_jobs.{module}"), function)
    if source.silver.table == "incident":
        return job(spark, settings, source, run_id, refresh_links=not defer_links)
    return job(spark, settings, source, run_id)
