"""The CLI's contract: --help everywhere, errors in one line naming the problem, meaningful exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = Path(sys.executable).parent / "citysafe"
COMMANDS = ["generate", "reference", "ingest", "silver", "build-marts", "reconcile", "run", "config", "history", "maintain", "data-docs"]


def _cli(*args, env=None, tmp_path=None):
    base = {k: v for k, v in os.environ.items() if not k.startswith("CITYSAFE_")}
    if tmp_path is not None:
        syn = tmp_path / "syn"
        base.update({"CITYSAFE_LAKE_ROOT": str(tmp_path / "lake"), "CITYSAFE_SYNTHETIC_ROOT": str(syn),
                     "CITYSAFE_DISTRICTS_GEOJSON": str(syn / "reference" / "districts.geojson"),
                     "CITYSAFE_DISTRICT_ALIASES": str(syn / "reference" / "district_aliases.csv")})
    base.update(env or {})
    return subprocess.run([str(CLI), *args], env=base, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_on_every_command(command):
    proc = _cli(*([command] if command else []), "--help")
    assert proc.returncode == 0 and "Usage: citysafe" in proc.stdout


def test_bad_config_exits_2_naming_the_key():
    proc = _cli("config", env={"CITYSAFE_ENGINE": "spark://nope"})
    assert proc.returncode == 2
    assert "engine: must be 'sail' or a Spark Connect URL" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_source_exits_2(tmp_path):
    proc = _cli("ingest", "polise_incidents", tmp_path=tmp_path)
    assert proc.returncode == 2 and "unknown source 'polise_incidents'" in proc.stderr


def test_missing_delivery_folder_exits_5(tmp_path):
    proc = _cli("ingest", "police_incidents", tmp_path=tmp_path)
    assert proc.returncode == 5 and "delivery folder" in proc.stderr and "citysafe generate" in proc.stderr


def test_wrong_encoding_exits_5_naming_the_file(tmp_path):
    folder = tmp_path / "syn" / "police"
    folder.mkdir(parents=True)
    (folder / "police_incidents_2025-01.csv").write_bytes("case_no,备注\n1,江岸区\n".encode("gbk"))
    proc = _cli("ingest", "police_incidents", tmp_path=tmp_path)
    assert proc.returncode == 5
    assert "police_incidents_2025-01.csv: not valid utf-8" in proc.stderr


def test_missing_pii_key_exits_2(tmp_path):
    from synthetic_city import generate
    import datetime as dt

    generate(tmp_path / "syn", scale=0.005, seed=1, start_date=dt.date(2025, 1, 1), days=30,
             timezone="Asia/Shanghai", h3_resolution=8)
    assert _cli("ingest", "police_incidents", tmp_path=tmp_path).returncode == 0
    proc = _cli("silver", "police_incidents", tmp_path=tmp_path)
    assert proc.returncode == 2 and "set the environment variable CITYSAFE_PII_KEY" in proc.stderr
