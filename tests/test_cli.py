"""The CLI's contract: --help everywhere, errors in one line naming the problem, meaningful exit codes.

In-process through click's CliRunner (fixture `cli` in conftest.py); one test runs the installed
`citysafe` executable to prove the entry point itself. Every exit code: tests/test_exit_codes.py.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main

CLI = Path(sys.executable).parent / "citysafe"
COMMANDS = [
    "generate",
    "reference",
    "ingest",
    "silver",
    "build-marts",
    "reconcile",
    "run",
    "stages",
    "config",
    "history",
    "maintain",
    "data-docs",
    "ml",
    "serve",
    "report",
    "alerts",
]


def test_every_command_is_listed_here():
    assert set(main.commands) == set(COMMANDS)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_on_every_command(cli, command):
    code, out, _ = cli(*([command] if command else []), "--help")
    assert code == 0 and "Usage: citysafe" in out


def test_the_installed_executable_maps_a_bad_config_to_exit_2():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSAFE_")}
    proc = subprocess.run(
        [str(CLI), "config"],
        env={**env, "CITYSAFE_ENGINE": "spark://nope"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "engine: must be 'sail', 'sail-local-cluster' or a Spark Connect URL" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_delivery_folder_exits_5(cli):
    code, _, err = cli("ingest", "police_incidents")
    assert code == 5 and "delivery folder" in err and "citysafe generate" in err


@pytest.fixture
def tiny_city(tmp_path):
    """A 30-day synthetic city's deliveries where the `cli` fixture's lake expects them."""
    from synthetic_city import generate

    generate(
        tmp_path / "syn",
        scale=0.005,
        seed=1,
        start_date=dt.date(2025, 1, 1),
        days=30,
        timezone="Asia/Shanghai",
        h3_resolution=8,
    )


def test_missing_pii_key_exits_2(cli, tiny_city):
    assert cli("ingest", "police_incidents")[0] == 0
    code, _, err = cli("silver", "police_incidents")
    assert code == 2 and "set the environment variable CITYSAFE_PII_KEY" in err and "Traceback" not in err


def test_progress_lines_name_the_stage(cli, tiny_city):
    """One log handler: each line carries the elapsed time, the stage and the level."""
    code, _, err = cli("ingest", "police_incidents")
    assert code == 0
    line = next(x for x in err.splitlines() if "landed " in x)
    assert line.startswith("[") and "s] ingest " in line and " INFO " in line


@pytest.mark.parametrize("sub", ["train", "predict", "evaluate"])
def test_help_on_every_ml_command(cli, sub):
    code, out, _ = cli("ml", sub, "--help")
    assert code == 0 and f"Usage: citysafe ml {sub}" in out


def test_ml_evaluate_before_any_training_exits_2_naming_the_command(cli):
    code, _, err = cli("ml", "evaluate")
    assert code == 2 and "citysafe ml train" in err and "Traceback" not in err


def test_ml_predict_before_any_training_exits_2_naming_the_command(cli):
    code, _, err = cli("ml", "predict")
    assert code == 2 and "citysafe ml train" in err and "Traceback" not in err


def test_serve_without_a_warehouse_says_so_in_one_line(cli):
    code, out, err = cli("serve", "--no-start")
    assert code == 2
    assert "no warehouse at" in err and "make run" in err
    assert "Traceback" not in err
