"""The early-warning Delta tables, declared once: `alert` (one row per alert, its lifecycle) and
`alert_delivery` (the ledger: one row per alert event per channel). All writes go through citysafe.delta_io."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from citysafe import delta_io
from citysafe.delta_io import Column, TableSpec
from citysafe.storage import as_path

C = Column

ALERT_COLUMNS = (
    C("alert_id", "string", nullable=False, description="hash of rule, subject and opening time"),
    C("rule_id", "string", nullable=False, description="reference/alert_rules.yaml"),
    C("subject_type", "string", nullable=False, description="device / cell / hazard / source"),
    C("subject_id", "string", nullable=False),
    C("district_code", "string", description="NULL for city-wide subjects (a source)"),
    C("h3_cell", "string"),
    C("status", "string", nullable=False, description="open / escalated / acknowledged / resolved"),
    C("level", "string", nullable=False, description="blue / yellow / orange / red (current)"),
    C("level_rank", "int", nullable=False, description="1 blue .. 4 red"),
    C("first_level", "string", nullable=False),
    C("stage", "string", description="hazards: reminder / overdue / long_overdue"),
    C("opened_at", "timestamp", nullable=False),
    C("escalated_at", "timestamp", description="the latest rise of level"),
    C("escalation_count", "int", nullable=False),
    C("level_history", "string", nullable=False, description="JSON [[time, level, stage], ...]"),
    C("acknowledged_at", "timestamp"),
    C("acknowledged_by", "string"),
    C("ack_note", "string"),
    C("resolved_at", "timestamp"),
    C("resolution", "string"),
    C("evidence", "string", nullable=False, description="JSON: the values behind the alert"),
    C("updated_at", "timestamp", nullable=False, description="time of its latest lifecycle event"),
)

DELIVERY_COLUMNS = (
    C("alert_id", "string", nullable=False),
    C("event_key", "string", nullable=False, description="opened / escalated:N / resolved"),
    C("channel", "string", nullable=False, description="config alerts.channels[].name"),
    C("event_at", "timestamp", nullable=False),
    C("level", "string", nullable=False),
    C("status", "string", nullable=False, description="sent / failed (retried next run) / not_sent_stale"),
    C("attempts", "int", nullable=False),
    C("last_attempt_at", "timestamp"),
    C("error", "string"),
    C("title", "string", nullable=False),
    C("body", "string", nullable=False),
)


def tables(alerts_dir: Path) -> dict[str, TableSpec]:
    return {
        "alert": TableSpec("alerts.alert", as_path(alerts_dir) / "alert", ALERT_COLUMNS, key=("alert_id",)),
        "alert_delivery": TableSpec(
            "alerts.alert_delivery",
            as_path(alerts_dir) / "alert_delivery",
            DELIVERY_COLUMNS,
            key=("alert_id", "event_key", "channel"),
        ),
    }


def _records(spec: TableSpec) -> list[dict]:
    """Every row as a dict: NULL -> None, timestamps -> aware UTC datetimes (Arrow's own rows: going
    through pandas cost ~1.5 s for a year of alerts and deliveries at scale 1)."""
    if delta_io.version(spec) is None:
        return []
    stamps = [c.name for c in spec.columns if c.type == "timestamp"]
    out = delta_io.read_arrow(spec).to_pylist()
    for rec in out:
        for name in stamps:
            if rec[name] is not None:
                rec[name] = rec[name].astimezone(dt.UTC)
    return out


def read_alerts(spec: TableSpec) -> dict[str, dict]:
    return {r["alert_id"]: r for r in _records(spec)}


def read_deliveries(spec: TableSpec) -> dict[tuple[str, str, str], dict]:
    return {(r["alert_id"], r["event_key"], r["channel"]): r for r in _records(spec)}


def frame(rows: list[dict], spec: TableSpec) -> pd.DataFrame:
    data = pd.DataFrame(rows, columns=spec.column_names)
    for c in spec.columns:
        if c.type == "timestamp":
            data[c.name] = pd.to_datetime(data[c.name], utc=True)
        elif c.type == "int":
            data[c.name] = data[c.name].astype("int32")
    return data


def write(spark_factory, rows: list[dict], spec: TableSpec) -> delta_io.WriteResult | None:
    """Upsert `rows` (changed rows only); nothing to write touches neither the engine nor the table."""
    delta_io.ensure_table(spec)
    if not rows:
        return None
    return delta_io.sync_rows(spark_factory(), frame(rows, spec), spec, delete_missing=False)
