"""Shared fixtures: one real Sail Spark Connect engine per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("RUST_LOG", "warn")


@pytest.fixture(scope="session")
def spark():
    from citysafe.engine import spark_session

    with spark_session("sail", app_name="citysafe-tests") as session:
        yield session


import sys
from pathlib import Path

# Test helper modules (fixtures shared by several test files) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def built_city(tmp_path_factory):
    """A small synthetic city run end to end by `citysafe run` (see tests/city_fixture.py)."""
    from city_fixture import build_city

    return build_city(tmp_path_factory.mktemp("city"))
