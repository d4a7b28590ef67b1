"""The alert rules (reference/alert_rules.yaml): loaded and checked, with errors naming file, rule and field."""

from __future__ import annotations

import dataclasses
import string
from pathlib import Path

import yaml

from citysafe.config import REPO_ROOT, ConfigError
from citysafe.labels import LEVELS

# condition -> (its parameters and their kinds, the evidence keys its texts may use)
CONDITIONS: dict[str, tuple[dict[str, str], frozenset[str]]] = {
    "device_grade": (
        {"min_level": "level"},
        frozenset("device_id device_type device_type_zh measure peak_value unit grade grade_zh start_local".split()),
    ),
    "risk_level": (
        {"risk_level": "level", "scopes": "list", "level": "level"},
        frozenset("h3_cell scope target_week_start expected_count risk_rank method".split()),
    ),
    "hazard_deadline": (
        {"remind_hours_before": "number", "escalate_after_days_overdue": "number", "levels": "stage_levels"},
        frozenset("hazard_id enterprise_id severity severity_zh rectify_deadline found_date state state_zh".split()),
    ),
    "source_freshness": (
        {"level": "level"},
        frozenset("source department last_loaded_at_utc lag_hours error_after_hours".split()),
    ),
}
SUBJECTS = {"device_grade": "device", "risk_level": "cell", "hazard_deadline": "hazard", "source_freshness": "source"}
HAZARD_STAGES = ("reminder", "overdue", "long_overdue")
LANGS = ("en", "zh")


@dataclasses.dataclass(frozen=True)
class Rule:
    id: str
    condition: str
    subject: str
    params: dict
    what: dict[str, str]
    action: dict[str, str]

    def text(self, key: str, lang: str, evidence: dict) -> str:
        template = getattr(self, key)[lang]
        return template.format_map({k: "" if v is None else v for k, v in evidence.items()})


def rules_path(settings) -> Path:
    path = Path(settings.alerts.rules)
    return path if path.is_absolute() else REPO_ROOT / path


def _placeholders(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field}


def _check_param(where: str, name: str, kind: str, value) -> None:
    if kind == "level" and value not in LEVELS:
        raise ConfigError(f"{where}: field {name}: {value!r} is not a level ({', '.join(LEVELS)})")
    if kind == "number" and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
        raise ConfigError(f"{where}: field {name}: {value!r} is not a non-negative number")
    if kind == "list" and not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        raise ConfigError(f"{where}: field {name}: must be a non-empty list of names")
    if kind == "stage_levels":
        if not isinstance(value, dict) or sorted(value) != sorted(HAZARD_STAGES):
            raise ConfigError(f"{where}: field {name}: must give a level for each of {', '.join(HAZARD_STAGES)}")
        for stage, level in value.items():
            _check_param(where, f"{name}.{stage}", "level", level)
        ranks = [LEVELS.index(value[s]) for s in HAZARD_STAGES]
        if ranks != sorted(ranks):
            raise ConfigError(f"{where}: field {name}: levels must not decrease from reminder to long_overdue")


def parse_rules(data, source: str) -> tuple[Rule, ...]:
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list) or not data["rules"]:
        raise ConfigError(f"{source}: expected a non-empty list under `rules:`")
    rules, seen = [], set()
    for i, entry in enumerate(data["rules"], start=1):
        where = f"{source}: rule {entry.get('id', f'#{i}') if isinstance(entry, dict) else f'#{i}'}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a mapping")
        for field in ("id", "condition", "what", "action"):
            if field not in entry:
                raise ConfigError(f"{where}: field {field} is missing")
        if entry["id"] in seen:
            raise ConfigError(f"{where}: field id: duplicate rule id")
        seen.add(entry["id"])
        condition = entry["condition"]
        if condition not in CONDITIONS:
            raise ConfigError(f"{where}: field condition: {condition!r} is unknown (known: {', '.join(CONDITIONS)})")
        kinds, evidence = CONDITIONS[condition]
        subject = entry.get("subject", SUBJECTS[condition])
        if subject != SUBJECTS[condition]:
            raise ConfigError(f"{where}: field subject: condition {condition} is about a {SUBJECTS[condition]}")
        params = {k: v for k, v in entry.items() if k not in ("id", "condition", "subject", "what", "action")}
        unknown = sorted(set(params) - set(kinds))
        if unknown:
            raise ConfigError(f"{where}: field {unknown[0]}: not a parameter of {condition} ({', '.join(kinds)})")
        missing = sorted(set(kinds) - set(params))
        if missing:
            raise ConfigError(f"{where}: field {missing[0]} is missing")
        for name, kind in kinds.items():
            _check_param(where, name, kind, params[name])
        texts = {}
        for field in ("what", "action"):
            value = entry[field]
            if not isinstance(value, dict) or sorted(value) != sorted(LANGS):
                raise ConfigError(f"{where}: field {field}: needs an `en` and a `zh` text")
            for lang in LANGS:
                bad = sorted(_placeholders(value[lang]) - evidence)
                if bad:
                    raise ConfigError(
                        f"{where}: field {field}.{lang}: unknown placeholder {{{bad[0]}}} "
                        f"(this condition gives: {', '.join(sorted(evidence))})"
                    )
            texts[field] = dict(value)
        rules.append(Rule(entry["id"], condition, subject, params, texts["what"], texts["action"]))
    return tuple(rules)


def load_rules(settings) -> tuple[Rule, ...]:
    path = rules_path(settings)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"alert rules file {path} not found (config alerts.rules)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_rules(data, str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path))
