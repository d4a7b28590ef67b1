#!/usr/bin/env bash
# Entrypoint of the CitySafe Airflow image (infra/docker/Dockerfile, target airflow).
#
#   init                    idempotent: `airflow db migrate`, then the pool citysafe_lake with ONE slot (every
#                           task that writes the lake runs in it: the pipeline allows one writer per lake; a task
#                           in a pool that does not exist is never scheduled) - as citysafe_airflow_db_migrate
#                           in scripts/airflow_env.sh does for the local SQLite setup
#   <executable> ...        run it (bash -c ..., python ..., celery ...: what the Helm chart passes)
#   <anything else> ...     `airflow <anything else> ...` (api-server, scheduler, dag-processor, triggerer,
#                           celery worker, dags list, ...)
#
# When AIRFLOW_ADMIN_PASSWORD is set (the api-server only), the simple auth manager's passwords file is
# written from it first: {"admin": "<password>"}, mode 0600. Airflow opens that file read-write, so it
# cannot be a read-only secret mount.
set -euo pipefail

if [[ -n "${AIRFLOW_ADMIN_PASSWORD:-}" ]]; then
  passwords_file="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-${AIRFLOW_HOME:-/opt/airflow}/simple_auth_manager_passwords.json}"
  mkdir -p "$(dirname "$passwords_file")"
  (umask 077 && python -c 'import json, os, sys; json.dump({"admin": os.environ["AIRFLOW_ADMIN_PASSWORD"]}, sys.stdout)' \
    > "$passwords_file")
fi

case "${1:-}" in
  init)
    airflow db migrate
    airflow pools set citysafe_lake 1 \
      "CitySafe: tasks that write the lake, one at a time (the pipeline allows one writer per lake)"
    ;;
  "")
    exec airflow version
    ;;
  *)
    if command -v "$1" >/dev/null 2>&1; then
      exec "$@"
    fi
    exec airflow "$@"
    ;;
esac
