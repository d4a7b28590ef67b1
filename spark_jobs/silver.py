"""Which silver job a source's `silver.table` runs, and in which order (registries before logs)."""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import SparkSession

from citysafe.config import Settings
from citysafe.sources import Source


def _incident(spark, settings, source, run_id, progress):
    from spark_jobs import silver_incident

    return silver_incident.run(spark, settings, source, run_id, progress=progress)


def _device(spark, settings, source, run_id, progress):
    from spark_jobs import silver_device

    return silver_device.run_registry(spark, settings, source, run_id, progress=progress)


def _device_reading(spark, settings, source, run_id, progress):
    from spark_jobs import silver_device

    return silver_device.run_readings(spark, settings, source, run_id, progress=progress)


Job = Callable[[SparkSession, Settings, Source, str, Callable], dict]
JOBS: dict[str, Job] = {"device": _device, "incident": _incident, "device_reading": _device_reading}
ORDER = list(JOBS)  # a reading's device must be in silver.device before the reading is checked


def ordered(sources: list[Source]) -> list[Source]:
    return sorted(sources, key=lambda s: (ORDER.index(s.silver.table), s.name))


def run(spark: SparkSession, settings: Settings, source: Source, run_id: str, progress=print) -> dict:
    return JOBS[source.silver.table](spark, settings, source, run_id, progress)
