"""Daily increment benchmark: one new day of deliveries for every source on top of a lake at a given
scale, processed by `citysafe run` and timed against issue 14's target (under 60 s end to end, marts
included).

    python benchmarks/increment_benchmark.py [--scale 1.0] [--days 1] [--out var/benchmark_increment]
                                             [--seed 20260101] [--window-days 365]

1. The lake: <out>/scale_<s>/ holds the synthetic city, the lake, the warehouse and MLflow. Without
   <out>/scale_<s>/built.json, `citysafe run` builds it from nothing (generation included; timed and
   printed, not part of the table). With it (same scale, seed and window), the lake is reused as it is.
2. Per day (--days): `citysafe generate --next-day` writes the next day's deliveries (timed apart: that is
   the departments' side), then `citysafe run` processes them (timed: the process's wall clock). The
   stages' seconds come from the run's summary.json; the rows per source from the day's truth
   (truth/increments/<day>/expected_counts.json), checked against what bronze read.
3. `citysafe run` once more with nothing new: the no-op time.

A reused lake goes on from its last day: running the benchmark again adds the next day(s). Every run
must reconcile with the generator's truth (window + days), or the benchmark exits 1. Subprocesses of
the installed `citysafe` CLI, nothing downloaded; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "citysafe"
TARGET_SECONDS = 60.0  # issue 14: a daily increment end to end, marts included
# Used only when the environment has no key: the data is synthetic, the key is not a secret here.
BENCH_PII_KEY = "citysafe-increment-benchmark-key-not-a-secret"
# Stages up to the marts (what the target names) and after them, in run order.
THROUGH_MARTS = ("generate", "reference", "ingest", "silver", "marts", "reconcile")
AFTER_MARTS = ("ml", "report", "alerts")


def city_env(root: Path, scale: float, seed: int, window_days: int) -> dict:
    synthetic = root / "synthetic"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSAFE_")}
    env.update(
        {
            "CITYSAFE_LAKE_ROOT": str(root / "lake"),
            "CITYSAFE_SYNTHETIC_ROOT": str(synthetic),
            "CITYSAFE_DISTRICTS_GEOJSON": str(synthetic / "reference" / "districts.geojson"),
            "CITYSAFE_DISTRICT_ALIASES": str(synthetic / "reference" / "district_aliases.csv"),
            "CITYSAFE_WAREHOUSE_PATH": str(root / "warehouse" / "citysafe_marts.duckdb"),
            "CITYSAFE_MLFLOW_ROOT": str(root / "mlflow"),
            "CITYSAFE_SCALE": f"{scale:g}",
            "CITYSAFE_SEED": str(seed),
            "CITYSAFE_CITY__DAYS": str(window_days),
            "CITYSAFE_PII_KEY": os.environ.get("CITYSAFE_PII_KEY", BENCH_PII_KEY),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "RUST_LOG": "error",
        }
    )
    return env


def cli(args: list[str], env: dict, run_id: str | None = None) -> tuple[float, str]:
    """Run the CLI; (wall seconds, stdout). A failure stops the benchmark with the CLI's last words."""
    cmd = [str(CLI), *args] + (["--run-id", run_id] if run_id else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"citysafe {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return seconds, proc.stdout


def summary(root: Path, run_id: str) -> dict:
    return json.loads((root / "lake" / "runs" / run_id / "summary.json").read_text(encoding="utf-8"))


def ensure_lake(root: Path, env: dict, params: dict) -> dict:
    """The lake at `root`, built by `citysafe run` unless built.json says it is there for `params`."""
    marker = root / "built.json"
    if marker.is_file():
        built = json.loads(marker.read_text(encoding="utf-8"))
        if built["params"] != params:
            raise SystemExit(
                f"{root} holds a lake built for {built['params']}, not {params}: delete it or use another --out"
            )
        print(f"# lake at {root}: reused (built in {built['seconds']:.1f}s)", file=sys.stderr)
        return built
    for name in ("lake", "warehouse", "synthetic", "mlflow"):  # a build that did not finish starts over
        shutil.rmtree(root / name, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    print(f"# lake at {root}: building it with `citysafe run` (scale {params['scale']:g}) ...", file=sys.stderr)
    run_id = f"bench-build-{int(time.time())}"
    seconds, _ = cli(["run"], env, run_id)
    s = summary(root, run_id)
    if not s["tables"].get("reconciliation", {}).get("ok"):
        raise SystemExit(f"the built lake does not reconcile with the generator's truth: {root}")
    built = {"params": params, "seconds": round(seconds, 1), "run_id": run_id, "stages": stage_seconds(s)}
    marker.write_text(json.dumps(built, indent=2) + "\n", encoding="utf-8")
    print(f"# lake built in {seconds:.1f}s", file=sys.stderr)
    return built


def stage_seconds(s: dict) -> dict:
    """(status, seconds) per stage, in run order."""
    run_order = THROUGH_MARTS + AFTER_MARTS
    names = sorted(s["stages"], key=lambda n: run_order.index(n) if n in run_order else len(run_order))
    return {n: (s["stages"][n]["status"], round(s["stages"][n].get("seconds", 0.0), 1)) for n in names}


def run_day(root: Path, env: dict) -> dict:
    gen_seconds, out = cli(["generate", "--next-day"], env)
    day = sorted(p.parent.name for p in (root / "synthetic" / "truth" / "increments").glob("*/expected_counts.json"))[
        -1
    ]
    print(f"# {out.strip()}", file=sys.stderr)
    truth = json.loads(
        (root / "synthetic" / "truth" / "increments" / day / "expected_counts.json").read_text(encoding="utf-8")
    )
    run_id = f"bench-day-{day}-{int(time.time())}"
    seconds, _ = cli(["run"], env, run_id)
    s = summary(root, run_id)
    stages = stage_seconds(s)
    rows = {}
    for name, c in truth["sources"].items():
        bronze = s["tables"].get(f"bronze.{name}", {}).get("rows_read")
        rows[name] = {
            "rows_delivered": c["rows_delivered"],
            "published": c["published"],
            "quarantined": sum(c["quarantined"].values()),
            "duplicates": c["duplicates"],
            "bronze_read": bronze,
        }
    return {
        "day": day,
        "generate_seconds": round(gen_seconds, 1),
        "run_seconds": round(seconds, 1),
        "stages": stages,
        "through_marts_seconds": round(sum(stages.get(n, ("", 0))[1] for n in THROUGH_MARTS), 1),
        "after_marts_seconds": round(sum(stages.get(n, ("", 0))[1] for n in AFTER_MARTS), 1),
        "reconciles": bool(s["tables"].get("reconciliation", {}).get("ok")),
        "rows": rows,
    }


def report(params: dict, built: dict, days: list[dict], noop: dict) -> str:
    verdict = lambda sec: "met" if sec < TARGET_SECONDS else "MISSED"  # noqa: E731
    lines = [
        f"## Daily increment at scale {params['scale']:g} ({params['window_days']}-day window, seed {params['seed']})"
    ]
    lines += ["", f"Lake: built by `citysafe run` in {built['seconds']:.1f} s (not part of the table).", ""]
    for d in days:
        lines += [
            f"### Day {d['day']}: `citysafe run` {d['run_seconds']:.1f} s "
            f"(target {TARGET_SECONDS:.0f} s: {verdict(d['run_seconds'])}); reconciles: "
            f"{'yes' if d['reconciles'] else 'NO'}",
            "",
            f"`citysafe generate --next-day` (the departments' side, not in the run): {d['generate_seconds']:.1f} s",
            "",
            "| stage | status | seconds |",
            "|---|---|---:|",
        ]
        lines += [f"| {name} | {status} | {sec:.1f} |" for name, (status, sec) in d["stages"].items()]
        lines += [
            f"| **up to and including the marts** ({', '.join(THROUGH_MARTS)}) | | **{d['through_marts_seconds']:.1f}** |",
            f"| after the marts ({', '.join(AFTER_MARTS)}) | | {d['after_marts_seconds']:.1f} |",
            f"| **`citysafe run`, wall clock** | | **{d['run_seconds']:.1f}** |",
            "",
            "| source | rows delivered | published | quarantined | duplicates | bronze read |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {name} | {r['rows_delivered']:,} | {r['published']:,} | {r['quarantined']:,} | {r['duplicates']:,} "
            f"| {r['bronze_read'] if r['bronze_read'] is not None else '-'} |"
            for name, r in d["rows"].items()
        ]
        lines.append("")
    lines += [
        f"### No-op: `citysafe run` with nothing new {noop['run_seconds']:.1f} s",
        "",
        "| stage | status | seconds |",
        "|---|---|---:|",
    ]
    lines += [f"| {name} | {status} | {sec:.1f} |" for name, (status, sec) in noop["stages"].items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="synthetic city scale (default 1.0)")
    parser.add_argument("--days", type=int, default=1, help="how many days to add, one `citysafe run` each (default 1)")
    parser.add_argument(
        "--out",
        default=str(REPO_ROOT / "var" / "benchmark_increment"),
        help="scratch folder: the lake is built (or reused) in <out>/scale_<s>/ (default var/benchmark_increment)",
    )
    parser.add_argument("--seed", type=int, default=20260101, help="generator seed (default 20260101)")
    parser.add_argument("--window-days", type=int, default=365, help="days of the lake's window (default 365)")
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error("--days must be at least 1")
    params = {"scale": args.scale, "seed": args.seed, "window_days": args.window_days}
    root = Path(args.out).resolve() / f"scale_{args.scale:g}"
    env = city_env(root, args.scale, args.seed, args.window_days)
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}", file=sys.stderr)
    built = ensure_lake(root, env, params)
    days = []
    for _ in range(args.days):
        days.append(run_day(root, env))
        d = days[-1]
        print(f"# day {d['day']}: citysafe run {d['run_seconds']:.1f}s, reconciles {d['reconciles']}", file=sys.stderr)
    noop_id = f"bench-noop-{int(time.time())}"
    noop_seconds, _ = cli(["run"], env, noop_id)
    noop = {"run_seconds": round(noop_seconds, 1), "stages": stage_seconds(summary(root, noop_id))}
    text = report(params, built, days, noop)
    print(text)
    (root / "results.md").write_text(text + "\n", encoding="utf-8")
    result = {"params": params, "built": built, "days": days, "noop": noop}
    (root / "results.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if all(d["reconciles"] for d in days) else 1


if __name__ == "__main__":
    sys.exit(main())
