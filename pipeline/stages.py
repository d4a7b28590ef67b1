"""The stage graph: every stage of a CitySafe run, its order, and what it reads and writes.

Declared once, in pipeline/stage_graph.yaml (the Airflow DAGs read the same file; they run in another
venv and cannot import this module); this module binds each stage name to its function. `citysafe run`
walks `STAGES` in order; the single-stage commands (`citysafe ingest`, `silver`, ...)
run one stage; the orchestration layer generates its DAGs from the same list. A stage that declares
a fingerprint of its inputs and outputs is skipped by `run` when that fingerprint equals the one
it left after its last success: nothing it reads changed and nothing it wrote was touched since.

Import direction (checked by tests/test_architecture.py): the shared library `citysafe` knows
nothing above it; the jobs (`spark_jobs`, `synthetic_city`, `ml`) import the library; this package
wires the jobs into stages; the CLI (`pipeline.cli`) and the DAGs sit on top and only call this.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from citysafe import city, data_docs, delta_io, fingerprint, lake_lock, logs, quality, reconcile, storage, warehouse
from citysafe.config import REPO_ROOT, ConfigError, Settings
from citysafe.engine import spark_session
from citysafe.errors import MartsError, ReconcileError
from citysafe.runs import RunSummary, write_json_atomic
from citysafe.sources import Source, get_source
from spark_jobs import bronze, catalog, incident_links, silver, silver_reference, unmapped_codes

# The stages' heavier layers (ml, reports, alerts, the generator) are imported inside the stage that
# uses them: every Airflow task is a process running one stage, and start-up is paid per task.

log = logging.getLogger(__name__)

GOLD_TAG = "gold"  # dbt models that read the gold zone (rebuilt by the ml stage)
GOLD_MARTS_PROBE = "mart_risk_map"


class RunContext:
    """What the stages of one run share: settings, the run summary, one engine session (started on
    first use), the selected sources and whether unchanged stages may be skipped."""

    def __init__(self, settings: Settings, run_id: str, *, sources: tuple[str, ...] | None = None, force: bool = False):
        self.settings = settings
        self.summary = RunSummary(settings.runs_dir, run_id)
        self.run_id = self.summary.run_id
        self.sources = sources
        self.force = force
        self.started = time.monotonic()
        self._exit = contextlib.ExitStack()
        self._spark = None

    @property
    def spark(self):
        if self._spark is None:
            log.info("starting engine: %s", self.settings.engine)
            self._spark = self._exit.enter_context(
                spark_session(
                    self.settings.engine,
                    app_name=f"citysafe-{self.run_id}",
                    storage_env=storage.engine_environment(self.settings.lake_root),
                )
            )
        return self._spark

    def close(self) -> None:
        self._spark = None
        self._exit.close()

    def __enter__(self) -> RunContext:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def selected(self, *, silver_only: bool = False) -> list[Source]:
        """The sources this run works on: the named ones, else the city profile's, else the synthetic city's."""
        chosen = [get_source(n) for n in city.source_names(self.settings, self.sources)]
        if silver_only:
            chosen = [s for s in chosen if s.silver is not None]
        return chosen


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    reads: tuple[str, ...]  # lake/warehouse locations and repository folders it reads
    writes: tuple[str, ...]  # what it writes
    run: Callable[[RunContext], dict]
    writes_lake: bool = True  # holds the lake lock while it runs
    fingerprint: Callable[[RunContext], dict] | None = None  # None: always runs (it checks for itself)
    command: tuple[str, ...] = ()  # the `citysafe` sub-command running it alone
    per_source: bool = False  # Airflow runs it once per source
    dag: str = ""  # the DAG group that schedules it (stage_graph.yaml `dags:`)


# --- stage bodies ---------------------------------------------------------------------------------


def run_generate(ctx: RunContext, force: bool = False, day: dt.date | str | None = None) -> dict:
    """The synthetic city's window (skipped when the same city is there), or with `day` ("next" or a
    date) one more day of deliveries after what has been generated (synthetic_city/increment.py)."""
    from synthetic_city import generate as generate_city

    s = ctx.settings
    if not any(city.SYNTHETIC_TAG in src.tags for src in ctx.selected()):
        log.info("no synthetic source in this city's sources: nothing to generate")
        return {"skipped": "no synthetic source selected"}
    params = {
        "seed": s.seed,
        "scale": s.scale,
        "start_date": str(s.city.start_date),
        "days": s.city.days,
        "h3_resolution": s.h3_resolution,
    }
    truth = s.synthetic_root / "truth" / "expected_counts.json"
    if day is not None:
        return _generate_day(s, params, truth, force, day)
    if truth.exists():
        existing = json.loads(truth.read_text())["generator"]
        same = all(str(existing.get(k)) == str(v) for k, v in params.items())
        if same and not force:
            log.info("synthetic city already generated at %s (%s); skipping", s.synthetic_root, params)
            return json.loads(truth.read_text())
        if not same and s.landing_dir.exists() and any(s.landing_dir.iterdir()):
            raise ConfigError(
                f"{s.synthetic_root} holds another synthetic city ({existing}) and the lake at {s.lake_root} "
                f"was built from it; point lake_root and synthetic_root at new folders (or delete them) "
                f"before generating {params}"
            )
    log.info("generating synthetic city: %s -> %s", params, s.synthetic_root)
    return generate_city(
        s.synthetic_root,
        scale=s.scale,
        seed=s.seed,
        start_date=s.city.start_date,
        days=s.city.days,
        timezone=s.timezone,
        h3_resolution=s.h3_resolution,
    )


def _generate_day(s: Settings, params: dict, truth: Path, force: bool, day: dt.date | str) -> dict:
    from synthetic_city import increment

    if force:
        raise ConfigError("--force regenerates the whole window (and drops the days added); it does not go with a day")
    if not truth.exists():
        raise ConfigError(
            f"no synthetic city at {s.synthetic_root}: run `citysafe generate` (or `citysafe run`) first, then add days"
        )
    existing = json.loads(truth.read_text())["generator"]
    if not all(str(existing.get(k)) == str(v) for k, v in params.items()):
        raise ConfigError(
            f"{s.synthetic_root} holds another synthetic city ({existing}) than the config's ({params}): "
            f"days are added to the city that is there; fix the config (scale, seed, city) or synthetic_root"
        )
    # The day must be over in the city before its departments can deliver it.
    today = dt.datetime.now(ZoneInfo(s.timezone)).date()
    try:
        result = increment.generate_day(s.synthetic_root, None if day == "next" else day, today=today)
    except increment.IncrementError as exc:
        raise ConfigError(str(exc)) from None
    verb = "generated" if result["generated"] else "was already generated, nothing changed"
    log.info("day %s %s: %s", result["day"], verb, ", ".join(result["files"]))
    return {"day": result}


def run_reference(ctx: RunContext) -> dict:
    result = silver_reference.run(ctx.spark, ctx.settings, run_id=ctx.run_id)
    ctx.summary.record_table("silver.reference", result)
    return result


def run_ingest(ctx: RunContext) -> dict:
    out = {}
    for source in ctx.selected():
        log.info("ingest %s", source.name)
        out[source.name] = bronze.ingest(ctx.spark, ctx.settings, source)
        ctx.summary.record_table(f"bronze.{source.name}", out[source.name])
    return out


def run_silver(ctx: RunContext) -> dict:
    if ctx.sources is not None:
        missing = [n for n in ctx.sources if get_source(n).silver is None]
        if missing:
            raise ConfigError(f"source(s) {missing} have no silver section in sources/<name>.yaml yet")
    out = {}
    quality.import_in_background()  # GX takes seconds to import: overlapped with the first staging
    sources = silver.ordered(ctx.selected(silver_only=True))
    with data_docs.deferred(ctx.settings):  # the gates' Data Docs pages in one build, after the last gate
        for source in sources:
            log.info("silver %s", source.name)
            out[source.name] = silver.run(ctx.spark, ctx.settings, source, ctx.run_id, defer_links=True)
            ctx.summary.record_table(f"silver.{source.silver.table}[{source.name}]", out[source.name])
    # Cross-department links once, after every incident source (each would otherwise recompute them).
    for registry in incident_links.registries_involving(sources):
        links = incident_links.refresh_if_stale(ctx.spark, ctx.settings, registry)
        ctx.summary.record_table("silver.incident_link", links)
    if not city.has_polygons(ctx.settings):
        # A city known only from its records: its districts and H3 grid are where its incidents fall.
        grid = silver_reference.derive_event_grid(ctx.spark, ctx.settings, ctx.run_id)
        ctx.summary.record_table("silver.event_grid", grid)
        log.info("city grid from the incidents: %s cells in %s districts", grid["cells"], grid["districts"])
    # The stewards' review list: codes and texts that could not be mapped, from the quarantine.
    review = unmapped_codes.refresh(ctx.spark, ctx.settings)
    ctx.summary.record_table("silver.unmapped_codes", review)
    log.info("unmapped codes for review: %s (%s quarantined rows)", review["codes"], review["quarantine_rows"])
    return out


def run_marts(
    ctx: RunContext,
    target: str = "dev",
    postgres_dsn_env: str | None = None,
    postgres_schema: str | None = None,
    docs: bool = False,
    full_refresh: bool = False,
) -> dict:
    from ml import gold as gold_tables

    missing = sorted(
        name
        for name, spec in catalog.silver_tables(ctx.settings).items()
        if fingerprint.delta_version(spec.path) is None
    )
    if missing:
        # Fail in a second with the cause instead of dbt's error per model: the marts read every silver table.
        raise MartsError(
            f"{len(missing)} silver table(s) missing under {ctx.settings.silver_dir} "
            f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): wrong lake_root, or "
            f"run `citysafe reference` (it creates every silver table no job has written yet)"
        )
    # The staging models read the silver tables' _changed_at: a lake written before the column existed gets
    # it here too (a metadata-only commit), not only when a silver job next writes the table.
    for spec in catalog.silver_tables(ctx.settings).values():
        if spec.changed_at:
            delta_io.ensure_table(spec)
    # The gold marts (risk maps, forecasts) read the gold tables: they exist, empty, before the first model run.
    for spec in gold_tables.gold_tables(ctx.settings.gold_dir).values():
        delta_io.ensure_table(spec)
    result = warehouse.build_marts(
        ctx.settings,
        ctx.run_id,
        target=target,
        postgres_dsn_env=postgres_dsn_env or warehouse.PROD_DSN_ENV,
        postgres_schema=postgres_schema or warehouse.PROD_SCHEMA,
        full_refresh=full_refresh,
    )
    if docs:
        result["docs"] = str(warehouse.generate_docs(ctx.settings, ctx.run_id))
    ctx.summary.record_table("warehouse", result)
    return result


def run_reconcile(ctx: RunContext) -> dict:
    """Synthetic sources with a silver path reconcile end to end, the other synthetic ones at bronze
    (a real city has no generator truth: its rows are accounted for by the silver jobs' own checks)."""
    chosen = [s for s in ctx.selected() if city.SYNTHETIC_TAG in s.tags]
    if not chosen:
        log.info("no synthetic source in this city's sources: no generator truth to reconcile with")
        return {"skipped": "no synthetic source selected", "ok": True}
    full = {s.name: s.silver.table for s in chosen if s.silver}
    bronze_only = tuple(s.name for s in chosen if not s.silver)
    report = reconcile.against_truth(ctx.settings, full, bronze_only)
    ctx.summary.record_table("reconciliation", report)
    for name, item in report["sources"].items():
        log.info("reconcile %s: %s %s", name, "OK " if item["ok"] else "MISMATCH", item["actual"])
        for problem in item["problems"]:
            log.warning("    %s", problem)
    if not report["ok"]:
        raise ReconcileError(
            "the lake does not reconcile with the generator's expected counts: "
            + "; ".join(p for i in report["sources"].values() for p in i["problems"])
        )
    return report


def run_ml(ctx: RunContext) -> dict:
    """Backtest and fit the risk models, publish the champions into gold, then rebuild the marts that
    read gold (only those: the rest of the served warehouse is copied)."""
    from ml import risk_models

    result = risk_models.train_and_publish(ctx.settings, lambda: ctx.spark, ctx.run_id)
    if result["changed"] or not warehouse.has_models(ctx.settings, GOLD_MARTS_PROBE):
        result["marts"] = warehouse.build_marts(ctx.settings, ctx.run_id, select=[f"tag:{GOLD_TAG}"])
        ctx.summary.record_table("warehouse.gold", result["marts"])
    ctx.summary.record_table(
        "gold", {k: v for k, v in result.items() if k not in ("summary", "forecast_metrics", "marts")}
    )
    return result


def run_ml_predict(ctx: RunContext) -> dict:
    """`citysafe ml predict`: the last training's methods on the newest data, no backtest."""
    from ml import risk_models

    with lake_lock.lake_lock(
        ctx.settings.work_root, run_id=ctx.run_id, wait_seconds=ctx.settings.lake_lock_wait_seconds
    ):
        try:
            result = risk_models.predict_and_publish(ctx.settings, lambda: ctx.spark, ctx.run_id)
        except FileNotFoundError as exc:
            raise ConfigError(str(exc)) from None
        if result["changed"]:
            result["marts"] = warehouse.build_marts(ctx.settings, ctx.run_id, select=[f"tag:{GOLD_TAG}"])
    return result


def run_report(ctx: RunContext) -> dict:
    """The quarterly risk report (HTML + PDF, English and Chinese) for the latest complete quarter."""
    from reports import build as report_build
    from reports.quarters import UnknownQuarter

    langs = ("en", "zh")
    if not report_build.cjk_font_available():
        log.warning("no CJK font installed (apt-get install fonts-noto-cjk): the report is written in English only")
        langs = ("en",)
    try:
        result = report_build.generate(ctx.settings, langs=langs, run_id=ctx.run_id)
    except UnknownQuarter as exc:  # e.g. less than a quarter of data: nothing to report yet, not a failure
        log.info("no report: %s", exc)
        return {}
    entry = {
        "quarter": result["quarter"],
        "files": [str(p) for p in result["files"]],
        "written": len(result["written"]),
    }
    ctx.summary.record_table("report", entry)
    return entry


def run_alerts(ctx: RunContext, as_of: dt.datetime | None = None) -> dict:
    """Early warning: evaluate the alert rules at `as_of` (default: the configured clock), open, escalate
    and resolve alerts, deliver what is due. Always runs: the clock moves even when no input changed."""
    from alerts import run as alert_run

    result = alert_run.evaluate(ctx.settings, lambda: ctx.spark, as_of)
    ctx.summary.record_table("alerts", result)
    return result


# --- fingerprints ---------------------------------------------------------------------------------


def _silver_inputs(ctx: RunContext) -> dict:
    s = ctx.settings
    names = sorted(src.name for src in ctx.selected(silver_only=True))
    return {
        "sources": names,
        "bronze": {n: fingerprint.delta_version(s.bronze_dir / n) for n in names},
        "silver": fingerprint.delta_versions(s.silver_dir),
        "declarations": fingerprint.files_digest(
            [
                REPO_ROOT / "sources",
                REPO_ROOT / "reference",
                REPO_ROOT / "expectations",
                *[p for p in (s.districts_geojson, s.district_aliases) if p is not None],
            ],
            REPO_ROOT,
        ),
        "settings": [s.timezone, s.h3_resolution, s.pii_key_env, s.bounds],
    }


def _marts_inputs(ctx: RunContext) -> dict:
    s = ctx.settings
    return {
        "silver": fingerprint.delta_versions(s.silver_dir),
        "dbt_project": fingerprint.files_digest([warehouse.DBT_PROJECT_DIR], REPO_ROOT),
        "vars": warehouse.dbt_vars(s),
        # the served file and its last FULL build (the ml stage's rebuild of the gold marts does not count)
        "warehouse": [str(s.warehouse_path), warehouse.served_build(s)],
        # Freshness is measured when the marts are built: rebuild at least once a day.
        "day": dt.datetime.now(dt.UTC).date().isoformat(),
    }


def _ml_inputs(ctx: RunContext) -> dict:
    from ml import risk_models

    s = ctx.settings
    return {
        **risk_models.inputs(s),
        "gold": fingerprint.delta_versions(s.gold_dir),
        "warehouse_exists": warehouse.served_build(s)["exists"],
    }


def _report_inputs(ctx: RunContext) -> dict:
    from reports import build as report_build
    from reports import snapshot
    from reports.quarters import UnknownQuarter

    s = ctx.settings
    quarter = None
    if warehouse.served_build(s)["exists"]:
        try:
            quarter = report_build.choose_quarter(s, None).label
        except UnknownQuarter:
            pass
    return {
        # The report is written from its quarter's inputs, frozen out of the marts the first time
        # (reports/<quarter>/inputs.duckdb): a marts build that leaves the latest complete quarter the
        # same changes nothing in it (a daily run skips the 3-4 s of charts and pages).
        "quarter": quarter,
        "inputs": fingerprint.file_state(snapshot.quarter_dir(s, quarter) / snapshot.INPUTS) if quarter else None,
        "code": fingerprint.files_digest(
            [REPO_ROOT / "reports", REPO_ROOT / "reference" / "report_actions.csv"], REPO_ROOT
        ),
        "targets": report_build.targets(s),
        "reports": sorted(str(p.relative_to(s.reports_dir)) for p in s.reports_dir.glob("*/report_*")),
    }


STAGE_GRAPH_FILE = Path(__file__).with_name("stage_graph.yaml")

# What runs each stage of stage_graph.yaml (the graph itself, its order and its DAGs, is in that file).
STAGE_FUNCTIONS: dict[str, tuple[Callable[[RunContext], dict], Callable[[RunContext], dict] | None]] = {
    "generate": (run_generate, None),
    "reference": (run_reference, None),
    "ingest": (run_ingest, None),
    "silver": (run_silver, _silver_inputs),
    "marts": (run_marts, _marts_inputs),
    "reconcile": (run_reconcile, None),
    "ml": (run_ml, _ml_inputs),
    "report": (run_report, _report_inputs),
    "alerts": (run_alerts, None),
}


def load_stage_graph(path: Path = STAGE_GRAPH_FILE) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _bind(graph: dict) -> tuple[Stage, ...]:
    declared = [entry["name"] for entry in graph["stages"]]
    if sorted(declared) != sorted(STAGE_FUNCTIONS):
        raise RuntimeError(f"{STAGE_GRAPH_FILE} declares stages {declared}; the code runs {sorted(STAGE_FUNCTIONS)}")
    out = []
    for entry in graph["stages"]:
        run, fp = STAGE_FUNCTIONS[entry["name"]]
        out.append(
            Stage(
                entry["name"],
                entry["summary"],
                reads=tuple(entry.get("reads", ())),
                writes=tuple(entry.get("writes", ())),
                run=run,
                writes_lake=entry.get("writes_lake", True),
                fingerprint=fp,
                command=tuple(entry["command"]),
                per_source=entry.get("per_source", False),
                dag=entry["dag"],
            )
        )
    return tuple(out)


STAGES: tuple[Stage, ...] = _bind(load_stage_graph())
STAGE_NAMES = tuple(s.name for s in STAGES)


def stage(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r} (stages: {', '.join(STAGE_NAMES)})")


# --- running --------------------------------------------------------------------------------------


def _state_path(ctx: RunContext, st: Stage) -> Path:
    return ctx.settings.state_dir / "stages" / f"{st.name}.json"


def _last_state(ctx: RunContext, st: Stage) -> dict:
    path = _state_path(ctx, st)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


def _canonical(data: dict) -> str:
    return json.dumps(data, sort_keys=True, default=str)


def run_stage(ctx: RunContext, st: Stage, *, skip_unchanged: bool = False, **options) -> dict | None:
    """Run one stage: log lines carry its name, it holds the lake lock if it writes the lake, its
    outcome goes into the run summary, and with `skip_unchanged` it is skipped when its fingerprint
    is the one it left last time. Errors propagate (the CLI maps them to exit codes)."""
    with logs.stage_context(st.name), contextlib.ExitStack() as stack:
        if st.writes_lake:
            stack.enter_context(
                lake_lock.lake_lock(
                    ctx.settings.work_root, run_id=ctx.run_id, wait_seconds=ctx.settings.lake_lock_wait_seconds
                )
            )
        t0 = time.monotonic()
        before = st.fingerprint(ctx) if st.fingerprint else None
        if skip_unchanged and before is not None and not ctx.force:
            last = _last_state(ctx, st)
            if _canonical(last.get("fingerprint", {})) == _canonical(before):
                log.info("skipped: nothing it reads or writes changed since run %s", last.get("run_id"))
                ctx.summary.record_stage(st.name, "skipped", time.monotonic() - t0, since_run=last.get("run_id"))
                return None
        try:
            result = st.run(ctx, **options)
        except Exception as exc:
            ctx.summary.record_stage(st.name, "failed", time.monotonic() - t0, error=str(exc) or repr(exc))
            raise
        ctx.summary.record_stage(st.name, "ok", time.monotonic() - t0)
        if st.fingerprint is not None:
            write_json_atomic(_state_path(ctx, st), {"run_id": ctx.run_id, "fingerprint": st.fingerprint(ctx)})
        return result


def run_all(ctx: RunContext, names: tuple[str, ...] = STAGE_NAMES) -> dict:
    """Walk the stage graph in order (the stages named), skipping those whose inputs did not change."""
    out = {}
    for st in STAGES:
        if st.name in names:
            out[st.name] = run_stage(ctx, st, skip_unchanged=True)
    return out
