"""python -m synthetic_city --out DIR --scale S --seed N [...]"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import date
from pathlib import Path

from .generator import generate


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
    a = ap.parse_args(argv)
    if not a.quiet:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(relativeCreated)9.0fms %(message)s")
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
