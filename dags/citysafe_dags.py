"""
CitySafe DAGs, generated from ``pipeline/stage_graph.yaml`` and ``sources/*.yaml``: no stage, order or
source is listed here.

- one DAG per source entry (``citysafe_source__<name>``: ``ingest`` -> ``silver``; ingest only for a source
  without a ``silver:`` section), scheduled, owned and documented from its entry; its silver task updates
  the asset ``citysafe://silver/<silver.table>``;
- one DAG per other group of the stage graph's ``dags:`` (city, marts, ml, report, alerts), chained by
  assets: the silver assets start the marts, the marts the models, the models the report, and new device
  readings, marts or models the alerts.

Wiring only: every task shells out to the pipeline CLI (``$CITYSAFE_BIN``, default
``<repo>/.venv/pipeline/bin/citysafe``), which lives in its own venv; the specs come from
``citysafe_dag_support.dag_specs``.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import citysafe_dag_support as support
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Asset, AssetAny, AssetOrTimeSchedule, CronTriggerTimetable, conf

log = logging.getLogger(__name__)


def _timetable(cron: str) -> CronTriggerTimetable:
    # No start_date and run_immediately=0: unpausing a DAG starts nothing for a past tick; its first run is its
    # next scheduled time (trigger it to run now). Unpausing every DAG at once thus starts no 30 runs against
    # an empty lake, and the asset chain decides what follows what.
    return CronTriggerTimetable(cron, timezone="UTC", run_immediately=timedelta(0))


def _schedule(spec: support.DagSpec):
    assets = AssetAny(*(Asset(uri) for uri in spec.assets_any)) if spec.assets_any else None
    if spec.cron and assets is not None:
        return AssetOrTimeSchedule(timetable=_timetable(spec.cron), assets=assets)
    if spec.cron:
        return _timetable(spec.cron)
    return assets


def build_dag(spec: support.DagSpec, retry_delay_seconds: float, max_retry_delay_seconds: float) -> DAG:
    args = support.default_args(retry_delay_seconds, max_retry_delay_seconds)
    args["owner"] = spec.owner
    extra_env = {support.AS_OF_ENV: spec.as_of} if spec.as_of else None
    with DAG(
        dag_id=spec.dag_id,
        schedule=_schedule(spec),
        description=spec.description,
        doc_md=spec.doc_md,
        default_args=args,
        catchup=False,
        max_active_runs=1,
        dagrun_timeout=spec.dagrun_timeout,
        tags=list(spec.tags),
    ) as dag:
        previous = None
        for t in spec.tasks:
            task = BashOperator(
                task_id=t.task_id,
                bash_command=support.citysafe_command(*t.args, env_options=dict(t.env_options)),
                env=support.citysafe_task_env(extra_env),
                append_env=True,  # keep the worker's CITYSAFE_* overrides and CITYSAFE_PII_KEY
                cwd=str(support.REPO_ROOT),
                skip_on_exit_code=None,  # BashOperator would otherwise mark exit code 99 as skipped
                execution_timeout=t.timeout,
                outlets=[Asset(uri) for uri in t.outlets],
                pool=support.LAKE_POOL if t.writes_lake else "default_pool",
                priority_weight=t.priority,
                weight_rule="absolute",
                on_failure_callback=support.notify_failure,
            )
            if previous is not None:
                previous >> task
            previous = task
    return dag


def build_dags() -> dict[str, DAG]:
    sources, errors = support.load_sources()
    for error in errors:
        log.error("CitySafe source skipped (no DAG): %s", error)
    specs = support.dag_specs(support.load_stage_graph(), sources)
    delay = conf.getfloat("citysafe", "retry_delay_seconds", fallback=support.DEFAULT_RETRY_DELAY_SECONDS)
    max_delay = conf.getfloat("citysafe", "max_retry_delay_seconds", fallback=support.DEFAULT_MAX_RETRY_DELAY_SECONDS)
    return {spec.dag_id: build_dag(spec, delay, max_delay) for spec in specs}


globals().update(build_dags())
