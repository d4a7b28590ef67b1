"""The tests' throw-away PostgreSQL server: the session fixture `pg_server` on top of
citysafe/pg_local.py (initdb into a temporary folder, 127.0.0.1 only; see there). By hand:
`python -m citysafe.pg_local [folder]` (scripts/pg_local.sh).

The fixtures `pg_server` and `city_marts_in_postgres` are registered in tests/conftest.py, on top of the
functions here: a fixture imported into several test modules is a separate fixture in each of them, so
each module started its own "session" server (and published the city's marts again).
"""

from __future__ import annotations

import os

import pytest

from citysafe.pg_local import (  # noqa: F401  (re-exported for the tests)
    PgServer,
    PgServerError,
    find_bin_dir,
    free_port,
    start_server,
)


def session_server(tmp_path_factory):
    """One PostgreSQL server for the test session, stopped at the end (generator: the fixture's body)."""
    if find_bin_dir() is None:
        message = "PostgreSQL server binaries not found (apt-get install postgresql, or set PG_BIN_DIR)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    base = tmp_path_factory.mktemp("postgres")
    temp_root = tmp_path_factory.getbasetemp()
    if temp_root.parent.name.startswith("pytest-of-"):  # pytest's own 0700 root for this user
        temp_root = temp_root.parent
    server = start_server(base, allow_chmod=temp_root)
    print(f"\nPostgreSQL test server on 127.0.0.1:{server.port} started in {server.start_seconds:.2f} s")
    try:
        yield server
    finally:
        server.stop()


CITY_MARTS_SCHEMA = "city_marts"


def publish_city_marts(built_city, pg_server, tmp_path_factory):
    """The built city's marts (models/marts and models/gold) published once to `city_marts` on the test
    server by the prod target; shared by the prod-publish test and the Superset-on-PostgreSQL test.
    Returns (build_marts result, the DuckDB file the prod build served)."""
    import shutil
    from pathlib import Path

    from citysafe.config import load_settings
    from citysafe.warehouse import build_marts

    settings = load_settings(
        environ={k: v for k, v in built_city.env.items() if k.startswith("CITYSAFE_") and k != "CITYSAFE_PII_KEY"}
    )
    served = tmp_path_factory.mktemp("prod") / Path(settings.warehouse_path).name  # not the city's served file
    shutil.copyfile(built_city.warehouse, served)  # the city's marts, as `citysafe run` built them
    dsn_env = "TEST_CITY_MARTS_POSTGRES_DSN"
    os.environ[dsn_env] = pg_server.dsn()
    try:
        result = build_marts(
            settings.model_copy(update={"warehouse_path": served}),
            "prod-city",
            target="prod",
            postgres_dsn_env=dsn_env,
            postgres_schema=CITY_MARTS_SCHEMA,
            select=["mart_incident_district_week"],  # one mart rebuilt; the publish copies every mart
        )
    finally:
        os.environ.pop(dsn_env, None)
    return result, served
