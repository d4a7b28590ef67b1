"""The operations seam the ops marts read: silver.ingest_batch (one row per batch committed to bronze) and
silver.source_registry (sources/*.yaml), both written idempotently through citysafe.delta_io."""

from __future__ import annotations

import datetime as dt
import json
import shutil

from deltalake import DeltaTable

from citysafe import delta_io
from citysafe.config import load_settings
from citysafe.sources import get_source, load_registry
from spark_jobs import bronze, silver_reference, tables

SOURCE = get_source("police_incidents")
HEADER = ",".join(SOURCE.columns)
GOOD = 'JQ1,2025-03-04 13:22:10,0101,盗窃,江岸区,114.25,30.55,"解放大道1号, 3楼",张三,13800138000,110101199003071234,已受理,2025-03-05 09:00:00'
SHORT = "JQ3,2025-03-04 13:22:10,0101"


def _settings(tmp_path):
    return load_settings(
        environ={"CITYSAFE_LAKE_ROOT": str(tmp_path / "lake"), "CITYSAFE_SYNTHETIC_ROOT": str(tmp_path / "syn")}
    )


def _deliver(tmp_path, name, lines):
    folder = tmp_path / "syn" / "police"
    folder.mkdir(parents=True, exist_ok=True)
    data = ("\n".join([HEADER, *lines]) + "\n").encode()
    (folder / name).write_bytes(data)
    return len(data)


def _batches(settings) -> dict[str, dict]:
    spec = tables.ingest_batch(settings.silver_dir)
    return {r["batch_id"]: r for r in DeltaTable(str(spec.path)).to_pandas().to_dict("records")}


def test_ingest_records_one_row_per_committed_batch_once(spark, tmp_path):
    settings = _settings(tmp_path)
    size = _deliver(tmp_path, "police_incidents_2025-03.csv", [GOOD, SHORT])
    first = bronze.ingest(spark, settings, SOURCE)
    (batch_id,) = first["batches"]
    manifest = json.loads((settings.landing_dir / SOURCE.name / batch_id / "manifest.json").read_text())
    bronze_at = DeltaTable(str(bronze.bronze_spec(settings, SOURCE).path)).to_pandas()["_ingested_at"].unique()
    rows = _batches(settings)
    assert list(rows) == [batch_id]
    row = rows[batch_id]
    assert (
        row["source"],
        row["connector_type"],
        row["file_count"],
        row["row_count"],
        row["malformed_row_count"],
        row["byte_count"],
    ) == ("police_incidents", "files", 1, 2, 1, size)
    assert row["watermark_from"] is None and row["watermark_to"] is None  # a file drop has no watermark
    assert list(bronze_at) == [row["ingested_at"]]  # the bronze load time, to the microsecond
    assert row["landed_at"] == dt.datetime.fromisoformat(manifest["landed_at"]) <= row["ingested_at"]

    # nothing new: no new Delta version; a second delivery: one more row
    spec = tables.ingest_batch(settings.silver_dir)
    version = delta_io.version(spec)
    assert bronze.ingest(spark, settings, SOURCE)["batches"] == []
    assert delta_io.version(spec) == version
    _deliver(tmp_path, "police_incidents_2025-04.csv", [GOOD])
    second = bronze.ingest(spark, settings, SOURCE)
    assert set(_batches(settings)) == {batch_id, *second["batches"]}
    assert delta_io.version(spec) == version + 1


def test_a_lake_without_the_table_is_filled_in_from_bronze(spark, tmp_path):
    """A crash before the ingest_batch write (or a lake loaded before the table existed): the next ingest
    records the committed batches with their bronze load time, and appends nothing to bronze."""
    settings = _settings(tmp_path)
    _deliver(tmp_path, "police_incidents_2025-03.csv", [GOOD])
    (batch_id,) = bronze.ingest(spark, settings, SOURCE)["batches"]
    before = _batches(settings)
    bronze_version = delta_io.version(bronze.bronze_spec(settings, SOURCE))
    shutil.rmtree(tables.ingest_batch(settings.silver_dir).path)
    again = bronze.ingest(spark, settings, SOURCE)
    assert again["rows_read"] == 0 and delta_io.version(bronze.bronze_spec(settings, SOURCE)) == bronze_version
    assert _batches(settings) == before


def test_source_registry_mirrors_the_registry_and_reruns_commit_nothing(spark, tmp_path):
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
    registry = load_registry()
    assert first["source_registry"]["rows"] == len(registry)
    spec = tables.source_registry(settings.silver_dir)
    rows = {r["source"]: r for r in DeltaTable(str(spec.path)).to_pandas().to_dict("records")}
    assert set(rows) == set(registry)
    for name, source in registry.items():
        row = rows[name]
        assert (row["department"], row["kind"], row["schedule"], row["connector_type"], row["format_type"]) == (
            source.department,
            source.kind,
            source.schedule,
            source.connector.type,
            source.format.type,
        )
        assert (row["freshness_warn_after_hours"], row["freshness_error_after_hours"]) == (
            source.freshness.warn_after_hours,
            source.freshness.error_after_hours,
        )
        assert row["tags"].split(",") == (source.tags or [""])
        assert row["silver_table"] == (source.silver.table if source.silver else None)
    version = delta_io.version(spec)
    again = silver_reference.run(spark, settings)
    assert again["source_registry"]["unchanged"] is True and delta_io.version(spec) == version
