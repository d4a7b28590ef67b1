"""`citysafe` command line: one command per stage of the stage graph, `run` for the whole graph.

The CLI only parses arguments, sets up logging and calls `pipeline.stages`; errors become exit codes
in one place (`_exit_on_error`): a `CitySafeError` prints one line and exits with its code, anything
else is a bug and prints its traceback (exit 1). The codes are in citysafe/errors.py.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import time
import traceback

import click

from citysafe import city, delta_io, lake_lock, logs, storage
from citysafe import data_docs as gx_docs
from citysafe.config import ConfigError, Settings, load_settings
from citysafe.errors import EXIT_CODES, EXIT_CONFIG, EXIT_ERROR, CitySafeError
from citysafe.runs import new_run_id, sanitize_run_id
from citysafe.sources import load_registry
from ml import risk_models
from ml.tracking import tracking_uri
from pipeline import stages
from pipeline.stages import RunContext

log = logging.getLogger("pipeline.cli")


def _fail(code: int, message: str):
    click.echo(f"citysafe: error: {message}", err=True)
    sys.exit(code)


def _exit_on_error(func):
    """The one place where errors become exit codes."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except CitySafeError as exc:
            _fail(exc.exit_code, str(exc))
        except Exception as exc:  # noqa: BLE001 - the last resort keeps the trace: this is a bug
            outage = _storage_outage(exc)
            if outage is not None:
                _fail(outage.exit_code, str(outage))
            traceback.print_exc()
            _fail(EXIT_ERROR, f"unexpected error: {exc!r}")

    return wrapper


def _storage_outage(exc: Exception):
    """With the lake on object storage, an engine or delta-rs error that says the store could not be
    reached is an expected failure (exit 9, one line), not a bug."""
    try:
        remote = storage.is_remote(load_settings().lake_root)
    except Exception:  # noqa: BLE001 - no readable config: not a storage outage
        return None
    return storage.unreachable(exc) if remote else None


def _settings() -> Settings:
    logs.configure()
    return load_settings()


@contextlib.contextmanager
def _context(run_id: str | None, sources: tuple[str, ...] | None = None, force: bool = False, settings=None):
    settings = settings or _settings()
    with RunContext(settings, sanitize_run_id(run_id) if run_id else new_run_id(), sources=sources, force=force) as ctx:
        yield ctx


def _sources(names: tuple[str, ...], all_: bool, tag: str | None = None) -> tuple[str, ...]:
    """Named sources; with --all every registered source, with --tag those carrying the tag."""
    if all_ or tag:
        return tuple(n for n, s in load_registry().items() if tag is None or tag in s.tags)
    if not names:
        raise ConfigError("name at least one source, or use --all / --tag (see --help)")
    return names


run_id_option = click.option("--run-id", default=None, help="Run id shared by stages of one run (default: new).")
skip_unchanged_option = click.option(
    "--skip-unchanged",
    is_flag=True,
    help="Do nothing (exit 0) when nothing the stage reads or writes changed since its last success "
    "(what `citysafe run` does; the DAGs pass it).",
)
sources_argument = click.argument("sources", nargs=-1)
EXIT_CODE_HELP = "\b\nExit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODE_HELP)
@click.version_option(package_name="citysafe-lake")
def main():
    """CitySafe Lake: land departmental data, unify it in Delta, gate it, and build the marts.

    Configuration: config/citysafe.yaml (or $CITYSAFE_CONFIG), overridden by CITYSAFE_<KEY> variables.
    """


@main.command()
@click.option("--force", is_flag=True, help="Regenerate even if the same city is already there (drops the days added).")
@click.option(
    "--next-day",
    is_flag=True,
    help="Add one day: every department's deliveries for the day after the last one generated, as new files "
    "beside the earlier ones (which stay byte-identical), plus that day's truth.",
)
@click.option(
    "--day",
    "day",
    default=None,
    metavar="YYYY-MM-DD",
    help="Add this day: it must be the next one (the first after the window, then the day after the last "
    "one added); a day already added changes nothing. The day must be over in the city's time zone.",
)
@run_id_option
@_exit_on_error
def generate(force, next_day, day, run_id):
    """Write the synthetic city's departmental deliveries and its truth files (deterministic).

    The window is city.start_date + city.days; --next-day / --day add daily increments after it, which
    the next `citysafe run` ingests as new deliveries and reconciles with the truth of every day."""
    if next_day and day:
        raise ConfigError("--next-day and --day name the day twice: give one of them")
    wanted = "next" if next_day else _iso_date("--day", day) if day else None
    with _context(run_id) as ctx:
        counts = stages.run_stage(ctx, stages.stage("generate"), force=force, day=wanted)
    if wanted is not None and "day" in counts:
        result = counts["day"]
        rows = ", ".join(f"{name} {c['rows_delivered']}" for name, c in result["sources"].items() if c["files"])
        if result["generated"]:
            click.echo(
                f"synthetic city at {ctx.settings.synthetic_root}: day {result['day']} delivered in "
                f"{len(result['files'])} new files ({rows} rows)"
            )
        else:
            click.echo(
                f"synthetic city at {ctx.settings.synthetic_root}: day {result['day']} was already generated "
                f"({len(result['files'])} files); nothing changed"
            )
        return
    police = counts["sources"].get("police_incidents", {})
    click.echo(f"synthetic city at {ctx.settings.synthetic_root}: police rows {police.get('rows_delivered')}")


def _iso_date(option: str, value: str):
    import datetime as dt

    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option} {value!r}: not a date like 2026-01-01") from None


@main.command()
@sources_argument
@click.option("--all", "all_", is_flag=True, help="Every registered source (sources/*.yaml).")
@click.option("--tag", default=None, help="Every source with this tag, e.g. synthetic or real.")
@run_id_option
@_exit_on_error
def ingest(sources, all_, tag, run_id):
    """Fetch new deliveries of SOURCES, land them (checksums, manifest) and append them to bronze Delta."""
    with _context(run_id, _sources(sources, all_, tag)) as ctx:
        stages.run_stage(ctx, stages.stage("ingest"))
    click.echo(f"run {ctx.run_id}: summary {ctx.summary.path}")


@main.command()
@sources_argument
@click.option("--all", "all_", is_flag=True, help="Every registered source with a silver path.")
@click.option("--tag", default=None, help="Every source with this tag and a silver path.")
@run_id_option
@_exit_on_error
def silver(sources, all_, tag, run_id):
    """Clean, unify and gate new bronze batches of SOURCES, then MERGE them into silver."""
    names = _sources(sources, all_, tag)
    if all_ or tag:
        registry = load_registry()
        names = tuple(n for n in names if registry[n].silver)
    with _context(run_id, names) as ctx:
        stages.run_stage(ctx, stages.stage("silver"))
    click.echo(f"run {ctx.run_id}: summary {ctx.summary.path}")


@main.command("reference")
@run_id_option
@_exit_on_error
def reference_tables(run_id):
    """Load the taxonomy, districts, district aliases and the city's H3 cells into silver."""
    with _context(run_id) as ctx:
        result = stages.run_stage(ctx, stages.stage("reference"))
    click.echo(
        ", ".join(
            f"{k}={'unchanged' if v.get('unchanged') else v['rows']}" for k, v in result.items() if isinstance(v, dict)
        )
    )


@main.command("build-marts")
@click.option(
    "--target",
    type=click.Choice(["dev", "prod"]),
    default="dev",
    show_default=True,
    help="prod: also publish the marts to PostgreSQL (one transaction) before the swap.",
)
@click.option(
    "--postgres-dsn-env",
    default="MARTS_POSTGRES_DSN",
    show_default=True,
    help="prod: NAME of the environment variable holding the PostgreSQL DSN (never the DSN itself).",
)
@click.option("--postgres-schema", default="marts", show_default=True, help="prod: PostgreSQL schema of the marts.")
@click.option("--docs", is_flag=True, help="Also run `dbt docs generate` (offline) into runs/<run_id>/dbt_docs.")
@click.option(
    "--full-refresh",
    is_flag=True,
    help="Rebuild every model from silver into an empty file, the incremental ones too (done by itself "
    "when the dbt project, its vars or the dbt / DuckDB version changed). Implies not skipping.",
)
@skip_unchanged_option
@run_id_option
@_exit_on_error
def build_marts(target, postgres_dsn_env, postgres_schema, docs, full_refresh, skip_unchanged, run_id):
    """Build the dbt marts into a new DuckDB file and swap it in atomically when tests pass.

    Incremental by default: the build starts from a copy of the served warehouse and the large facts
    process only what changed in silver."""
    with _context(run_id) as ctx:
        result = stages.run_stage(
            ctx,
            stages.stage("marts"),
            skip_unchanged=skip_unchanged and not full_refresh,
            target=target,
            postgres_dsn_env=postgres_dsn_env,
            postgres_schema=postgres_schema,
            docs=docs,
            full_refresh=full_refresh,
        )
    if result is None:
        click.echo("marts: skipped, nothing they read changed since their last build")
        return
    click.echo(f"warehouse {result['warehouse']}: {len(result['models'])} models ({result['mode']} build)")
    if "published" in result:
        click.echo(f"PostgreSQL schema {result['published']['schema']}: {len(result['published']['tables'])} marts")
    if "docs" in result:
        click.echo(f"dbt docs: {result['docs']}/index.html")


@main.command()
@sources_argument
@run_id_option
@_exit_on_error
def reconcile(sources, run_id):
    """Check the lake against the synthetic city's expected counts (exit 4 on a mismatch)."""
    with _context(run_id, sources or None) as ctx:
        stages.run_stage(ctx, stages.stage("reconcile"))
    click.echo("lake reconciles with the generator's truth")


@main.command()
@click.option("--force", is_flag=True, help="Run every stage, also those whose inputs did not change.")
@run_id_option
@_exit_on_error
def run(force, run_id):
    """The whole stage graph on the configured engine: generate, reference, ingest, silver, marts,
    reconcile, ml, report, alerts. Stages whose inputs and outputs did not change since their last success are skipped.

    The city is the config's: the synthetic city by default, a real one with a city profile, e.g.
    CITYSAFE_CONFIG=config/cities/chicago.yaml (no generator, no reconciliation with its truth)."""
    with _context(run_id, force=force) as ctx:
        s = ctx.settings
        log.info("run %s: engine=%s scale=%s lake=%s", ctx.run_id, s.engine, s.scale, s.lake_root)
        # One writer for the whole run: no other run can slip in between two of its stages.
        with lake_lock.lake_lock(s.work_root, run_id=ctx.run_id, wait_seconds=s.lake_lock_wait_seconds):
            stages.run_all(ctx)
    _print_summary(ctx)


def _print_summary(ctx: RunContext) -> None:
    data = ctx.summary.load()
    click.echo("")
    click.echo(f"CitySafe Lake run {ctx.run_id} finished in {time.monotonic() - ctx.started:.1f}s")
    click.echo(
        f"  city: {ctx.settings.city.name} (config {ctx.settings.config_file}; sources: "
        f"{', '.join(city.source_names(ctx.settings, ctx.sources))})"
    )
    for name, st in data.get("stages", {}).items():
        if st.get("status") == "skipped":
            click.echo(f"  {name}: skipped, nothing it reads or writes changed since run {st.get('since_run')}")
    for table, e in data["tables"].items():
        if "rows_read" in e:
            q = sum(e.get("quarantined", {}).values())
            click.echo(
                f"  {table:34s} read {e['rows_read']:>8}  published {e['published']:>8}  "
                f"quarantined {q:>6}  duplicates {e.get('duplicates', 0):>6}  "
                f"delta v{e.get('delta_version')}  {e.get('seconds', 0):.1f}s"
            )
    wh = data["tables"].get("warehouse")
    if wh:
        # the ml stage rebuilt the marts over the gold zone after the marts stage: show their new counts
        models = {**wh["models"], **data["tables"].get("warehouse.gold", {}).get("models", {})}
        click.echo(f"  warehouse {wh['warehouse']}: " + ", ".join(f"{m}={n}" for m, n in sorted(models.items())))
    rec = data["tables"].get("reconciliation")
    if rec:
        click.echo(f"  reconciliation with the generator's truth: {'OK' if rec['ok'] else 'MISMATCH'}")
    gold = data["tables"].get("gold")
    if gold:
        published = ", ".join(f"{scope} {c['method']}" for scope, c in gold["published"].items())
        click.echo(f"  risk models (model run {gold['model_run_key'][:12]}): published {published}")
    if gold or "ml" in data.get("stages", {}):
        click.echo(
            f"    the risk map: table mart_risk_map in {ctx.settings.warehouse_path}; scores: `citysafe ml evaluate`; "
            f"MLflow UI: mlflow ui --backend-store-uri {tracking_uri(ctx.settings.mlflow_root)}"
        )
    report = data["tables"].get("report")
    if report:
        pdfs = [f for f in report["files"] if f.endswith(".pdf")]
        click.echo(f"  quarterly report {report['quarter']} (open the PDF, or the HTML in a browser):")
        for f in pdfs:
            click.echo(f"    {f}")
    alerts = data["tables"].get("alerts")
    if alerts:
        sent = alerts["deliveries"]
        open_now = ", ".join(f"{k} {n}" for k, n in alerts["open_by_rule_level"].items()) or "none"
        click.echo(
            f"  early warning at {alerts['as_of']}: open alerts {open_now}; notifications sent {sent.get('sent', 0)} "
            f"(outbox: {ctx.settings.alerts_outbox}; `citysafe alerts list`)"
        )
    click.echo(f"  summary: {ctx.summary.path}")
    click.echo(
        f"  dashboards: `make serve` (or `citysafe serve`), then open http://127.0.0.1:{ctx.settings.superset.port}/"
    )


@main.command()
@click.option("--no-start", is_flag=True, help="Provision (metadata, assets, roles, RLS) and exit; do not serve.")
@_exit_on_error
def serve(no_start):
    """The analysts' dashboards: Superset on 127.0.0.1 (port in config) over the served warehouse.

    Upgrades Superset's metadata DB, imports the dashboards kept in dashboards/assets.py, provisions
    roles and per-district row-level security, then serves until Ctrl-C. Prints the URL and the login."""
    from pipeline import serve as superset

    settings = _settings()
    args = superset.command(settings, start=not no_start)  # no warehouse or venv: one line, exit 2
    click.echo(f"dashboards: {superset.login_hint(settings)}")
    code = superset.serve(settings, args)
    if code:
        sys.exit(code)


@main.group("ml")
def ml_group():
    """Risk models: cell x week hotspot maps and district x domain forecasts, scored against baselines."""


@ml_group.command("train")
@click.option(
    "--backtest-weeks",
    type=click.IntRange(2, 520),
    default=None,
    help="Score the newest N weeks (hotspots and forecasts; e.g. 104 for two years). "
    "Default: ml.hotspot.backtest_weeks / ml.forecast.backtest_weeks.",
)
@skip_unchanged_option
@run_id_option
@_exit_on_error
def ml_train(backtest_weeks, skip_unchanged, run_id):
    """Backtest every method (rolling origin), fit the models, publish the champions into gold.

    Writes gold/* (a re-run with the same inputs commits nothing), logs the run to MLflow and rebuilds
    the marts that read gold. Prints the comparison table."""
    settings = _settings()
    if backtest_weeks:
        ml = settings.ml
        settings = settings.model_copy(
            update={
                "ml": ml.model_copy(
                    update={
                        "hotspot": ml.hotspot.model_copy(update={"backtest_weeks": backtest_weeks}),
                        "forecast": ml.forecast.model_copy(update={"backtest_weeks": backtest_weeks}),
                    }
                )
            }
        )
    with _context(run_id, settings=settings) as ctx:
        result = stages.run_stage(ctx, stages.stage("ml"), skip_unchanged=skip_unchanged)
    if result is None:
        click.echo("ml: skipped, nothing the models read changed since their last training")
        return
    _print_comparison(ctx.settings)
    click.echo(f"model run {result['model_run_key'][:12]} (MLflow run {result['mlflow_run_id']})")
    for scope, choice in result["published"].items():
        click.echo(f"  published {scope}: {choice['method']} - {choice['reason']}")


@ml_group.command("predict")
@run_id_option
@_exit_on_error
def ml_predict(run_id):
    """Publish the newest maps and forecasts with the methods the last `ml train` chose (no backtest):
    a cheap weekly refresh between trainings. Commits nothing when nothing new arrived."""
    with _context(run_id) as ctx:
        result = stages.run_ml_predict(ctx)
    click.echo(
        f"model run {result['model_run_key'][:12]}: "
        + ", ".join(f"{k}={v}" for k, v in result["written"].items())
        + f" in {result['seconds']:.1f}s"
    )


@ml_group.command("evaluate")
@click.option("--scope", default=None, help="Only this hotspot scope (ALL or a domain code).")
@_exit_on_error
def ml_evaluate(scope):
    """Print every method's backtest scores (hotspots: PAI, PEI*, hit rate, deviance; forecasts: MASE,
    coverage, Winkler) from the gold tables of the last model run."""
    _print_comparison(_settings(), scope)


def _print_comparison(settings: Settings, scope: str | None = None) -> None:
    try:
        hot, fc = risk_models.comparison_tables(settings)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    if scope:
        hot = hot[hot["scope"] == scope]
    cols = [
        c
        for c in (
            "scope",
            "method",
            "weeks",
            "pai_1",
            "pai_5",
            "pai_10",
            "pei_5",
            "hit_rate_5",
            "poisson_deviance",
            "spearman_truth",
            "pai_5_share_of_oracle",
        )
        if c in hot.columns
    ]
    click.echo("Hotspot backtest (mean over target weeks):")
    click.echo(hot[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    pivot = fc.pivot_table(index=["measure", "horizon"], columns="method", values="mase")
    click.echo("\nForecast backtest, MASE by horizon (scale: " + ", ".join(sorted(set(fc["mase_scale"]))) + "):")
    cov = fc[fc["method"] == "lightgbm"].set_index(["measure", "horizon"])[["coverage_80", "winkler_80"]]
    click.echo(pivot.join(cov).to_string(float_format=lambda v: f"{v:.3f}"))


@main.command()
@click.option("--quarter", default=None, help="The quarter, e.g. 2025Q3. Default: the latest complete quarter.")
@click.option("--lang", default="all", show_default=True, help="en, zh or all.")
@click.option("--district", default=None, help="A district code: that district's report instead of the city's.")
@click.option("--refresh", is_flag=True, help="Freeze the quarter's inputs again from the current warehouse.")
@click.option("--html-only", is_flag=True, help="Write the HTML only (a quick preview; no PDF).")
@run_id_option
@_exit_on_error
def report(quarter, lang, district, refresh, html_only, run_id):
    """The quarterly risk report for policy staff: <lake_root>/reports/<quarter>/report_<lang>.html and .pdf.

    The first report of a quarter freezes what it reads (reports/<quarter>/inputs.duckdb and
    provenance.json); regenerating it later gives the same figures from those inputs, whatever arrived
    since. --refresh takes the inputs again from the current warehouse."""
    from reports import build as report_build

    settings = _settings()
    langs = report_build.parse_langs(lang)
    result = report_build.generate(
        settings,
        quarter,
        langs=langs,
        district=district,
        refresh=refresh,
        pdf=not html_only,
        run_id=run_id or new_run_id(),
    )
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in result["seconds"].items())
    click.echo(f"report {result['quarter']}: {steps}")
    for f in result["files"]:
        click.echo(f"  {f}{'' if f in result['written'] else '  (unchanged)'}")


def _as_of(value: str | None):
    if value is None:
        return None
    import datetime as dt

    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--as-of {value!r}: not an ISO 8601 time like 2025-06-30T12:00:00+00:00") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@main.group("alerts", invoke_without_command=True)
@click.option("--as-of", "as_of", default=None, help="Evaluate at this time (ISO 8601; default: the config's clock).")
@run_id_option
@click.pass_context
@_exit_on_error
def alerts_group(click_ctx, as_of, run_id):
    """Early warning: evaluate the alert rules (reference/alert_rules.yaml), open / escalate / resolve
    alerts in <lake_root>/alerts/alert, and notify the channels in config `alerts.channels` (each event once).

    Without a sub-command: evaluate and send. Exit 8 when a notification could not be delivered."""
    if click_ctx.invoked_subcommand is not None:
        return
    when = _as_of(as_of)
    with _context(run_id) as ctx:
        result = stages.run_stage(ctx, stages.stage("alerts"), as_of=when)
    sent = result["deliveries"]
    click.echo(
        f"alerts at {result['as_of']}: {result['opened']} opened, {result['escalated']} escalated, "
        f"{result['resolved']} resolved; notifications sent {sent.get('sent', 0)}, "
        f"not sent (older than {ctx.settings.alerts.notify_within_hours:g} h) {sent.get('not_sent_stale', 0)}"
    )
    for key, n in result["open_by_rule_level"].items():
        click.echo(f"  open {key}: {n}")
    click.echo(f"  list them: citysafe alerts list; outbox: {ctx.settings.alerts_outbox}")


@alerts_group.command("list")
@click.option("--all", "all_", is_flag=True, help="Also resolved alerts.")
@click.option("--district", default=None, help="Only this district code.")
@click.option("--limit", default=50, show_default=True, help="At most this many rows (0: all).")
@click.option("--summary", is_flag=True, help="Counts by rule, level and status instead of the alerts.")
@_exit_on_error
def alerts_list(all_, district, limit, summary):
    """The open alerts (highest level first), or all of them with --all."""
    from collections import Counter

    from alerts import run as alert_run

    settings = _settings()
    rows = alert_run.list_alerts(settings, include_resolved=all_, district=district)
    if summary:
        counts = Counter((r["rule_id"], r["level"], r["status"]) for r in rows)
        click.echo(f"{'rule':<18} {'level':<7} {'status':<13} alerts")
        for (rule, level, status), n in sorted(counts.items()):
            click.echo(f"{rule:<18} {level:<7} {status:<13} {n:>6}")
        return
    shown = rows if not limit else rows[:limit]
    click.echo(
        f"{len(rows)} alert(s){'' if all_ else ' open'}" + (f", first {len(shown)}" if len(shown) < len(rows) else "")
    )
    for r in shown:
        when = r["opened_at"].strftime("%Y-%m-%d %H:%M")
        click.echo(
            f"  {r['alert_id']}  {r['level']:<6} {r['status']:<12} {r['rule_id']:<17} {r['subject_type']} "
            f"{r['subject_id']}  district {r['district_code'] or '-'}  opened {when} UTC"
        )


@alerts_group.command("ack")
@click.argument("alert_id")
@click.option("--by", required=True, help="Who takes the alert (name or duty role).")
@click.option("--note", default=None, help="What is being done.")
@run_id_option
@_exit_on_error
def alerts_ack(alert_id, by, note, run_id):
    """Acknowledge alert ALERT_ID (the id in the message; a unique prefix of 6+ characters will do)."""
    from alerts import run as alert_run

    with _context(run_id) as ctx:
        with lake_lock.lake_lock(
            ctx.settings.work_root, run_id=ctx.run_id, wait_seconds=ctx.settings.lake_lock_wait_seconds
        ):
            row = alert_run.acknowledge(ctx.settings, lambda: ctx.spark, alert_id, by, note)
    click.echo(
        f"alert {row['alert_id']} ({row['level']}, {row['rule_id']} {row['subject_id']}): {row['status']} by {row['acknowledged_by']}"
    )


@alerts_group.command("notify-failure")
@click.option("--dag", "dag_id", required=True)
@click.option("--task", "task_id", required=True)
@click.option("--airflow-run", required=True, help="The Airflow run id.")
@click.option("--try", "try_number", default=1, show_default=True, type=int)
@click.option("--log-url", default=None)
@run_id_option
@_exit_on_error
def alerts_notify_failure(dag_id, task_id, airflow_run, try_number, log_url, run_id):
    """Tell the data stewards' channels (pipeline_failures: true) that an Airflow task failed."""
    from alerts import run as alert_run

    n = alert_run.notify_pipeline_failure(_settings(), dag_id, task_id, airflow_run, try_number, log_url)
    click.echo(f"failure of {dag_id}.{task_id} sent to {n} channel(s)")


@main.command("stages")
def show_stages():
    """List the stages of a run in order, with what each reads and writes."""
    for st in stages.STAGES:
        click.echo(f"{st.name}: {st.summary}")
        click.echo(f"    reads:  {', '.join(st.reads) or '-'}")
        click.echo(f"    writes: {', '.join(st.writes) or '-'}")
        click.echo(f"    skipped when unchanged: {'yes' if st.fingerprint else 'no (checks for itself)'}")


@main.command("config")
@_exit_on_error
def show_config():
    """Print the effective configuration (after environment overrides)."""
    click.echo(json.dumps(_settings().model_dump(mode="json"), indent=2))


@main.command("data-docs")
@click.option("--rebuild", is_flag=True, help="Re-render every page, not only new validation results.")
@_exit_on_error
def data_docs(rebuild):
    """Build the Great Expectations Data Docs (offline HTML) from every stored validation result."""
    index = gx_docs.build_data_docs(_settings(), rebuild=rebuild)
    click.echo(f"Data Docs: {index}")


@main.command()
@click.argument("table")
@click.option("--limit", default=10, show_default=True)
@_exit_on_error
def history(table, limit):
    """Commit history of a lake table, e.g. `silver/incident` or `bronze/police_incidents`."""
    path = _settings().lake_root / table
    if not (path / "_delta_log").is_dir():
        _fail(EXIT_CONFIG, f"no Delta table at {path}")
    for h in delta_io.history(storage.as_path(path), limit):
        metrics = h.get("operationMetrics", {})
        rows = metrics.get("numOutputRows", metrics.get("num_added_rows", ""))
        click.echo(f"v{h['version']:<4} {h.get('operation', ''):14s} rows={rows}  ts={h.get('timestamp')}")


@main.command()
@click.option(
    "--vacuum-hours",
    default=168,
    show_default=True,
    help="Delete unreferenced files older than this (time travel stops there).",
)
@click.option("--dry-run", is_flag=True, help="List what vacuum would delete, delete nothing.")
@_exit_on_error
def maintain(vacuum_hours, dry_run):
    """Compact small files and vacuum old ones in every Delta table of the lake (delta-rs)."""
    settings = _settings()
    with lake_lock.lake_lock(settings.work_root, run_id="maintain", wait_seconds=settings.lake_lock_wait_seconds):
        for log_dir in sorted(settings.lake_root.glob("*/*/_delta_log")):
            if log_dir.parent.parent.name == "staging":
                continue
            table = log_dir.parent
            compacted = delta_io.compact(table)
            removed = delta_io.vacuum(table, retention_hours=vacuum_hours, dry_run=dry_run)
            click.echo(
                f"{table.relative_to(settings.lake_root)}: compacted {compacted.get('numFilesRemoved', 0)} "
                f"files into {compacted.get('numFilesAdded', 0)}; vacuum "
                f"{'would remove' if dry_run else 'removed'} {len(removed)} files"
            )


if __name__ == "__main__":
    main()
