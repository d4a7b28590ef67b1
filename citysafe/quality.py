"""Great Expectations gates: declarative suites in expectations/<suite>.yaml, run on staged data.

A suite's result is written to runs/<run_id>/validation/<suite>.json and appended to the Delta table
silver/validation_result (for the data-quality dashboard). Importing GX costs seconds: import lazily.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import yaml

from citysafe import delta_io, reference
from citysafe.config import REPO_ROOT, Settings
from citysafe.delta_io import Column, TableSpec
from citysafe.runs import write_json_atomic

EXPECTATIONS_DIR = REPO_ROOT / "expectations"

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


def load_suite(name: str, directory: Path = EXPECTATIONS_DIR) -> dict:
    path = directory / f"{name}.yaml"
    suite = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(suite, dict) or "expectations" not in suite:
        raise ValueError(f"{path}: a suite needs 'suite', 'table' and 'expectations'")
    return suite


def _resolve(value, variables: dict):
    if isinstance(value, str) and value.startswith("$"):
        if value[1:] not in variables:
            raise KeyError(f"suite variable {value} is not defined (known: {sorted(variables)})")
        return variables[value[1:]]
    if isinstance(value, list):
        return [_resolve(v, variables) for v in value]
    return value


def suite_variables(settings: Settings, now: dt.datetime, source=None) -> dict:
    """Every value a suite may reference as $name: reference codes, city bounds, time limits.

    `source` (a citysafe.sources.Source): when its silver section has a `geography` (another city than
    the synthetic one), $district_codes are its district crosswalk's codes and $city_* its bounds."""
    import pandas as pd

    geography = getattr(getattr(source, "silver", None), "geography", None)
    if geography is not None:
        min_lon, min_lat, max_lon, max_lat = geography.bounds
        district_codes = geography.district.district_codes()
    else:
        min_lon, min_lat, max_lon, max_lat = reference.city_bounds(settings.districts_geojson)
        district_codes = sorted(d["district_code"] for d in reference.districts(settings.districts_geojson))
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
        "city_min_lon": min_lon, "city_max_lon": max_lon, "city_min_lat": min_lat, "city_max_lat": max_lat,
        "cell_min_lon": min_lon - margin_lon, "cell_max_lon": max_lon + margin_lon,
        "cell_min_lat": min_lat - margin_lat, "cell_max_lat": max_lat + margin_lat,
        "earliest": pd.Timestamp("2000-01-01", tz="UTC"), "now": pd.Timestamp(now).tz_convert("UTC"),
        "device_types": sorted(units["device_type"].unique()),
        "canonical_units": sorted(units["canonical_unit"].unique()),
        "device_value_min": float(units["min_valid"].min()), "device_value_max": float(units["max_valid"].max()),
    }


def run_suite(df, suite: dict, variables: dict) -> tuple[bool, list[dict]]:
    """Validate a pandas DataFrame with a declarative suite; returns (success, per-expectation results)."""
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("citysafe")
    batch_definition = source.add_dataframe_asset("staged").add_batch_definition_whole_dataframe("whole")
    gx_suite = gx.ExpectationSuite(name=suite["suite"])
    for item in suite["expectations"]:
        (name, kwargs), = item.items()
        cls = getattr(gx.expectations, "".join(part.title() for part in name.split("_")))
        gx_suite.add_expectation(cls(**{k: _resolve(v, variables) for k, v in (kwargs or {}).items()}))
    gx_suite = context.suites.add(gx_suite)
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(data=batch_definition, suite=gx_suite, name=f"{suite['suite']}-gate"))
    result = validation.run(batch_parameters={"dataframe": df})
    rows = []
    for r in result.results:
        cfg = r.expectation_config
        res = r.result or {}
        rows.append({
            "expectation": cfg.type, "column": cfg.kwargs.get("column") or cfg.kwargs.get("column_A"),
            "success": bool(r.success), "unexpected_count": res.get("unexpected_count"),
            "element_count": res.get("element_count"), "observed_value": res.get("observed_value"),
            "partial_unexpected_list": [str(v) for v in (res.get("partial_unexpected_list") or [])[:5]],
        })
    return bool(result.success), rows


def validate_staging(spark, settings: Settings, suite_name: str, staging: TableSpec, run_id: str,
                     source_name: str, source=None) -> dict:
    """Gate staged candidates with expectations/<suite_name>.yaml. Writes the result JSON and the
    validation_result rows; returns {suite, success, evaluated, failed, failures, result_path}.
    `source`: the Source staged, for its own geography (see suite_variables)."""
    from deltalake import DeltaTable

    return validate_frame(spark, settings, suite_name, DeltaTable(str(staging.path)).to_pandas(), run_id,
                          source_name, source=source)


def validate_frame(spark, settings: Settings, suite_name: str, df, run_id: str, source_name: str,
                   source=None) -> dict:
    """Gate a pandas DataFrame (e.g. a small reference table before it is loaded); see validate_staging."""
    suite = load_suite(suite_name)
    now = dt.datetime.now(dt.UTC)
    success, rows = run_suite(df, suite, suite_variables(settings, now, source))
    failed = [r for r in rows if not r["success"]]
    result_path = settings.runs_dir / run_id / "validation" / f"{suite['suite']}-{source_name}.json"
    write_json_atomic(result_path, {
        "suite": suite["suite"], "table": suite["table"], "source": source_name, "run_id": run_id,
        "success": success, "rows": len(df), "validated_at": now.isoformat(), "results": rows,
    })
    import pyarrow as pa

    record = pa.table({
        "run_id": [run_id] * len(rows), "suite": [suite["suite"]] * len(rows),
        "table_name": [suite["table"]] * len(rows), "source": [source_name] * len(rows),
        "expectation": [r["expectation"] for r in rows], "column_name": [r["column"] for r in rows],
        "success": [r["success"] for r in rows],
        "unexpected_count": pa.array([r["unexpected_count"] for r in rows], pa.int64()),
        "element_count": pa.array([r["element_count"] for r in rows], pa.int64()),
        "validated_at": pa.array([now] * len(rows), pa.timestamp("us", tz="UTC")),
    })
    delta_io.append(spark.createDataFrame(record), validation_result_spec(settings), expected_rows=len(rows))
    from citysafe import data_docs

    data_docs.refresh_data_docs(settings)  # <lake_root>/data_docs: this result's page + the index; never raises
    return {"suite": suite["suite"], "success": success, "evaluated": len(rows), "failed": len(failed),
            "failures": failed, "result_path": str(result_path)}
