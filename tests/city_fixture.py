"""One small synthetic city built end to end (`citysafe run`: generate -> bronze -> silver -> marts),
shared by every test that needs the whole lake (session fixture `built_city` in conftest.py), built
once per session even with two pytest-xdist workers (`shared_city`).

Tests read it; the only test allowed to run the pipeline on it again is the idempotency test in
test_end_to_end.py (a second run must change nothing). Scale 0.005 over 90 days: every department,
~1 minute on 2 cores.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

CLI = Path(sys.executable).parent / "citysafe"
SCALE = "0.005"
DAYS = "90"


@dataclasses.dataclass(frozen=True)
class BuiltCity:
    root: Path  # tmp folder holding everything below
    env: dict  # environment that points the CLI at this city
    lake: Path  # <lake_root>
    silver: Path  # <lake_root>/silver
    synthetic: Path  # generator output (deliveries + truth/)
    warehouse: Path  # the served DuckDB warehouse the run built
    summary: dict  # runs/<first>/summary.json
    truth: dict  # truth/expected_counts.json
    stdout: str  # the CLI's progress output

    @property
    def truth_dir(self) -> Path:
        return self.synthetic / "truth"


# A city of about 13 weeks: a short backtest and horizon (the defaults need a year or more). The Airflow
# scheduler test (tests/airflow/test_scheduler.py) runs the same city through `city_env`.
SHORT_CITY_ML = {
    "CITYSAFE_ML__HOTSPOT__BACKTEST_WEEKS": "4",
    "CITYSAFE_ML__HOTSPOT__KDE_VALIDATION_WEEKS": "2",
    "CITYSAFE_ML__HOTSPOT__NUM_BOOST_ROUND": "60",
    "CITYSAFE_ML__HOTSPOT__MIN_DATA_IN_LEAF": "20",
    "CITYSAFE_ML__FORECAST__HORIZON_WEEKS": "2",
    "CITYSAFE_ML__FORECAST__BACKTEST_WEEKS": "4",
    "CITYSAFE_ML__FORECAST__STEP_WEEKS": "1",
    "CITYSAFE_ML__FORECAST__LAGS": "[1, 2, 4]",
    "CITYSAFE_ML__FORECAST__MIN_TRAIN_WEEKS": "5",
}


def city_env(root: Path, base: dict | None = None) -> dict:
    """The environment pointing the CLI at the city under `root`: `base` (default this process's
    environment) plus the city's config overrides."""
    syn = root / "synthetic"
    return {
        **(os.environ if base is None else base),
        "CITYSAFE_LAKE_ROOT": str(root / "lake"),
        "CITYSAFE_SYNTHETIC_ROOT": str(syn),
        "CITYSAFE_DISTRICTS_GEOJSON": str(syn / "reference" / "districts.geojson"),
        "CITYSAFE_DISTRICT_ALIASES": str(syn / "reference" / "district_aliases.csv"),
        "CITYSAFE_WAREHOUSE_PATH": str(root / "warehouse" / "marts.duckdb"),
        "CITYSAFE_SCALE": SCALE,
        "CITYSAFE_CITY__DAYS": DAYS,
        "CITYSAFE_PII_KEY": "e2e-test-key-0123456789",
        # two workers share the city: a command waits for another's lake lock instead of exiting 7
        "CITYSAFE_LAKE_LOCK_WAIT_SECONDS": "900",
        "CITYSAFE_MLFLOW_ROOT": str(root / "mlflow"),
        **SHORT_CITY_ML,
    }


def run_cli(args: list[str], env: dict, run_id: str, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(CLI), *args, "--run-id", run_id], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def build_city(root: Path) -> BuiltCity:
    env = city_env(root)
    proc = run_cli(["run"], env, "first")
    (root / "run_stdout.txt").write_text(proc.stdout)
    return load_city(root)


def shared_city(root: Path) -> BuiltCity:
    """The city at `root`, built by whichever pytest-xdist worker asks first; the other waits on a file
    lock and reuses it (one build per session, and the city's tests can run on both workers)."""
    import fcntl

    root.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "run_stdout.txt").exists():
            root.mkdir(exist_ok=True)
            return build_city(root)
    return load_city(root)


def load_city(root: Path) -> BuiltCity:
    env = city_env(root)
    lake = root / "lake"
    synthetic = root / "synthetic"
    return BuiltCity(
        root=root,
        env=env,
        lake=lake,
        silver=lake / "silver",
        synthetic=synthetic,
        warehouse=root / "warehouse" / "marts.duckdb",
        summary=json.loads((lake / "runs" / "first" / "summary.json").read_text()),
        truth=json.loads((synthetic / "truth" / "expected_counts.json").read_text()),
        stdout=(root / "run_stdout.txt").read_text(),
    )
