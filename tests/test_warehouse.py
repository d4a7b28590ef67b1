"""The dbt marts over a REAL silver Delta table, built by citysafe.warehouse.build_marts (dbt as a subprocess).

One successful build (module fixture) plus three more dbt runs: a failing build on a missing silver
table, a failing build on a duplicate incident key (both must leave the served file byte-identical),
and a rebuild while a reader holds the old file open.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from citysafe.config import load_settings
from citysafe.warehouse import WarehouseBuildError, build_marts, dbt_parse
from spark_jobs import tables

CITY_TZ = "Asia/Shanghai"
PERSONAL = re.compile(r"hash|name|phone|address", re.IGNORECASE)
MART = "mart_incident_district_week"

# (source, record id, local wall-clock time in the city, district, domain)
ROWS = [
    ("police_incidents", "P1", "2025-03-05 10:00", "D01", "public_order"),
    ("police_incidents", "P2", "2025-03-09 23:30", "D01", "public_order"),  # Sunday late: week of 03-03
    ("police_incidents", "P3", "2025-03-10 00:10", "D01", "public_order"),  # Monday early: week of 03-10
    ("police_incidents", "P4", "2025-03-10 07:59", "D01", "traffic"),       # still Sunday in UTC
    ("police_incidents", "P5", "2025-03-10 08:00", "D02", "public_order"),
    ("police_incidents", "P6", "2025-03-16 23:59", "D02", "traffic"),
    ("police_incidents", "P7", "2025-03-17 00:00", "D02", "traffic"),
    ("fire_calls", "F1", "2025-03-10 09:00", "D01", "public_order"),        # a second department
]

# (district, week_start, domain) -> (incident_count, source_count, police_incidents_count, other_source_count)
EXPECTED = {
    ("D01", dt.date(2025, 3, 3), "public_order"): (2, 1, 2, 0),
    ("D01", dt.date(2025, 3, 10), "public_order"): (2, 2, 1, 1),
    ("D01", dt.date(2025, 3, 10), "traffic"): (1, 1, 1, 0),
    ("D02", dt.date(2025, 3, 10), "public_order"): (1, 1, 1, 0),
    ("D02", dt.date(2025, 3, 10), "traffic"): (1, 1, 1, 0),
    ("D02", dt.date(2025, 3, 17), "traffic"): (1, 1, 1, 0),
}


def incident_row(source: str, record_id: str, local: str, district: str, domain: str, n: int) -> dict:
    at_local = dt.datetime.fromisoformat(local)
    at_utc = at_local.replace(tzinfo=ZoneInfo(CITY_TZ)).astimezone(dt.timezone.utc)
    return {
        "incident_id": f"{source}:{record_id}", "source": source, "source_record_id": record_id,
        "source_code": "C1", "source_label": "label", "domain_code": domain, "category_code": f"{domain}.cat",
        "subcategory_code": f"{domain}.cat.sub", "severity": "medium",
        "occurred_at_utc": at_utc, "occurred_at_local": at_local, "occurred_date_local": at_local.date(),
        "district_code": district, "lon": 121.47, "lat": 31.23, "h3_cell": "8831aa5a1dfffff",
        "location_quality": "point", "status": "open", "address_scrubbed": "1 Main Road",
        "reporter_name_hash": "a" * 64, "reporter_phone_hash": "b" * 64, "reporter_id_hash": "c" * 64,
        "updated_at_utc": at_utc, "_batch_id": "batch-1", "_source_file": f"{source}_2025_03.csv",
        "_source_row_number": n, "_ingested_at": dt.datetime(2025, 3, 18, tzinfo=dt.timezone.utc),
    }


def write_silver(lake_root: Path, rows=ROWS) -> None:
    silver = lake_root / "silver"
    spec = tables.incident(silver)
    data = pa.Table.from_pylist([incident_row(*r, n=i + 1) for i, r in enumerate(rows)], schema=spec.arrow_schema())
    write_deltalake(str(spec.path), data, partition_by=list(spec.partition_by))
    q = tables.quarantine(silver)
    write_deltalake(str(q.path), q.arrow_schema().empty_table(), partition_by=list(q.partition_by))


def settings_for(lake_root: Path, warehouse: Path):
    return load_settings(environ={
        "CITYSAFE_LAKE_ROOT": str(lake_root),
        "CITYSAFE_WAREHOUSE_PATH": str(warehouse),
        "CITYSAFE_TIMEZONE": CITY_TZ,
    })


def mart_rows(path: Path) -> dict:
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute(f"select district_code, week_start, domain_code, incident_count, source_count, "
                           f"police_incidents_count, other_source_count from {MART}").fetchall()
    finally:
        con.close()
    return {r[:3]: tuple(r[3:]) for r in rows}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("warehouse")
    lake = base / "lake"
    write_silver(lake)
    settings = settings_for(lake, base / "served" / "citysafe_marts.duckdb")
    lines: list[str] = []
    result = build_marts(settings, "run-1", progress=lines.append)
    return settings, result, lines, base


def test_build_marts_counts_per_district_week_domain(built):
    settings, result, lines, _ = built
    served = Path(settings.warehouse_path)
    assert result["warehouse"] == str(served) and served.is_file()
    assert result["models"] == {MART: len(EXPECTED), "stg_silver__incident": len(ROWS), "stg_silver__quarantine": 0}
    assert mart_rows(served) == EXPECTED
    assert result["tests_passed"] >= 40 and result["seconds"] > 0
    # one progress line per model, dbt's files under runs/<run_id>/ and no build file left behind
    assert sum(" model " in line for line in lines) == 3
    target = Path(settings.runs_dir) / "run-1" / "dbt_target"
    assert (target / "manifest.json").is_file() and (Path(settings.runs_dir) / "run-1" / "dbt_logs" / "dbt.log").is_file()
    statuses = {r["unique_id"]: r["status"] for r in json.loads((target / "run_results.json").read_text())["results"]}
    assert [s for uid, s in statuses.items() if uid.startswith("unit_test.")] == ["pass"]
    assert sorted(p.name for p in served.parent.iterdir()) == [served.name]


def test_no_personal_columns_reach_the_warehouse(built):
    settings, _, _, _ = built
    silver_cols = DeltaTable(str(Path(settings.silver_dir) / "incident")).schema().to_arrow().names
    assert {"reporter_name_hash", "address_scrubbed"} <= set(silver_cols)  # the source has them ...
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        cols = con.execute("select table_name, column_name from information_schema.columns "
                           "where table_schema = 'main'").fetchall()
    finally:
        con.close()
    assert {t for t, _ in cols} == {MART, "stg_silver__incident", "stg_silver__quarantine"}
    assert [c for c in cols if PERSONAL.search(c[1])] == []  # ... no relation in the warehouse does
    assert ("stg_silver__quarantine", "record_json") not in cols


def test_missing_silver_table_leaves_served_file_untouched(built, tmp_path):
    settings, _, _, _ = built
    served = Path(settings.warehouse_path)
    before = served.read_bytes()
    broken = settings.model_copy(update={"lake_root": tmp_path / "empty_lake"})
    with pytest.raises(WarehouseBuildError) as err:
        build_marts(broken, "run-missing", progress=lambda _: None)
    assert "model stg_silver__quarantine" in err.value.failed_nodes
    assert "test source_unique_silver_incident_incident_id" in err.value.failed_nodes
    assert "Path does not exist" in str(err.value)
    assert served.read_bytes() == before
    assert sorted(p.name for p in served.parent.iterdir()) == [served.name]


def test_failing_data_test_leaves_served_file_untouched(built, tmp_path):
    settings, _, _, base = built
    served = Path(settings.warehouse_path)
    before = served.read_bytes()
    lake = tmp_path / "lake"
    shutil.copytree(Path(settings.lake_root) / "silver", lake / "silver")
    dup = pa.Table.from_pylist([incident_row(*ROWS[0], n=99)], schema=tables.incident(lake / "silver").arrow_schema())
    write_deltalake(str(lake / "silver" / "incident"), dup, mode="append")
    with pytest.raises(WarehouseBuildError) as err:
        build_marts(settings.model_copy(update={"lake_root": lake}), "run-dup", progress=lambda _: None)
    # the source test fails first; everything downstream of it is skipped
    assert "test source_unique_silver_incident_incident_id" in err.value.failed_nodes
    assert served.read_bytes() == before
    assert sorted(p.name for p in served.parent.iterdir()) == [served.name]


def test_rebuild_swaps_atomically_under_an_open_reader(built, tmp_path):
    settings, _, _, _ = built
    served = tmp_path / "served" / "citysafe_marts.duckdb"
    served.parent.mkdir()
    shutil.copyfile(settings.warehouse_path, served)
    lake = tmp_path / "lake"
    write_silver(lake, ROWS + [("police_incidents", "P8", "2025-03-17 12:00", "D02", "traffic")])
    reader = duckdb.connect(str(served), read_only=True)
    try:
        result = build_marts(settings_for(lake, served), "run-2", progress=lambda _: None)
        # the open reader keeps the old file; the swap did not wait for it
        assert reader.execute(f"select sum(incident_count) from {MART}").fetchone()[0] == len(ROWS)
    finally:
        reader.close()
    assert result["models"]["stg_silver__incident"] == len(ROWS) + 1
    assert mart_rows(served)[("D02", dt.date(2025, 3, 17), "traffic")] == (2, 1, 2, 0)


def test_dbt_parse_writes_manifest(built, tmp_path):
    settings, _, _, _ = built
    manifest = dbt_parse(settings, target_path=tmp_path / "target", progress=lambda _: None)
    nodes = json.loads(manifest.read_text())["nodes"]
    assert f"model.citysafe.{MART}" in nodes
    assert not (tmp_path / "target" / "parse-only.duckdb").exists()
