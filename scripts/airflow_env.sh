# shellcheck shell=bash
# CitySafe Lake: environment for running Airflow locally (offline, quiet, SQLite metadata).
#
#   source scripts/airflow_env.sh            # exports the settings below into this shell
#   citysafe_airflow_db_migrate              # idempotent: creates/upgrades $AIRFLOW_HOME/airflow.db, lake pool
#   airflow dags test citysafe_source__police_incidents
#   airflow standalone                       # scheduler, dag-processor, triggerer and api-server on :8080
#
#   bash scripts/airflow_env.sh migrate      # same as sourcing + citysafe_airflow_db_migrate
#
# Respected if already set: AIRFLOW_HOME (default <repo>/var/airflow), AIRFLOW_VENV (default
# <repo>/.venv/airflow; its bin/ goes first on PATH), CITYSAFE_BIN (the DAGs default it to
# <repo>/.venv/pipeline/bin/citysafe).
# Everything else is (re)derived from AIRFLOW_HOME on every sourcing, so sourcing again after changing
# AIRFLOW_HOME moves the metadata DB with it. Safe to source more than once and under `set -u`.

_citysafe_src="${BASH_SOURCE[0]:-$0}"
# Not exported, and not named CITYSAFE_*: the pipeline treats every CITYSAFE_* variable as a config
# override and rejects unknown keys.
_citysafe_repo="$(cd "$(dirname "$_citysafe_src")/.." && pwd)"
unset _citysafe_src

export AIRFLOW_VENV="${AIRFLOW_VENV:-$_citysafe_repo/.venv/airflow}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$_citysafe_repo/var/airflow}"
# `airflow standalone` starts its components as `airflow ...` from PATH.
case ":$PATH:" in
  *":$AIRFLOW_VENV/bin:"*) ;;
  *) export PATH="$AIRFLOW_VENV/bin:$PATH" ;;
esac

# Where DAGs live and what gets loaded.
export AIRFLOW__CORE__DAGS_FOLDER="$_citysafe_repo/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$AIRFLOW_HOME/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__EXECUTOR=LocalExecutor
# LocalExecutor otherwise starts 32 workers on a 2-core machine.
export AIRFLOW__CORE__PARALLELISM=2
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=True

# SQLite metadata DB inside AIRFLOW_HOME (absolute path: sqlite:/// + /abs/path).
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"

# Offline and quiet: no telemetry, no example DAGs, plain log lines.
export AIRFLOW__COSMOS__ENABLE_TELEMETRY=False
export DO_NOT_TRACK=1
export SCARF_NO_ANALYTICS=1
export OPENLINEAGE_DISABLED=true
export AIRFLOW__OPENLINEAGE__DISABLED=True
export AIRFLOW__OPENLINEAGE__NAMESPACE=citysafe   # cosmos reads it at import; unset, it logs a warning
export AIRFLOW__LOGGING__COLORED_CONSOLE_LOG=False
export AIRFLOW__API__EXPOSE_CONFIG=False
# The UI and the task execution API listen on the loopback interface only.
export AIRFLOW__API__HOST=127.0.0.1

# Idempotent: `airflow db migrate` creates the DB on first use and is a no-op upgrade afterwards; the lake
# pool `citysafe_lake` (dags/citysafe_dag_support.py LAKE_POOL: every task that writes the lake) is (re)set to
# one slot; a task in a pool that does not exist is never scheduled.
citysafe_airflow_db_migrate() {
  mkdir -p "$AIRFLOW_HOME" || return
  "$AIRFLOW_VENV/bin/airflow" db migrate "$@" || return
  "$AIRFLOW_VENV/bin/airflow" pools set citysafe_lake 1 \
    "CitySafe: tasks that write the lake, one at a time (the pipeline allows one writer per lake)"
}

unset _citysafe_repo

# Executed rather than sourced: `bash scripts/airflow_env.sh migrate`.
if [[ "${BASH_SOURCE[0]:-}" == "${0:-}" ]]; then
  case "${1:-}" in
    migrate) shift; citysafe_airflow_db_migrate "$@" ;;
    *) echo "usage: source ${0} | bash ${0} migrate" >&2; exit 2 ;;
  esac
fi
