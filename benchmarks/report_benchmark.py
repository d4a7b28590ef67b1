"""Time one quarter's risk report in both languages on a large warehouse (the issue's target: under 60 s
at scale 1), step by step: freezing the inputs, the figures, the charts, HTML and PDF per language.

    .venv/pipeline/bin/python benchmarks/report_benchmark.py \\
        --warehouse var/benchmark_ml/scale_1_days_365_2025-11-23/warehouse/marts.duckdb [--quarter 2025Q3]

The reports go to a scratch lake (deleted afterwards unless --keep); the served warehouse is only read.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", type=Path, required=True)
    parser.add_argument("--quarter", default=None, help="default: the latest complete quarter of the data")
    parser.add_argument("--district", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the scratch lake and print where it is")
    args = parser.parse_args()
    if not args.warehouse.is_file():
        print(f"report_benchmark: error: warehouse {args.warehouse} not found", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    scratch = Path(tempfile.mkdtemp(prefix="citysafe-report-bench-"))
    os.environ["CITYSAFE_LAKE_ROOT"] = str(scratch / "lake")
    os.environ["CITYSAFE_WAREHOUSE_PATH"] = str(args.warehouse.resolve())
    from citysafe.config import load_settings
    from reports import build

    settings = load_settings()
    t0 = time.monotonic()
    result = build.generate(settings, args.quarter, district=args.district, on_step=lambda _m: None)
    total = time.monotonic() - t0
    prov = result["provenance"]
    print(f"warehouse {args.warehouse} (build {prov['warehouse'].get('full_build_run_id')})")
    print(f"quarter {result['quarter']}: rows frozen " + ", ".join(f"{k}={v}" for k, v in prov["rows"].items()))
    for step, seconds in result["seconds"].items():
        if step != "total":
            print(f"  {step:12s} {seconds:6.2f} s")
    print(f"  {'total':12s} {total:6.2f} s  (target < {TARGET_SECONDS:.0f} s: ratio {total / TARGET_SECONDS:.2f})")
    for f in result["files"]:
        print(f"  {f.name:24s} {f.stat().st_size / 1e6:6.2f} MB")
    # a second run on the same frozen inputs writes nothing
    t1 = time.monotonic()
    again = build.generate(settings, result["quarter"], district=args.district, on_step=lambda _m: None)
    print(
        f"  again (frozen inputs, nothing to write): {time.monotonic() - t1:.2f} s, {len(again['written'])} files written"
    )
    if args.keep:
        print(f"kept: {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if total < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
