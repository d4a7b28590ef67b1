"""
CitySafe police path: one daily run of the police-incidents feed, from delivery to served marts.

Wiring only. Each task shells out to the pipeline CLI (``$CITYSAFE_BIN``, default
``<repo>/.venv/pipeline/bin/citysafe``), which lives in its own venv; helpers are in
``citysafe_dag_support``.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, conf
from citysafe_dag_support import REPO_ROOT, citysafe_command, citysafe_task_env, default_args

DOC_MD = """
### CitySafe police path

Runs the police-incidents feed end to end; every stage writes into the same run summary,
`<lake_root>/runs/<run_id>/summary.json`, keyed by this DAG run's `run_id`.

1. **generate**: the synthetic city writes its departments' deliveries (idempotent).
2. **reference**: taxonomy, districts, H3 cells and the source registry into silver; every silver table
   no job has written yet is created empty, so the marts build on a police-only lake.
3. **ingest_police**: landing (manifest, checksums) and the **bronze** Delta table.
4. **silver_police**: bronze -> staging -> Great Expectations gate -> **silver** Delta table
   (rows that fail the gate go to quarantine).
5. **build_marts**: dbt builds the marts into a new DuckDB file, swapped in atomically.
6. **reconcile**: checks the run summary against the generator's truth; fails the run if it does not hold.

Each task runs `$CITYSAFE_BIN <command> --run-id <run_id>` (default CLI: `<repo>/.venv/pipeline/bin/citysafe`).
Config: `config/citysafe.yaml`, overridden by `CITYSAFE_<KEY>` environment variables of the worker;
the PII key comes from `CITYSAFE_PII_KEY`. A failed stage is retried once (after
`[citysafe] retry_delay_seconds`, env `AIRFLOW__CITYSAFE__RETRY_DELAY_SECONDS`, default 30 s),
then fails the run and its downstream stages do not run.
"""


def citysafe_task(task_id: str, *args: str) -> BashOperator:
    """A task running ``citysafe <args> --run-id <run_id>``; any non-zero exit fails it."""
    return BashOperator(
        task_id=task_id,
        bash_command=citysafe_command(*args),
        env=citysafe_task_env(),
        append_env=True,  # keep the worker's CITYSAFE_* overrides and CITYSAFE_PII_KEY
        cwd=str(REPO_ROOT),
        skip_on_exit_code=None,  # BashOperator would otherwise mark exit code 99 as skipped
    )


with DAG(
    dag_id="citysafe_police_path",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(conf.getfloat("citysafe", "retry_delay_seconds", fallback=30)),
    doc_md=DOC_MD,
    tags=["citysafe", "police"],
):
    generate = citysafe_task("generate", "generate")
    load_reference = citysafe_task("reference", "reference")
    ingest_police = citysafe_task("ingest_police", "ingest", "police_incidents")
    silver_police = citysafe_task("silver_police", "silver", "police_incidents")
    build_marts = citysafe_task("build_marts", "build-marts")
    reconcile = citysafe_task("reconcile", "reconcile", "police_incidents")

    generate >> load_reference >> ingest_police >> silver_police >> build_marts >> reconcile
