"""Write the Chicago city-profile test sample (tests/data/cities/chicago/): every 3rd record of the
Chicago crimes sample from 2018-07-01 on, byte for byte as delivered, gzip with mtime 0 (reproducible).

    .venv/pipeline/bin/python scripts/make_city_sample.py [--real-data-root ../shared/data/real]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FOLDER = "chicago-crimes-sample"
FILE = "chicago_crimes_sample_2017_2019_no_assault_battery.csv.gz"
FROM = dt.date(2018, 7, 1)
EVERY = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-data-root", type=Path, default=REPO.parent / "shared" / "data" / "real")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "cities" / "chicago")
    args = parser.parse_args()
    lines = gzip.decompress((args.real_data_root / FOLDER / FILE).read_bytes()).splitlines(keepends=True)
    header = lines[0]
    date_col = next(csv.reader([header.decode()])).index("date")
    kept = [
        line
        for line in lines[1:]
        if dt.datetime.strptime(next(csv.reader([line.decode()]))[date_col].split()[0], "%m/%d/%Y").date() >= FROM
    ][::EVERY]
    out = args.out / FOLDER / FILE.replace(".csv.gz", "_test_2018h2_2019.csv.gz")
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(out, mode="wb", mtime=0) as fh:
        fh.write(header + b"".join(kept))
    print(f"{out}: {len(kept)} records")


if __name__ == "__main__":
    main()
