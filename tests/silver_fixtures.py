"""A tiny two-district city and a bronze police batch that exercises every silver rule.

Used by the Sail tests and by the portability test on Apache Spark's own Spark Connect server.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import shapely

from citysafe.sources import get_source
from spark_jobs.common import Places
from spark_jobs.silver_incident import Reference

SOURCE = get_source("police_incidents")
NOW = dt.datetime(2026, 1, 1)
INGESTED = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
PII_KEY = b"test-key-0123456789abcdef"

# Two square districts side by side around (114.30, 30.58).
DISTRICTS = [
    {"district_code": "420102", "wkb": shapely.to_wkb(shapely.box(114.20, 30.50, 114.30, 30.60))},
    {"district_code": "420103", "wkb": shapely.to_wkb(shapely.box(114.30, 30.50, 114.40, 30.60))},
]
ALIASES = pd.DataFrame(
    {
        "alias_key": ["江岸区", "江岸", "jiangan", "420102", "江汉区", "jianghan", "420103"],
        "district_code": ["420102", "420102", "420102", "420102", "420103", "420103", "420103"],
    }
)
CROSSWALK = pd.DataFrame(
    {
        "source_code": ["0101", "0202"],
        "source_label_ref": ["盗窃", "交通事故"],
        "subcategory_code": ["PS0101", "TR0101"],
    }
)
TAXONOMY = pd.DataFrame(
    {
        "subcategory_code": ["PS0101", "TR0101"],
        "category_code": ["PS01", "TR01"],
        "domain_code": ["PS", "TR"],
        "severity": ["medium", "high"],
    }
)


def row(
    case_no,
    report_time="2025-03-04 13:22:10",
    code="0101",
    district="江岸区",
    lon="114.25",
    lat="30.55",
    updated="2025-03-05 09:00:00",
    address="解放大道1号",
    name="张三",
    phone="13800138000",
    id_no="110101199003071234",
    status="已受理",
    file="police_incidents_2025-03.csv",
    number=1,
    parse_error=None,
):
    return {
        "case_no": case_no,
        "report_time": report_time,
        "offence_code": code,
        "offence_desc": None,
        "district": district,
        "lon": lon,
        "lat": lat,
        "address": address,
        "reporter_name": name,
        "reporter_phone": phone,
        "reporter_id_no": id_no,
        "status": status,
        "updated_at": updated,
        "_source": "police_incidents",
        "_parse_error": parse_error,
        "_raw_record": None,
        "_batch_id": "b1",
        "_source_file": file,
        "_source_row_number": number,
        "_ingested_at": INGESTED,
    }


def bronze_rows() -> list[dict]:
    rows = [
        row("A1"),  # published, point in 420102
        row("A2", report_time="2025-03-04T05:22:10Z", lon="114.35"),  # UTC format, point in 420103
        row("A3", report_time="2025/03/04 13:22", lon="", lat="", district="jiang an"),  # no point, alias
        row("A4", report_time="2025-03-04T13:22:10+08:00", lon="0", lat="0", district="江汉区"),  # sentinel
        row("D1", status="已受理", updated="2025-03-05 09:00:00"),
        row("D1", status="已结案", updated="2025-03-06 09:00:00", number=2),  # revision wins
        row("D1", status="已受理", updated="2025-03-05 09:00:00", number=3),  # exact duplicate of the first
        row("Q1", report_time="2025-13-45 25:61:00"),  # invalid_timestamp
        row("Q2", report_time="2099-01-01 00:00:00"),  # timestamp_out_of_range
        row("Q3", code="9999"),  # unmapped_code
        row("Q4", lon="116.40", lat="39.90"),  # coordinates_outside_city
        row("Q5", lon="", lat="", district="江按去"),  # unknown_district
        row(None),  # missing_key
        row("Q6", lon="abc", lat="30.55"),  # invalid_coordinates
        row(None, parse_error="expected 13 fields, found 9", number=99),  # malformed_record
        row("P1", address="家住解放大道 电话13912345678 身份证420102198001011234"),  # scrubbed
    ]
    for i, r in enumerate(rows, start=1):
        r["_source_row_number"] = i
    return rows


EXPECTED_PUBLISHED = {"A1", "A2", "A3", "A4", "D1", "P1"}
EXPECTED_REASONS = {
    "invalid_timestamp": 1,
    "timestamp_out_of_range": 1,
    "unmapped_code": 1,
    "coordinates_outside_city": 1,
    "unknown_district": 1,
    "missing_key": 1,
    "invalid_coordinates": 1,
    "malformed_record": 1,
}


def bronze_frame(spark):
    import pyarrow as pa

    from citysafe.config import load_settings
    from spark_jobs.bronze import bronze_spec

    settings = load_settings(environ={"CITYSAFE_PII_KEY": "x" * 16})
    schema = bronze_spec(settings, SOURCE).arrow_schema()
    return spark.createDataFrame(pa.Table.from_pylist(bronze_rows(), schema=schema))


def reference(spark) -> Reference:
    return Reference(
        crosswalk=spark.createDataFrame(CROSSWALK),
        taxonomy=spark.createDataFrame(TAXONOMY),
        places=Places(spark.createDataFrame(ALIASES), DISTRICTS, 8),
        timezone="Asia/Shanghai",
    )


def generated_city_settings(tmp_path, *, seed: int, days: int):
    """Settings for a small synthetic city generated under tmp_path/syn, its lake under tmp_path/lake."""
    from synthetic_city import generate

    from tests_support import lake_settings  # here: tests_support imports this module

    syn = tmp_path / "syn"
    generate(
        syn,
        scale=0.005,
        seed=seed,
        start_date=dt.date(2025, 1, 1),
        days=days,
        timezone="Asia/Shanghai",
        h3_resolution=8,
    )
    return lake_settings(tmp_path / "lake", syn)
