"""Device readings in passes (device buckets) give exactly the rows of one pass: the ranked and enriched
readings, and the hourly refresh (real Sail engine)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from test_silver_device import _bronze, devices, sources  # noqa: F401  (fixtures)

from citysafe import delta_io
from spark_jobs import silver_device

import silver_fixtures as fx


def _rows(df):
    return sorted(tuple(r) for r in df.collect())


def _barrier(tmp_path):
    return lambda df, name: delta_io.materialize(df, tmp_path / name)


def test_split_passes_puts_each_device_in_one_pass(spark):
    ids = [f"D-{i}" for i in range(40)] + ["", None]
    df = spark.createDataFrame([(d, i) for i, d in enumerate(ids * 3)], "device_id string, n int")
    parts = silver_device.split_passes(df, "device_id", 4)
    seen = {}
    for p, part in enumerate(parts):
        for r in part.collect():
            assert seen.setdefault(r.device_id, p) == p  # every row of a device in the same pass
    assert sum(part.count() for part in parts) == df.count()
    assert len(set(seen.values())) == 4
    assert silver_device.split_passes(df, "device_id", 1)[0] is df
    assert silver_device.passes_for(0) == 1 and silver_device.passes_for(silver_device.ROWS_PER_PASS + 1) == 2


def test_readings_in_passes_equal_one_pass(spark, sources, devices, tmp_path):  # noqa: F811
    _, readings = sources
    rows = [
        ("RG-1", "2025-01-03T15:58:37Z", "10", "0.5", "cm", "1735920007751"),
        ("RG-1", "2025-01-03T15:58:37Z", "10", "0.5", "cm", "1735920999000"),  # re-sent: duplicate
        ("RG-1", "2025-01-03T15:58:37Z", "10", "0.6", "cm", "1735920007751"),  # same arrival: tie by hash
        ("RG-1", "2025-01-03T18:58:40Z", "13", "1.2", "mm", "1735931000000"),
        ("WL-1", "2025-01-03T16:10:00Z", "5", "350", "cm", "1735920007751"),
        ("WL-1", "2025-01-03T16:10:00Z", "5", "350", "cm", "1735920007751"),  # exact duplicate
        ("WL-1", "2025-01-03T17:00:00Z", "6", "-9999", "m", "1735923600000"),  # sentinel_value
        ("WL-1", "1970-01-01T00:00:05Z", "7", "3.1", "m", "1735927200000"),  # timestamp_out_of_range
        ("XX-9", "2025-01-03T16:00:00Z", "1", "1.0", "mm", "1735920007751"),  # unknown_device
        ("XX-9", "2025-01-03T16:00:00Z", "1", "1.0", "mm", "1735920007999"),  # ... and its re-send
        ("", "2025-01-03T16:00:00Z", "1", "1.0", "mm", "1735920007751"),  # missing_key
        ("", "2025-01-03T16:00:00Z", "1", "1.0", "mm", "1735920007751"),  # ... twice: both kept
        ("WL-1", "2025-01-03T19:00:00Z", "x", "3.1", "m", "1735930800000"),  # missing_key (seq)
        ("WL-1", "2025-01-03T20:00:00Z", "9", "99", "m", "1735934400000"),  # value_out_of_range
    ]
    bronze = _bronze(spark, readings, rows)
    args = (readings, devices.published, silver_device.units_frame(spark), "Asia/Shanghai", dt.datetime(2026, 1, 1))
    one = silver_device.reading_transform(bronze, *args, _barrier(tmp_path / "one"))
    expected = (_rows(one.published), _rows(one.quarantined), one.duplicates.count())
    assert expected[2] == 4 and len(expected[0]) + len(expected[1]) + expected[2] == len(rows)
    for passes in (2, 5):
        out = silver_device.reading_transform(bronze, *args, _barrier(tmp_path / f"p{passes}"), passes=passes)
        assert (_rows(out.published), _rows(out.quarantined), out.duplicates.count()) == expected


@pytest.mark.slow
def test_run_in_passes_publishes_the_same_rows(spark, tmp_path, monkeypatch):
    """The whole job with a pass size far below the batch (several passes for the readings and for the
    hourly refresh): silver.device_reading holds what one pass of the transform gives, the hourly table
    what one aggregate over it gives, and a re-delivered batch changes neither."""
    from citysafe.sources import get_source
    from spark_jobs import bronze, silver, tables
    from spark_jobs.bronze import bronze_spec

    settings = fx.generated_city_settings(tmp_path, seed=12, days=10)
    monkeypatch.setenv("CITYSAFE_PII_KEY", "device-test-key-0123456789")
    registry, readings = get_source("device_registry"), get_source("device_readings")
    for source in (registry, readings):
        bronze.ingest(spark, settings, source)
    silver.run(spark, settings, registry, "first")
    reading_spec, hourly_spec = (
        tables.device_reading(settings.silver_dir),
        tables.device_reading_hourly(settings.silver_dir),
    )
    n_bronze = delta_io.read(spark, bronze_spec(settings, readings)).count()
    monkeypatch.setattr(silver_device, "ROWS_PER_PASS", n_bronze // 3)
    entry = silver.run(spark, settings, readings, "first")
    assert entry["reconciled"] and entry["rows_read"] == n_bronze and entry["published"] > 0

    one = silver_device.reading_transform(
        delta_io.read(spark, bronze_spec(settings, readings)),
        readings,
        delta_io.read(spark, tables.device(settings.silver_dir)),
        silver_device.units_frame(spark),
        settings.timezone,
        dt.datetime.now(dt.UTC).replace(tzinfo=None),
    )
    published = delta_io.read(spark, reading_spec)
    assert _rows(published.drop("_changed_at")) == _rows(one.published.select(*published.drop("_changed_at").columns))
    hourly = delta_io.read(spark, hourly_spec).drop("_changed_at")
    assert _rows(hourly) == _rows(silver_device.hourly(published).select(*hourly.columns))
    assert not any((settings.staging_dir / reading_spec.name).glob("*/*"))  # scratch removed

    versions = (delta_io.version(reading_spec), delta_io.version(hourly_spec))
    batch = sorted((settings.synthetic_root / "devices" / "readings").glob("batch_*.jsonl"))[1]
    resent = [json.dumps(dict(reversed(list(json.loads(line).items())))) for line in batch.read_text().splitlines()]
    (batch.parent / "batch_99999.jsonl").write_text("\n".join(resent) + "\n")
    assert bronze.ingest(spark, settings, readings)["rows_read"] == len(resent)
    again = silver.run(spark, settings, readings, "second")  # the hourly refresh of its devices in passes
    assert again["published"] == 0 and again["reconciled"]
    assert (delta_io.version(reading_spec), delta_io.version(hourly_spec)) == versions
