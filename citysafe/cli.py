"""`citysafe` command line: one command per pipeline stage, plus `run` for the whole pipeline.

Exit codes: 0 ok, 1 unexpected error, 2 bad configuration / usage / reference data, 3 a Great
Expectations gate failed (nothing published), 4 the lake does not reconcile with the expected counts,
5 bad input (a delivery that cannot be read), 6 the marts failed to build or their dbt tests failed
(the served warehouse is unchanged).
"""

from __future__ import annotations

import functools
import json
import sys
import time
import traceback
from pathlib import Path

import click

from citysafe.config import ConfigError, Settings, load_settings
from citysafe.runs import RunSummary, new_run_id, sanitize_run_id

EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_QUALITY, EXIT_RECONCILE, EXIT_INPUT, EXIT_MARTS = 0, 1, 2, 3, 4, 5, 6


class Context:
    def __init__(self, settings: Settings, run_id: str):
        self.settings = settings
        self.summary = RunSummary(settings.runs_dir, run_id)
        self.started = time.monotonic()

    def progress(self, message: str) -> None:
        click.echo(f"[{time.monotonic() - self.started:7.1f}s] {message}", err=True)


def _fail(code: int, message: str):
    click.echo(f"citysafe: error: {message}", err=True)
    sys.exit(code)


def stage(name: str):
    """Wrap a command: time it, record it in the run summary, map errors to meaningful exit codes."""

    def decorator(func):
        @functools.wraps(func)
        def wrapper(ctx: Context, *args, **kwargs):
            from citysafe.delta_io import DeltaSchemaError
            from citysafe.connectors import ConnectorError
            from citysafe.formats import FormatError
            from citysafe.reference import ReferenceError
            from citysafe.sources import SourceError
            from citysafe.warehouse import WarehouseBuildError
            from spark_jobs.publish import QualityGateFailed

            t0 = time.monotonic()
            try:
                result = func(ctx, *args, **kwargs)
            except QualityGateFailed as exc:
                ctx.summary.record_stage(name, "failed", time.monotonic() - t0, error=str(exc))
                _fail(EXIT_QUALITY, str(exc))
            except WarehouseBuildError as exc:
                ctx.summary.record_stage(name, "failed", time.monotonic() - t0, error=str(exc))
                _fail(EXIT_MARTS, str(exc))
            except ReconcileFailed as exc:
                ctx.summary.record_stage(name, "failed", time.monotonic() - t0, error=str(exc))
                _fail(EXIT_RECONCILE, str(exc))
            except (ConfigError, SourceError, ReferenceError) as exc:
                ctx.summary.record_stage(name, "failed", time.monotonic() - t0, error=str(exc))
                _fail(EXIT_CONFIG, str(exc))
            except (FormatError, ConnectorError, DeltaSchemaError) as exc:
                ctx.summary.record_stage(name, "failed", time.monotonic() - t0, error=str(exc))
                _fail(EXIT_INPUT, str(exc))
            except Exception as exc:  # noqa: BLE001 - the last resort names the stage and keeps the trace
                ctx.summary.record_stage(name, "failed", time.monotonic() - t0, error=repr(exc))
                traceback.print_exc()
                _fail(EXIT_ERROR, f"stage {name} failed: {exc}")
            ctx.summary.record_stage(name, "ok", time.monotonic() - t0)
            return result

        return wrapper

    return decorator


class ReconcileFailed(Exception):
    pass


# --- stages ------------------------------------------------------------------------------------------


@stage("generate")
def do_generate(ctx: Context, force: bool = False) -> dict:
    from synthetic_city import generate

    s = ctx.settings
    params = {"seed": s.seed, "scale": s.scale, "start_date": str(s.city.start_date), "days": s.city.days,
              "h3_resolution": s.h3_resolution}
    truth = s.synthetic_root / "truth" / "expected_counts.json"
    if truth.exists():
        existing = json.loads(truth.read_text())["generator"]
        same = all(str(existing.get(k)) == str(v) for k, v in params.items())
        if same and not force:
            ctx.progress(f"synthetic city already generated at {s.synthetic_root} ({params}); skipping")
            return json.loads(truth.read_text())
        if not same and (s.landing_dir).exists() and any(s.landing_dir.iterdir()):
            raise ConfigError(
                f"{s.synthetic_root} holds another synthetic city ({existing}) and the lake at {s.lake_root} "
                f"was built from it; point lake_root and synthetic_root at new folders (or delete them) "
                f"before generating {params}")
    ctx.progress(f"generating synthetic city: {params} -> {s.synthetic_root}")
    return generate(s.synthetic_root, scale=s.scale, seed=s.seed, start_date=s.city.start_date, days=s.city.days,
                    timezone=s.timezone, h3_resolution=s.h3_resolution, progress=lambda m: ctx.progress("  " + m))


def _with_spark(ctx: Context):
    from citysafe.engine import spark_session

    ctx.progress(f"starting engine: {ctx.settings.engine}")
    return spark_session(ctx.settings.engine, app_name=f"citysafe-{ctx.summary.run_id}")


def _per_source(ctx: Context, source_names, spark, step: str, job, table_name) -> dict:
    """Run `job(spark, settings, source, ctx)` for each source on one engine session, recording each
    source's counts in the run summary as `table_name(source)`."""
    from citysafe.sources import get_source

    if spark is None:
        with _with_spark(ctx) as session:
            return _per_source(ctx, source_names, session, step, job, table_name)
    out = {}
    for name in source_names:
        source = get_source(name)
        ctx.progress(f"{step} {name}")
        out[name] = job(spark, ctx.settings, source, ctx)
        ctx.summary.record_table(table_name(name), out[name])
    return out


@stage("reference")
def do_reference(ctx: Context, spark=None) -> dict:
    from spark_jobs import silver_reference

    if spark is None:
        with _with_spark(ctx) as session:
            return do_reference.__wrapped__(ctx, session)
    ctx.progress("reference tables")
    result = silver_reference.run(spark, ctx.settings, progress=ctx.progress, run_id=ctx.summary.run_id)
    ctx.summary.record_table("silver.reference", result)
    return result


@stage("ingest")
def do_ingest(ctx: Context, source_names: tuple[str, ...], spark=None) -> dict:
    from spark_jobs import bronze

    return _per_source(ctx, source_names, spark, "ingest",
                       lambda sp, settings, source, c: bronze.ingest(sp, settings, source, progress=c.progress),
                       lambda name: f"bronze.{name}")


@stage("silver")
def do_silver(ctx: Context, source_names: tuple[str, ...], spark=None) -> dict:
    from citysafe.sources import get_source
    from spark_jobs import silver

    sources = [get_source(n) for n in source_names]
    missing = [s.name for s in sources if s.silver is None]
    if missing:
        raise ConfigError(f"source(s) {missing} have no silver section in sources/<name>.yaml yet")
    if spark is None:
        with _with_spark(ctx) as session:
            return do_silver.__wrapped__(ctx, source_names, session)
    from spark_jobs import unmapped_codes

    names = tuple(s.name for s in silver.ordered(sources))
    table_of = {s.name: s.silver.table for s in sources}
    out = _per_source(ctx, names, spark, "silver",
                      lambda sp, settings, source, c: silver.run(sp, settings, source, c.summary.run_id, c.progress),
                      lambda name: f"silver.{table_of[name]}[{name}]")
    # The stewards' review list: codes and texts that could not be mapped, from the quarantine.
    review = unmapped_codes.refresh(spark, ctx.settings)
    ctx.summary.record_table("silver.unmapped_codes", review)
    ctx.progress(f"  unmapped codes for review: {review['codes']} ({review['quarantine_rows']} quarantined rows)")
    return out


@stage("build-marts")
def do_build_marts(ctx: Context, target: str = "dev", postgres_dsn_env: str | None = None,
                   postgres_schema: str | None = None, docs: bool = False) -> dict:
    from citysafe import warehouse

    result = warehouse.build_marts(ctx.settings, ctx.summary.run_id, progress=ctx.progress, target=target,
                                   postgres_dsn_env=postgres_dsn_env or warehouse.PROD_DSN_ENV,
                                   postgres_schema=postgres_schema or warehouse.PROD_SCHEMA)
    if docs:
        result["docs"] = str(warehouse.generate_docs(ctx.settings, ctx.summary.run_id, progress=ctx.progress))
    ctx.summary.record_table("warehouse", result)
    return result


@stage("reconcile")
def do_reconcile(ctx: Context, source_names: tuple[str, ...]) -> dict:
    """Sources with a silver path reconcile end to end; the other synthetic ones at bronze."""
    from citysafe import reconcile
    from citysafe.sources import load_registry

    registry = load_registry()
    full = {n: registry[n].silver.table for n in source_names if registry[n].silver}
    bronze_only = tuple(n for n in source_names if not registry[n].silver)
    report = reconcile.against_truth(ctx.settings, full, bronze_only)
    ctx.summary.record_table("reconciliation", report)
    for name, item in report["sources"].items():
        mark = "OK " if item["ok"] else "MISMATCH"
        ctx.progress(f"reconcile {name}: {mark} {item['actual']}")
        for problem in item["problems"]:
            ctx.progress(f"    {problem}")
    if not report["ok"]:
        raise ReconcileFailed("the lake does not reconcile with the generator's expected counts: "
                              + "; ".join(p for i in report["sources"].values() for p in i["problems"]))
    return report


# --- command line -------------------------------------------------------------------------------------

run_id_option = click.option("--run-id", default=None, help="Run id shared by stages of one run (default: new).")
sources_argument = click.argument("sources", nargs=-1)


def _context(run_id: str | None) -> Context:
    try:
        settings = load_settings()
    except ConfigError as exc:
        _fail(EXIT_CONFIG, str(exc))
    return Context(settings, sanitize_run_id(run_id) if run_id else new_run_id())


def _sources(names: tuple[str, ...], all_: bool, tag: str | None = None, silver: bool = False) -> tuple[str, ...]:
    """Named sources; with --all every registered source, with --tag those carrying the tag
    (only sources with a silver path, for `silver`)."""
    from citysafe.sources import load_registry

    if all_ or tag:
        registry = load_registry()
        return tuple(n for n, s in registry.items()
                     if (s.silver or not silver) and (tag is None or tag in s.tags))
    if not names:
        _fail(EXIT_CONFIG, "name at least one source, or use --all / --tag (see --help)")
    return names


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="citysafe-lake")
def main():
    """CitySafe Lake: land departmental data, unify it in Delta, gate it, and build the marts.

    Configuration: config/citysafe.yaml (or $CITYSAFE_CONFIG), overridden by CITYSAFE_<KEY> variables.

    \b
    Exit codes: 0 ok, 1 error, 2 configuration, 3 quality gate failed,
    4 reconciliation failed, 5 bad input, 6 marts build or dbt tests failed.
    """


@main.command()
@click.option("--force", is_flag=True, help="Regenerate even if the same city is already there.")
@run_id_option
def generate(force, run_id):
    """Write the synthetic city's departmental deliveries and its truth files (deterministic)."""
    ctx = _context(run_id)
    counts = do_generate(ctx, force=force)
    police = counts["sources"].get("police_incidents", {})
    click.echo(f"synthetic city at {ctx.settings.synthetic_root}: police rows {police.get('rows_delivered')}")


@main.command()
@sources_argument
@click.option("--all", "all_", is_flag=True, help="Every registered source (sources/*.yaml).")
@click.option("--tag", default=None, help="Every source with this tag, e.g. synthetic or real.")
@run_id_option
def ingest(sources, all_, tag, run_id):
    """Fetch new deliveries of SOURCES, land them (checksums, manifest) and append them to bronze Delta."""
    ctx = _context(run_id)
    do_ingest(ctx, _sources(sources, all_, tag))
    click.echo(f"run {ctx.summary.run_id}: summary {ctx.summary.path}")


@main.command()
@sources_argument
@click.option("--all", "all_", is_flag=True, help="Every registered source with a silver path.")
@click.option("--tag", default=None, help="Every source with this tag and a silver path.")
@run_id_option
def silver(sources, all_, tag, run_id):
    """Clean, unify and gate new bronze batches of SOURCES, then MERGE them into silver."""
    ctx = _context(run_id)
    do_silver(ctx, _sources(sources, all_, tag, silver=True))
    click.echo(f"run {ctx.summary.run_id}: summary {ctx.summary.path}")


@main.command("reference")
@run_id_option
def reference_tables(run_id):
    """Load the taxonomy, districts, district aliases and the city's H3 cells into silver."""
    ctx = _context(run_id)
    result = do_reference(ctx)
    click.echo(", ".join(f"{k}={'unchanged' if v.get('unchanged') else v['rows']}"
                         for k, v in result.items() if isinstance(v, dict)))


@main.command("build-marts")
@click.option("--target", type=click.Choice(["dev", "prod"]), default="dev", show_default=True,
              help="prod: also publish the marts to PostgreSQL (one transaction) before the swap.")
@click.option("--postgres-dsn-env", default="MARTS_POSTGRES_DSN", show_default=True,
              help="prod: NAME of the environment variable holding the PostgreSQL DSN (never the DSN itself).")
@click.option("--postgres-schema", default="marts", show_default=True, help="prod: PostgreSQL schema of the marts.")
@click.option("--docs", is_flag=True, help="Also run `dbt docs generate` (offline) into runs/<run_id>/dbt_docs.")
@run_id_option
def build_marts(target, postgres_dsn_env, postgres_schema, docs, run_id):
    """Build the dbt marts into a new DuckDB file and swap it in atomically when tests pass."""
    ctx = _context(run_id)
    result = do_build_marts(ctx, target=target, postgres_dsn_env=postgres_dsn_env, postgres_schema=postgres_schema,
                            docs=docs)
    click.echo(f"warehouse {result['warehouse']}: {len(result['models'])} models")
    if "published" in result:
        click.echo(f"PostgreSQL schema {result['published']['schema']}: {len(result['published']['tables'])} marts")
    if "docs" in result:
        click.echo(f"dbt docs: {result['docs']}/index.html")


@main.command()
@sources_argument
@run_id_option
def reconcile(sources, run_id):
    """Check the lake against the synthetic city's expected counts (exit 4 on a mismatch)."""
    ctx = _context(run_id)
    do_reconcile(ctx, sources or _sources((), False, tag="synthetic"))
    click.echo("lake reconciles with the generator's truth")


@main.command()
@run_id_option
def run(run_id):
    """The whole pipeline on the configured engine: generate, ingest, silver, marts, reconcile."""
    ctx = _context(run_id)
    s = ctx.settings
    ctx.progress(f"run {ctx.summary.run_id}: engine={s.engine} scale={s.scale} lake={s.lake_root}")
    do_generate(ctx)
    synthetic = _sources((), False, tag="synthetic")
    with _with_spark(ctx) as spark:
        do_reference(ctx, spark)
        do_ingest(ctx, synthetic, spark)
        do_silver(ctx, _sources((), False, tag="synthetic", silver=True), spark)
    do_build_marts(ctx)
    do_reconcile(ctx, synthetic)
    _print_summary(ctx)


def _print_summary(ctx: Context) -> None:
    data = ctx.summary.load()
    click.echo("")
    click.echo(f"CitySafe Lake run {ctx.summary.run_id} finished in {time.monotonic() - ctx.started:.1f}s")
    for table, e in data["tables"].items():
        if "rows_read" in e:
            q = sum(e.get("quarantined", {}).values())
            click.echo(f"  {table:34s} read {e['rows_read']:>8}  published {e['published']:>8}  "
                       f"quarantined {q:>6}  duplicates {e.get('duplicates', 0):>6}  "
                       f"delta v{e.get('delta_version')}  {e.get('seconds', 0):.1f}s")
    wh = data["tables"].get("warehouse")
    if wh:
        click.echo(f"  warehouse {wh['warehouse']}: " + ", ".join(f"{m}={n}" for m, n in wh["models"].items()))
    rec = data["tables"].get("reconciliation")
    if rec:
        click.echo(f"  reconciliation with the generator's truth: {'OK' if rec['ok'] else 'MISMATCH'}")
    click.echo(f"  summary: {ctx.summary.path}")


@main.command("config")
def show_config():
    """Print the effective configuration (after environment overrides)."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        _fail(EXIT_CONFIG, str(exc))
    click.echo(json.dumps(settings.model_dump(mode="json"), indent=2))


@main.command("data-docs")
@click.option("--rebuild", is_flag=True, help="Re-render every page, not only new validation results.")
def data_docs(rebuild):
    """Build the Great Expectations Data Docs (offline HTML) from every stored validation result."""
    from citysafe import data_docs as docs

    settings = _context(None).settings
    index = docs.build_data_docs(settings, rebuild=rebuild)
    click.echo(f"Data Docs: {index}")


@main.command()
@click.argument("table")
@click.option("--limit", default=10, show_default=True)
def history(table, limit):
    """Commit history of a lake table, e.g. `silver/incident` or `bronze/police_incidents`."""
    from citysafe import delta_io

    settings = _context(None).settings
    path = settings.lake_root / table
    if not (path / "_delta_log").is_dir():
        _fail(EXIT_CONFIG, f"no Delta table at {path}")
    for h in delta_io.history(Path(path), limit):
        metrics = h.get("operationMetrics", {})
        rows = metrics.get("numOutputRows", metrics.get("num_added_rows", ""))
        click.echo(f"v{h['version']:<4} {h.get('operation', ''):14s} rows={rows}  ts={h.get('timestamp')}")


@main.command()
@click.option("--vacuum-hours", default=168, show_default=True,
              help="Delete unreferenced files older than this (time travel stops there).")
@click.option("--dry-run", is_flag=True, help="List what vacuum would delete, delete nothing.")
def maintain(vacuum_hours, dry_run):
    """Compact small files and vacuum old ones in every Delta table of the lake (delta-rs)."""
    from citysafe import delta_io

    settings = _context(None).settings
    logs = sorted(settings.lake_root.glob("*/*/_delta_log"))
    for log in logs:
        if log.parent.parent.name == "staging":
            continue
        table = log.parent
        compacted = delta_io.compact(table)
        removed = delta_io.vacuum(table, retention_hours=vacuum_hours, dry_run=dry_run)
        click.echo(f"{table.relative_to(settings.lake_root)}: compacted {compacted.get('numFilesRemoved', 0)} "
                   f"files into {compacted.get('numFilesAdded', 0)}; vacuum {'would remove' if dry_run else 'removed'} "
                   f"{len(removed)} files")


if __name__ == "__main__":
    main()
