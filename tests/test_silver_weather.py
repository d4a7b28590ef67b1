"""Weather silver on a small fixture: plausibility rules, duplicates, every row accounted for."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from citysafe.config import load_settings
from citysafe.sources import get_source
from spark_jobs import silver_weather
from spark_jobs.bronze import bronze_spec

SOURCE = get_source("weather_daily")


def test_weather_rules(spark):
    rows = [
        ("2025-01-01", "57999", "0.0", "7.9", "0.6", "6.8"),
        ("2025-01-01", "57999", "0.0", "7.9", "0.6", "6.8"),  # duplicate
        ("2025-01-02", "57999", "abc", "6.3", "-2.1", "4.8"),  # invalid_value
        ("2025-01-03", "57999", "12.0", "3.0", "5.0", "4.8"),  # tmax below tmin
        ("2025-01-04", "57999", "-5", "6.3", "-2.1", "4.8"),  # negative rain
        ("2025/01/05", "57999", "0", "6.3", "-2.1", "4.8"),  # invalid_timestamp
        ("2025-01-06", "57999", "", "6.3", "-2.1", ""),  # missing values are allowed
    ]
    records = [
        {
            **dict(zip(SOURCE.columns, r)),
            "_source": SOURCE.name,
            "_batch_id": "b",
            "_source_file": "w.csv",
            "_source_row_number": i,
            "_ingested_at": dt.datetime(2025, 2, 1, tzinfo=dt.UTC),
        }
        for i, r in enumerate(rows, start=1)
    ]
    schema = bronze_spec(load_settings(environ={}), SOURCE).arrow_schema()
    out = silver_weather.transform(spark.createDataFrame(pa.Table.from_pylist(records, schema=schema)), SOURCE)
    published = {r.date: r for r in out.published.collect()}
    assert sorted(published) == [dt.date(2025, 1, 1), dt.date(2025, 1, 6)]
    assert published[dt.date(2025, 1, 6)].precip_mm is None
    reasons = sorted(q.reason for q in out.quarantined.collect())
    assert reasons == ["invalid_timestamp", "invalid_value", "value_out_of_range", "value_out_of_range"]
    assert out.duplicates.count() == 1
