#!/usr/bin/env bash
# Entrypoint of the CitySafe Superset image (infra/docker/Dockerfile, target superset).
#
#   init   metadata upgrade and Superset's roles; when the DuckDB warehouse file exists (the first marts build
#          writes it), also the admin user, the dashboards of dashboards/assets.py, the roles and the
#          per-district row-level security: `python -m dashboards.serve --no-start`, the step `citysafe serve`
#          (pipeline/serve.py) hands over to. Idempotent; run it again after each dashboards change.
#   web    gunicorn on 0.0.0.0:$SUPERSET_PORT with the flags dashboards/serve.py uses. (`citysafe serve`
#          binds 127.0.0.1, which a container cannot publish.)
#   *      run the given command
#
# Environment: SUPERSET_SECRET_KEY (>= 32 characters), SUPERSET_ADMIN_PASSWORD (init, >= 12),
# CITYSAFE_SUPERSET_METADATA_URI + PGPASSWORD (PostgreSQL metadata), CITYSAFE_SUPERSET_WAREHOUSE_URI,
# CITYSAFE_SUPERSET_WAREHOUSE_SCHEMA, CITYSAFE_SUPERSET_WAREHOUSE_PASSWORD (init: the PostgreSQL marts),
# CITYSAFE_DASHBOARD_TARGETS, SUPERSET_DUCKDB_WAREHOUSE (init: the DuckDB build file the dataset columns
# and district codes are read from).
set -euo pipefail

venv=/opt/citysafe/.venv/superset/bin
export SUPERSET_HOME="${SUPERSET_HOME:-/data/superset}"
export SUPERSET_CONFIG_PATH=/opt/citysafe/dashboards/superset_config.py
export FLASK_APP=superset
export PYTHONPATH=/opt/citysafe
export PYTHONWARNINGS=ignore
warehouse="${SUPERSET_DUCKDB_WAREHOUSE:-/data/warehouse/citysafe_marts.duckdb}"
mkdir -p "$SUPERSET_HOME"

case "${1:-web}" in
  init)
    if [[ -f "$warehouse" ]]; then
      exec "$venv/python" -m dashboards.serve --warehouse "$warehouse" --home "$SUPERSET_HOME" --no-start
    fi
    echo "superset init: no warehouse at $warehouse yet: metadata and roles only; run init again after the" \
         "first marts build to import the dashboards, roles and row-level security" >&2
    "$venv/superset" db upgrade
    "$venv/superset" init
    ;;
  web)
    exec "$venv/gunicorn" --bind "0.0.0.0:${SUPERSET_PORT:-8088}" --workers "${SUPERSET_WORKERS:-2}" \
      --timeout 120 --limit-request-line 0 --limit-request-field_size 0 "superset.app:create_app()"
    ;;
  *)
    exec "$@"
    ;;
esac
