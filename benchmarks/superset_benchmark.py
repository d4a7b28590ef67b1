"""Chart-data latency of the analysts' dashboards: bring Superset up on a warehouse (as `citysafe serve`
does, in a scratch home), then request every chart's data through the REST API several times, bypassing
the cache (`force=true`: the query runs on DuckDB every time) and through the cache, and print p50 / p95
per chart and overall against the 1 s target.

    .venv/pipeline/bin/python benchmarks/superset_benchmark.py \\
        --warehouse var/benchmark_ml/scale_1_days_365_2025-11-23/warehouse/marts.duckdb --repeat 10
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 1.0


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", type=Path, default=REPO / "var" / "warehouse" / "citysafe_marts.duckdb")
    parser.add_argument("--repeat", type=int, default=10, help="requests per chart and mode")
    args = parser.parse_args()
    if not args.warehouse.is_file():
        print(f"benchmark: no warehouse at {args.warehouse} (run `make run`, or the ml benchmark for scale 1)")
        return 2
    home = Path(tempfile.mkdtemp(prefix="superset-bench-"))
    port, password = _port(), secrets.token_urlsafe(16)
    env = {
        **os.environ,
        "CITYSAFE_WAREHOUSE_PATH": str(args.warehouse.resolve()),
        "CITYSAFE_SUPERSET__HOME": str(home),
        "CITYSAFE_SUPERSET__PORT": str(port),
        "SUPERSET_SECRET_KEY": secrets.token_hex(32),
        "CITYSAFE_SUPERSET_ADMIN_PASSWORD": password,
    }
    started = time.monotonic()
    server = subprocess.Popen(
        [str(REPO / ".venv" / "pipeline" / "bin" / "citysafe"), "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() - started > 300:
                    print("benchmark: Superset did not come up")
                    return 1
                time.sleep(1)
        print(f"bring-up (metadata, assets, roles, RLS, gunicorn healthy): {time.monotonic() - started:.1f} s")
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        login = urllib.request.Request(
            base + "/api/v1/security/login",
            data=json.dumps({"username": "admin", "password": password, "provider": "db"}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        token = json.loads(opener.open(login).read())["access_token"]
        auth = {"Authorization": f"Bearer {token}"}

        def get(path: str):
            return json.loads(opener.open(urllib.request.Request(base + path, headers=auth), timeout=300).read())

        charts = get("/api/v1/chart/?q=(page_size:100)")["result"]
        rows, overall = [], {"uncached": [], "cached": []}
        for chart in sorted(charts, key=lambda c: c["slice_name"]):
            times = {"uncached": [], "cached": []}
            for mode, query in (("uncached", "?force=true"), ("cached", "")):
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    body = get(f"/api/v1/chart/{chart['id']}/data/{query}")
                    times[mode].append(time.perf_counter() - t)
                    assert not body["result"][0].get("error"), body["result"][0]["error"]
                overall[mode] += times[mode]
            n = body["result"][0]["rowcount"]
            rows.append((chart["slice_name"], n, times))
        print(f"\n{'chart':62s} {'rows':>6s} {'p50 ms':>8s} {'p95 ms':>8s} {'cached p95':>10s} {'p95/1s':>7s}")
        for name, n, times in rows:
            p95 = _p(times["uncached"], 95)
            print(
                f"{name[:62]:62s} {n:>6d} {_p(times['uncached'], 50) * 1000:>8.0f} {p95 * 1000:>8.0f} "
                f"{_p(times['cached'], 95) * 1000:>10.0f} {p95 / TARGET_SECONDS:>7.2f}"
            )
        worst = max(_p(t["uncached"], 95) for _, _, t in rows)
        print(
            f"\noverall ({len(rows)} charts x {args.repeat}): uncached p50 {_p(overall['uncached'], 50) * 1000:.0f} ms, "
            f"p95 {_p(overall['uncached'], 95) * 1000:.0f} ms; cached p95 {_p(overall['cached'], 95) * 1000:.0f} ms; "
            f"worst chart p95 {worst * 1000:.0f} ms = {worst / TARGET_SECONDS:.2f} x the 1 s target"
        )
        return 0 if worst < TARGET_SECONDS else 1
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
