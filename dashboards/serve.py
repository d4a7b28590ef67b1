"""Bring Superset up on the served warehouse (Superset venv; `citysafe serve` / `make serve` call it with
the environment set): upgrade the metadata DB, sync Superset's own roles, provision the admin, the
assets, the roles and the row-level security, then run gunicorn on 127.0.0.1 until stopped.

    SUPERSET_HOME=... SUPERSET_SECRET_KEY=... SUPERSET_ADMIN_PASSWORD=... \\
        python -m dashboards.serve --warehouse var/warehouse/citysafe_marts.duckdb --port 8088 [--no-start]

Exit codes: 0 stopped cleanly (or provisioned with --no-start), 2 configuration (secret, warehouse),
1 a bring-up step failed (its output is printed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def _step(name: str, args: list[str], env: dict) -> None:
    started = time.monotonic()
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        print(f"superset: {name} failed (exit {proc.returncode}):\n{tail}", file=sys.stderr)
        sys.exit(1)
    print(f"superset: {name} done in {time.monotonic() - started:.1f}s", flush=True)


def environment(home: Path, base: dict | None = None) -> dict:
    """The environment of every Superset process: `base` (default os.environ) plus home and config."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "SUPERSET_HOME": str(home),
            "SUPERSET_CONFIG_PATH": str(HERE / "superset_config.py"),
            "FLASK_APP": "superset",
            "PYTHONPATH": os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "PYTHONWARNINGS": "ignore",
        }
    )
    return env


def bring_up(warehouse: Path, home: Path) -> dict:
    home.mkdir(parents=True, exist_ok=True)
    env = environment(home)
    _step("metadata upgrade", [str(BIN / "superset"), "db", "upgrade"], env)
    _step("roles and permissions (superset init)", [str(BIN / "superset"), "init"], env)
    _step(
        "assets, roles and row-level security",
        [str(BIN / "python"), "-m", "dashboards.provision", "--warehouse", str(warehouse)],
        env,
    )
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", type=Path, required=True)
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("SUPERSET_HOME", "var/superset")))
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-start", action="store_true", help="provision only; do not start the web server")
    args = parser.parse_args(argv)
    for var, minimum in (("SUPERSET_SECRET_KEY", 32), ("SUPERSET_ADMIN_PASSWORD", 12)):
        if len(os.environ.get(var, "")) < minimum:
            print(f"superset: {var} is missing or shorter than {minimum} characters", file=sys.stderr)
            return 2
    if not args.warehouse.is_file():
        print(f"superset: warehouse not found: {args.warehouse} (run `make run` first)", file=sys.stderr)
        return 2
    env = bring_up(args.warehouse.resolve(), args.home.resolve())
    if args.no_start:
        return 0
    url = f"http://127.0.0.1:{args.port}/"
    print(f"superset: serving {url} (log in as admin; Ctrl-C stops it)", flush=True)
    server = subprocess.Popen(
        [
            str(BIN / "gunicorn"),
            "--bind",
            f"127.0.0.1:{args.port}",
            "--workers",
            str(args.workers),
            "--timeout",
            "120",
            "--limit-request-line",
            "0",
            "--limit-request-field_size",
            "0",
            "superset.app:create_app()",
        ],
        env=env,
    )
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        server.wait(timeout=30)
        return 0


if __name__ == "__main__":
    sys.exit(main())
