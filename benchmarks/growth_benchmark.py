"""Growth benchmark: the whole pipeline, cold, at several city sizes; time and peak memory per stage and
how each grows with the size of the city.

    python benchmarks/growth_benchmark.py [--scales 0.25 0.5 1 2] [--days 365] [--out var/benchmark/growth]
                                          [--stages generate ingest silver ...] [--keep]

For each scale, on an empty lake in <out>/scale-<s>/: every stage of pipeline/stage_graph.yaml, in order,
as its own `citysafe` process (the command the Airflow DAGs run; per-source stages get `--tag synthetic`).
Each stage's wall time comes from time.perf_counter and its peak memory from the kernel (os.wait4: the
largest resident set of the process or of any child it waited for, e.g. dbt). A stage that fails stops
the benchmark with its exit code and the tail of its output.

Then, per stage, the growth exponent k of time ~ scale^k, fitted by least squares on log time against log
scale (k = 1: linear; k > 1: worse than linear). The tables are printed and written, with the raw
numbers as JSON, under --out. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from increment_benchmark import city_env  # sibling script: the same scratch city layout and settings

REPO_ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "citysafe"
STAGE_GRAPH = REPO_ROOT / "pipeline" / "stage_graph.yaml"
SEED = 20260101  # the configuration's generator seed


def stage_commands(only: list[str] | None) -> list[tuple[str, list[str]]]:
    """(stage name, CLI arguments) for every stage of the graph, in run order."""
    stages = yaml.safe_load(STAGE_GRAPH.read_text())["stages"]
    known = [s["name"] for s in stages]
    unknown = sorted(set(only or ()) - set(known))
    if unknown:
        raise SystemExit(f"growth_benchmark: unknown stage(s) {unknown}; the graph has {known}")
    return [
        (s["name"], [*s["command"], *(["--tag", "synthetic"] if s.get("per_source") else [])])
        for s in stages
        if not only or s["name"] in only
    ]


def run_stage(args: list[str], env: dict, log: Path) -> tuple[float, float]:
    """Run one stage; return (wall seconds, peak resident set in GB)."""
    with log.open("w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen([str(CLI), *args], env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise SystemExit(f"growth_benchmark: `citysafe {' '.join(args)}` exited {proc.returncode} (log {log}):\n{tail}")
    return seconds, usage.ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux


def city_size(root: Path) -> dict:
    """Delivered incident records and device readings, from the generator's truth."""
    truth = json.loads((root / "synthetic" / "truth" / "expected_counts.json").read_text())
    sources = truth.get("sources", truth)
    delivered = {name: s.get("rows_delivered", 0) for name, s in sources.items() if isinstance(s, dict)}
    incidents = sum(delivered.get(n, 0) for n in ("police_incidents", "fire_calls", "hotline_tickets"))
    return {"incident_records": incidents, "device_readings": delivered.get("device_readings", 0)}


def growth_exponent(scales: list[float], values: list[float]) -> float | None:
    """Least-squares slope of log(value) on log(scale)."""
    points = [(math.log(s), math.log(v)) for s, v in zip(scales, values, strict=True) if v > 0]
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else None


def tables(results: dict, scales: list[float]) -> str:
    stages = list(next(iter(results.values()))["stages"])
    head = " | ".join(f"{s:g}" for s in scales)
    lines = [
        f"| scale | {head} |",
        "|---" * (len(scales) + 1) + "|",
        f"| incident records delivered | {' | '.join(str(results[str(s)]['size']['incident_records']) for s in scales)} |",
        f"| device readings delivered | {' | '.join(str(results[str(s)]['size']['device_readings']) for s in scales)} |",
        "",
        f"| stage | {' | '.join(f'{s:g}: s' for s in scales)} | time exponent | {' | '.join(f'{s:g}: GB' for s in scales)} | memory exponent |",
        "|---" * (2 * len(scales) + 3) + "|",
    ]
    rows = [*stages, "total"]
    for stage in rows:
        if stage == "total":
            secs = [sum(v["seconds"] for v in results[str(s)]["stages"].values()) for s in scales]
            peaks = [max(v["peak_gb"] for v in results[str(s)]["stages"].values()) for s in scales]
        else:
            secs = [results[str(s)]["stages"][stage]["seconds"] for s in scales]
            peaks = [results[str(s)]["stages"][stage]["peak_gb"] for s in scales]
        k_time, k_mem = growth_exponent(scales, secs), growth_exponent(scales, peaks)
        lines.append(
            f"| {stage} | {' | '.join(f'{v:.1f}' for v in secs)} | {'-' if k_time is None else f'{k_time:.2f}'} | "
            f"{' | '.join(f'{v:.2f}' for v in peaks)} | {'-' if k_mem is None else f'{k_mem:.2f}'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    parser.add_argument("--days", type=int, default=365, help="days the synthetic city covers")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "var" / "benchmark" / "growth")
    parser.add_argument("--stages", nargs="+", help="only these stages (default: the whole graph)")
    parser.add_argument("--keep", action="store_true", help="keep each scale's lake (default: removed after it)")
    args = parser.parse_args()
    if not CLI.is_file():
        raise SystemExit(
            f"growth_benchmark: no pipeline CLI at {CLI}; run `make setup` and use .venv/pipeline/bin/python"
        )
    commands = stage_commands(args.stages)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{platform.node()}: {os.cpu_count()} cores; stages {', '.join(n for n, _ in commands)}", flush=True)
    results: dict = {}
    for scale in args.scales:
        root = args.out / f"scale-{scale:g}"
        shutil.rmtree(root, ignore_errors=True)  # cold: no lake, no deliveries, no warehouse
        (root / "logs").mkdir(parents=True)
        env = city_env(root, scale, SEED, args.days)
        stages = {}
        for name, cli_args in commands:
            seconds, peak = run_stage(cli_args, env, root / "logs" / f"{name}.log")
            stages[name] = {"seconds": round(seconds, 2), "peak_gb": round(peak, 3)}
            print(f"scale {scale:g}: {name:<10} {seconds:7.1f} s  peak {peak:5.2f} GB", flush=True)
        results[str(scale)] = {"stages": stages, "size": city_size(root)}
        (args.out / "growth.json").write_text(json.dumps(results, indent=2))
        if not args.keep:
            for part in ("lake", "synthetic", "warehouse", "mlflow"):
                shutil.rmtree(root / part, ignore_errors=True)
    scales = [s for s in args.scales if str(s) in results]
    text = tables(results, scales)
    (args.out / "growth.md").write_text(text + "\n")
    print()
    print(text)
    print(f"\nraw numbers: {args.out / 'growth.json'}")


if __name__ == "__main__":
    main()
