"""Shared fixtures: one real Sail Spark Connect engine per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("RUST_LOG", "warn")


@pytest.fixture(scope="session")
def spark():
    from citysafe.engine import spark_session

    with spark_session("sail", app_name="citysafe-tests") as session:
        yield session


# Test helper modules (fixtures shared by several test files) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def built_city(tmp_path_factory, worker_id):
    """A small synthetic city run end to end by `citysafe run` (see tests/city_fixture.py); with
    pytest-xdist, built once in the directory the workers' temp folders share."""
    from city_fixture import build_city, shared_city

    if worker_id == "master":
        return build_city(tmp_path_factory.mktemp("city"))
    return shared_city(tmp_path_factory.getbasetemp().parent / "built_city")


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """One PostgreSQL server for the test session (each pytest-xdist worker's), shared by every module that
    uses it (tests/pg_server.py), stopped at the end."""
    from pg_server import session_server

    yield from session_server(tmp_path_factory)


@pytest.fixture(scope="session")
def city_marts_in_postgres(built_city, pg_server, tmp_path_factory):
    """The built city's marts published once to `city_marts` on `pg_server` (tests/pg_server.py)."""
    from pg_server import publish_city_marts

    return publish_city_marts(built_city, pg_server, tmp_path_factory)


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """Invoke the `citysafe` CLI in-process (click's CliRunner) on a lake under tmp_path, with no
    CITYSAFE_* variables from the caller's environment; returns (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    from citysafe import logs
    from pipeline.cli import main

    for key in [k for k in os.environ if k.startswith("CITYSAFE_")]:
        monkeypatch.delenv(key)
    syn = tmp_path / "syn"
    base = {
        "CITYSAFE_LAKE_ROOT": str(tmp_path / "lake"),
        "CITYSAFE_SYNTHETIC_ROOT": str(syn),
        "CITYSAFE_WAREHOUSE_PATH": str(tmp_path / "wh" / "marts.duckdb"),
        "CITYSAFE_DISTRICTS_GEOJSON": str(syn / "reference" / "districts.geojson"),
        "CITYSAFE_DISTRICT_ALIASES": str(syn / "reference" / "district_aliases.csv"),
    }

    def invoke(*args, env=None):
        result = CliRunner().invoke(main, list(args), env={**base, **(env or {})}, prog_name="citysafe")
        logs.reset()
        return result.exit_code, result.stdout, result.stderr

    return invoke


# Test files that must share a worker: those that run commands on the built city's lake (one after the
# other, never beside each other), and those sharing the session's PostgreSQL publish of its marts.
SHARED_WORKER = {
    "tests/test_end_to_end.py": "built_city_writers",
    "tests/test_ml_stage.py": "built_city_writers",
    "tests/test_superset.py": "city_marts_in_postgres",
    "tests/test_marts_prod.py": "city_marts_in_postgres",
}


def pytest_configure(config):
    """xdist's `--dist loadgroup` sorts its work units by their number of tests (`--loadscope-reorder`, on
    by default), which undid the order pytest_collection_modifyitems sets below: the files with many tests
    that need the built city (test_alerts, test_exit_codes) went first, and one worker waited for the
    other's city build for about 90 s. Keep the collection order instead."""
    if getattr(config.option, "dist", "no") == "loadgroup":
        config.option.loadscopereorder = False


def pytest_itemcollected(item):
    """With pytest-xdist (`-n 2 --dist loadgroup`, as `make test` runs): a test file's tests stay on one
    worker (module fixtures are built once), files in SHARED_WORKER share one. The built city itself is
    built once per session whichever worker asks first (city_fixture.shared_city). Marked at collection,
    before xdist's own pytest_collection_modifyitems reads the marks."""
    if not item.config.pluginmanager.hasplugin("xdist"):  # the Airflow venv runs without it
        return
    path = item.nodeid.split("::")[0]
    item.add_marker(pytest.mark.xdist_group(SHARED_WORKER.get(path, path)))


def pytest_collection_modifyitems(config, items):
    """Order the work for `-n 2 --dist loadgroup`: the longest chain that needs the built city first (its
    worker builds the city), then every test that does not need it (the other worker runs them meanwhile
    instead of waiting for the build), then the rest of the city's tests."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    city_files = {i.nodeid.split("::")[0] for i in items if "built_city" in getattr(i, "fixturenames", ())}
    first = {p for p, g in SHARED_WORKER.items() if g == "city_marts_in_postgres"}

    def rank(item):
        path = item.nodeid.split("::")[0]
        return 0 if path in first else 2 if path in city_files else 1

    items.sort(key=rank)  # stable: the order within each file is kept
