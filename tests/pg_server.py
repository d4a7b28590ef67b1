"""The tests' throw-away PostgreSQL server: the session fixture `pg_server` on top of
citysafe/pg_local.py (initdb into a temporary folder, 127.0.0.1 only; see there). By hand:
`python -m citysafe.pg_local [folder]` (scripts/pg_local.sh).
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


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """One PostgreSQL server for the test session, stopped at the end."""
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
