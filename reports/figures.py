"""Every number of a quarter's report, computed by SQL from the report's frozen inputs (snapshot.py).

`compute(con, quarter, targets, district=None)` returns plain JSON-able data: the report renders it, the
tests compare it with the warehouse, and `figures.json` keeps it beside the PDF. Nothing here is typed in:
a figure the inputs cannot give is None and its section says "no data".

Definitions (city-local dates):
- incidents: unified incidents (fct_incident events) that occurred in the quarter, by domain and district.
- hazard overdue rate: of the hazards found in the quarter, the share past their rectification deadline
  (closed late, or still open past it) as of the data's date; cycle days: median days found -> rectified.
- device alerts: alert episodes that started in the quarter (fct_device_alert), by peak grade and type.
- response time: median seconds from call received to on scene, fire/EMS calls of the quarter.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import duckdb

from citysafe.config import REPO_ROOT
from citysafe.errors import ConfigurationError
from reports.quarters import Quarter

GRADES = ("red", "orange", "yellow", "blue")
ACTIONS_CSV = REPO_ROOT / "reference" / "report_actions.csv"
ACTION_COLUMNS = ("domain_code", "feature_pattern", "driver_en", "driver_zh", "action_en", "action_zh")
MIN_HAZARDS_FOR_RATE = 5  # a district's overdue rate is named as "highest" only with at least this many


def _rows(con, sql: str, params=()) -> list[dict]:
    cur = con.execute(sql, list(params))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _one(con, sql: str, params=()):
    r = con.execute(sql, list(params)).fetchone()
    return None if r is None else r[0]


def _has(con, table: str) -> bool:
    return bool(_one(con, "select count(*) from duckdb_tables() where table_name = ?", [table]))


def _district_clause(district: str | None, column: str = "district_code") -> tuple[str, list]:
    return (f" and {column} = ?", [district]) if district else ("", [])


def _change(value, before):
    if value is None or before is None:
        return None
    return {"abs": value - before, "pct": None if before == 0 else (value - before) / before}


# --- the quarter's key figures -------------------------------------------------------------------------


def _incidents(con, q: Quarter, district):
    if not _has(con, "incident_daily"):
        return None
    where, p = _district_clause(district)
    return _one(
        con, f"select sum(incidents) from incident_daily where day between ? and ?{where}", [q.start, q.end, *p]
    )


def _hazard_stats(con, q: Quarter, district):
    """(overdue rate, median days found -> rectified) of the hazards found in the quarter."""
    if not _has(con, "hazard"):
        return None, None
    where, p = _district_clause(district)
    n, rate, days = con.execute(
        "select count(*), avg(case when is_overdue then 1.0 else 0.0 end), median(days_found_to_rectified)\n"
        f"from hazard where found_date between ? and ?{where}",
        [q.start, q.end, *p],
    ).fetchone()
    return (rate if n else None), (float(days) if days is not None else None)


def _alerts(con, q: Quarter, district):
    if not _has(con, "device_alert"):
        return None
    where, p = _district_clause(district)
    return _one(
        con, f"select count(*) from device_alert where start_date_local between ? and ?{where}", [q.start, q.end, *p]
    )


def _response_minutes(con, q: Quarter, district):
    if not _has(con, "response_call"):
        return None
    where, p = _district_clause(district)
    seconds = _one(
        con,
        f"select median(response_seconds) from response_call where day between ? and ?{where}",
        [q.start, q.end, *p],
    )
    return None if seconds is None else float(seconds) / 60.0


def key_figures(con, q: Quarter, district=None) -> list[dict]:
    quarters = {"current": q, "previous": q.previous(), "year_before": q.year_before()}
    # a quarter outside the data's span has no figures (None), not zeros
    lo, hi = data_range(con)
    covered = {k: lo is not None and v.end >= lo and v.start <= hi for k, v in quarters.items()}
    out = []

    def add(key, unit, figure):
        values = {k: (figure(v) if covered[k] else None) for k, v in quarters.items()}
        cur = values["current"]
        out.append(
            {
                "key": key,
                "unit": unit,
                "value": cur,
                "previous": values["previous"],
                "year_before": values["year_before"],
                "vs_previous": _change(cur, values["previous"]),
                "vs_year_before": _change(cur, values["year_before"]),
            }
        )

    hazards = {quarter: _hazard_stats(con, quarter, district) for quarter in quarters.values()}
    add("incidents", "count", lambda quarter: _incidents(con, quarter, district))
    add("hazard_overdue_rate", "share", lambda quarter: hazards[quarter][0])
    add("hazard_cycle_days", "days", lambda quarter: hazards[quarter][1])
    add("device_alerts", "count", lambda quarter: _alerts(con, quarter, district))
    add("response_minutes", "minutes", lambda quarter: _response_minutes(con, quarter, district))
    return out


# --- what drove the changes ------------------------------------------------------------------------------


def incident_drivers(con, q: Quarter, district=None) -> dict:
    """By domain (this quarter, previous, a year before) and the district x domain that moved most."""
    if not _has(con, "incident_daily"):
        return {"by_domain": [], "top_mover": None}
    where, p = _district_clause(district, "i.district_code")
    prev, year = q.previous(), q.year_before()
    by_domain = _rows(
        con,
        "select i.domain_code, d.domain_name_en, d.domain_name_zh,\n"
        "  coalesce(sum(i.incidents) filter (where i.day between ? and ?), 0) as current,\n"
        "  coalesce(sum(i.incidents) filter (where i.day between ? and ?), 0) as previous,\n"
        "  coalesce(sum(i.incidents) filter (where i.day between ? and ?), 0) as year_before\n"
        "from incident_daily as i left join domain as d using (domain_code)\n"
        f"where i.domain_code is not null{where}\n"
        "group by all having current + previous + year_before > 0 order by current desc, i.domain_code",
        [q.start, q.end, prev.start, prev.end, year.start, year.end, *p],
    )
    movers = _rows(
        con,
        "select i.district_code, i.domain_code,\n"
        "  coalesce(sum(i.incidents) filter (where i.day between ? and ?), 0)\n"
        "  - coalesce(sum(i.incidents) filter (where i.day between ? and ?), 0) as change\n"
        "from incident_daily as i\n"
        f"where i.domain_code is not null and i.district_code is not null{where}\n"
        "group by all order by abs(change) desc, i.district_code, i.domain_code limit 1",
        [q.start, q.end, prev.start, prev.end, *p],
    )
    return {"by_domain": by_domain, "top_mover": movers[0] if movers and movers[0]["change"] else None}


def hazard_breakdowns(con, q: Quarter, district=None) -> dict:
    if not _has(con, "hazard"):
        return {"by_district": [], "by_domain": [], "enterprises": [], "as_of_date": None}
    where, p = _district_clause(district, "h.district_code")
    base = f"from hazard as h where h.found_date between ? and ?{where}"
    stats = (
        "count(*) as hazards, count(*) filter (where h.is_overdue) as overdue,\n"
        "  avg(case when h.is_overdue then 1.0 else 0.0 end) as overdue_rate,\n"
        "  median(h.days_found_to_rectified) as median_days, count(*) filter (where h.is_overdue_open) as overdue_open"
    )
    by_district = _rows(
        con,
        f"select h.district_code, {stats} {base} group by all order by overdue_rate desc, h.district_code",
        [q.start, q.end, *p],
    )
    by_domain = _rows(
        con,
        f"select h.domain_code, {stats} {base} group by all order by overdue_rate desc, h.domain_code",
        [q.start, q.end, *p],
    )
    enterprises = []
    if _has(con, "enterprise"):
        enterprises = _rows(
            con,
            "select h.enterprise_id, any_value(e.enterprise_name) as enterprise_name,\n"
            "  any_value(e.industry_name) as industry_name, any_value(h.district_code) as district_code,\n"
            "  count(*) filter (where h.is_overdue) as overdue, count(*) filter (where h.is_overdue_open) as overdue_open,\n"
            "  count(*) as hazards\n"
            "from hazard as h left join enterprise as e using (enterprise_id)\n"
            f"where h.found_date between ? and ?{where} and h.enterprise_id is not null\n"
            "group by h.enterprise_id having overdue > 0\n"
            "order by overdue desc, overdue_open desc, h.enterprise_id limit 10",
            [q.start, q.end, *p],
        )
    as_of = _one(con, "select max(as_of_date) from hazard")
    return {"by_district": by_district, "by_domain": by_domain, "enterprises": enterprises, "as_of_date": as_of}


def alert_breakdowns(con, q: Quarter, district=None) -> dict:
    if not _has(con, "device_alert"):
        return {"by_type_grade": [], "top": []}
    where, p = _district_clause(district)
    base = f"from device_alert where start_date_local between ? and ?{where}"
    by_type_grade = _rows(
        con,
        f"select device_type, peak_grade, count(*) as episodes {base} group by all order by device_type, peak_grade",
        [q.start, q.end, *p],
    )
    top = _rows(
        con,
        "select alert_id, device_id, device_type, measure, unit, district_code, start_date_local, peak_grade,\n"
        f"  peak_value, duration_hours, is_open {base}\n"
        "order by peak_grade_rank desc, duration_hours desc, alert_id limit 10",
        [q.start, q.end, *p],
    )
    return {"by_type_grade": by_type_grade, "top": top}


def response_by_district(con, q: Quarter, district=None) -> list[dict]:
    if not _has(con, "response_call"):
        return []
    where, p = _district_clause(district)
    return _rows(
        con,
        "select district_code, count(*) as calls, median(response_seconds) / 60.0 as median_minutes,\n"
        "  quantile_cont(response_seconds, 0.9) / 60.0 as p90_minutes\n"
        f"from response_call where day between ? and ?{where} and district_code is not null\n"
        "group by all order by median_minutes desc, district_code",
        [q.start, q.end, *p],
    )


# --- risk outlook -----------------------------------------------------------------------------------------


def load_actions(path: Path = ACTIONS_CSV) -> list[dict]:
    import csv

    with path.open(encoding="utf-8", newline="") as f:
        lines = [line for line in f if not line.startswith("#")]
    rules = list(csv.DictReader(lines))
    for n, rule in enumerate(rules, start=1):
        if None in rule or any(not (rule.get(k) or "").strip() for k in ACTION_COLUMNS):
            raise ConfigurationError(f"{path.name} rule {n}: every rule needs {', '.join(ACTION_COLUMNS)}")
        try:
            re.compile(rule["feature_pattern"])
        except re.error as exc:
            raise ConfigurationError(f"{path.name} rule {n}: feature_pattern: {exc}") from None
    return rules


def driver_of(feature: str | None, domain: str, actions: list[dict]) -> dict | None:
    """The first rule (domain-specific before '*', in file order) whose pattern matches the feature."""
    if not feature:
        return None
    for scope in (domain, "*"):
        for rule in actions:
            if rule["domain_code"] == scope and re.search(rule["feature_pattern"], feature):
                return rule
    return None


def risk_outlook(con, district=None, actions: list[dict] | None = None) -> dict:
    if not _has(con, "risk_map") or not _one(con, "select count(*) from risk_map"):
        return {"target_week_start": None, "cells": [], "top": [], "levels": {}, "actions": [], "method": None}
    actions = load_actions() if actions is None else actions
    where, p = _district_clause(district)
    cells = _rows(
        con,
        f"select h3_cell, district_code, risk_level, risk_score, boundary_geojson from risk_map where scope = 'ALL'{where}",
        p,
    )
    top = _rows(
        con,
        "select risk_rank, h3_cell, district_code, risk_level, expected_count, contribution_1_feature,\n"
        "  contribution_2_feature, contribution_3_feature\n"
        f"from risk_map where scope = 'ALL'{where} order by risk_rank limit 20",
        p,
    )
    for row in top:
        rule = driver_of(row["contribution_1_feature"], "*", actions)
        row["driver_en"] = rule["driver_en"] if rule else row["contribution_1_feature"]
        row["driver_zh"] = rule["driver_zh"] if rule else row["contribution_1_feature"]
    levels = dict(
        con.execute(f"select risk_level, count(*) from risk_map where scope = 'ALL'{where} group by 1", p).fetchall()
    )
    # one recommended action per scope (all incidents and each domain's map): the main driver of its five
    # highest-ranked cells (the most frequent first contribution; ties to the feature named first)
    recommended = []
    top5 = _rows(
        con,
        "select scope, h3_cell, district_code, contribution_1_feature as feature from risk_map\n"
        f"where true{where} qualify row_number() over (partition by scope order by risk_rank) <= 5\n"
        "order by scope = 'ALL' desc, scope, risk_rank",
        p,
    )
    for scope in dict.fromkeys(r["scope"] for r in top5):
        rows = [r for r in top5 if r["scope"] == scope]
        features = [r["feature"] for r in rows if r["feature"]]
        if not features:
            continue
        feature = max(sorted(set(features)), key=features.count)
        rule = driver_of(feature, scope, actions)
        if rule is None:
            continue
        recommended.append(
            {
                "scope": scope,
                "cells": [r["h3_cell"] for r in rows],
                "districts": sorted({r["district_code"] for r in rows if r["district_code"]}),
                "feature": feature,
                **{k: rule[k] for k in ("driver_en", "driver_zh", "action_en", "action_zh")},
            }
        )
    meta = con.execute(
        "select any_value(target_week_start), any_value(method) from risk_map where scope = 'ALL'"
    ).fetchone()
    return {
        "target_week_start": meta[0],
        "method": meta[1],
        "cells": cells,
        "top": top,
        "levels": {g: levels.get(g, 0) for g in GRADES},
        "actions": recommended,
    }


# --- trends and forecasts ----------------------------------------------------------------------------------


def trends(con, q: Quarter, district=None) -> dict:
    """Weekly incidents per domain (complete Monday-to-Sunday weeks) over the four quarters to the quarter's
    end, and the newest forecast band; when that forecast starts after the quarter, the weeks up to its
    origin are shown too, so the line meets the band."""
    weekly, band, origin = [], [], None
    if _has(con, "forecast"):
        level = "district" if district else "city"
        where, p = _district_clause(district)
        origin = _one(
            con,
            f"select max(origin_week_start) from forecast where measure = 'incidents' and level = ?{where}",
            [level, *p],
        )
        if origin is not None:
            band = _rows(
                con,
                "select target_week_start, domain_code, method, p10, p50, p90 from forecast\n"
                f"where measure = 'incidents' and level = ? and origin_week_start = ?{where}\n"
                "order by domain_code, target_week_start",
                [level, origin, *p],
            )
    if _has(con, "incident_daily"):
        where, p = _district_clause(district)
        lo, _ = data_range(con)
        first = max(q.previous().previous().previous().start, lo)  # no week the data only half covers
        last = max(q.end, origin + dt.timedelta(days=6)) if origin is not None else q.end
        weekly = _rows(
            con,
            "select date_trunc('week', day)::date as week_start, domain_code, sum(incidents) as incidents\n"
            f"from incident_daily where day between ? and ? and domain_code is not null{where}\n"
            "group by 1, 2 having week_start >= ? and week_start + 6 <= ? order by week_start, domain_code",
            [first, last, *p, first, last],
        )
    return {"weekly": weekly, "band": band, "origin_week_start": origin}


# --- appendix ------------------------------------------------------------------------------------------


def appendix(con) -> dict:
    out = {"risk_backtest": [], "forecast_metrics": [], "freshness": [], "quality": [], "model_run": None}
    if _has(con, "risk_backtest"):
        out["risk_backtest"] = _rows(
            con,
            "select method, pai_5, pai_1, pei_5, weeks, is_published from risk_backtest where scope = 'ALL'\n"
            "order by is_published desc, pai_5 desc nulls last, method",
        )
    if _has(con, "forecast_metrics"):
        out["forecast_metrics"] = _rows(
            con,
            "select measure, method, avg(mase) as mase, avg(coverage_80) as coverage_80\n"
            "from forecast_metrics group by all order by measure, mase nulls last, method",
        )
    if _has(con, "freshness"):
        out["freshness"] = _rows(
            con, "select source, freshness_status, last_loaded_at_utc, lag_hours from freshness order by source"
        )
    if _has(con, "data_quality"):
        out["quality"] = _rows(
            con,
            "select source, rows_read, rows_published, rows_quarantined, quarantine_rate, top_quarantine_reason,\n"
            "  last_validation_status from data_quality where rows_read > 0 order by source",
        )
    if _has(con, "model_run"):
        runs = _rows(con, "select model_run_key, run_id, created_at, mlflow_run_id from model_run")
        out["model_run"] = runs[0] if runs else None
    return out


# --- everything ------------------------------------------------------------------------------------------------


def districts(con) -> list[dict]:
    """The districts of the inputs with their names and outline (WKT)."""
    return _rows(con, "select * from district order by district_code") if _has(con, "district") else []


def names(con) -> dict:
    """Codes -> names (English and Chinese) of the districts (without their outline) and domains."""
    by_code = {d["district_code"]: {k: v for k, v in d.items() if k != "geometry_wkt"} for d in districts(con)}
    domains = {r["domain_code"]: r for r in _rows(con, "select * from domain")} if _has(con, "domain") else {}
    return {"districts": by_code, "domains": domains}


def data_range(con) -> tuple:
    if not _has(con, "incident_daily"):
        return None, None
    return con.execute("select min(day), max(day) from incident_daily").fetchone()


def compute(con: duckdb.DuckDBPyConnection, q: Quarter, targets: dict, district: str | None = None) -> dict:
    return {
        "quarter": q.label,
        "start": q.start,
        "end": q.end,
        "previous": q.previous().label,
        "year_before": q.year_before().label,
        "district": district,
        "targets": targets,
        "names": names(con),
        "key_figures": key_figures(con, q, district),
        "incidents": incident_drivers(con, q, district),
        "hazards": hazard_breakdowns(con, q, district),
        "alerts": alert_breakdowns(con, q, district),
        "response": response_by_district(con, q, district),
        "risk": risk_outlook(con, district),
        "trends": trends(con, q, district),
        "appendix": appendix(con),
    }


def to_json(figures: dict) -> str:
    """Stable JSON (dates as ISO text, floats as written): equal figures give equal bytes. The map's cell
    outlines are left out (they are in the frozen inputs); their count stays."""
    risk = {**figures["risk"], "cells": len(figures["risk"]["cells"])}
    return json.dumps({**figures, "risk": risk}, sort_keys=True, ensure_ascii=False, indent=1, default=str)
