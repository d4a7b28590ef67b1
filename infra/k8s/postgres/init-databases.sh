#!/usr/bin/env bash
# CitySafe Lake's PostgreSQL: three databases, each with its own role. Run once by the postgres image's
# entrypoint on an EMPTY data directory (/docker-entrypoint-initdb.d/), in Docker Compose
# (infra/compose/compose.yaml mounts this file) and in Kubernetes (infra/k8s/kustomization.yaml ships it as
# the ConfigMap postgres-init). On a managed PostgreSQL run it once by hand with the same variables
# (psql connection settings through PGHOST / PGUSER / PGPASSWORD, POSTGRES_USER = the admin role).
#
#   airflow    Airflow's metadata (and the Celery result backend)          role airflow (owner)
#   superset   Superset's metadata                                         role superset (owner)
#   citysafe   the served marts: `citysafe build-marts --target prod`      role marts_writer (owner: creates
#              publishes schema `marts` (a schema swap per publish)         and swaps the schemas)
#                                                                          role superset_reader: read-only,
#                                                                          SELECT on every schema/table the
#                                                                          writer creates (default privileges,
#                                                                          so they survive each swap)
#
# Passwords come from the environment only: AIRFLOW_DB_PASSWORD, SUPERSET_DB_PASSWORD, MARTS_WRITER_PASSWORD,
# MARTS_READER_PASSWORD. psql passes them as variables (:'name'), never spliced into SQL text by the shell.
set -euo pipefail
: "${AIRFLOW_DB_PASSWORD:?}" "${SUPERSET_DB_PASSWORD:?}" "${MARTS_WRITER_PASSWORD:?}" "${MARTS_READER_PASSWORD:?}"

psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  -v airflow_pw="$AIRFLOW_DB_PASSWORD" -v superset_pw="$SUPERSET_DB_PASSWORD" \
  -v writer_pw="$MARTS_WRITER_PASSWORD" -v reader_pw="$MARTS_READER_PASSWORD" <<'SQL'
CREATE ROLE airflow LOGIN PASSWORD :'airflow_pw';
CREATE DATABASE airflow OWNER airflow;
REVOKE ALL ON DATABASE airflow FROM PUBLIC;

CREATE ROLE superset LOGIN PASSWORD :'superset_pw';
CREATE DATABASE superset OWNER superset;
REVOKE ALL ON DATABASE superset FROM PUBLIC;

CREATE ROLE marts_writer LOGIN PASSWORD :'writer_pw';
CREATE ROLE superset_reader LOGIN PASSWORD :'reader_pw';
ALTER ROLE superset_reader SET default_transaction_read_only = on;
CREATE DATABASE citysafe OWNER marts_writer;
REVOKE ALL ON DATABASE citysafe FROM PUBLIC;
GRANT CONNECT ON DATABASE citysafe TO superset_reader;

\connect citysafe
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE marts_writer GRANT USAGE ON SCHEMAS TO superset_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE marts_writer GRANT SELECT ON TABLES TO superset_reader;
SQL
