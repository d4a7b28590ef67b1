"""The analysts' Superset assets as code: the warehouse database, its datasets, the charts and the
dashboards, declared here and turned into an import bundle (Superset's v1 YAML format).

Every UUID is derived from a stable name (uuid5), so a re-import updates in place; every asset is marked
`is_managed_externally`, so provision.py can delete the managed assets that left this file. Dataset
columns are read from the served warehouse, so the bundle always matches the marts it points at.
Runs in the Superset venv (PyYAML and DuckDB only).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import uuid
from pathlib import Path

import yaml

NAMESPACE = uuid.UUID("6f1c2a57-3d0e-4d47-9a53-0c1f7b1e5a11")  # CitySafe Lake's asset namespace; never change
DATABASE_NAME = "CitySafe warehouse"
GRADE_COLOURS = {"red": "#d7191c", "orange": "#f28e2b", "yellow": "#e8c547", "blue": "#2c7bb6"}
VERSION = "1.0.0"
DISTRICT_COLUMN = "district_code"


def uid(kind: str, key: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{kind}:{key}"))


@dataclasses.dataclass(frozen=True)
class Dataset:
    key: str  # table name in the warehouse, or the name of a virtual dataset
    description: str
    sql: str | None = None  # a virtual dataset's query over the marts

    @property
    def uuid(self) -> str:
        return uid("dataset", self.key)


@dataclasses.dataclass(frozen=True)
class Chart:
    key: str
    title: str
    description: str  # what it counts: shown under the chart title
    dataset: str
    viz_type: str
    params: dict
    query: dict  # the chart-data query Superset saves with the chart (columns, metrics, orderby, filters, row_limit)
    width: int = 6
    height: int = 50

    @property
    def uuid(self) -> str:
        return uid("chart", self.key)


@dataclasses.dataclass(frozen=True)
class Dashboard:
    slug: str
    title: str
    rows: list[list[str]]  # chart keys, row by row
    filters: list[tuple[str, str, str]] = ()  # (name, dataset, column): native select filters
    date_range: bool = False  # a native time-range filter on the charts with a time axis

    @property
    def uuid(self) -> str:
        return uid("dashboard", self.slug)


# --- helpers that keep chart definitions short -----------------------------------------------------------


def median(column: str) -> str:
    """The median in SQL both DuckDB and PostgreSQL speak (PostgreSQL has no MEDIAN())."""
    return f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {column})"


def sql_metric(expression: str, label: str) -> dict:
    return {"expressionType": "SQL", "sqlExpression": expression, "label": label, "hasCustomLabel": True}


def where(column: str, value) -> dict:
    return {"clause": "WHERE", "expressionType": "SIMPLE", "subject": column, "operator": "==", "comparator": value}


def _adhoc_filters(filters) -> list[dict]:
    """Equality filters as the chart's form data holds them (what Explore shows)."""
    return [where(c, v) for c, v in filters]


def _query_filters(filters) -> list[dict]:
    """The same equality filters as the saved chart-data query holds them."""
    return [{"col": c, "op": "==", "val": v} for c, v in filters]


def table(key, title, description, dataset, columns, *, order=None, limit=1000, filters=(), width=6, height=50):
    """A raw-records table."""
    params = {
        "query_mode": "raw",
        "all_columns": list(columns),
        "order_by_cols": [json.dumps([c, asc]) for c, asc in (order or [])],
        "row_limit": limit,
        "adhoc_filters": _adhoc_filters(filters),
        "server_pagination": False,
        "table_timestamp_format": "smart_date",
        # numbers with at most 3 decimals (trailing zeros dropped); text columns ignore it
        "column_config": {c: {"d3NumberFormat": ",.3~f"} for c in columns},
    }
    query = {
        "columns": list(columns),
        "metrics": None,  # raw records: no GROUP BY (an empty list would group by every column)
        "orderby": [[c, asc] for c, asc in (order or [])],
        "row_limit": limit,
        "filters": _query_filters(filters),
    }
    return Chart(key, title, description, dataset, "table", params, query, width, height)


def pie(key, title, description, dataset, groupby, metric, *, filters=(), width=4, height=50):
    params = {
        "groupby": [groupby],
        "metric": metric,
        "adhoc_filters": _adhoc_filters(filters),
        "row_limit": 100,
        "show_legend": True,
        "label_type": "key_value",
        "sort_by_metric": True,
    }
    query = {
        "columns": [groupby],
        "metrics": [metric],
        "orderby": [[metric, False]],
        "row_limit": 100,
        "filters": _query_filters(filters),
    }
    return Chart(key, title, description, dataset, "pie", params, query, width, height)


def timeseries(
    key, title, description, dataset, x_axis, metrics, *, groupby=None, filters=(), kind="line", width=12, height=50
):
    """Weekly lines (or bars) over `x_axis`, one series per `groupby` value."""
    params = {
        "x_axis": x_axis,
        "time_grain_sqla": "P1W",
        "metrics": list(metrics),
        "groupby": [groupby] if groupby else [],
        "adhoc_filters": _adhoc_filters(filters),
        "row_limit": 50000,
        "show_legend": True,
        "legendType": "scroll",
        "rich_tooltip": True,
        "x_axis_time_format": "smart_date",
        "truncate_metric": True,
        "order_desc": True,
    }
    query = {
        "columns": [x_axis, *([groupby] if groupby else [])],
        "metrics": list(metrics),
        "orderby": [[x_axis, True]],
        "row_limit": 50000,
        "filters": _query_filters(filters),
    }
    viz = "echarts_timeseries_bar" if kind == "bar" else "echarts_timeseries_line"
    return Chart(key, title, description, dataset, viz, params, query, width, height)


def bars(key, title, description, dataset, groupby, metric, *, filters=(), limit=50, width=6, height=50):
    """One bar per `groupby` value, largest first."""
    params = {
        "x_axis": groupby,
        "metrics": [metric],
        "groupby": [],
        "adhoc_filters": _adhoc_filters(filters),
        "row_limit": limit,
        "x_axis_sort": metric["label"],
        "x_axis_sort_asc": False,
        "show_legend": False,
        "show_value": True,
        "orientation": "vertical",
    }
    query = {
        "columns": [groupby],
        "metrics": [metric],
        "orderby": [[metric, False]],
        "row_limit": limit,
        "filters": _query_filters(filters),
    }
    return Chart(key, title, description, dataset, "echarts_timeseries_bar", params, query, width, height)


def polygons(key, title, description, dataset, ring_column, metric, *, filters=(), viewport=None, width=12, height=80):
    """deck.gl polygons drawn from a JSON ring column; no base map (nothing is fetched from a tile server)."""
    params = {
        "line_column": ring_column,
        "line_type": "json",
        "metric": metric,
        "adhoc_filters": _adhoc_filters(filters),
        "filled": True,
        "stroked": True,
        "extruded": False,
        "line_width": 1,
        "line_width_unit": "pixels",
        "linear_color_scheme": "oranges",
        "opacity": 80,
        "legend_position": "tr",
        "legend_format": ".2f",
        "reverse_long_lat": False,
        "mapbox_style": "",
        "autozoom": True,
        "viewport": viewport or {"zoom": 10, "latitude": 0, "longitude": 0, "pitch": 0, "bearing": 0},
        "row_limit": 20000,
        "js_columns": [],
        "js_data_mutator": "",
        "js_tooltip": "",
        "js_onclick_href": "",
        "fill_color_picker": {"r": 3, "g": 65, "b": 73, "a": 1},
        "stroke_color_picker": {"r": 60, "g": 60, "b": 60, "a": 1},
    }
    query = {
        "columns": [ring_column, "h3_cell"],
        "metrics": [metric],
        "orderby": [],
        "row_limit": 20000,
        "filters": _query_filters(filters),
    }
    return Chart(key, title, description, dataset, "deck_polygon", params, query, width, height)


def forecast_band(key, title, description, *, level: str):
    """P10 / P50 / P90 and the actual of the newest published incident forecast at one level (city or district)."""
    metrics = [sql_metric(f"SUM({c})", label) for c, label in (("p10", "P10"), ("p50", "P50"), ("p90", "P90"))]
    return timeseries(
        key,
        title,
        description,
        "forecast_latest",
        "target_week_start",
        [*metrics, sql_metric("SUM(actual)", "actual")],
        filters=[("level", level), ("measure", "incidents")],
        width=6,
    )


# --- what the analysts see --------------------------------------------------------------------------------

# Targets of the hazard closed loop (config `superset.targets`, handed over by pipeline/serve.py).
_targets = json.loads(os.environ.get("CITYSAFE_DASHBOARD_TARGETS") or "{}")
OVERDUE_RATE_TARGET = float(_targets.get("hazard_overdue_rate_max", 0.05))
RECTIFY_DAYS_TARGET = float(_targets.get("hazard_days_to_rectify_max", 7))

# The virtual datasets are written for the DuckDB warehouse (schema `main`); on the PostgreSQL marts
# (`superset.warehouse_uri`) the bundle names the published schema instead and swaps this one DuckDB-only
# expression for PostgreSQL's.
BOUNDARY_RING = {
    "duckdb": "cast(json_extract(boundary_geojson, '$.coordinates[0]') as varchar)",
    "postgresql": "((boundary_geojson::json) -> 'coordinates' -> 0)::text",
}

DATASETS = [
    Dataset("mart_risk_map", "Next week's published risk per H3 cell (champion method of the latest model run)."),
    Dataset(
        "risk_map_cells",
        "mart_risk_map with each cell's outline as a JSON ring of [lon, lat] points (the deck.gl polygon layer's input).",
        sql=(f"select *, {BOUNDARY_RING['duckdb']} as boundary_ring\nfrom main.mart_risk_map"),
    ),
    Dataset("mart_risk_backtest", "Every method's rolling-origin backtest scores (PAI, PEI*, hit rate, deviance)."),
    Dataset(
        "mart_incident_trends",
        "Weekly incidents per district x category with week-over-week and year-over-year change.",
    ),
    Dataset(
        "incident_trends_named",
        "mart_incident_trends with each domain's English and Chinese name (dim_category) as `domain_label`.",
        sql=(
            "select t.*, d.domain_name_en, d.domain_name_zh,\n"
            "       d.domain_name_en || ' · ' || d.domain_name_zh as domain_label\n"
            "from main.mart_incident_trends as t\n"
            "left join (select distinct domain_code, domain_name_en, domain_name_zh from main.dim_category) as d\n"
            "  using (domain_code)"
        ),
    ),
    Dataset(
        "incident_latest_week",
        "The newest complete week of mart_incident_trends per district and domain, with its changes.",
        sql=(
            "select district_code, domain_code, domain_label, week_start, sum(incident_count) as incident_count,\n"
            "       sum(previous_week_count) as previous_week_count, sum(previous_year_count) as previous_year_count,\n"
            "       sum(incident_count) - sum(previous_week_count) as week_over_week_change,\n"
            "       sum(incident_count) - sum(previous_year_count) as year_over_year_change\n"
            "from (select t.*, d.domain_name_en || ' · ' || d.domain_name_zh as domain_label\n"
            "      from main.mart_incident_trends as t\n"
            "      left join (select distinct domain_code, domain_name_en, domain_name_zh from main.dim_category) as d\n"
            "        using (domain_code)) as named\n"
            "where week_start = (select max(week_start) from main.mart_incident_trends where is_complete_week)\n"
            "group by district_code, domain_code, domain_label, week_start"
        ),
    ),
    Dataset(
        "forecast_latest",
        "The newest published forecast (P10 / P50 / P90; per measure the backtest champion, LightGBM unless a "
        "baseline did as well) per series and target week, with the actual once known.",
        sql=(
            "select * from main.mart_forecast_vs_actual\n"
            "where origin_week_start = (select max(origin_week_start) from main.mart_forecast_vs_actual)"
        ),
    ),
    Dataset(
        "mart_forecast_metrics", "Backtest of the forecasts: MASE, 80% interval coverage and Winkler score per horizon."
    ),
    Dataset(
        "hazard_loop",
        "mart_hazard_rectification with the closed-loop targets from config and whether each row meets them.",
        sql=(
            f"select *, {OVERDUE_RATE_TARGET} as overdue_rate_target, {RECTIFY_DAYS_TARGET} as days_to_rectify_target,\n"
            f"       overdue_rate <= {OVERDUE_RATE_TARGET} as meets_overdue_target,\n"
            f"       median_days_found_to_rectified <= {RECTIFY_DAYS_TARGET} as meets_days_target\n"
            "from main.mart_hazard_rectification"
        ),
    ),
    Dataset(
        "hazard_funnel",
        "Hazards per district at each step of the closed loop: found, closed, accepted, rectified on time.",
        sql=(
            "select district_code, stage, hazards from (\n"
            "  select district_code, '1 found' as stage, hazards_found as hazards from main.mart_hazard_rectification where grain = 'district'\n"
            "  union all select district_code, '2 closed', hazards_closed from main.mart_hazard_rectification where grain = 'district'\n"
            "  union all select district_code, '3 accepted', hazards_accepted from main.mart_hazard_rectification where grain = 'district'\n"
            "  union all select district_code, '4 rectified on time', rectified_on_time from main.mart_hazard_rectification where grain = 'district'\n"
            ") as stages"
        ),
    ),
    Dataset("fct_device_alert", "Alert episodes of the IoT devices: start, peak grade, duration, gaps."),
    Dataset(
        "mart_response_times",
        "Fire/EMS calls per district and week: dispatch, response and travel time median and p90.",
    ),
    Dataset("mart_source_freshness", "Per source: last load, lag and freshness status against its expectation."),
    Dataset("mart_data_quality", "Per source: rows read, published, quarantined, deduplicated; last quality gate."),
    Dataset("mart_data_quality_by_reason", "Per source and reason: rows quarantined and the quarantine rate."),
    Dataset(
        "mart_unmapped_codes",
        "The stewards' review queue: codes and categories silver could not map, with the rows waiting on each.",
    ),
]

# what each closed-loop breakdown shows after its key column
HAZARD_TARGET_COLUMNS = [
    "hazards_found",
    "overdue_rate",
    "meets_overdue_target",
    "median_days_found_to_rectified",
    "meets_days_target",
]
RISK = sql_metric("MAX(risk_score)", "risk score")
CELLS = sql_metric("COUNT(*)", "cells")
QUARANTINED = sql_metric("SUM(rows_quarantined)", "rows quarantined")

CHARTS = [
    polygons(
        "risk_map",
        "Risk map: next week, all incidents",
        "Each H3 cell of the study area coloured by its risk score (expected incidents next week from the "
        "published method, all domains). Darker = higher. No base map is drawn.",
        "risk_map_cells",
        "boundary_ring",
        RISK,
        filters=[("scope", "ALL")],
    ),
    pie(
        "risk_levels",
        "Cells by risk level",
        "Number of cells per graded level (red = top 1% of cells, orange = next 4%, yellow = next 10%, blue = rest).",
        "mart_risk_map",
        "risk_level",
        CELLS,
        filters=[("scope", "ALL")],
    ),
    table(
        "risk_top_cells",
        "Top 20 cells and why",
        "The 20 cells with the highest expected incidents next week, with the three features that raised "
        "(or lowered) each prediction most (LightGBM contributions; empty when a baseline is published).",
        "mart_risk_map",
        [
            "risk_rank",
            "h3_cell",
            "district_code",
            "risk_level",
            "expected_count",
            "contribution_1_feature",
            "contribution_1_value",
            "contribution_2_feature",
            "contribution_3_feature",
        ],
        order=[("risk_rank", True)],
        limit=20,
        filters=[("scope", "ALL")],
        width=8,
    ),
    table(
        "risk_backtest",
        "Backtest: the model against its baselines",
        "Mean over the backtest weeks of PAI at 5% of the area (how much more often incidents fall in the "
        "flagged 5% than by chance), per method; the published method is marked. All incidents.",
        "mart_risk_backtest",
        ["method", "pai_5", "pai_1", "pai_10", "pei_5", "poisson_deviance", "is_published", "weeks"],
        order=[("pai_5", False)],
        filters=[("scope", "ALL")],
        width=12,
        height=40,
    ),
    timeseries(
        "incidents_weekly",
        "Incidents per week by domain",
        "Incidents per city-local week (Monday start), one line per domain; the district filter narrows it.",
        "incident_trends_named",
        "week_start",
        [sql_metric("SUM(incident_count)", "incidents")],
        groupby="domain_label",
    ),
    table(
        "incidents_changes",
        "Newest week: change on the week before and on the same week last year",
        "Incidents in the newest complete week per district and domain, and the change against the week "
        "before and the same ISO week a year earlier (negative = fewer).",
        "incident_latest_week",
        ["district_code", "domain_label", "incident_count", "week_over_week_change", "year_over_year_change"],
        order=[("incident_count", False)],
        width=12,
    ),
    forecast_band(
        "forecast_band",
        "City forecast of incidents with its 80% band",
        "The newest forecast of weekly incidents for the whole city (all domains): P50 and the P10-P90 band "
        "of the published method (LightGBM unless a baseline did as well in the backtest) with conformal "
        "intervals, and the actual count where the week is already known.",
        level="city",
    ),
    forecast_band(
        "forecast_band_district",
        "District forecast of incidents with its 80% band",
        "The newest district-level forecast of weekly incidents (published method, conformal intervals): P50, "
        "P10 and P90, and the actual where known. Pick one district and one domain in the filters for that "
        "series' exact band; over several, the quantiles are summed (a wider band than the sum's own).",
        level="district",
    ),
    table(
        "forecast_quality",
        "How good the forecasts were (backtest)",
        "Per measure and horizon (weeks ahead): MASE against the seasonal naive (below 1 = better than "
        "last year's same week), share of actuals inside the 80% interval, and the Winkler interval score.",
        "mart_forecast_metrics",
        ["measure", "method", "horizon", "mase", "coverage_80", "winkler_80"],
        order=[("horizon", True)],
        filters=[("method", "lightgbm")],
        width=12,
    ),
    table(
        "hazard_by_district",
        "Hazard closed loop by district",
        f"Per district: hazards found, overdue rate (target <= {OVERDUE_RATE_TARGET:.0%}) and median days from "
        f"found to rectified (target <= {RECTIFY_DAYS_TARGET:g}), and whether each target is met.",
        "hazard_loop",
        [
            "district_code",
            "hazards_found",
            "overdue_total",
            "overdue_rate",
            "meets_overdue_target",
            "median_days_found_to_rectified",
            "meets_days_target",
            "p90_days_found_to_rectified",
        ],
        order=[("overdue_rate", False)],
        filters=[("grain", "district")],
        width=12,
    ),
    table(
        "hazard_by_quarter",
        "Hazard closed loop by quarter found",
        "Per quarter in which the hazards were found: how many, how many closed, overdue rate, on-time rate.",
        "hazard_loop",
        [
            "found_quarter_label",
            "hazards_found",
            "hazards_closed",
            "overdue_rate",
            "on_time_rate",
            "meets_overdue_target",
        ],
        order=[("found_quarter_label", True)],
        filters=[("grain", "quarter")],
        width=6,
    ),
    table(
        "hazard_overdue_enterprises",
        "Enterprises with open overdue hazards",
        "Enterprises holding hazards past their rectification deadline and still open, most first (one row "
        "per enterprise and district of its hazards).",
        "hazard_loop",
        ["enterprise_id", "district_code", "overdue_open", "hazards_found", "overdue_rate"],
        order=[("overdue_open", False)],
        filters=[("grain", "enterprise")],
        limit=50,
        width=12,
    ),
    table(
        "hazard_by_domain",
        "Hazard closed loop by domain",
        "Per safety domain of the hazard: how many found, overdue rate and median days found to rectified "
        "against the targets. City-wide rows: a district analyst sees none (they carry no district).",
        "hazard_loop",
        ["domain_code", *HAZARD_TARGET_COLUMNS],
        order=[("hazards_found", False)],
        filters=[("grain", "domain")],
        width=6,
    ),
    table(
        "hazard_by_severity",
        "Hazard closed loop by severity",
        "Per severity (major / general): how many found, overdue rate and median days found to rectified against "
        "the targets. City-wide rows: a district analyst sees none.",
        "hazard_loop",
        ["severity", *HAZARD_TARGET_COLUMNS],
        order=[("hazards_found", False)],
        filters=[("grain", "severity")],
        width=6,
    ),
    Chart(
        "hazard_funnel",
        "Rectification funnel",
        "Hazards at each step of the closed loop (found, closed, accepted, rectified on time), summed over the "
        "districts in the filter.",
        "hazard_funnel",
        "funnel",
        {
            "groupby": ["stage"],
            "metric": sql_metric("SUM(hazards)", "hazards"),
            "adhoc_filters": [],
            "row_limit": 10,
            "sort_by_metric": True,
            "show_labels": True,
            "show_legend": False,
            "label_type": "key_value_percent",
        },
        {
            "columns": ["stage"],
            "metrics": [sql_metric("SUM(hazards)", "hazards")],
            "orderby": [[sql_metric("SUM(hazards)", "hazards"), False]],
            "row_limit": 10,
            "filters": [],
        },
        width=6,
    ),
    timeseries(
        "alerts_by_grade",
        "Device alert episodes by peak grade",
        "Alert episodes started per week, by the highest grade each reached (blue < yellow < orange < red).",
        "fct_device_alert",
        "start_date_local",
        [sql_metric("COUNT(*)", "episodes")],
        groupby="peak_grade",
        kind="bar",
    ),
    bars(
        "alerts_open_by_district",
        "Open alert episodes by district",
        "Alert episodes still open at the last reading, per district (districts with any alert episode).",
        "fct_device_alert",
        "district_code",
        sql_metric("SUM(CASE WHEN is_open THEN 1 ELSE 0 END)", "open episodes"),
    ),
    table(
        "device_gaps",
        "Devices with reporting gaps during alerts",
        "Devices whose alert episodes had hours without readings, most gap hours first.",
        "fct_device_alert",
        ["device_id", "device_type", "district_code", "alert_id", "gap_hours", "peak_grade"],
        order=[("gap_hours", False)],
        limit=50,
    ),
    timeseries(
        "response_weekly",
        "Fire/EMS response time per week (seconds)",
        "Median and 90th percentile of seconds from call to arrival on scene, per week (all districts; the "
        "district filter narrows it; medians of districts, not of all calls).",
        "mart_response_times",
        "week_start",
        [
            sql_metric(median("response_seconds_median"), "median"),
            sql_metric(median("response_seconds_p90"), "p90"),
        ],
    ),
    bars(
        "response_by_district",
        "Median response time by district (seconds)",
        "Per district: the median over the weeks of the weekly median seconds from call to arrival on scene.",
        "mart_response_times",
        "district_code",
        sql_metric(median("response_seconds_median"), "median seconds"),
        limit=100,
        width=12,
    ),
    table(
        "freshness",
        "Freshness per source",
        "When each source last loaded, how late it is against its expected schedule, and its status.",
        "mart_source_freshness",
        ["source", "department", "freshness_status", "last_loaded_at_utc", "lag_hours", "rows_loaded"],
        order=[("lag_over_expected_hours", False)],
        width=12,
    ),
    pie(
        "quarantine_reasons",
        "Quarantined rows by reason",
        "Rows held back from silver, by the reason recorded with each (all sources).",
        "mart_data_quality_by_reason",
        "reason",
        QUARANTINED,
        width=6,
    ),
    table(
        "gate_results",
        "Last quality gate per source",
        "Rows read / published / quarantined per source and the result of its last Great Expectations gate.",
        "mart_data_quality",
        [
            "source",
            "rows_read",
            "rows_published",
            "rows_quarantined",
            "quarantine_rate",
            "last_validation_status",
            "last_validation_failed_expectations",
        ],
        order=[("quarantine_rate", False)],
        width=6,
    ),
    table(
        "unmapped_codes",
        "Unmapped codes waiting for review",
        "Codes and free-text categories silver could not map to the city taxonomy, one row per source and "
        "code: rows waiting, when first and last seen, one example, and what to do (add it to the source's "
        "crosswalk or record a decision; the next silver run republishes the rows).",
        "mart_unmapped_codes",
        [
            "review_status",
            "source",
            "reason",
            "code",
            "rows_quarantined",
            "first_seen_at_utc",
            "last_seen_at_utc",
            "lookup",
            "example_source_record_id",
            "mapped_now",
        ],
        order=[("rows_quarantined", False)],
        limit=500,
        width=12,
    ),
]

DASHBOARDS = [
    Dashboard(
        "citysafe-risk-map",
        "Risk map",
        [["risk_map"], ["risk_levels", "risk_top_cells"], ["risk_backtest"]],
        filters=[("District", "mart_risk_map", DISTRICT_COLUMN)],
    ),
    Dashboard(
        "citysafe-trends",
        "Trends and forecasts",
        [
            ["incidents_weekly"],
            ["incidents_changes"],
            ["forecast_band", "forecast_band_district"],
            ["forecast_quality"],
        ],
        filters=[
            ("District", "mart_incident_trends", DISTRICT_COLUMN),
            ("Domain", "mart_incident_trends", "domain_code"),
        ],
        date_range=True,
    ),
    Dashboard(
        "citysafe-hazards",
        "Hazard closed loop",
        [
            ["hazard_by_district"],
            ["hazard_funnel", "hazard_by_quarter"],
            ["hazard_by_domain", "hazard_by_severity"],
            ["hazard_overdue_enterprises"],
        ],
        filters=[("District", "hazard_loop", DISTRICT_COLUMN)],
    ),
    Dashboard(
        "citysafe-devices",
        "Devices and early warning",
        [["alerts_by_grade"], ["alerts_open_by_district", "device_gaps"]],
        filters=[("District", "fct_device_alert", DISTRICT_COLUMN)],
        date_range=True,
    ),
    Dashboard(
        "citysafe-response-times",
        "Response times",
        [["response_weekly"], ["response_by_district"]],
        filters=[("District", "mart_response_times", DISTRICT_COLUMN)],
        date_range=True,
    ),
    Dashboard(
        "citysafe-data-health",
        "Data health",
        [["freshness"], ["quarantine_reasons", "gate_results"], ["unmapped_codes"]],
    ),
]


# --- the bundle ---------------------------------------------------------------------------------------------


def warehouse_rows(warehouse: Path, sql: str) -> list[tuple]:
    """Rows of one query on the warehouse, opened read-only and without access to server files."""
    import duckdb

    con = duckdb.connect(str(warehouse), read_only=True, config={"enable_external_access": False})
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _columns(warehouse: Path, dataset: Dataset) -> list[dict]:
    described = warehouse_rows(warehouse, f"describe {dataset.sql or f'select * from main.{dataset.key}'}")
    return [
        {
            "column_name": name,
            "type": kind,
            "is_dttm": kind.startswith(("DATE", "TIMESTAMP")),
            "groupby": True,
            "filterable": True,
            "is_active": True,
            "verbose_name": None,
            "description": None,
            "expression": None,
            "python_date_format": None,
            "extra": {},
        }
        for name, kind, *_ in described
    ]


def database_uri(warehouse: Path) -> str:
    return f"duckdb:///{warehouse}"


@dataclasses.dataclass(frozen=True)
class Target:
    """Where the charts query: the DuckDB warehouse file (default) or, in production, the PostgreSQL marts
    (`superset.warehouse_uri`, schema `superset.warehouse_schema`, handed over by pipeline/serve.py)."""

    uri: str | None = None
    schema: str = "marts"

    @classmethod
    def from_env(cls, environ=None) -> Target:
        env = os.environ if environ is None else environ
        return cls(
            env.get("CITYSAFE_SUPERSET_WAREHOUSE_URI") or None, env.get("CITYSAFE_SUPERSET_WAREHOUSE_SCHEMA") or "marts"
        )

    @property
    def is_postgres(self) -> bool:
        return bool(self.uri) and self.uri.startswith("postgresql")

    def sql(self, sql: str) -> str:
        if not self.is_postgres:
            return sql
        sql = sql.replace(BOUNDARY_RING["duckdb"], BOUNDARY_RING["postgresql"])
        return re.sub(r"\bmain\.", f"{self.schema}.", sql)


def _database(warehouse: Path, target: Target, db_uuid: str) -> dict:
    common = {
        "database_name": DATABASE_NAME,
        "cache_timeout": None,
        "expose_in_sqllab": True,
        "allow_run_async": False,
        "allow_ctas": False,
        "allow_cvas": False,
        "allow_dml": False,
        "allow_file_upload": False,
        "uuid": db_uuid,
        "version": VERSION,
        "is_managed_externally": True,
    }
    if target.is_postgres:
        # the password is not in the URI: provision.py hands it to the import from the environment;
        # every session is read-only whatever the role may do
        engine = {"connect_args": {"options": "-c default_transaction_read_only=on"}}
        return {**common, "sqlalchemy_uri": target.uri, "extra": {"engine_params": engine}}
    return {
        **common,
        "sqlalchemy_uri": database_uri(warehouse),
        # read-only, and no DuckDB function may read or write server files (read_text, COPY, ATTACH)
        "extra": {
            "engine_params": {"connect_args": {"read_only": True, "config": {"enable_external_access": False}}},
            "allows_virtual_table_explore": True,
        },
    }


def bundle(warehouse: Path, target: Target | None = None) -> dict[str, str]:
    """{path: YAML text} for Superset's ImportAssetsCommand. Dataset columns are read from the DuckDB
    warehouse file also when the charts query PostgreSQL (the published marts are the same tables)."""
    warehouse = Path(warehouse).resolve()
    target = target or Target()
    db_uuid = uid("database", DATABASE_NAME)
    files: dict[str, dict] = {
        "metadata.yaml": {"version": VERSION, "type": "assets", "timestamp": "2026-01-01T00:00:00+00:00"},
        "databases/citysafe_warehouse.yaml": _database(warehouse, target, db_uuid),
    }
    by_key = {d.key: d for d in DATASETS}
    for d in DATASETS:
        files[f"datasets/{d.key}.yaml"] = {
            "table_name": d.key,
            "schema": None if d.sql else (target.schema if target.is_postgres else "main"),
            "sql": target.sql(d.sql) if d.sql else None,
            "description": d.description,
            "main_dttm_col": None,
            "offset": 0,
            "cache_timeout": None,
            "filter_select_enabled": True,
            "params": None,
            "template_params": None,
            "extra": None,
            "uuid": d.uuid,
            "metrics": [
                {
                    "metric_name": "count",
                    "verbose_name": "rows",
                    "metric_type": "count",
                    "expression": "COUNT(*)",
                    "description": None,
                    "d3format": None,
                    "extra": {},
                    "warning_text": None,
                }
            ],
            "columns": _columns(warehouse, d),
            "version": VERSION,
            "database_uuid": db_uuid,
            "is_managed_externally": True,
        }
    for c in CHARTS:
        form = {**c.params, "viz_type": c.viz_type, "datasource": "0__table"}
        context = {
            "datasource": {"id": 0, "type": "table"},
            "force": False,
            "queries": [
                {
                    **c.query,
                    "extras": {"having": "", "where": ""},
                    "annotation_layers": [],
                    "series_columns": [],
                    "url_params": {},
                    "custom_params": {},
                    "custom_form_data": {},
                }
            ],
            "form_data": form,
            "result_format": "json",
            "result_type": "full",
        }
        files[f"charts/{c.key}.yaml"] = {
            "slice_name": c.title,
            "description": c.description,
            "viz_type": c.viz_type,
            "params": form,
            "query_context": json.dumps(context),
            "cache_timeout": None,
            "uuid": c.uuid,
            "version": VERSION,
            "dataset_uuid": by_key[c.dataset].uuid,
            "is_managed_externally": True,
        }
    charts = {c.key: c for c in CHARTS}
    for dash in DASHBOARDS:
        files[f"dashboards/{dash.slug}.yaml"] = _dashboard(dash, charts, by_key)
    return {path: yaml.safe_dump(body, sort_keys=True, allow_unicode=True) for path, body in files.items()}


def _dashboard(dash: Dashboard, charts: dict[str, Chart], datasets: dict[str, Dataset]) -> dict:
    position: dict = {
        "DASHBOARD_VERSION_KEY": "v2",
        "ROOT_ID": {"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]},
        "GRID_ID": {"type": "GRID", "id": "GRID_ID", "children": [], "parents": ["ROOT_ID"]},
        "HEADER_ID": {"type": "HEADER", "id": "HEADER_ID", "meta": {"text": dash.title}},
    }
    placeholder = 0
    for r, row in enumerate(dash.rows):
        row_id = f"ROW-{dash.slug}-{r}"
        position["GRID_ID"]["children"].append(row_id)
        position[row_id] = {
            "type": "ROW",
            "id": row_id,
            "children": [],
            "parents": ["ROOT_ID", "GRID_ID"],
            "meta": {"background": "BACKGROUND_TRANSPARENT"},
        }
        for key in row:
            c = charts[key]
            placeholder += 1
            chart_id = f"CHART-{key}"
            position[row_id]["children"].append(chart_id)
            position[chart_id] = {
                "type": "CHART",
                "id": chart_id,
                "children": [],
                "parents": ["ROOT_ID", "GRID_ID", row_id],
                "meta": {
                    "chartId": placeholder,  # replaced by the real id on import
                    "uuid": c.uuid,
                    "width": c.width,
                    "height": c.height,
                    "sliceName": c.title,
                },
            }
    native_filters = [
        {
            "id": f"NATIVE_FILTER-{dash.slug}-{column}",
            "name": name,
            "filterType": "filter_select",
            "targets": [{"datasetUuid": datasets[dataset].uuid, "column": {"name": column}}],
            "defaultDataMask": {"filterState": {}, "extraFormData": {}},
            "controlValues": {"multiSelect": True, "enableEmptyFilter": False, "searchAllOptions": False},
            "cascadeParentIds": [],
            "scope": {"rootPath": ["ROOT_ID"], "excluded": []},
            "type": "NATIVE_FILTER",
            "description": f"Only the chosen {name.lower()}s, on every chart that has a {column} column",
            "chartsInScope": [],
            "tabsInScope": [],
        }
        for name, dataset, column in dash.filters
    ]
    if dash.date_range:
        native_filters.append(
            {
                "id": f"NATIVE_FILTER-{dash.slug}-date-range",
                "name": "Date range",
                "filterType": "filter_time",
                "targets": [{}],
                "defaultDataMask": {"filterState": {}, "extraFormData": {}},
                "controlValues": {"enableEmptyFilter": False},
                "cascadeParentIds": [],
                "scope": {"rootPath": ["ROOT_ID"], "excluded": []},
                "type": "NATIVE_FILTER",
                "description": "Only the weeks in this range, on every chart with a time axis",
                "chartsInScope": [],
                "tabsInScope": [],
            }
        )
    return {
        "dashboard_title": dash.title,
        "slug": dash.slug,
        "description": None,
        "css": "",
        "position": position,
        "metadata": {
            "native_filter_configuration": native_filters,
            "color_scheme": "supersetColors",
            # the graded levels always in their own colours, on every chart of every dashboard
            "label_colors": GRADE_COLOURS,
            "refresh_frequency": 0,
            "timed_refresh_immune_slices": [],
            "expanded_slices": {},
            "cross_filters_enabled": False,
            "default_filters": "{}",
        },
        "uuid": dash.uuid,
        "version": VERSION,
        "is_managed_externally": True,
        "published": True,
    }
