"""The conditions behind the alert rules, read from the served warehouse as episodes.

An episode is one stretch of time during which a rule's condition holds for one subject (a device, a
cell, a hazard, a source): when it started, at which level, when its level rose, and when (if yet) it
ended. Episodes are computed from everything the warehouse knows; `alerts.lifecycle` cuts them at the
evaluation time, so evaluating any past hour again gives the same answer (backfills are idempotent).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import types
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd

from citysafe import warehouse
from citysafe.labels import DEVICE_TYPES_ZH, LEVELS, LEVELS_ZH, SEVERITY_ZH, level_rank

from .rules import HAZARD_STAGES, Rule

UTC = dt.UTC


@dataclasses.dataclass(frozen=True)
class Episode:
    rule_id: str
    subject_type: str
    subject_id: str
    district_code: str | None
    h3_cell: str | None
    steps: tuple[tuple[dt.datetime, str], ...]  # (when, level): the opening level, then each rise
    resolved_at: dt.datetime | None = None  # None: still holds at the end of the data
    resolution: str | None = None
    evidence: dict = dataclasses.field(default_factory=dict)
    stage_names: tuple[str, ...] = ()  # per step, what it means (hazards: reminder, overdue, long_overdue)

    @property
    def opened_at(self) -> dt.datetime:
        return self.steps[0][0]


def _utc(value) -> dt.datetime | None:
    if isinstance(value, dt.datetime) and not isinstance(value, pd.Timestamp):  # a DuckDB row's value
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if value is None or pd.isna(value):
        return None
    ts = pd.Timestamp(value)
    ts = ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)
    return ts.to_pydatetime()


def _local_midnight(day, tz: ZoneInfo) -> dt.datetime:
    """The start of a local calendar day, in UTC."""
    day = pd.Timestamp(day).date()
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(UTC)


def _fmt(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def _table_exists(con, name: str) -> bool:
    return bool(
        con.execute("select count(*) from information_schema.tables where table_name = ?", [name]).fetchone()[0]
    )


# --- device thresholds -------------------------------------------------------------------------------


def device_grade(con, rule: Rule, tz: ZoneInfo) -> list[Episode]:
    """One episode per fct_device_alert episode that reaches min_level: it opens the first hour the device's
    grade is at or above min_level and rises with the grade (the hours come from the hourly alert state)."""
    min_rank = level_rank(rule.params["min_level"])
    frame = con.execute(
        """
        with firsts as (
            select alert_id, alert_grade_rank as grade_rank, min(hour_utc) as first_hour_utc
            from int_device_hourly_alert_state
            where alert_id is not null and alert_grade_rank >= ?
            group by alert_id, alert_grade_rank
        )
        select a.alert_id, a.device_id, a.device_type, a.measure, a.unit, a.district_code, a.h3_cell,
               a.peak_value, a.peak_grade, a.end_hour_utc, a.end_reason, a.start_hour_local,
               f.grade_rank, f.first_hour_utc
        from fct_device_alert a
        join firsts f using (alert_id)
        where a.peak_grade_rank >= ?
        order by a.alert_id, f.first_hour_utc, f.grade_rank
        """,
        [min_rank, min_rank],
    )
    columns = [d[0] for d in frame.description]
    out = []
    # Plain rows grouped in order (the query sorts by alert_id): a pandas group per episode cost ~2 s
    # for the ~15k episodes of a year at scale 1.
    for _, group in itertools.groupby(frame.fetchall(), key=lambda row: row[0]):
        rows = [dict(zip(columns, row, strict=True)) for row in group]
        first = types.SimpleNamespace(**rows[0])
        steps, top = [], 0
        for r in rows:
            if r["grade_rank"] > top:
                steps.append((_utc(r["first_hour_utc"]), LEVELS[r["grade_rank"] - 1]))
                top = r["grade_rank"]
        grade = first.peak_grade
        evidence = {
            "device_id": first.device_id,
            "device_type": str(first.device_type).replace("_", " "),
            "device_type_zh": DEVICE_TYPES_ZH.get(first.device_type, first.device_type),
            "measure": str(first.measure).replace("_", " "),
            "peak_value": _fmt(float(first.peak_value)),
            "unit": first.unit or "",
            "grade": grade,
            "grade_zh": LEVELS_ZH[grade],
            "start_local": str(first.start_hour_local)[:16],
            "episode": first.alert_id,
        }
        ended = _utc(first.end_hour_utc)
        out.append(
            Episode(
                rule.id,
                "device",
                str(first.device_id),
                first.district_code,
                first.h3_cell,
                tuple(steps),
                resolved_at=ended,
                resolution=(f"reading back below threshold ({first.end_reason})" if ended else None),
                evidence=evidence,
            )
        )
    return out


# --- model risk levels --------------------------------------------------------------------------------


def risk_level(con, rule: Rule, tz: ZoneInfo) -> list[Episode]:
    """Cells of the newest published risk map at the rule's level: each opens at the start of the map's
    target week (local). A cell no longer at that level in a newer map drops out, which resolves it."""
    if not _table_exists(con, "mart_risk_map"):
        return []
    frame = con.execute(
        """
        select scope, h3_cell, district_code, target_week_start, expected_count, risk_rank, method
        from mart_risk_map
        where risk_level = ? and scope in (select unnest(?::varchar[]))
        order by scope, h3_cell
        """,
        [rule.params["risk_level"], list(rule.params["scopes"])],
    ).df()
    out = []
    for r in frame.itertuples():
        opened = _local_midnight(r.target_week_start, tz)
        out.append(
            Episode(
                rule.id,
                "cell",
                f"{r.scope}:{r.h3_cell}",
                r.district_code,
                r.h3_cell,
                ((opened, rule.params["level"]),),
                evidence={
                    "h3_cell": r.h3_cell,
                    "scope": r.scope,
                    "target_week_start": str(pd.Timestamp(r.target_week_start).date()),
                    "expected_count": _fmt(float(r.expected_count), 2),
                    "risk_rank": int(r.risk_rank),
                    "method": r.method,
                },
            )
        )
    return out


# --- hazard rectification deadlines --------------------------------------------------------------------

HAZARD_STATE = {
    "reminder": ("deadline in 72 hours", "72小时内到期"),
    "overdue": ("overdue", "已逾期"),
    "long_overdue": ("long overdue", "逾期较久"),
}


def hazard_deadline(con, rule: Rule, tz: ZoneInfo) -> list[Episode]:
    """Per open-at-the-time hazard: a reminder `remind_hours_before` the end of the deadline day (or when
    the hazard is found, if later), escalations at the end of the deadline day and `escalate_after_days_
    overdue` days later; resolved at the start of its closing day (rectified, or accepted). A hazard
    closed by its reminder time never opens an alert. Day-granular dates count from local midnight."""
    hours_before = float(rule.params["remind_hours_before"])
    overdue_days = float(rule.params["escalate_after_days_overdue"])
    levels = rule.params["levels"]
    frame = con.execute(
        """
        select hazard_id, enterprise_id, district_code, h3_cell, severity, found_date, rectify_deadline,
               closed_date
        from fct_hazard
        where rectify_deadline is not null
        order by hazard_id
        """
    ).df()
    out = []
    for r in frame.itertuples():
        deadline_end = _local_midnight(pd.Timestamp(r.rectify_deadline) + pd.Timedelta(days=1), tz)
        found = _local_midnight(r.found_date, tz) if not pd.isna(r.found_date) else None
        remind = deadline_end - dt.timedelta(hours=hours_before)
        closed = _local_midnight(r.closed_date, tz) if not pd.isna(r.closed_date) else None
        times = {
            "reminder": remind,
            "overdue": deadline_end,
            "long_overdue": deadline_end + dt.timedelta(days=overdue_days),
        }
        if found is not None:  # found late: no stage before the hazard was known
            times = {k: max(v, found) for k, v in times.items()}
        kept, names = [], []
        for name in HAZARD_STAGES:
            at = times[name]
            if closed is not None and at >= closed:
                break
            if kept and at == kept[-1][0]:  # found at or after a stage's time: it opens at the later stage
                kept[-1], names[-1] = (at, levels[name]), name
                continue
            kept.append((at, levels[name]))
            names.append(name)
        if not kept:
            continue
        severity = str(r.severity)
        out.append(
            Episode(
                rule.id,
                "hazard",
                str(r.hazard_id),
                r.district_code,
                r.h3_cell,
                tuple(kept),
                resolved_at=closed,
                resolution="rectified" if closed else None,
                evidence={
                    "hazard_id": r.hazard_id,
                    "enterprise_id": r.enterprise_id or "",
                    "severity": severity,
                    "severity_zh": SEVERITY_ZH.get(severity, severity),
                    "rectify_deadline": str(pd.Timestamp(r.rectify_deadline).date()),
                    "found_date": str(pd.Timestamp(r.found_date).date()) if not pd.isna(r.found_date) else "",
                },
                stage_names=tuple(names),
            )
        )
    return out


def hazard_state_texts(stage: str) -> dict:
    en, zh = HAZARD_STATE[stage]
    return {"state": en, "state_zh": zh}


# --- source freshness ----------------------------------------------------------------------------------


def source_freshness(con, rule: Rule, tz: ZoneInfo, as_of: dt.datetime) -> list[Episode]:
    """Sources whose last load is older than their error limit at `as_of` (sources never loaded are not
    part of this city). A new load ends the condition, which resolves the alert."""
    frame = con.execute(
        """
        select source, department, last_loaded_at_utc, freshness_error_after_hours
        from mart_source_freshness
        where last_loaded_at_utc is not null and freshness_error_after_hours is not null
        order by source
        """
    ).df()
    out = []
    for r in frame.itertuples():
        loaded = _utc(r.last_loaded_at_utc)
        stale_from = loaded + dt.timedelta(hours=float(r.freshness_error_after_hours))
        if stale_from > as_of:
            continue
        out.append(
            Episode(
                rule.id,
                "source",
                str(r.source),
                None,
                None,
                ((stale_from, rule.params["level"]),),
                evidence={
                    "source": r.source,
                    "department": r.department,
                    "last_loaded_at_utc": loaded.strftime("%Y-%m-%d %H:%M UTC"),
                    "lag_hours": _fmt((as_of - loaded).total_seconds() / 3600, 0),
                    "error_after_hours": int(r.freshness_error_after_hours),
                },
            )
        )
    return out


def episodes(warehouse_path, rules: tuple[Rule, ...], tz_name: str, as_of: dt.datetime) -> list[Episode]:
    """Every rule's episodes, read from the served warehouse (read-only)."""
    tz = ZoneInfo(tz_name)
    out: list[Episode] = []
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        for rule in rules:
            if rule.condition == "device_grade":
                out += device_grade(con, rule, tz)
            elif rule.condition == "risk_level":
                out += risk_level(con, rule, tz)
            elif rule.condition == "hazard_deadline":
                out += hazard_deadline(con, rule, tz)
            elif rule.condition == "source_freshness":
                out += source_freshness(con, rule, tz, as_of)
    return out


def latest_data_time(settings) -> dt.datetime | None:
    """The newest reading or record in the warehouse (the `latest_data` clock): the end of the newest
    device hour, or the newest incident, whichever is later."""
    latest = warehouse.query(
        settings,
        """
        select greatest(
            (select max(hour_utc) + interval 1 hour from fct_device_reading_hourly),
            (select max(occurred_at_utc) from fct_incident)
        ) as latest
        """,
    )
    return _utc(latest["latest"].iloc[0])
