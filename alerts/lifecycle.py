"""Alert lifecycle: from episodes and the stored alerts to the alerts' new state and their events.

Pure functions of their inputs (no I/O), so the rules of the lifecycle are tested directly:
- an alert is one episode of one rule for one subject; its id is a hash of (rule, subject, opening time),
  so there is one alert per subject and rule at a time and evaluating again finds the same alert;
- status: open -> escalated (its level rose) -> acknowledged (someone took it) -> resolved;
  an escalation after an acknowledgement sets it back to escalated (someone must take it again);
- the state at `as_of` only uses what happened up to `as_of`, and a stored alert never moves backwards:
  evaluating an older hour again (a backfill) changes nothing that a newer evaluation recorded;
- a stored alert whose condition is gone from the data (e.g. a late rectification record, a cell no longer
  red in a newer map) is resolved at `as_of`;
- the events (opened, escalated:N, resolved) are derived from each alert's level history, so delivering
  them is a reconciliation against the delivery ledger: nothing is sent twice, nothing is lost.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from citysafe.labels import level_rank

from .conditions import Episode, hazard_state_texts

NO_LONGER_HOLDS = "condition no longer holds in the data"


def alert_id(ep: Episode) -> str:
    key = f"{ep.rule_id}|{ep.subject_type}|{ep.subject_id}|{ep.opened_at.isoformat()}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def _progress(row: dict) -> tuple[int, int]:
    return (int(row["escalation_count"]), 1 if row["resolved_at"] is not None else 0)


def state_at(ep: Episode, as_of: dt.datetime) -> dict | None:
    """The alert row for this episode as it stood at `as_of` (None: not opened yet)."""
    steps = [s for s in ep.steps if s[0] <= as_of]
    if not steps:
        return None
    resolved = ep.resolved_at if ep.resolved_at is not None and ep.resolved_at <= as_of else None
    stage = ep.stage_names[len(steps) - 1] if ep.stage_names else None
    evidence = dict(ep.evidence)
    if stage:
        evidence.update(stage=stage, **hazard_state_texts(stage))
    history = [
        [at.isoformat(), level, ep.stage_names[i] if ep.stage_names else None] for i, (at, level) in enumerate(steps)
    ]
    level = steps[-1][1]
    return {
        "alert_id": alert_id(ep),
        "rule_id": ep.rule_id,
        "subject_type": ep.subject_type,
        "subject_id": ep.subject_id,
        "district_code": ep.district_code,
        "h3_cell": ep.h3_cell,
        "status": "resolved" if resolved else ("escalated" if len(steps) > 1 else "open"),
        "level": level,
        "level_rank": level_rank(level),
        "first_level": steps[0][1],
        "stage": stage,
        "opened_at": steps[0][0],
        "escalated_at": steps[-1][0] if len(steps) > 1 else None,
        "escalation_count": len(steps) - 1,
        "level_history": json.dumps(history),
        "acknowledged_at": None,
        "acknowledged_by": None,
        "ack_note": None,
        "resolved_at": resolved,
        "resolution": ep.resolution if resolved else None,
        "evidence": json.dumps(evidence, sort_keys=True, ensure_ascii=False),
        "updated_at": max(x for x in (steps[-1][0], resolved) if x is not None),
    }


def advance(
    stored: dict[str, dict], episodes: list[Episode], as_of: dt.datetime, rule_ids: set[str]
) -> tuple[list[dict], dict[str, int]]:
    """The alert rows that change at `as_of` (new or progressed), and counts of what happened.

    `stored`: the alert table by alert_id. `rule_ids`: the rules evaluated (alerts of other rules are
    left alone)."""
    changed: list[dict] = []
    counts = {"opened": 0, "escalated": 0, "resolved": 0, "unchanged": 0}
    current: set[str] = set()
    for ep in episodes:
        row = state_at(ep, as_of)
        if row is None:
            continue
        current.add(row["alert_id"])
        prev = stored.get(row["alert_id"])
        if prev is None:
            changed.append(row)
            counts["opened"] += 1
            counts["escalated"] += row["escalation_count"]
            counts["resolved"] += row["resolved_at"] is not None
            continue
        if _progress(row) <= _progress(prev):
            counts["unchanged"] += 1
            continue
        for key in ("acknowledged_at", "acknowledged_by", "ack_note"):
            row[key] = prev[key]  # who took it stays; an escalation makes it `escalated` again
        counts["escalated"] += row["escalation_count"] - int(prev["escalation_count"])
        counts["resolved"] += row["resolved_at"] is not None and prev["resolved_at"] is None
        changed.append(row)
    for aid, prev in stored.items():
        if (
            prev["rule_id"] in rule_ids
            and prev["resolved_at"] is None
            and aid not in current
            and prev["opened_at"] <= as_of
        ):
            at = max(as_of, prev["updated_at"])
            changed.append(
                {**prev, "status": "resolved", "resolved_at": at, "resolution": NO_LONGER_HOLDS, "updated_at": at}
            )
            counts["resolved"] += 1
    return changed, counts


def acknowledge(row: dict, by: str, note: str | None, at: dt.datetime) -> dict:
    """`citysafe alerts ack`: someone has taken the alert (a resolved alert stays resolved)."""
    status = row["status"] if row["resolved_at"] is not None else "acknowledged"
    return {
        **row,
        "status": status,
        "acknowledged_at": at,
        "acknowledged_by": by,
        "ack_note": note,
        "updated_at": max(at, row["updated_at"]),
    }


def events(row: dict) -> list[dict]:
    """The notifiable events of an alert so far: opened, escalated:1.., resolved."""
    out = []
    for i, (at, level, stage) in enumerate(json.loads(row["level_history"])):
        out.append(
            {
                "event_key": "opened" if i == 0 else f"escalated:{i}",
                "event": "opened" if i == 0 else "escalated",
                "at": dt.datetime.fromisoformat(at),
                "level": level,
                "stage": stage,
            }
        )
    if row["resolved_at"] is not None:
        out.append(
            {
                "event_key": "resolved",
                "event": "resolved",
                "at": row["resolved_at"],
                "level": row["level"],
                "stage": None,
            }
        )
    return out
