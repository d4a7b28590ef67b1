"""Freeze what a quarter's report reads, so the same quarter regenerated later gives the same numbers.

The first `citysafe report` for a quarter copies the rows it needs out of the served warehouse into
`<reports>/<quarter>/inputs.duckdb` (aggregates and codes only: no personal data, no free text) and writes
`provenance.json` beside it: the warehouse build, the Delta version of every silver and gold table the
warehouse was built from, the model run, when and by which software. Later runs compute every figure from
that file, whatever arrived in the lake since; `--refresh` takes a new snapshot (and new provenance).

The file is written under a temporary name and renamed into place, so a crash never leaves half a snapshot.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import subprocess
from pathlib import Path

import duckdb

from citysafe import warehouse
from citysafe.config import REPO_ROOT, Settings
from citysafe.errors import MartsError
from citysafe.runs import write_json_atomic

INPUTS = "inputs.duckdb"
PROVENANCE = "provenance.json"

# name -> (warehouse tables it reads, query). Queries run with the warehouse as the default catalog.
TABLES: dict[str, tuple[tuple[str, ...], str]] = {
    "district": (
        ("dim_district",),
        "select district_code, district_name_en, district_name_zh, geometry_wkt from dim_district",
    ),
    "domain": (
        ("dim_category",),
        "select distinct domain_code, domain_name_en, domain_name_zh from dim_category",
    ),
    "incident_daily": (
        ("fct_incident",),
        "select occurred_date_local as day, district_code, domain_code, count(*) as incidents\n"
        "from fct_incident where occurred_date_local is not null group by all",
    ),
    "response_call": (
        ("fct_incident",),
        # fire/EMS calls with both times: the calls mart_response_times counts
        "select occurred_date_local as day, district_code,\n"
        "       (epoch_ms(on_scene_at_utc) - epoch_ms(received_at_utc)) / 1000.0 as response_seconds\n"
        "from fct_incident\n"
        "where on_scene_at_utc is not null and received_at_utc is not null and occurred_date_local is not null",
    ),
    "hazard": (
        ("fct_hazard",),
        "select hazard_id, enterprise_id, district_code, domain_code, severity, found_date, as_of_date,\n"
        "       is_overdue, is_overdue_open, is_closed, rectification_state, days_found_to_rectified\n"
        "from fct_hazard where found_date is not null",
    ),
    "enterprise": (
        ("dim_enterprise",),
        # a sole trader's business name is often a person's name: it is not copied
        "select enterprise_id, industry_name, district_code,\n"
        "       case when is_individual_business then null else enterprise_name end as enterprise_name\n"
        "from dim_enterprise",
    ),
    "device_alert": (
        ("fct_device_alert",),
        "select alert_id, device_id, device_type, measure, unit, district_code, start_date_local, peak_grade,\n"
        "       peak_grade_rank, peak_value, duration_hours, is_open\n"
        "from fct_device_alert where start_date_local is not null",
    ),
    "risk_map": (
        ("mart_risk_map",),
        "select scope, target_week_start, h3_cell, district_code, method, expected_count, risk_score, risk_rank,\n"
        "       risk_level, contribution_1_feature, contribution_1_value, contribution_2_feature,\n"
        "       contribution_3_feature, boundary_geojson, model_run_key\n"
        "from mart_risk_map",
    ),
    "risk_backtest": (
        ("mart_risk_backtest",),
        "select scope, method, weeks, pai_1, pai_5, pai_10, pei_5, hit_rate_5, is_published from mart_risk_backtest",
    ),
    "forecast": (
        ("mart_forecast_vs_actual",),
        "select measure, level, district_code, domain_code, origin_week_start, target_week_start, horizon,\n"
        "       method, p10, p50, p90, actual\n"
        "from mart_forecast_vs_actual",
    ),
    "forecast_metrics": (
        ("mart_forecast_metrics",),
        "select method, measure, horizon, mase, coverage_80, winkler_80 from mart_forecast_metrics",
    ),
    "freshness": (
        ("mart_source_freshness",),
        "select source, department, freshness_status, last_loaded_at_utc, lag_hours from mart_source_freshness",
    ),
    "data_quality": (
        ("mart_data_quality",),
        "select source, rows_read, rows_published, rows_quarantined, rows_deduplicated, quarantine_rate,\n"
        "       top_quarantine_reason, last_validation_status\n"
        "from mart_data_quality",
    ),
    "model_run": (
        ("mart_model_runs",),
        "select model_run_key, run_id, created_at, published, silver_versions, warehouse_build, mlflow_run_id\n"
        "from mart_model_runs order by created_at desc limit 1",
    ),
}


def quarter_dir(settings: Settings, quarter: str) -> Path:
    return settings.reports_dir / quarter


def exists(settings: Settings, quarter: str) -> bool:
    d = quarter_dir(settings, quarter)
    return (d / INPUTS).is_file() and (d / PROVENANCE).is_file()


def take(settings: Settings, quarter: str, run_id: str | None = None) -> dict:
    """Copy the report's inputs out of the served warehouse; returns the provenance written beside them.
    A table the warehouse lacks (e.g. no model run yet) is created empty-less: it is simply absent, and the
    sections that read it say "no data"."""
    served = Path(settings.warehouse_path)
    if not served.is_file():
        raise MartsError(f"warehouse {served} not found: run `citysafe run` (or `citysafe build-marts`) first")
    out_dir = quarter_dir(settings, quarter)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{INPUTS}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    rows, missing = {}, []
    con = duckdb.connect(str(tmp))
    try:
        con.execute("SET TimeZone = 'UTC'")
        (snap,) = con.execute("select current_database()").fetchone()
        con.execute(f"ATTACH '{served}' AS wh (READ_ONLY)")
        present = {
            r[0] for r in con.execute("select table_name from duckdb_tables() where database_name = 'wh'").fetchall()
        }
        con.execute("USE wh")  # the queries name the warehouse's tables unqualified
        for name, (reads, sql) in TABLES.items():
            if not set(reads) <= present:
                missing.append(name)
                continue
            con.execute(f'create table "{snap}".main.{name} as {sql}')
            rows[name] = con.execute(f'select count(*) from "{snap}".main.{name}').fetchone()[0]
        con.execute(f'USE "{snap}"')
        con.execute("DETACH wh")
    finally:
        con.close()
    os.replace(tmp, out_dir / INPUTS)
    provenance = {
        "quarter": quarter,
        "inputs_taken_at_utc": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "run_id": run_id,
        "warehouse": {"path": str(served), **_build_marker(served)},
        "tables_read": {name: list(reads) for name, (reads, _) in TABLES.items() if name not in missing},
        "rows": rows,
        "missing": missing,
        "delta_versions": {
            "silver": _delta_versions(settings.silver_dir),
            "gold": _delta_versions(settings.gold_dir),
        },
        "software": software_version(),
    }
    write_json_atomic(out_dir / PROVENANCE, provenance)
    return provenance


def read_provenance(settings: Settings, quarter: str) -> dict:
    return json.loads((quarter_dir(settings, quarter) / PROVENANCE).read_text(encoding="utf-8"))


def connect(settings: Settings, quarter: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(quarter_dir(settings, quarter) / INPUTS), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    return con


def _build_marker(served: Path) -> dict:
    try:
        return json.loads(warehouse.build_marker_path(served).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


def _delta_versions(root: Path) -> dict[str, int]:
    from citysafe import delta_io

    versions = {}
    if root.is_dir():
        for table in sorted(p for p in root.iterdir() if (p / "_delta_log").is_dir()):
            versions[table.name] = delta_io.open_table(table).version()
    return versions


def software_version() -> dict:
    try:
        version = importlib.metadata.version("citysafe-lake")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    commit = None
    try:
        proc = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        commit = proc.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"citysafe": version, "git_commit": commit, "duckdb": duckdb.__version__}
