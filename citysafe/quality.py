"""Great Expectations gates: declarative suites in expectations/<suite>.yaml, run on staged data.

The suites live in the lake's file-backed GX project, <lake_root>/gx/ (gx_context): each YAML suite is
stored there as a GX ExpectationSuite whose `$name` values are GX suite parameters ({"$PARAMETER": "name"}),
resolved by GX from the expectation_parameters a gate passes (suite_variables). A gate runs the checkpoint
`<suite>-<source>` (a validation definition on the dataframe asset named after the source); GX stores its
result in the project's validation results store (uncommitted/validations/<suite>/<run_id>/<time>/
citysafe-<source>.json). Each expectation's result is also appended to the Delta table silver/validation_result
(for the data-quality mart), and the Data Docs (<lake_root>/data_docs/) are refreshed by GX from the stores.
Importing GX costs seconds: import lazily.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml

from citysafe import delta_io, reference
from citysafe.config import REPO_ROOT, Settings
from citysafe.delta_io import Column, TableSpec
from citysafe.errors import ConfigurationError

EXPECTATIONS_DIR = REPO_ROOT / "expectations"
GX_PROJECT_DIR = "gx"  # <lake_root>/gx/: the GX project (suites, checkpoints, validation results)
# Its data sources, one dataframe asset per source gated: staged tables are validated on the engine
# (GX's Spark execution engine over the Spark Connect session: the metrics are engine queries, nothing is
# copied into Python); small reference frames that never were a table are validated with pandas.
DATASOURCE = "citysafe"  # Spark (its name is in the Data Docs page names: citysafe-<source>.html)
FRAMES_DATASOURCE = "citysafe_frames"  # pandas
RESULT_FORMAT = "SUMMARY"  # counts and up to 20 unexpected values per expectation

VALIDATION_RESULT_COLUMNS = (
    Column("run_id", "string", nullable=False),
    Column("suite", "string", nullable=False),
    Column("table_name", "string", nullable=False),
    Column("source", "string"),
    Column("expectation", "string", nullable=False),
    Column("column_name", "string"),
    Column("success", "boolean", nullable=False),
    Column("unexpected_count", "bigint"),
    Column("element_count", "bigint"),
    Column("validated_at", "timestamp", nullable=False),
)


def validation_result_spec(settings: Settings) -> TableSpec:
    return TableSpec("validation_result", settings.silver_dir / "validation_result", VALIDATION_RESULT_COLUMNS)


_gx_import_started = False


def import_in_background() -> None:
    """Start importing GX in a thread (once per process), so that its seconds overlap with the engine's
    work before the first gate (a gate that arrives earlier simply waits for the import to finish)."""
    global _gx_import_started
    if _gx_import_started:
        return
    _gx_import_started = True
    import threading

    # First, in this thread, what the pipeline imports lazily while GX's import runs and GX's import
    # touches too: two threads importing packages that share modules can each be handed the other's
    # module half-initialised. A Celery worker's silver task failed so on its first try ("cannot import
    # name 'BaseGeometry' from partially initialized module 'shapely.geometry.base'").
    import h3  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.compute  # noqa: F401
    import pyarrow.json  # noqa: F401
    import requests  # noqa: F401
    import shapely.geometry  # noqa: F401

    threading.Thread(target=lambda: __import__("great_expectations"), name="import-gx", daemon=True).start()


def load_suite(name: str, directory: Path = EXPECTATIONS_DIR) -> dict:
    path = directory / f"{name}.yaml"
    suite = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(suite, dict) or "expectations" not in suite:
        raise ValueError(f"{path}: a suite needs 'suite', 'table' and 'expectations'")
    return suite


def _expectations(suite: dict) -> list[tuple[str, dict]]:
    return [(str(name), dict(kwargs or {})) for item in suite["expectations"] for name, kwargs in item.items()]


def _is_parameter(value) -> bool:
    return isinstance(value, str) and value.startswith("$")


def suite_parameters(suite: dict) -> set[str]:
    """The names the suite takes as GX suite parameters (its `$name` values)."""
    return {value[1:] for _, kwargs in _expectations(suite) for value in kwargs.values() if _is_parameter(value)}


def gx_suite(suite: dict):
    """The GX ExpectationSuite of a YAML suite. The YAML's compact `$name` is GX's suite parameter
    {"$PARAMETER": "name"}: GX substitutes it at validation time from the run's expectation_parameters."""
    import great_expectations as gx

    expectations = []
    for name, kwargs in _expectations(suite):
        for key, value in kwargs.items():
            if isinstance(value, list) and any(_is_parameter(v) for v in value):
                raise ConfigurationError(
                    f"suite {suite['suite']}: {name}: {key}: a $parameter must be the whole value, not a list element"
                )
        cls = getattr(gx.expectations, "".join(part.title() for part in name.split("_")), None)
        if cls is None:
            raise ConfigurationError(f"suite {suite['suite']}: unknown expectation {name}")
        parameters = {k: v[1:] for k, v in kwargs.items() if _is_parameter(v)}
        # GX's pages render a list-valued parameter (value_set) as "$PARAMETER", without its name: a note names it.
        notes = [f"`{k}`: suite parameter `${p}` (citysafe.quality.suite_variables)" for k, p in parameters.items()]
        expectations.append(
            cls(
                **{k: {"$PARAMETER": parameters[k]} if k in parameters else v for k, v in kwargs.items()},
                notes=notes or None,
            )
        )
    # Expectations given to the constructor: add_expectation() on a suite named like a stored one writes
    # each expectation into that stored suite.
    return gx.ExpectationSuite(
        name=suite["suite"], expectations=expectations, meta={"citysafe_table": suite.get("table")}
    )


def expectation_parameters(suite: dict, variables: dict) -> dict:
    """The suite parameters' values for one run, from suite_variables."""
    missing = sorted(suite_parameters(suite) - set(variables))
    if missing:
        raise ConfigurationError(
            f"suite {suite['suite']}: parameter(s) {', '.join('$' + m for m in missing)} "
            f"not defined (known: {', '.join(sorted(variables))})"
        )
    return {name: variables[name] for name in sorted(suite_parameters(suite))}


def suite_variables(settings: Settings, now: dt.datetime, source=None) -> dict:
    """Every value a suite may reference as $name: reference codes, city bounds, time limits.

    `source` (a citysafe.sources.Source): when its silver section has a `geography` (another city than
    the synthetic one), $district_codes are its district crosswalk's codes and $city_* its bounds; else
    they are the city's (citysafe.city: its polygons, or the profile's bounds and sources' districts)."""
    import pandas as pd

    geography = getattr(getattr(source, "silver", None), "geography", None)
    if geography is not None:
        min_lon, min_lat, max_lon, max_lat = geography.bounds
        district_codes = geography.district.district_codes()
    else:
        from citysafe import city

        min_lon, min_lat, max_lon, max_lat = city.bounds(settings)
        district_codes = sorted(city.district_names(settings))
    units = reference.device_units()
    # An H3 cell on the city's edge may have its centre outside the city, but never further out than
    # one cell radius (the longest edge: 1.25x the average covers every cell of a resolution).
    import math

    import h3

    radius_km = 1.25 * h3.average_hexagon_edge_length(settings.h3_resolution, unit="km")
    margin_lat = radius_km / 111.0
    margin_lon = radius_km / (111.0 * math.cos(math.radians(max(abs(min_lat), abs(max_lat)))))
    return {
        "subcategory_codes": sorted(reference.taxonomy()["subcategory_code"]),
        "district_codes": district_codes,
        "city_min_lon": min_lon,
        "city_max_lon": max_lon,
        "city_min_lat": min_lat,
        "city_max_lat": max_lat,
        "cell_min_lon": min_lon - margin_lon,
        "cell_max_lon": max_lon + margin_lon,
        "cell_min_lat": min_lat - margin_lat,
        "cell_max_lat": max_lat + margin_lat,
        "earliest": pd.Timestamp("2000-01-01", tz="UTC"),
        "now": pd.Timestamp(now).tz_convert("UTC"),
        "device_types": sorted(units["device_type"].unique()),
        "canonical_units": sorted(units["canonical_unit"].unique()),
        "device_value_min": float(units["min_valid"].min()),
        "device_value_max": float(units["max_valid"].max()),
    }


def gx_project_dir(settings: Settings) -> Path:
    return settings.work_root / GX_PROJECT_DIR


def gx_context(settings: Settings):
    """The lake's file-backed GX project, <lake_root>/gx/ (created on first use): the suites, validation
    definitions, checkpoints, the validation results store and the Data Docs site <lake_root>/data_docs/.

    Opened from disk on every call (~30 ms; GX itself is imported once per process): parallel gates in
    other processes add assets and suites to the same project, which a context cached in this process
    would not see and would overwrite when it saves its configuration."""
    with _project_lock(settings):
        return _open_context(settings)


def _project_lock(settings: Settings):
    """Held while the project is opened and written (one writer at a time across processes)."""
    from citysafe import data_docs

    root = gx_project_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    return data_docs.file_lock(root / ".citysafe.lock")


def _open_context(settings: Settings):
    import great_expectations as gx

    from citysafe import data_docs

    context = gx.get_context(mode="file", project_root_dir=settings.work_root)
    changed = False
    if context.list_data_docs_sites() != {data_docs.SITE_NAME: data_docs.site_config()}:
        for name in list(context.list_data_docs_sites()):  # GX's default local_site included
            context.delete_data_docs_site(name)
        context.add_data_docs_site(data_docs.SITE_NAME, data_docs.site_config())
        changed = True
    bars = context.variables.progress_bars  # a ProgressBarsConfig, or a dict once read back from the YAML
    if not bars or "globally" not in bars or bars["globally"] is not False:
        context.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)
        changed = True
    if changed:
        context.variables.save()
    return context


def _checkpoint(context, suite: dict, asset_name: str, engine: str = "spark"):
    """The checkpoint `<suite>-<asset_name>`: one validation definition (the suite on the whole dataframe
    of the asset). What the project holds is reused; an object is (re)written only when it is missing or
    the YAML suite changed. For a file context: call under _project_lock, with the context opened under it."""
    import great_expectations as gx
    from great_expectations.exceptions import DataContextError

    def stored(collection, name):
        try:
            return collection.get(name)
        except DataContextError:
            return None

    wanted = gx_suite(suite)
    name = f"{wanted.name}-{asset_name}"
    source_name, kind = (DATASOURCE, "spark") if engine == "spark" else (FRAMES_DATASOURCE, "pandas")
    existing = context.data_sources.all().get(source_name)
    if existing is not None and existing.type != kind:  # a project written before the gates ran on Spark
        context.data_sources.delete(source_name)
        existing = None
    if existing is None:
        if kind == "spark":
            context.data_sources.add_spark(source_name, persist=False)
        else:
            context.data_sources.add_pandas(source_name)
    datasource = context.data_sources.get(source_name)
    # GX's getters, not the .assets / .batch_definitions lists: get_asset binds the asset to this
    # datasource (and so to this context); a listed asset may point at a datasource without a context.
    if asset_name in datasource.get_asset_names():
        asset = datasource.get_asset(asset_name)
    else:
        asset = datasource.add_dataframe_asset(asset_name)
    if "whole" in {b.name for b in asset.batch_definitions}:
        batch = asset.get_batch_definition("whole")
    else:
        batch = asset.add_batch_definition_whole_dataframe("whole")

    gx_suite_ = stored(context.suites, wanted.name)
    if (
        gx_suite_ is None
        or _configs(gx_suite_) != _configs(wanted)
        or gx_suite_.meta.get("citysafe_table") != wanted.meta.get("citysafe_table")
    ):
        gx_suite_ = context.suites.add_or_update(wanted)
    validation = stored(context.validation_definitions, name)
    if validation is None or validation.suite.id != gx_suite_.id or validation.batch_definition.id != batch.id:
        validation = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=name, data=batch, suite=gx_suite_)
        )
    checkpoint = stored(context.checkpoints, name)
    if (
        checkpoint is None
        or [v.id for v in checkpoint.validation_definitions] != [validation.id]
        or checkpoint.result_format != RESULT_FORMAT
        or checkpoint.actions
    ):
        checkpoint = context.checkpoints.add_or_update(
            gx.Checkpoint(name=name, validation_definitions=[validation], result_format=RESULT_FORMAT)
        )
    return checkpoint


def _configs(gx_suite_) -> list:
    return [(c.type, c.kwargs, c.notes) for c in gx_suite_.expectation_configurations]


def _run_checkpoint(checkpoint, df, suite: dict, variables: dict, run_name: str | None, run_time: dt.datetime):
    """Run the checkpoint on `df` with the suite's parameters; returns (result identifier, suite result)."""
    from great_expectations.core.run_identifier import RunIdentifier

    result = checkpoint.run(
        batch_parameters={"dataframe": df},
        expectation_parameters=expectation_parameters(suite, variables),
        run_id=RunIdentifier(run_name=run_name, run_time=run_time),
    )
    ((key, validation),) = result.run_results.items()
    return key, validation


def _rows(validation) -> list[dict]:
    rows = []
    for r in validation.results:
        cfg = r.expectation_config
        res = r.result or {}
        rows.append(
            {
                "expectation": cfg.type,
                "column": cfg.kwargs.get("column") or cfg.kwargs.get("column_A"),
                "success": bool(r.success),
                "unexpected_count": res.get("unexpected_count"),
                "element_count": res.get("element_count"),
                "observed_value": res.get("observed_value"),
                "partial_unexpected_list": [str(v) for v in (res.get("partial_unexpected_list") or [])[:5]],
            }
        )
    return rows


def run_suite(df, suite: dict, variables: dict) -> tuple[bool, list[dict]]:
    """Validate a pandas DataFrame with a declarative suite in a throw-away (in-memory) GX context, nothing
    stored; returns (success, per-expectation results). Gates use validate_frame."""
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)
    _, validation = _run_checkpoint(
        _checkpoint(context, suite, "staged", engine="pandas"), df, suite, variables, None, dt.datetime.now(dt.UTC)
    )
    return bool(validation.success), _rows(validation)


def validate_staging(
    spark, settings: Settings, suite_name: str, staging: TableSpec, run_id: str, source_name: str, source=None
) -> dict:
    """Gate staged candidates with expectations/<suite_name>.yaml. GX stores the result in the lake's GX
    project (result_path: its JSON); appends the validation_result rows and refreshes the Data Docs;
    returns {suite, success, evaluated, failed, failures, result_path}.
    `source`: the Source staged, for its own geography (see suite_variables).
    The staged table is validated where it is, by the engine (see DATASOURCE)."""
    return validate_frame(
        spark,
        settings,
        suite_name,
        delta_io.read(spark, staging, check_schema=False),
        run_id,
        source_name,
        source=source,
        engine="spark",
    )


def validate_frame(
    spark, settings: Settings, suite_name: str, df, run_id: str, source_name: str, source=None, engine: str = "pandas"
) -> dict:
    """Gate a DataFrame: pandas (e.g. a small reference table before it is loaded) or, with engine="spark",
    a Spark DataFrame; see validate_staging."""
    suite = load_suite(suite_name)
    now = dt.datetime.now(dt.UTC)
    variables = suite_variables(settings, now, source)
    with _project_lock(settings):
        context = _open_context(settings)
        checkpoint = _checkpoint(context, suite, source_name, engine=engine)
    key, validation = _run_checkpoint(checkpoint, df, suite, variables, run_id, now)  # GX stores the result
    success, rows = bool(validation.success), _rows(validation)
    failed = [r for r in rows if not r["success"]]
    result_path = context.validation_results_store.store_backend.get_url_for_key(key.to_tuple())
    result_path = result_path.removeprefix("file://")
    import pyarrow as pa

    record = pa.table(
        {
            "run_id": [run_id] * len(rows),
            "suite": [suite["suite"]] * len(rows),
            "table_name": [suite["table"]] * len(rows),
            "source": [source_name] * len(rows),
            "expectation": [r["expectation"] for r in rows],
            "column_name": [r["column"] for r in rows],
            "success": [r["success"] for r in rows],
            "unexpected_count": pa.array([r["unexpected_count"] for r in rows], pa.int64()),
            "element_count": pa.array([r["element_count"] for r in rows], pa.int64()),
            "validated_at": pa.array([now] * len(rows), pa.timestamp("us", tz="UTC")),
        }
    )
    delta_io.append(spark.createDataFrame(record), validation_result_spec(settings), expected_rows=len(rows))
    from citysafe import data_docs

    data_docs.refresh_data_docs(settings, key)  # <lake_root>/data_docs: this result's page + the index; never raises
    return {
        "suite": suite["suite"],
        "success": success,
        "evaluated": len(rows),
        "failed": len(failed),
        "failures": failed,
        "result_path": str(result_path),
    }
