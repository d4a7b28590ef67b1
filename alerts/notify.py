"""Notifications through Apprise: routing by district and level, the message, delivery with retries.

Routing (config `alerts.channels`): a channel receives an alert when its district is among the channel's
`districts` (or the channel takes `all`) and its level is at least the channel's `min_level`; a red
alert goes to every channel. City-wide subjects (a stale source) have no district: channels taking `all`.

The message names what happened, where, how severe, since when and what to do, and how to acknowledge.
Channel URLs may hold ${VAR} placeholders, filled from the environment when sending (secrets never sit in
config). `outbox` is a file channel: one text file per message under <lake_root>/alerts/outbox/.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import apprise
from apprise.decorators import notify as apprise_plugin

from citysafe.config import AlertChannel, ConfigError
from citysafe.labels import LEVELS_ZH, level_rank

from .conditions import hazard_state_texts
from .rules import Rule

log = logging.getLogger(__name__)

OUTBOX_SCHEMA = "csoutbox"
NOTIFY_TYPE = {"blue": apprise.NotifyType.INFO, "yellow": apprise.NotifyType.WARNING}
SUBJECT_EN = {"device": "device", "cell": "grid cell", "hazard": "hazard", "source": "data source"}
SUBJECT_ZH = {"device": "设备", "cell": "网格", "hazard": "隐患", "source": "数据源"}
RULE_TITLES = {
    "device_grade": ("Device threshold", "设备阈值预警"),
    "risk_level": ("Risk map", "风险网格预警"),
    "hazard_deadline": ("Hazard rectification", "隐患整改预警"),
    "source_freshness": ("Data freshness", "数据时效预警"),
}


@apprise_plugin(on=OUTBOX_SCHEMA, name="CitySafe outbox (files)")
def _outbox(body: str, title: str, notify_type: str, meta: dict, *args, **kwargs) -> bool:
    """The file channel: csoutbox://localhost/<absolute folder>; the file name comes from the title's id."""
    folder = Path(meta.get("fullpath") or "")
    if not folder.is_absolute():
        return False
    folder.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", title.split(" / ")[0]).strip("_")[:120]
    match = re.search(r"#([0-9a-f]{16})(?: (\S+))?", title)
    if match:
        name = f"{match.group(1)}_{match.group(2) or 'event'}".replace(":", "-")
    (folder / f"{name}.txt").write_text(f"{title}\n\n{body}\n", encoding="utf-8")
    return True


def resolve_url(channel: AlertChannel, outbox: Path) -> str:
    """The channel's URL with ${VAR} filled from the environment (missing variable: a config error)."""
    if channel.url == "outbox":
        return f"{OUTBOX_SCHEMA}://localhost{outbox.resolve()}"

    def fill(match: re.Match) -> str:
        value = os.environ.get(match.group(1))
        if value is None:
            raise ConfigError(f"alert channel {channel.name}: environment variable {match.group(1)} is not set")
        return value

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", fill, channel.url)


def route(level: str, district: str | None, channels: tuple[AlertChannel, ...]) -> list[AlertChannel]:
    if level == "red":
        return list(channels)
    out = []
    for ch in channels:
        if level_rank(level) < level_rank(ch.min_level):
            continue
        if ch.districts != "all" and (district is None or district not in ch.districts):
            continue
        out.append(ch)
    return out


def _local(at: dt.datetime, tz: ZoneInfo) -> str:
    return at.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def message(
    alert: dict, event: dict, rule: Rule, districts: dict[str, tuple[str, str]], tz: ZoneInfo, language: str
) -> tuple[str, str]:
    """(title, body) of one event of one alert, in English, Chinese or both."""
    evidence = json.loads(alert["evidence"])
    if event.get("stage"):
        evidence.update(hazard_state_texts(event["stage"]))
    level = event["level"]
    en_name, zh_name = districts.get(alert["district_code"] or "", (None, None))
    where_en = ", ".join(
        x for x in (en_name or alert["district_code"], alert["h3_cell"] and f"cell {alert['h3_cell']}") if x
    )
    where_zh = "，".join(
        x for x in (zh_name or alert["district_code"], alert["h3_cell"] and f"网格 {alert['h3_cell']}") if x
    )
    verb_en = {"opened": "NEW", "escalated": "ESCALATED", "resolved": "RESOLVED"}[event["event"]]
    verb_zh = {"opened": "新预警", "escalated": "预警升级", "resolved": "预警解除"}[event["event"]]
    rule_en, rule_zh = RULE_TITLES[rule.condition]
    tag = f"#{alert['alert_id']} {event['event_key']}"
    first = _local(alert["opened_at"], tz)
    later = event["event"] != "opened"
    first_en = f"; first alerted {first}" if later else ""
    first_zh = f"；首次预警 {first}" if later else ""
    en_title = f"[{level.upper()}] {verb_en}: {rule_en}, {SUBJECT_EN[alert['subject_type']]} {alert['subject_id']}"
    zh_title = f"【{LEVELS_ZH[level]}】{verb_zh}：{rule_zh}，{SUBJECT_ZH[alert['subject_type']]} {alert['subject_id']}"
    en = [
        f"What: {rule.text('what', 'en', evidence)}",
        f"Where: {where_en or 'city-wide'}",
        f"Level: {level.upper()} since {_local(event['at'], tz)} local time{first_en}",
        f"What to do: {rule.text('action', 'en', evidence)}",
        f"Acknowledge: citysafe alerts ack {alert['alert_id']} --by <your name>",
    ]
    zh = [
        f"内容：{rule.text('what', 'zh', evidence)}",
        f"地点：{where_zh or '全市'}",
        f"等级：{LEVELS_ZH[level]}，自 {_local(event['at'], tz)}（当地时间）{first_zh}",
        f"处置要求：{rule.text('action', 'zh', evidence)}",
        f"签收：citysafe alerts ack {alert['alert_id']} --by <姓名>",
    ]
    if event["event"] == "resolved":
        en.insert(3, f"Resolved: {alert['resolution']}")
        zh.insert(3, f"解除原因：{alert['resolution']}")
    if language == "en":
        return f"{en_title} {tag}", "\n".join(en)
    if language == "zh":
        return f"{zh_title} {tag}", "\n".join(zh)
    return f"{en_title} / {zh_title} {tag}", "\n".join(en + [""] + zh)


def send(url: str, title: str, body: str, level: str, retries: int, backoff: float) -> tuple[bool, int, str | None]:
    """Deliver one message, retrying with exponential backoff: (delivered, attempts, last error)."""
    error = None
    for attempt in range(1, retries + 2):
        sender = apprise.Apprise()
        if not sender.add(url):
            return False, attempt, "not a valid Apprise URL"
        try:
            if sender.notify(title=title, body=body, notify_type=NOTIFY_TYPE.get(level, apprise.NotifyType.FAILURE)):
                return True, attempt, None
            error = "the channel refused or did not answer"
        except Exception as exc:  # noqa: BLE001 - a plugin failing is a failed delivery, retried
            error = f"{type(exc).__name__}: {exc}"
        if attempt <= retries:
            delay = backoff * 2 ** (attempt - 1)
            log.warning("delivery failed (%s); attempt %s of %s, next in %.1f s", error, attempt, retries + 1, delay)
            time.sleep(delay)
    return False, retries + 1, error
