#!/usr/bin/env bash
# A throw-away local PostgreSQL (the one the tests use) for trying the postgres connector by hand:
#   scripts/pg_local.sh [folder]     prints the DSN; Ctrl-C stops the server (the folder stays)
# Then e.g. `export FIRE_DB_DSN='<the DSN>'` and point a source's connector.dsn_env at FIRE_DB_DSN.
# Needs the PostgreSQL server binaries (Debian: apt-get install postgresql, or set PG_BIN_DIR).
# As root the server runs as `nobody` (initdb refuses root); it listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/pipeline/bin/python}" -m citysafe.pg_local "$@"
