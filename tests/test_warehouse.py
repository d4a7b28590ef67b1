"""The dbt marts over REAL silver Delta tables, built by citysafe.warehouse.build_marts (dbt as a subprocess).

Every table the dbt project declares as a source (dbt/models/staging/_*__sources.yml) is written from its
TableSpec: a few hand-written incidents (with the reference rows they point at: the real taxonomy, two
districts, one H3 cell, the registry entries and their batches) and every other table empty.

One full build from nothing (module fixture): the `prod` target, which builds exactly as the default
`dev` target with a real PostgreSQL server on 127.0.0.1 attached and then publishes every mart to it (a
full dev build from nothing is what `citysafe run` does for the built test city, tests/city_fixture.py).
The other dbt runs build only the nodes they are about (build_marts(select=...): dbt's --select into a
copy of the served file, the same swap rule), on the dev target: a failing build on a missing silver
table, a failing build on a duplicate incident key (both must leave the served file byte-identical), a
rebuild while a reader holds the old file open (whose lake dbt parse then reuses the parse state of), and
a prod publish that fails (PostgreSQL and the served file stay as they were).
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import re
import shutil
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
import pytest
import yaml
from deltalake import DeltaTable, write_deltalake

from citysafe import reference
from citysafe.config import load_settings
from citysafe.delta_io import TableSpec
from citysafe.pg_local import find_bin_dir
from citysafe.sources import load_registry
from citysafe.warehouse import (
    DBT_PROJECT_DIR,
    WarehouseBuildError,
    build_marts,
    dbt_env,
    dbt_parse,
    generate_docs,
    partial_parse_state,
)
from ml.gold import gold_tables
from spark_jobs import silver_reference, tables
from spark_jobs.catalog import silver_tables

from tests_support import captured_log

CITY_TZ = "Asia/Shanghai"
# Column names that would mean personal data got through (enterprise, district and category names may).
PERSONAL = re.compile(r"hash|phone|address|reporter|record_json|inspector|legal_rep|id_no", re.IGNORECASE)
MART = "mart_incident_district_week"
H3_CELL = "8831aa5a1dfffff"
INGESTED_AT = dt.datetime(2025, 3, 18, tzinfo=dt.UTC)

# (source, record id, local wall-clock time in the city, district, taxonomy subcategory)
ROWS = [
    ("police_incidents", "P1", "2025-03-05 10:00", "D01", "PS0101"),
    ("police_incidents", "P2", "2025-03-09 23:30", "D01", "PS0102"),  # Sunday late: week of 03-03
    ("police_incidents", "P3", "2025-03-10 00:10", "D01", "PS0101"),  # Monday early: week of 03-10
    ("police_incidents", "P4", "2025-03-10 07:59", "D01", "TR0101"),  # still Sunday in UTC
    ("police_incidents", "P5", "2025-03-10 08:00", "D02", "PS0103"),
    ("police_incidents", "P6", "2025-03-16 23:59", "D02", "TR0102"),
    ("police_incidents", "P7", "2025-03-17 00:00", "D02", "TR0101"),
    ("fire_calls", "F1", "2025-03-10 09:00", "D01", "PS0101"),  # a second department
]

# (district, week_start, domain) -> (incident_count, source_count, police_incidents_count, fire_calls_count,
# other_source_count): every registered incident source has its own column (vars derived from the registry)
EXPECTED = {
    ("D01", dt.date(2025, 3, 3), "PS"): (2, 1, 2, 0, 0),
    ("D01", dt.date(2025, 3, 10), "PS"): (2, 2, 1, 1, 0),
    ("D01", dt.date(2025, 3, 10), "TR"): (1, 1, 1, 0, 0),
    ("D02", dt.date(2025, 3, 10), "PS"): (1, 1, 1, 0, 0),
    ("D02", dt.date(2025, 3, 10), "TR"): (1, 1, 1, 0, 0),
    ("D02", dt.date(2025, 3, 17), "TR"): (1, 1, 1, 0, 0),
}


# One inspected enterprise and one hazard found there, rectified and accepted in time (the rows of the
# generator's city, moved to district D01).
ENTERPRISE = {
    "enterprise_id": "9142010200859806XN",
    "source": "enterprise_registry",
    "legacy_reg_no": "420102164121950",
    "name": "江城市联汉能源有限公司",
    "name_normalized": "江城市联汉能源",
    "industry_code": "D44",
    "industry_name": "电力热力生产和供应业",
    "district_code": "D01",
    "lon": 121.47,
    "lat": 31.23,
    "h3_cell": H3_CELL,
    "location_quality": "point",
    "address_scrubbed": "友谊大道115号",
    "established_date": dt.date(2013, 8, 7),
    "registered_capital_wan": 2700.69,
    "status": "active",
    "status_raw": "存续",
    "legal_representative_hash": "d" * 64,
    "updated_at_utc": dt.datetime(2024, 9, 17, 2, 19, 34, tzinfo=dt.UTC),
    "_batch_id": "enterprise_registry-batch-1",
    "_source_file": "enterprise_registry.csv",
    "_source_row_number": 1,
    "_ingested_at": INGESTED_AT,
}
HAZARD = {
    "hazard_id": "YH2025030200004",
    "source": "hazard_inspections",
    "enterprise_id": ENTERPRISE["enterprise_id"],
    "enterprise_match": "uscc",
    "enterprise_ref": ENTERPRISE["enterprise_id"],
    "enterprise_name": ENTERPRISE["name"],
    "source_code": "XF-01",
    "source_label": "疏散通道安全出口堵塞",
    "domain_code": "FE",
    "category_code": "FE05",
    "subcategory_code": "FE0501",
    "severity": "general",
    "found_date": dt.date(2025, 3, 2),
    "rectify_deadline": dt.date(2025, 3, 9),
    "rectified_date": dt.date(2025, 3, 3),
    "accepted_date": dt.date(2025, 3, 5),
    "status": "accepted",
    "status_raw": "已验收",
    "is_closed": True,
    "is_overdue_open": False,
    "closed_late": False,
    "days_to_rectify": 1,
    "days_to_accept": 3,
    "as_of_date": dt.date(2025, 3, 17),
    "inspector_id": "AJ0001",
    "district_code": "D01",
    "h3_cell": H3_CELL,
    "updated_at_utc": dt.datetime(2025, 3, 5, 8, 52, tzinfo=dt.UTC),
    "_batch_id": "hazard_inspections-batch-1",
    "_source_file": "hazards_2025-03.csv",
    "_source_row_number": 1,
    "_ingested_at": INGESTED_AT,
}


def silver_specs(lake_root: Path) -> dict[str, TableSpec]:
    """Every declared table the dbt project can read, by name (the Spark jobs' and the models' own
    declarations: silver and ops tables, and the gold tables the risk models write)."""
    settings = load_settings(environ={"CITYSAFE_LAKE_ROOT": str(lake_root)})
    return {**silver_tables(settings), **gold_tables(settings.gold_dir)}


def declared_source_tables() -> set[str]:
    """Table names of every dbt source (read from <lake_root>/silver/<name> or <lake_root>/gold/<name>)."""
    names = set()
    for path in (DBT_PROJECT_DIR / "models").rglob("_*__sources.yml"):
        for source in yaml.safe_load(path.read_text(encoding="utf-8"))["sources"]:
            names |= {t["name"] for t in source["tables"]}
    return names


def _district_row(code: str, lon: float) -> dict:
    return {
        "district_code": code,
        "name_zh": f"区{code}",
        "name_en": f"District {code}",
        "area_km2": 100.0,
        "centroid_lon": lon,
        "centroid_lat": 31.23,
        "geometry_wkt": f"POLYGON (({lon - 0.05} 31.18, {lon + 0.05} 31.18, {lon + 0.05} 31.28, {lon - 0.05} 31.28, "
        f"{lon - 0.05} 31.18))",
    }


def reference_rows(rows=ROWS) -> dict[str, list[dict]]:
    """The rows the incidents point at: taxonomy, districts, the H3 cell, the enterprise and its hazard,
    the registry and one batch per source."""
    registry = silver_reference.source_registry_frame(load_registry())
    per_source = collections.Counter([r[0] for r in rows] + [ENTERPRISE["source"], HAZARD["source"]])
    return {
        "enterprise": [ENTERPRISE],
        "enterprise_identifier": [
            {
                "identifier_type": "uscc",
                "identifier": ENTERPRISE["enterprise_id"],
                "enterprise_id": ENTERPRISE["enterprise_id"],
            },
            {
                "identifier_type": "legacy_reg_no",
                "identifier": ENTERPRISE["legacy_reg_no"],
                "enterprise_id": ENTERPRISE["enterprise_id"],
            },
        ],
        "hazard": [HAZARD],
        "taxonomy": reference.taxonomy().to_dict("records"),
        "district": [_district_row("D01", 121.45), _district_row("D02", 121.55)],
        "h3_cell": [
            {
                "h3_cell": H3_CELL,
                "resolution": 8,
                "district_code": "D01",
                "centroid_lon": 121.47,
                "centroid_lat": 31.23,
                "neighbors": "[]",
            }
        ],
        "source_registry": registry.to_dict("records"),
        "ingest_batch": [
            {
                "batch_id": f"{s}-batch-1",
                "source": s,
                "connector_type": "files",
                "file_count": 1,
                "row_count": n,
                "malformed_row_count": 0,
                "byte_count": 1000,
                "watermark_from": None,
                "watermark_to": None,
                "landed_at": INGESTED_AT,
                "ingested_at": INGESTED_AT,
            }
            for s, n in sorted(per_source.items())
        ],
    }


def incident_row(source: str, record_id: str, local: str, district: str, subcategory: str, n: int) -> dict:
    at_local = dt.datetime.fromisoformat(local)
    at_utc = at_local.replace(tzinfo=ZoneInfo(CITY_TZ)).astimezone(dt.UTC)
    return {
        "incident_id": f"{source}:{record_id}",
        "source": source,
        "source_record_id": record_id,
        "source_code": "C1",
        "source_label": "label",
        "domain_code": subcategory[:2],
        "category_code": subcategory[:4],
        "subcategory_code": subcategory,
        "severity": "medium",
        "occurred_at_utc": at_utc,
        "occurred_at_local": at_local,
        "occurred_date_local": at_local.date(),
        "district_code": district,
        "lon": 121.47,
        "lat": 31.23,
        "h3_cell": H3_CELL,
        "location_quality": "point",
        "status": "open",
        "address_scrubbed": "1 Main Road",
        "reporter_name_hash": "a" * 64,
        "reporter_phone_hash": "b" * 64,
        "reporter_id_hash": "c" * 64,
        "classification_confidence": 1.0,
        "updated_at_utc": at_utc,
        "_batch_id": f"{source}-batch-1",
        "_source_file": f"{source}_2025_03.csv",
        "_source_row_number": n,
        "_ingested_at": INGESTED_AT,
    }


def write_silver(lake_root: Path, rows=ROWS) -> None:
    """Every declared source table: the incidents and what they point at; the other tables (gold too) empty."""
    specs = silver_specs(lake_root)
    data = {"incident": [incident_row(*r, n=i + 1) for i, r in enumerate(rows)], **reference_rows(rows)}
    for name, spec in specs.items():
        table = pa.Table.from_pylist(data.get(name, []), schema=spec.arrow_schema())
        write_deltalake(str(spec.path), table, partition_by=list(spec.partition_by) or None)


def settings_for(lake_root: Path, warehouse: Path):
    return load_settings(
        environ={
            "CITYSAFE_LAKE_ROOT": str(lake_root),
            "CITYSAFE_WAREHOUSE_PATH": str(warehouse),
            "CITYSAFE_TIMEZONE": CITY_TZ,
        }
    )


def mart_rows(path: Path) -> dict:
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute(
            f"select district_code, week_start, domain_code, incident_count, source_count, "
            f"police_incidents_count, fire_calls_count, other_source_count from {MART}"
        ).fetchall()
    finally:
        con.close()
    return {r[:3]: tuple(r[3:]) for r in rows}


DSN_ENV = "TEST_MARTS_POSTGRES_DSN"  # not CITYSAFE_*: load_settings refuses unknown CITYSAFE_ variables


@pytest.fixture(scope="module")
def built(request, tmp_path_factory):
    """The one full build of the small lake: target prod, publishing every mart to the session's
    PostgreSQL server (schema `marts`) before the swap. Without PostgreSQL binaries (and not in CI, where
    pg_server fails) the dev target instead, and the prod tests skip. result["target"]: which one."""
    base = tmp_path_factory.mktemp("warehouse")
    lake = base / "lake"
    write_silver(lake)
    settings = settings_for(lake, base / "served" / "citysafe_marts.duckdb")
    pg = None if find_bin_dir() is None and not os.environ.get("CI") else request.getfixturevalue("pg_server")
    target = "dev" if pg is None else "prod"
    before = dt.datetime.now(dt.UTC)
    with pytest.MonkeyPatch.context() as mp, captured_log("citysafe.warehouse") as lines:
        if pg is not None:
            mp.setenv(DSN_ENV, pg.dsn())
        result = build_marts(settings, "run-1", target=target, postgres_dsn_env=DSN_ENV)
    result["built_between"] = (before, dt.datetime.now(dt.UTC))
    result["target"] = target
    return settings, result, lines, base


def served_files(served: Path) -> list[str]:
    """What a build leaves next to the served file: the file and its build marker, nothing else."""
    return sorted([served.name] + ([f"{served.name}.build.json"] if Path(f"{served}.build.json").exists() else []))


def _query(path: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_every_declared_source_table_is_written_here():
    # A table added to the dbt sources needs its TableSpec in silver_specs, or the builds below would fail.
    assert declared_source_tables() <= set(silver_specs(Path("/nonexistent")))


def test_build_marts_counts_per_district_week_domain(built):
    settings, result, lines, _ = built
    served = Path(settings.warehouse_path)
    assert result["warehouse"] == str(served) and served.is_file()
    target = Path(settings.runs_dir) / "run-1" / "dbt_target"
    models = {
        n["name"]
        for n in json.loads((target / "manifest.json").read_text())["nodes"].values()
        if n["resource_type"] == "model"
    }
    assert set(result["models"]) == models and {MART, "mart_source_freshness", "mart_data_quality"} <= models
    assert result["models"][MART] == len(EXPECTED)
    assert result["models"]["stg_silver__incident"] == len(ROWS) and result["models"]["stg_silver__quarantine"] == 0
    assert mart_rows(served) == EXPECTED
    assert result["tests_passed"] >= 40 and result["seconds"] > 0
    # one progress line per model, dbt's files under runs/<run_id>/ and no build file left behind
    assert sum(" model " in line for line in lines) == len(models)
    assert (Path(settings.runs_dir) / "run-1" / "dbt_logs" / "dbt.log").is_file()
    statuses = {r["unique_id"]: r["status"] for r in json.loads((target / "run_results.json").read_text())["results"]}
    unit = [s for uid, s in statuses.items() if uid.startswith("unit_test.")]
    assert len(unit) >= 3 and set(unit) == {"pass"}
    assert sorted(p.name for p in served.parent.iterdir()) == served_files(served)
    # dbt's partial-parse state is kept for the next run, not in the run's own target folder
    state = partial_parse_state(settings, result["target"])
    assert state.is_file() and not (target / "partial_parse.msgpack").exists()


def test_ops_marts_measure_freshness_at_build_time_and_account_for_rows(built):
    settings, result, _, _ = built
    served = Path(settings.warehouse_path)
    registry = load_registry()
    rows = {
        r[0]: r[1:]
        for r in _query(
            served,
            "select source, freshness_status, lag_hours, rows_loaded, "
            "freshness_error_after_hours, as_of_utc from mart_source_freshness",
        )
    }
    assert set(rows) == set(registry)
    earliest, latest = result["built_between"]
    loaded_sources = ("police_incidents", "fire_calls", "hazard_inspections", "enterprise_registry")
    for source in loaded_sources:
        status, lag, loaded, error_after, as_of = rows[source]
        assert earliest <= as_of <= latest  # measured at the build, not at a fixed or a query time
        assert loaded == sum(r[0] == source for r in ROWS) + (source in (HAZARD["source"], ENTERPRISE["source"]))
        expected_lag = (as_of - INGESTED_AT).total_seconds() / 3600
        assert abs(lag - expected_lag) < 0.001 and lag > error_after and status == "error"
    assert {s for name, (s, *_) in rows.items() if name not in loaded_sources} == {"never_loaded"}
    quality_rows = _query(
        served,
        "select source, rows_read, rows_published, rows_quarantined, rows_deduplicated, "
        "quarantine_rate, last_validation_status from mart_data_quality "
        "where source in ('police_incidents', 'fire_calls') order by source",
    )
    assert quality_rows == [
        ("fire_calls", 1, 1, 0, 0, 0.0, "not_validated"),
        ("police_incidents", 7, 7, 0, 0, 0.0, "not_validated"),
    ]


def test_no_personal_columns_reach_the_warehouse(built):
    settings, _, _, _ = built
    silver_cols = DeltaTable(str(Path(settings.silver_dir) / "incident")).schema().to_arrow().names
    assert {"reporter_name_hash", "address_scrubbed"} <= set(silver_cols)  # the source has them ...
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        cols = con.execute(
            "select table_name, column_name from information_schema.columns where table_schema = 'main'"
        ).fetchall()
    finally:
        con.close()
    assert {t for t, _ in cols} >= {MART, "stg_silver__incident", "stg_silver__quarantine"}
    assert [c for c in cols if PERSONAL.search(c[1])] == []  # ... no relation in the warehouse does
    assert ("stg_silver__quarantine", "record_json") not in cols


def test_missing_silver_table_leaves_served_file_untouched(built, tmp_path):
    settings, _, _, _ = built
    served = Path(settings.warehouse_path)
    before = served.read_bytes()
    broken = settings.model_copy(update={"lake_root": tmp_path / "empty_lake"})
    with pytest.raises(WarehouseBuildError) as err:
        build_marts(broken, "run-missing", select=["stg_silver__quarantine", "source:silver.incident"])
    assert "model stg_silver__quarantine" in err.value.failed_nodes
    assert "test source_unique_silver_incident_incident_id" in err.value.failed_nodes
    assert "Path does not exist" in str(err.value)
    assert served.read_bytes() == before
    assert sorted(p.name for p in served.parent.iterdir()) == served_files(served)


def test_failing_data_test_leaves_served_file_untouched(built, tmp_path):
    settings, _, _, base = built
    served = Path(settings.warehouse_path)
    before = served.read_bytes()
    lake = tmp_path / "lake"
    shutil.copytree(Path(settings.lake_root) / "silver", lake / "silver")
    dup = pa.Table.from_pylist([incident_row(*ROWS[0], n=99)], schema=tables.incident(lake / "silver").arrow_schema())
    write_deltalake(str(lake / "silver" / "incident"), dup, mode="append")
    with pytest.raises(WarehouseBuildError) as err:
        build_marts(
            settings.model_copy(update={"lake_root": lake}),
            "run-dup",
            select=["source:silver.incident", "stg_silver__incident"],
        )
    # the source test fails first; everything downstream of it is skipped
    assert "test source_unique_silver_incident_incident_id" in err.value.failed_nodes
    results = json.loads((err.value.run_dir / "dbt_target" / "run_results.json").read_text())["results"]
    assert {r["unique_id"]: r["status"] for r in results}["model.citysafe.stg_silver__incident"] == "skipped"
    assert served.read_bytes() == before
    assert sorted(p.name for p in served.parent.iterdir()) == served_files(served)


def test_not_null_columns_names_the_columns_that_hold_nulls(built, tmp_path):
    """A model's NOT NULL columns are one test (dbt/tests/generic/not_null_columns.sql): a NULL in one of
    them (the only one silver.incident itself lets be NULL) fails the build with a line naming it."""
    settings, _, _, _ = built
    served = Path(settings.warehouse_path)
    before = served.read_bytes()
    lake = tmp_path / "lake"
    shutil.copytree(Path(settings.lake_root) / "silver", lake / "silver")
    row = {**incident_row(*ROWS[0], n=98), "incident_id": "police_incidents:P98", "source_record_id": "P98"}
    row.update(classification_confidence=None)
    spec = tables.incident(lake / "silver")
    write_deltalake(str(spec.path), pa.Table.from_pylist([row], schema=spec.storage_schema()), mode="append")
    with pytest.raises(WarehouseBuildError) as err:
        build_marts(settings.model_copy(update={"lake_root": lake}), "run-nulls", select=["stg_silver__incident"])
    assert any(n.startswith("test not_null_columns_stg_silver__incident") for n in err.value.failed_nodes)
    assert "NULL values in columns: classification_confidence (1 rows)" in str(err.value)
    assert served.read_bytes() == before


@pytest.fixture(scope="module")
def rebuilt(built, tmp_path_factory):
    """A dev build (select +MART) of a lake with one more incident, into a copy of the served file, while
    a reader holds that file open; returns (its settings, its result, what the reader read after it)."""
    settings, _, _, _ = built
    base = tmp_path_factory.mktemp("rebuild")
    served = base / "served" / "citysafe_marts.duckdb"
    served.parent.mkdir()
    shutil.copyfile(settings.warehouse_path, served)
    lake = base / "lake"
    write_silver(lake, ROWS + [("police_incidents", "P8", "2025-03-17 12:00", "D02", "TR0101")])
    reader = duckdb.connect(str(served), read_only=True)
    try:
        rebuilt_settings = settings_for(lake, served)
        result = build_marts(rebuilt_settings, "run-2", select=[f"+{MART}"])
        read_after = reader.execute(f"select sum(incident_count) from {MART}").fetchone()[0]
    finally:
        reader.close()
    return rebuilt_settings, result, read_after


def test_rebuild_swaps_atomically_under_an_open_reader(rebuilt):
    settings, result, read_after = rebuilt
    # the open reader keeps the old file; the swap did not wait for it
    assert read_after == len(ROWS)
    assert result["models"]["stg_silver__incident"] == len(ROWS) + 1
    assert mart_rows(settings.warehouse_path)[("D02", dt.date(2025, 3, 17), "TR")] == (2, 1, 2, 0, 0)


def test_dbt_builds_run_under_the_configured_memory_limit(tmp_path):
    settings = load_settings(environ={"CITYSAFE_WAREHOUSE_MEMORY_LIMIT": "1.5GiB"})
    env = dbt_env(settings, tmp_path / "build.duckdb", base={})
    profile = yaml.safe_load((DBT_PROJECT_DIR / "profiles.yml").read_text())
    for name, target in profile["citysafe"]["outputs"].items():
        assert target["settings"]["memory_limit"] == "{{ env_var('CITYSAFE_DUCKDB_MEMORY_LIMIT') }}", name
    with duckdb.connect() as con:  # the value is one DuckDB reads
        con.execute(f"SET memory_limit = '{env['CITYSAFE_DUCKDB_MEMORY_LIMIT']}'")
        assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] == "1.5 GiB"


def test_dbt_parse_writes_manifest(rebuilt, tmp_path):
    settings, _, _ = rebuilt  # its lake's dev build (the module's full build may be the prod target's)
    manifest = dbt_parse(settings, target_path=tmp_path / "target")
    nodes = json.loads(manifest.read_text())["nodes"]
    assert f"model.citysafe.{MART}" in nodes
    assert not (tmp_path / "target" / "parse-only.duckdb").exists()
    assert not list(tmp_path.rglob("*.duckdb"))  # the profile's path is never opened
    # the state the build of the same lake left is reused: dbt parsed again at most the two staging models
    # (YAML and SQL) whose tests read CITYSAFE_MARTS_SILVER_CHANGED_SINCE, set for a build, not a parse
    perf = json.loads((tmp_path / "target" / "perf_info.json").read_text())
    assert perf["is_partial_parse_enabled"] is True and perf["path_count"] > 100
    assert perf["parsed_path_count"] <= 4


# --- the prod target: the marts published to PostgreSQL ------------------------------------------------

PUBLISHER, PUBLISHER_PASSWORD = "marts_publisher", "Pub-pw 'q9"


def _postgres_counts(pg_server, schema: str) -> dict[str, int]:
    with pg_server.connect() as con:
        names = [
            r[0]
            for r in con.execute(
                "select table_name from information_schema.tables where table_schema = %s", (schema,)
            ).fetchall()
        ]
        return {n: con.execute(f'select count(*) from "{schema}"."{n}"').fetchone()[0] for n in names}


def _schemas(pg_server) -> set[str]:
    with pg_server.connect() as con:
        return {r[0] for r in con.execute("select nspname from pg_namespace where nspname like 'marts%'").fetchall()}


def test_prod_target_publishes_the_marts_to_postgres_atomically(built, pg_server, monkeypatch):
    settings, result, _, _ = built  # the module's full build from nothing, on the prod target
    assert result["target"] == "prod" and result["mode"] == "full"
    served = Path(settings.warehouse_path)

    # every mart table of the project, with the row counts of the served DuckDB warehouse
    manifest = json.loads((Path(result["target_path"]) / "manifest.json").read_text())
    marts = sorted(
        n["name"]
        for n in manifest["nodes"].values()
        if n["resource_type"] == "model" and n["fqn"][1] in ("marts", "gold")
    )
    assert result["published"] == {"schema": "marts", "tables": marts} and MART in marts
    duck = {m: _query(served, f"select count(*) from {m}")[0][0] for m in marts}
    assert _postgres_counts(pg_server, "marts") == duck
    assert duck[MART] == len(EXPECTED)
    with pg_server.connect() as con:
        assert con.execute(f"select sum(incident_count) from marts.{MART}").fetchone()[0] == len(ROWS)
    assert _schemas(pg_server) == {"marts"}  # the publishing schema was renamed, nothing left over
    # the password reached dbt only as PGPASSWORD: no file of the run holds it
    run_dir = Path(settings.runs_dir) / "run-1"
    assert not [p for p in run_dir.rglob("*") if p.is_file() and pg_server.password.encode() in p.read_bytes()]

    # A publish that fails at its last step (the publisher may not drop the schema another role owns)
    # rolls back: PostgreSQL keeps the marts it had, the served DuckDB file is untouched.
    with pg_server.connect() as con:
        con.execute(f"create role {PUBLISHER} login password '{PUBLISHER_PASSWORD.replace(chr(39), chr(39) * 2)}'")
        con.execute(f"grant create on database postgres to {PUBLISHER}")
    before_pg, before_file = _postgres_counts(pg_server, "marts"), served.read_bytes()
    monkeypatch.setenv(DSN_ENV, pg_server.dsn(user=PUBLISHER, password=PUBLISHER_PASSWORD))
    with pytest.raises(WarehouseBuildError, match="publishing the marts to PostgreSQL failed") as err:
        build_marts(settings, "run-prod-denied", target="prod", postgres_dsn_env=DSN_ENV, select=[MART])
    assert "must be owner" in str(err.value)
    assert _postgres_counts(pg_server, "marts") == before_pg and _schemas(pg_server) == {"marts"}
    assert served.read_bytes() == before_file
    assert sorted(p.name for p in served.parent.iterdir()) == served_files(served)


def test_prod_target_needs_the_dsn_variable(built, tmp_path, monkeypatch):
    settings, _, _, _ = built
    monkeypatch.delenv(DSN_ENV, raising=False)
    served = tmp_path / "served.duckdb"
    with pytest.raises(WarehouseBuildError, match=f"set the environment variable {DSN_ENV}"):
        build_marts(
            settings.model_copy(update={"warehouse_path": served}),
            "run-no-dsn",
            target="prod",
            postgres_dsn_env=DSN_ENV,
        )
    assert not served.exists()


def test_dbt_docs_generate_works_offline(built, monkeypatch):
    settings, _, _, _ = built
    served = Path(settings.warehouse_path)
    before = served.read_bytes()
    # any attempt to reach the network through a proxy-aware client fails fast
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    docs = generate_docs(settings, "run-docs")
    assert docs == Path(settings.runs_dir) / "run-docs" / "dbt_docs"
    assert (docs / "index.html").stat().st_size > 100_000  # dbt's self-contained documentation page
    catalog = json.loads((docs / "catalog.json").read_text())
    assert not catalog.get("errors")
    node = catalog["nodes"]["model.citysafe.mart_source_freshness"]
    assert {"source", "lag_hours", "freshness_status"} <= set(node["columns"])
    manifest = json.loads((docs / "manifest.json").read_text())
    assert manifest["nodes"]["model.citysafe.mart_data_quality"]["description"].startswith(
        "One row per registered source"
    )
    assert served.read_bytes() == before  # documented from a copy; the served file was not opened for writing
    assert not list((Path(settings.runs_dir) / "run-docs").rglob("*.duckdb"))
