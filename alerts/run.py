"""Early warning, end to end: evaluate the rules at a time, advance the alerts, deliver what is due.

evaluate(settings, spark_factory, as_of)   `citysafe alerts` and the hourly alerts DAG
list_alerts(settings, ...)                 `citysafe alerts list`
acknowledge(settings, ..., alert_id, by)   `citysafe alerts ack ID`
notify_pipeline_failure(settings, ...)     Airflow's failure callback (`citysafe alerts notify-failure`)
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from zoneinfo import ZoneInfo

from citysafe import delta_io, warehouse
from citysafe.config import ConfigError, Settings
from citysafe.errors import EXIT_DELIVERY, CitySafeError

from . import conditions, lifecycle, notify, store
from .rules import load_rules

log = logging.getLogger(__name__)


class DeliveryError(CitySafeError):
    """Some notifications could not be delivered after their retries (recorded; retried on the next run)."""

    exit_code = EXIT_DELIVERY


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def evaluation_time(settings: Settings, as_of: dt.datetime | None) -> dt.datetime:
    """`--as-of` if given, else the configured clock: now, or the newest data in the warehouse."""
    if as_of is not None:
        return as_of if as_of.tzinfo else as_of.replace(tzinfo=dt.UTC)
    if settings.alerts.clock == "latest_data":
        latest = conditions.latest_data_time(settings)
        if latest is not None:
            return latest
    return now()


def _district_names(settings: Settings) -> dict[str, tuple[str, str]]:
    """District code -> (English, Chinese) name; MartsError (exit 6) when the marts were never built."""
    rows = warehouse.query(settings, "select district_code, district_name_en, district_name_zh from dim_district")
    return {r.district_code: (r.district_name_en, r.district_name_zh) for r in rows.itertuples()}


def _routed_events(alerts: dict[str, dict], by_rule: dict, cfg, as_of: dt.datetime):
    """(alert, rule, event, channel) for every notifiable event up to `as_of` and every channel it goes to."""
    for alert in sorted(alerts.values(), key=lambda a: (a["opened_at"], a["alert_id"])):
        rule = by_rule.get(alert["rule_id"])
        if rule is None:
            continue
        for event in lifecycle.events(alert):
            if event["event"] in cfg.notify_events and event["at"] <= as_of:
                for channel in notify.route(event["level"], alert["district_code"], cfg.channels):
                    yield alert, rule, event, channel


def deliver(
    settings: Settings, spark_factory, alerts: dict[str, dict], as_of: dt.datetime, rules, districts: dict
) -> dict:
    """Send every due event of every alert to its channels, once: the ledger (alert_delivery) says what
    was sent; a failed delivery is recorded and tried again next time; events older than
    notify_within_hours at first sight are recorded as not sent. The ledger is written however the loop
    ends, so what went out is never sent again."""
    cfg = settings.alerts
    spec = store.tables(settings.alerts_dir)["alert_delivery"]
    ledger = store.read_deliveries(spec)
    tz = ZoneInfo(settings.timezone)
    urls: dict[str, str] = {}  # channel -> its URL with the secrets filled in, resolved once
    stale_before = as_of - dt.timedelta(hours=cfg.notify_within_hours)
    rows, counts = [], Counter()
    try:
        for alert, rule, event, channel in _routed_events(alerts, {r.id: r for r in rules}, cfg, as_of):
            done = ledger.get((alert["alert_id"], event["event_key"], channel.name))
            if done is not None and done["status"] in ("sent", "not_sent_stale"):
                continue
            title, body = notify.message(alert, event, rule, districts, tz, channel.language)
            row = {
                "alert_id": alert["alert_id"],
                "event_key": event["event_key"],
                "channel": channel.name,
                "event_at": event["at"],
                "level": event["level"],
                "title": title,
                "body": body,
                "error": None,
            }
            if done is None and event["at"] < stale_before:
                rows.append({**row, "status": "not_sent_stale", "attempts": 0, "last_attempt_at": None})
                counts["not_sent_stale"] += 1
                continue
            if channel.name not in urls:
                urls[channel.name] = notify.resolve_url(channel, settings.alerts_outbox)
            ok, attempts, error = notify.send(
                urls[channel.name], title, body, event["level"], cfg.retries, cfg.retry_backoff_seconds
            )
            rows.append(
                {
                    **row,
                    "status": "sent" if ok else "failed",
                    "attempts": (done["attempts"] if done else 0) + attempts,
                    "last_attempt_at": now(),
                    "error": error,
                }
            )
            counts["sent" if ok else "failed"] += 1
            if not ok:
                log.warning(
                    "alert %s %s -> %s: not delivered: %s", alert["alert_id"], event["event_key"], channel.name, error
                )
    finally:
        store.write(spark_factory, rows, spec)
    return dict(counts)


def evaluate(settings: Settings, spark_factory, as_of: dt.datetime | None = None) -> dict:
    """Evaluate every rule at `as_of`, write the alerts that changed, deliver what is due."""
    districts = _district_names(settings)
    rules = load_rules(settings)
    at = evaluation_time(settings, as_of)
    specs = store.tables(settings.alerts_dir)
    stored = store.read_alerts(specs["alert"])
    found = conditions.episodes(settings.warehouse_path, rules, settings.timezone, at)
    changed, counts = lifecycle.advance(stored, found, at, {r.id for r in rules})
    store.write(spark_factory, changed, specs["alert"])
    alerts = {**stored, **{r["alert_id"]: r for r in changed}}
    delivered = deliver(settings, spark_factory, alerts, at, rules, districts)
    open_now = Counter((a["rule_id"], a["level"]) for a in alerts.values() if a["resolved_at"] is None)
    summary = {
        "as_of": at.isoformat(),
        "episodes": len(found),
        **counts,
        "alerts_changed": len(changed),
        "alert_table_version": delta_io.version(specs["alert"]),
        "open_by_rule_level": {f"{rule}/{level}": n for (rule, level), n in sorted(open_now.items())},
        "deliveries": delivered,
    }
    log.info(
        "alerts at %s: %s opened, %s escalated, %s resolved; deliveries %s",
        at.isoformat(),
        counts["opened"],
        counts["escalated"],
        counts["resolved"],
        delivered or "none due",
    )
    if delivered.get("failed"):
        raise DeliveryError(
            f"{delivered['failed']} notification(s) not delivered after {settings.alerts.retries + 1} attempts "
            f"(recorded in {specs['alert_delivery'].path}; the next run tries again)"
        )
    return summary


def list_alerts(settings: Settings, *, include_resolved: bool = False, district: str | None = None) -> list[dict]:
    specs = store.tables(settings.alerts_dir)
    rows = list(store.read_alerts(specs["alert"]).values())
    rows = [r for r in rows if (include_resolved or r["resolved_at"] is None)]
    if district:
        rows = [r for r in rows if r["district_code"] == district]
    return sorted(rows, key=lambda r: (-r["level_rank"], r["opened_at"], r["alert_id"]))


def acknowledge(settings: Settings, spark_factory, alert_id: str, by: str, note: str | None = None) -> dict:
    specs = store.tables(settings.alerts_dir)
    stored = store.read_alerts(specs["alert"])
    matches = [a for a in stored if a.startswith(alert_id)] if len(alert_id) >= 6 else []
    if alert_id in stored:
        matches = [alert_id]
    if len(matches) != 1:
        raise ConfigError(
            f"no alert {alert_id!r}" if not matches else f"alert id {alert_id!r} is ambiguous ({len(matches)} alerts)"
        )
    row = stored[matches[0]]
    if row["acknowledged_by"] == by and row["status"] in ("acknowledged", "resolved"):
        return row  # acknowledging twice changes nothing
    updated = lifecycle.acknowledge(row, by, note, now())
    store.write(spark_factory, [updated], specs["alert"])
    return updated


def notify_pipeline_failure(
    settings: Settings, dag_id: str, task_id: str, airflow_run: str, try_number: int, log_url: str | None
) -> int:
    """Tell the data stewards' channels (pipeline_failures: true) that an Airflow task failed. Returns how
    many channels got it; raises DeliveryError when one did not."""
    cfg = settings.alerts
    channels = [c for c in cfg.channels if c.pipeline_failures]
    if not channels:
        log.warning("no alert channel has pipeline_failures: true; nobody is told about the failure")
        return 0
    title = f"[ORANGE] Pipeline task failed: {dag_id}.{task_id} try {try_number} / 【橙色】数据管道任务失败"
    body = "\n".join(
        [
            f"What: Airflow task {task_id} of DAG {dag_id} failed (run {airflow_run}, try {try_number}).",
            f"Log: {log_url or 'see the Airflow UI'}",
            "What to do: data steward: read the task log; the exit code says why (citysafe --help lists them); "
            "fix and clear the task, re-running is safe.",
            "",
            f"内容：DAG {dag_id} 的任务 {task_id} 运行失败（{airflow_run}，第 {try_number} 次）。",
            "处置要求：数据管理员查看任务日志，按退出码排查后重新运行（重跑是安全的）。",
        ]
    )
    failed = []
    for ch in channels:
        ok, _, error = notify.send(
            notify.resolve_url(ch, settings.alerts_outbox),
            title,
            body,
            "orange",
            cfg.retries,
            cfg.retry_backoff_seconds,
        )
        if not ok:
            failed.append(f"{ch.name}: {error}")
    if failed:
        raise DeliveryError(f"pipeline failure notice not delivered to {'; '.join(failed)}")
    return len(channels)
