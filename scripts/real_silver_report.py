"""Ingest and publish every real incident source (FULL data under real_data_root) into a temporary lake,
then print per source: bronze rows, published, mapping rate, quarantined by reason, duplicates, seconds.

    CITYSAFE_REAL_DATA_ROOT=../shared/data/real .venv/pipeline/bin/python scripts/real_silver_report.py [names...]

A throw-away PII key is used when CITYSAFE_PII_KEY is not set (the real sources hold no personal column).
The lake is deleted afterwards unless --keep is given.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_SOURCES = [
    "real_chicago_crimes",
    "real_houston_crime",
    "real_nyc_vehicle_thefts",
    "real_nypd_collisions",
    "real_sf_fire_calls",
    "real_nyc_constituent_complaints",
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="*", default=DEFAULT_SOURCES)
    parser.add_argument("--real-data-root", default=None, help="default: the configured real_data_root")
    parser.add_argument("--keep", action="store_true", help="keep the temporary lake")
    args = parser.parse_args(argv)

    os.environ.setdefault("CITYSAFE_PII_KEY", "real-silver-report-throwaway-key-0123456789")
    import logging

    logging.getLogger("citysafe.data_docs").setLevel(logging.CRITICAL)  # no synthetic city here: quiet docs
    from citysafe.config import load_settings
    from citysafe.engine import spark_session
    from citysafe.sources import get_source
    from spark_jobs import bronze, silver

    lake = Path(tempfile.mkdtemp(prefix="citysafe-real-silver-"))
    environ = {"CITYSAFE_LAKE_ROOT": str(lake)}
    if args.real_data_root or os.environ.get("CITYSAFE_REAL_DATA_ROOT"):
        environ["CITYSAFE_REAL_DATA_ROOT"] = args.real_data_root or os.environ["CITYSAFE_REAL_DATA_ROOT"]
    settings = load_settings(environ=environ)
    print(f"real data: {settings.real_data_root}   lake: {lake}")
    lines = []
    try:
        with spark_session("sail", app_name="real-silver-report") as spark:
            for name in args.sources:
                source = get_source(name)
                started = time.monotonic()
                b = bronze.ingest(spark, settings, source)
                r = silver.run(spark, settings, source, "real-report")
                seconds = time.monotonic() - started
                m = r.get("mapping", {})
                q = r["quarantined"]
                lines.append(
                    f"{name}\n  rows {r['rows_read']:,} (bronze read {b['rows_read']:,}, malformed {b['malformed_kept_with_parse_error']})"
                    f"  published {r['published']:,}  duplicates {r['duplicates']:,}"
                    f"  quarantined {sum(q.values()):,}  reconciled {r['reconciled']}\n"
                    f"  mapping rate {m.get('rate', float('nan')):.4f} ({m.get('rows_mapped', 0):,}/{m.get('rows', 0):,}"
                    f" via {m.get('crosswalk', '-')})\n"
                    f"  quarantined by reason: " + (", ".join(f"{k} {v:,}" for k, v in q.items()) or "none") + "\n"
                    f"  seconds {seconds:.1f} (silver {r['seconds']:.1f})"
                )
                print(lines[-1], flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(lake, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
