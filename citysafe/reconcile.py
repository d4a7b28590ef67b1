"""Reconcile the lake with the synthetic city's truth (truth/expected_counts.json, plus one
truth/increments/<day>/expected_counts.json per day added after the window: the counts add up).

Checks the lake's state, not one run's deltas, so it holds after any number of idempotent re-runs:
bronze rows = rows delivered; silver rows = published; quarantine rows by reason = bad rows by kind;
bronze - silver - quarantine = duplicates; silver rows without an H3 cell = published without cell.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc

from citysafe import delta_io
from citysafe.config import Settings


def _rows(path, columns, source=None):
    table = delta_io.table_rows(delta_io.open_table(path), columns)
    if source is not None:
        table = table.filter(pc.equal(table["source"], source))
    return table


def bronze_rows(settings: Settings, source: str) -> int:
    return delta_io.table_rows(delta_io.open_table(settings.bronze_dir / source), ["_batch_id"]).num_rows


def lake_counts(settings: Settings, source: str, silver_table: str) -> dict:
    bronze = bronze_rows(settings, source)
    path = settings.silver_dir / silver_table
    has_cell = "h3_cell" in [f.name for f in delta_io.open_table(path).schema().fields]
    silver = _rows(path, ["source", "h3_cell"] if has_cell else ["source"], source)
    quarantine = _rows(settings.silver_dir / "quarantine", ["source", "reason"], source)
    reasons = Counter(quarantine["reason"].to_pylist())
    return {
        "rows_delivered": bronze,
        "published": silver.num_rows,
        "published_without_cell": silver["h3_cell"].null_count if has_cell else 0,
        "quarantined": dict(sorted(reasons.items())),
        "duplicates": bronze - silver.num_rows - quarantine.num_rows,
    }


COUNT_KEYS = ("files", "rows_delivered", "duplicates", "published", "published_without_cell")


def expected_counts(synthetic_root: Path) -> tuple[dict, list[str]]:
    """The generator's expected counts per source: the window's plus those of every day added since
    (a daily increment's counts are what its files add to the lake). Returns them and the days added."""
    truth = json.loads((synthetic_root / "truth" / "expected_counts.json").read_text(encoding="utf-8"))["sources"]
    days = sorted(synthetic_root.glob("truth/increments/*/expected_counts.json"))
    for path in days:
        for source, day in json.loads(path.read_text(encoding="utf-8"))["sources"].items():
            total = truth.setdefault(source, {k: 0 for k in COUNT_KEYS} | {"quarantined": {}})
            for key in COUNT_KEYS:
                total[key] = total.get(key, 0) + day.get(key, 0)
            for kind, n in day.get("quarantined", {}).items():
                total["quarantined"][kind] = total["quarantined"].get(kind, 0) + n
    return truth, [p.parent.name for p in days]


def against_truth(settings: Settings, sources: dict[str, str], bronze_only=()) -> dict:
    """Full reconciliation for `sources` ({source: its silver table}); rows delivered = rows in bronze
    for `bronze_only` (sources without a silver path yet)."""
    truth_path = settings.synthetic_root / "truth" / "expected_counts.json"
    truth, days = expected_counts(settings.synthetic_root)
    report = {"truth": str(truth_path), "days_added": days, "sources": {}}
    missing = {
        source: f"{source}: not in the lake yet (no Delta table at {path}): ingest and silver it first"
        for source, path in [
            *((s, settings.bronze_dir / s) for s in (*bronze_only, *sources)),
            *((s, settings.silver_dir / t) for s, t in sources.items()),
        ]
        if not (path / "_delta_log").is_dir()
    }
    for source, problem in missing.items():
        report["sources"][source] = {
            "ok": False,
            "actual": {},
            "expected": truth.get(source, {}),
            "problems": [problem],
        }
    bronze_only = [s for s in bronze_only if s not in missing]
    sources = {s: t for s, t in sources.items() if s not in missing}
    for source in bronze_only:
        expected = truth[source]["rows_delivered"]
        actual = bronze_rows(settings, source)
        problems = [] if actual == expected else [f"{source}.rows_delivered: bronze {actual} != truth {expected}"]
        report["sources"][source] = {
            "ok": not problems,
            "actual": {"rows_delivered": actual},
            "expected": {"rows_delivered": expected},
            "problems": problems,
        }
    for source, silver_table in sources.items():
        expected = truth[source]
        actual = lake_counts(settings, source, silver_table)
        problems = []
        for key in ("rows_delivered", "published", "published_without_cell", "duplicates"):
            if key in expected and expected[key] != actual[key]:
                problems.append(f"{source}.{key}: lake {actual[key]} != truth {expected[key]}")
        want_q = {k: v for k, v in expected.get("quarantined", {}).items() if v}
        if want_q != actual["quarantined"]:
            problems.append(f"{source}.quarantined: lake {actual['quarantined']} != truth {want_q}")
        report["sources"][source] = {"ok": not problems, "actual": actual, "expected": expected, "problems": problems}
    report["ok"] = all(item["ok"] for item in report["sources"].values())
    return report
