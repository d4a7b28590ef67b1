"""How well the real-data crosswalks cover the full real datasets (sources/real_*.yaml).

    .venv/pipeline/bin/python scripts/real_mapping_report.py                      # real_data_root (full data)
    .venv/pipeline/bin/python scripts/real_mapping_report.py --data-root tests/data/real
    .venv/pipeline/bin/python scripts/real_mapping_report.py real_chicago_crimes --top 20
    .venv/pipeline/bin/python scripts/real_mapping_report.py --json var/real_mapping_report.json

The delivered files are parsed with citysafe.formats (as bronze does) and each row's code is computed
by the `code:` section of each source's YAML. Per source: rows, rows with a mapped code and the mapping rate
(over all rows, and over the rows that have a code), rows a steward decided are out of scope or
unclassifiable (reference/crosswalks/decisions/), distinct codes, and whether every code occurring
>= 10 times is handled: mapped to a subcategory, or decided out of scope / unclassifiable. Then the most
frequent unmapped codes with the steward's decision.

Exit status 1 when a code occurring >= 10 times is not handled (undecided or a taxonomy gap), or a
source cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from citysafe import code_mapping
from citysafe.config import load_settings
from citysafe.sources import load_registry


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def _short(text: str | None, width: int) -> str:
    text = text or ""
    return text if len(text) <= width else text[: width - 1] + "…"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="*", help="real source names (default: every one with a code system)")
    parser.add_argument("--data-root", type=Path, help="folder of the real datasets (default: real_data_root)")
    parser.add_argument("--top", type=int, default=5, help="unmapped codes listed per source (default 5)")
    parser.add_argument("--json", type=Path, help="also write the full figures as JSON here")
    args = parser.parse_args(argv)

    root = (args.data_root or load_settings().real_data_root).resolve()
    registry = load_registry()
    specs = code_mapping.code_specs(registry)
    unknown = sorted(set(args.sources) - set(specs))
    if unknown:
        print(f"no code system configured for: {', '.join(unknown)} (known: {', '.join(specs)})", file=sys.stderr)
        return 2
    names = args.sources or list(specs)
    print(f"Real-data code mapping report: {root}")
    print(
        f"('out/uncl': rows decided out of scope / unclassifiable; '>=10 handled': every code occurring "
        f">= {code_mapping.FREQUENT} times is mapped or decided out of scope / unclassifiable)\n"
    )
    header = (
        f"{'source':<36} {'crosswalk':<30} {'rows':>8} {'mapped':>8} {'rate':>6} {'coded':>6} "
        f"{'out/uncl':>15} {'codes':>11} {'>=10 handled':>13}"
    )
    print(header)
    print("-" * len(header))
    results, failed, details = {}, False, []
    for name in names:
        started = time.perf_counter()
        try:
            stats = code_mapping.mapping_stats(name, code_mapping.read_delivered(registry[name], root))
        except Exception as exc:  # noqa: BLE001 - report every source, then fail
            print(f"{name:<36} ERROR {type(exc).__name__}: {exc}")
            failed = True
            continue
        results[name] = {**stats.to_dict(), "seconds": round(time.perf_counter() - started, 2)}
        handled = stats.frequent_codes - len(stats.frequent_open)
        verdict = "yes" if stats.frequent_all_handled else f"NO ({len(stats.frequent_open)})"
        frequent = f"{verdict} {handled}/{stats.frequent_codes}" if stats.frequent_codes else "n/a (none)"
        failed |= not stats.frequent_all_handled
        decided = f"{stats.rows_by_decision.get('out_of_scope', 0)}/{stats.rows_by_decision.get('unclassifiable', 0)}"
        print(
            f"{name:<36} {stats.crosswalk:<30} {stats.rows:>8} {stats.rows_mapped:>8} "
            f"{_pct(stats.mapping_rate):>6} {_pct(stats.coded_mapping_rate):>6} {decided:>15} "
            f"{stats.distinct_mapped:>5}/{stats.distinct_codes:<5} {frequent:>13}"
        )
        lines = []
        for code, count in stats.unmapped[: args.top]:
            note = code_mapping.review_note(stats.crosswalk, code) or (
                "rows without a code" if code == code_mapping.EMPTY else "NO DECISION"
            )
            lines.append(f"    {count:>7}  {_short(code, 44):<44}  {_short(note, 90)}")
        if len(stats.unmapped) > args.top:
            rest = stats.unmapped[args.top :]
            lines.append(f"    {sum(n for _, n in rest):>7}  ({len(rest)} more unmapped codes)")
        for code, count in stats.frequent_open:
            lines.append(f"    NOT HANDLED, >= {code_mapping.FREQUENT} rows: {code!r} ({count})")
        details.append((name, stats, lines))

    print("\nTop unmapped codes (rows, code, steward note):")
    for name, stats, lines in details:
        print(
            f"  {name} -> {stats.crosswalk}: {stats.rows - stats.rows_mapped} unmapped rows in "
            f"{len(stats.unmapped)} codes"
        )
        print("\n".join(lines) if lines else "    (none)")
    no_codes = {n: why for n, why in code_mapping.no_code_system(registry).items() if not args.sources}
    if no_codes:
        print(
            "\nReal sources without incident codes (nothing to map): "
            + ", ".join(f"{n} ({why})" for n, why in no_codes.items())
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"data_root": str(root), "sources": results}, indent=2, ensure_ascii=False))
        print(f"\nJSON written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
