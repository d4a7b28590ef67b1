"""Run any dbt command against the configured lake WITHOUT touching the served warehouse.

For developing models: `citysafe build-marts` builds everything and swaps the result in; this runs
one dbt command (with --select etc.) into a private DuckDB file and private target/log folders, with
the same environment `citysafe.warehouse` gives dbt.

    .venv/pipeline/bin/python scripts/dbt_dev.py --name alice build --select +fct_incident
    .venv/pipeline/bin/python scripts/dbt_dev.py --name alice test --select mart_hazard_rectification

The DuckDB file is <warehouse dir>/dev/<name>.duckdb; dbt's target and logs go under
<lake_root>/_state/dbt_dev/<name>/. Exit code: dbt's.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from citysafe.config import load_settings
from citysafe.warehouse import dbt_command, dbt_env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="dev", help="private build name (letters, digits, - _)")
    parser.add_argument("dbt_args", nargs=argparse.REMAINDER, help="dbt command and its arguments")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", args.name):
        parser.error("--name: letters, digits, - and _ only")
    if not args.dbt_args:
        parser.error("give a dbt command, e.g. build --select +fct_incident")
    settings = load_settings()
    build_path = Path(settings.warehouse_path).parent / "dev" / f"{args.name}.duckdb"
    build_path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(settings.state_dir) / "dbt_dev" / args.name
    # `docs generate` / `source freshness` are two-word commands: the options follow both words.
    words = 2 if args.dbt_args[0] in ("docs", "source") and len(args.dbt_args) > 1 else 1
    command = " ".join(args.dbt_args[:words])
    cmd = dbt_command(command, settings, work / "target", work / "logs") + args.dbt_args[words:]
    print(f"dbt {command} -> {build_path}", file=sys.stderr)
    return subprocess.call(cmd, cwd=work, env=dbt_env(settings, build_path))


if __name__ == "__main__":
    sys.exit(main())
