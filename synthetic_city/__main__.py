"""python -m synthetic_city --out DIR --scale S --seed N [...]  |  --out DIR --next-day / --day YYYY-MM-DD"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import date
from pathlib import Path

from .generator import generate
from .increment import IncrementError, generate_day


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m synthetic_city",
        description="Generate the synthetic city Jiangcheng: department deliveries, "
        "reference data and truth (deterministic for given arguments).",
    )
    ap.add_argument(
        "--out", required=True, type=Path, help="output directory (its generator-owned subfolders are replaced)"
    )
    ap.add_argument(
        "--scale", type=float, default=0.02, help="size; 1.0 = about one year of a mid-size city (default 0.02)"
    )
    ap.add_argument("--seed", type=int, default=20260101, help="random seed (default 20260101)")
    ap.add_argument(
        "--start-date", type=date.fromisoformat, default=date(2025, 1, 1), help="first day (default 2025-01-01)"
    )
    ap.add_argument("--days", type=int, default=365, help="number of days covered (default 365)")
    ap.add_argument("--timezone", default="Asia/Shanghai", help="IANA time zone of the city (default Asia/Shanghai)")
    ap.add_argument("--h3-resolution", type=int, default=8, help="H3 resolution of the oracle intensity (default 8)")
    ap.add_argument("--quiet", action="store_true", help="no progress messages")
    day = ap.add_mutually_exclusive_group()
    day.add_argument(
        "--next-day",
        action="store_true",
        help="add the day after the last one generated to the city in --out (new files only; the other "
        "arguments come from that city's truth)",
    )
    day.add_argument(
        "--day", type=date.fromisoformat, help="add this day (YYYY-MM-DD): the next one, or one already added"
    )
    a = ap.parse_args(argv)
    if not a.quiet:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(relativeCreated)9.0fms %(message)s")
    if a.next_day or a.day:
        try:
            result = generate_day(a.out, a.day)
        except IncrementError as exc:
            print(f"python -m synthetic_city: error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps({k: v for k, v in result.items() if k != "seconds"}, indent=2, ensure_ascii=False))
        return 0
    counts = generate(
        a.out,
        scale=a.scale,
        seed=a.seed,
        start_date=a.start_date,
        days=a.days,
        timezone=a.timezone,
        h3_resolution=a.h3_resolution,
    )
    print(json.dumps(counts["sources"], indent=2, sort_keys=True, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
