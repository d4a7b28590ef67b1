"""Device silver on small fixtures (real Sail engine): registry, readings (units, skew, sentinels,
duplicates, re-delivery), hourly gaps."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
import yaml

from citysafe.config import load_settings
from citysafe.sources import load_source_file
from spark_jobs import silver_device
from spark_jobs.bronze import bronze_spec
from spark_jobs.common import Places

import silver_fixtures as fx

SETTINGS = load_settings(environ={})
INGESTED = dt.datetime(2025, 2, 1, tzinfo=dt.UTC)


def _source(tmp_path, name, columns, silver, kind="records"):
    entry = {
        "name": name,
        "department": "iot",
        "kind": kind,
        "tags": ["test"],
        "connector": {"type": "files", "path": str(tmp_path), "pattern": "*"},
        "format": {"type": "jsonl"},
        "primary_key": [columns[0]],
        "schedule": "@hourly",
        "freshness": {"warn_after_hours": 2, "error_after_hours": 6},
        "silver": silver,
        "schema": [{"name": c, "type": "string", "sensitivity": "internal"} for c in columns],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(entry))
    return load_source_file(path)


REG_COLS = ["device_id", "device_type", "unit", "district", "lon", "lat", "installed_date", "clock_skew_seconds"]
READ_COLS = ["device_id", "ts", "seq", "value", "unit", "received_at"]


def _bronze(spark, source, rows, batch="b1"):
    records = []
    for i, values in enumerate(rows, start=1):
        r = dict(zip(source.columns, values))
        r.update(
            {
                "_source": source.name,
                "_parse_error": None,
                "_raw_record": None,
                "_extra_fields": None,
                "_batch_id": batch,
                "_source_file": f"{batch}.jsonl",
                "_source_row_number": i,
                "_ingested_at": INGESTED,
            }
        )
        records.append(r)
    return spark.createDataFrame(pa.Table.from_pylist(records, schema=bronze_spec(SETTINGS, source).arrow_schema()))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("devsrc")
    registry = _source(
        tmp,
        "devices",
        REG_COLS,
        {
            "table": "device",
            "fields": {
                "device_id": "device_id",
                "device_type": "device_type",
                "unit": "unit",
                "district": "district",
                "lon": "lon",
                "lat": "lat",
                "installed_date": "installed_date",
                "clock_skew_seconds": "clock_skew_seconds",
            },
        },
    )
    readings = _source(
        tmp,
        "readings",
        READ_COLS,
        {
            "table": "device_reading",
            "registry": "devices",
            "fields": {
                "device_id": "device_id",
                "reading_ts": "ts",
                "seq": "seq",
                "value": "value",
                "unit": "unit",
                "received_at": "received_at",
            },
        },
        kind="device_log",
    )
    return registry, readings


@pytest.fixture(scope="module")
def devices(spark, sources):
    registry, _ = sources
    rows = [
        ("RG-1", "rain_gauge", "mm", "江岸区", "114.25", "30.55", "2024-01-01", "-83"),
        ("WL-1", "water_level", "m", "江汉区", "114.35", "30.55", "2024-01-01", ""),
        ("WL-1", "water_level", "m", "江汉区", "114.35", "30.55", "2024-01-01", ""),  # exact duplicate
        ("TS-1", "test", "", "江岸区", "114.25", "30.55", "", ""),  # invalid_device_type
    ]
    places = Places(spark.createDataFrame(fx.ALIASES), fx.DISTRICTS, 8)
    out = silver_device.registry_transform(
        _bronze(spark, registry, rows), registry, places, silver_device.units_frame(spark), fx.PII_KEY
    )
    return out


def test_registry(devices):
    published = {r.device_id: r for r in devices.published.collect()}
    assert set(published) == {"RG-1", "WL-1"}
    assert published["RG-1"].canonical_unit == "mm" and published["RG-1"].clock_skew_seconds == -83
    assert published["WL-1"].clock_skew_seconds is None and published["WL-1"].district_code == "420103"
    assert [q.reason for q in devices.quarantined.collect()] == ["invalid_device_type"]
    assert devices.duplicates.count() == 1


def test_readings(spark, sources, devices):
    _, readings = sources
    rows = [
        # RG-1: clock 83 s slow -> 15:58:37 device time is the 16:00 reading; 0.5 cm = 5 mm
        ("RG-1", "2025-01-03T15:58:37Z", "10", "0.5", "cm", "1735920007751"),
        ("RG-1", "2025-01-03T15:58:37Z", "10", "0.5", "cm", "1735920999000"),  # re-sent: duplicate
        ("RG-1", "2025-01-03T18:58:40Z", "13", "1.2", "mm", "1735931000000"),  # hours 17, 18 missing -> gaps
        ("WL-1", "2025-01-03T16:10:00Z", "5", "350", "cm", "1735920007751"),  # no known skew: nearest hour 16
        ("WL-1", "2025-01-03T17:00:00Z", "6", "-9999", "m", "1735923600000"),  # sentinel_value
        ("WL-1", "1970-01-01T00:00:05Z", "7", "3.1", "m", "1735927200000"),  # timestamp_out_of_range
        ("XX-9", "2025-01-03T16:00:00Z", "1", "1.0", "mm", "1735920007751"),  # unknown_device
        ("WL-1", "2025-01-03T19:00:00Z", "8", "3.1", "ft", "1735930800000"),  # unknown_unit
        ("WL-1", "2025-01-03T20:00:00Z", "9", "99", "m", "1735934400000"),  # value_out_of_range
    ]
    out = silver_device.reading_transform(
        _bronze(spark, readings, rows),
        readings,
        devices.published,
        silver_device.units_frame(spark),
        "Asia/Shanghai",
        dt.datetime(2026, 1, 1),
    )
    pub = {(r.device_id, r.seq): r for r in out.published.collect()}
    assert set(pub) == {("RG-1", 10), ("RG-1", 13), ("WL-1", 5)}
    first = pub[("RG-1", 10)]
    assert first.value == pytest.approx(5.0) and first.unit == "mm" and first.unit_reported == "cm"
    assert first.reading_ts_utc == dt.datetime(2025, 1, 3, 16, 0) and first.clock_corrected is True
    assert first.reading_hour_utc == dt.datetime(2025, 1, 3, 16, 0)
    assert first.received_at_utc == dt.datetime(2025, 1, 3, 16, 0, 7, 751000)  # first arrival kept
    assert pub[("WL-1", 5)].value == pytest.approx(3.5) and pub[("WL-1", 5)].clock_corrected is False
    assert pub[("WL-1", 5)].reading_hour_utc == dt.datetime(2025, 1, 3, 16, 0)
    reasons = sorted(q.reason for q in out.quarantined.collect())
    assert reasons == [
        "sentinel_value",
        "timestamp_out_of_range",
        "unknown_device",
        "unknown_unit",
        "value_out_of_range",
    ]
    assert out.duplicates.count() == 1
    assert len(pub) + len(reasons) + 1 == len(rows)

    hours = {(r.device_id, r.hour_utc): r for r in silver_device.hourly(out.published).collect()}
    rg = sorted((h, r.is_gap, r.reading_count) for (d, h), r in hours.items() if d == "RG-1")
    assert [(h.hour, gap, n) for h, gap, n in rg] == [(16, False, 1), (17, True, 0), (18, True, 0), (19, False, 1)]


@pytest.mark.slow
def test_redelivered_batch_changes_nothing_in_silver(spark, tmp_path, monkeypatch):
    """Exactly-once per (device, seq) from bronze to silver: a device batch re-sent with different bytes
    lands as a new bronze batch, and silver.device_reading and its hourly table do not change."""
    import json

    from citysafe import delta_io
    from citysafe.sources import get_source
    from spark_jobs import bronze, silver, tables

    settings = fx.generated_city_settings(tmp_path, seed=11, days=20)
    monkeypatch.setenv("CITYSAFE_PII_KEY", "device-test-key-0123456789")
    registry, readings = get_source("device_registry"), get_source("device_readings")
    for source in (registry, readings):
        bronze.ingest(spark, settings, source)
    for source in (registry, readings):
        silver.run(spark, settings, source, "first")
    reading_spec, hourly_spec = (
        tables.device_reading(settings.silver_dir),
        tables.device_reading_hourly(settings.silver_dir),
    )
    versions = (delta_io.version(reading_spec), delta_io.version(hourly_spec))
    published = delta_io.read(spark, reading_spec).count()

    batch = sorted((settings.synthetic_root / "devices" / "readings").glob("batch_*.jsonl"))[3]
    resent = [json.dumps(dict(reversed(list(json.loads(line).items())))) for line in batch.read_text().splitlines()]
    (batch.parent / "batch_99999.jsonl").write_text("\n".join(resent) + "\n")
    again = bronze.ingest(spark, settings, readings)
    assert again["rows_read"] == len(resent) > 0
    entry = silver.run(spark, settings, readings, "second")
    assert entry["published"] == 0 and entry["rows_read"] == len(resent)
    assert (delta_io.version(reading_spec), delta_io.version(hourly_spec)) == versions
    assert delta_io.read(spark, reading_spec).count() == published
