"""dbt benchmark: `dbt build` of the whole marts project (every model, seed, data and unit test) at several
scales of the synthetic city, and the slowest models.

    python benchmarks/dbt_benchmark.py [--scales 0.02 0.1] [--days 365] [--seed 20260101]
                                       [--out var/benchmark_dbt] [--repeat 1] [--top 5]

For each scale: the city is generated into <out>/scale_<s>_days_<d>/synthetic (reused when the same city is
already there; the ingest benchmark's helper) and `citysafe run` builds the lake from it (CLI, subprocess;
incremental: a lake that already holds the city adds nothing). Neither is timed. Then `citysafe build-marts`
runs --repeat times (CLI, subprocess, its own run id each time) and is timed: the wall time covers what an
operator waits for - dbt start-up and parsing, every model, seed and test, the row counts, the CHECKPOINT
and the atomic swap of the served file. dbt's own elapsed time and the slowest --top models (execution
time from run_results.json) come from the last repetition. Nothing is downloaded; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# The packages come from the venv (editable install); the benchmark's own folder is on sys.path as the
# script's folder, so its sibling ingest_benchmark imports as is. Never put the repository root on
# sys.path: dbt/ would shadow the dbt package.
from ingest_benchmark import REPO_ROOT, generate, settings_for

CLI = Path(sys.executable).parent / "citysafe"
# Used only when the environment has no key: the data is synthetic, the key is not a secret here.
BENCH_PII_KEY = "citysafe-dbt-benchmark-key-not-a-secret"


def city_env(root: Path, synthetic: Path, scale: float, days: int, seed: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSAFE_")}
    settings = settings_for(root, synthetic, "sail")
    env.update(
        {
            "CITYSAFE_LAKE_ROOT": str(settings.lake_root),
            "CITYSAFE_SYNTHETIC_ROOT": str(synthetic),
            "CITYSAFE_DISTRICTS_GEOJSON": str(settings.districts_geojson),
            "CITYSAFE_DISTRICT_ALIASES": str(settings.district_aliases),
            "CITYSAFE_WAREHOUSE_PATH": str(root / "warehouse" / "citysafe_marts.duckdb"),
            "CITYSAFE_SCALE": f"{scale:g}",
            "CITYSAFE_CITY__DAYS": str(days),
            "CITYSAFE_SEED": str(seed),
            "CITYSAFE_PII_KEY": os.environ.get("CITYSAFE_PII_KEY", BENCH_PII_KEY),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "RUST_LOG": "error",
        }
    )
    return env


def cli(args: list[str], env: dict, run_id: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([str(CLI), *args, "--run-id", run_id], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"citysafe {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return seconds


def run_results(lake: Path, run_id: str) -> dict:
    return json.loads((lake / "runs" / run_id / "dbt_target" / "run_results.json").read_text(encoding="utf-8"))


def run_scale(args, scale: float) -> dict:
    root = Path(args.out).resolve() / f"scale_{scale:g}_days_{args.days}"
    synthetic = root / "synthetic"
    truth, gen_seconds = generate(synthetic, scale, args.days, args.seed)
    env = city_env(root, synthetic, scale, args.days, args.seed)
    gen = f"generated in {gen_seconds:.1f}s" if gen_seconds is not None else "reused"
    print(f"# scale {scale:g}, {args.days} days: city at {synthetic} ({gen})", file=sys.stderr)
    lake_seconds = cli(["run"], env, f"bench-lake-{int(time.time())}")
    print(f"# scale {scale:g}: lake ready (citysafe run) in {lake_seconds:.1f}s (not timed)", file=sys.stderr)

    walls, run_id = [], ""
    for i in range(args.repeat):
        run_id = f"bench-dbt-{scale:g}-{i}-{int(time.time())}"
        walls.append(cli(["build-marts"], env, run_id))
        print(f"  build-marts #{i + 1}: {walls[-1]:.1f}s", file=sys.stderr)
    results = run_results(Path(env["CITYSAFE_LAKE_ROOT"]), run_id)
    nodes = results["results"]
    models = sorted(
        (r for r in nodes if r["unique_id"].startswith("model.")), key=lambda r: r["execution_time"], reverse=True
    )
    summary = json.loads((Path(env["CITYSAFE_LAKE_ROOT"]) / "runs" / run_id / "summary.json").read_text())
    rows = summary["tables"]["warehouse"]["models"]
    kinds = {}
    for r in nodes:
        kinds[r["unique_id"].split(".")[0]] = kinds.get(r["unique_id"].split(".")[0], 0) + 1
    return {
        "scale": scale,
        "days": args.days,
        "incidents_delivered": sum(
            s["rows_delivered"]
            for n, s in truth["sources"].items()
            if n in ("police_incidents", "fire_calls", "hotline_tickets")
        ),
        "device_readings_delivered": truth["sources"]["device_readings"]["rows_delivered"],
        "wall_seconds": walls,
        "dbt_elapsed_seconds": round(results["elapsed_time"], 2),
        "nodes": kinds,
        "largest_models": sorted(rows.items(), key=lambda kv: kv[1], reverse=True)[:3],
        "slowest_models": [
            (m["unique_id"].split(".")[-1], round(m["execution_time"], 2), rows.get(m["unique_id"].split(".")[-1]))
            for m in models[: args.top]
        ],
    }


def report(results: list[dict]) -> str:
    lines = [
        "| scale | days | incidents delivered | device readings | nodes (models / tests / unit tests / seeds) "
        "| `citysafe build-marts` wall s | dbt elapsed s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        n = r["nodes"]
        walls = ", ".join(f"{w:.1f}" for w in r["wall_seconds"])
        lines.append(
            f"| {r['scale']:g} | {r['days']} | {r['incidents_delivered']:,} | {r['device_readings_delivered']:,} "
            f"| {n.get('model', 0)} / {n.get('test', 0)} / {n.get('unit_test', 0)} / {n.get('seed', 0)} "
            f"| {walls} | {r['dbt_elapsed_seconds']:.1f} |"
        )
    for r in results:
        lines += [
            "",
            f"Slowest models at scale {r['scale']:g} (execution time, rows):",
            "",
            "| model | seconds | rows |",
            "|---|---|---|",
        ]
        lines += [
            f"| {name} | {sec:.2f} | {rows:,} |" if rows is not None else f"| {name} | {sec:.2f} | - |"
            for name, sec, rows in r["slowest_models"]
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.02, 0.1])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--out", default=str(REPO_ROOT / "var" / "benchmark_dbt"))
    parser.add_argument("--repeat", type=int, default=1, help="timed build-marts runs per scale")
    parser.add_argument("--top", type=int, default=5, help="how many of the slowest models to list")
    args = parser.parse_args(argv)
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}", file=sys.stderr)
    results = [run_scale(args, scale) for scale in args.scales]
    print(report(results))
    print(json.dumps(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
