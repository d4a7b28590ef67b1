"""The gold zone: the models' outputs as declared Delta tables (written through citysafe.delta_io).

Every table is keyed; a re-run with the same inputs produces the same rows and commits nothing.
- risk_cell_week: the published map per scope (all incidents or one domain), cell and target week; past
  weeks' maps are kept (a new week adds rows).
- risk_backtest_prediction / risk_backtest_score: every method's per-cell predictions of the latest
  backtest and its scores per target week (the table holds the latest backtest; older ones are in the
  Delta history, the model_run row names the version).
- forecast: P10 / P50 / P90 per series, origin and target week (every origin kept: forecast vs actual).
- forecast_backtest / forecast_metric: the rolling-origin predictions of every method and the metrics
  per method, measure and horizon.
- model_run: one row per distinct model run (inputs, parameters, metrics, published methods and why).
- cell_geometry: each mapped cell's polygon as GeoJSON (for deck.gl maps in Superset and the reports).
"""

from __future__ import annotations

from pathlib import Path

from citysafe.delta_io import Column, TableSpec
from citysafe.storage import as_path

C = Column


def _contribution_columns() -> tuple[Column, ...]:
    cols = []
    for k in (1, 2, 3):
        cols.append(
            C(f"contribution_{k}_feature", "string", description=f"feature with the {k}. largest |contribution|")
        )
        cols.append(C(f"contribution_{k}_value", "double", description="its contribution (log scale for LightGBM)"))
    return tuple(cols)


RISK_CELL_WEEK = (
    C("scope", "string", nullable=False, description="ALL (every incident) or a taxonomy domain code"),
    C("h3_cell", "string", nullable=False),
    C("district_code", "string"),
    C("feature_week_start", "date", nullable=False, description="newest complete week the prediction is made from"),
    C("target_week_start", "date", nullable=False, description="the week predicted (Monday, city-local)"),
    C("method", "string", nullable=False, description="the published method (backtest champion)"),
    C("expected_count", "double", nullable=False, description="expected incidents in the cell in the target week"),
    C("risk_score", "double", nullable=False, description="expected_count / the study area's mean"),
    C("percentile", "double", nullable=False, description="share of cells (0-100) with a lower expectation"),
    C("risk_rank", "bigint", nullable=False, description="1 = highest expectation"),
    C("risk_level", "string", nullable=False, description="red / orange / yellow / blue (ml.risk_levels)"),
    *_contribution_columns(),
    C("model_run_key", "string", nullable=False),
)

RISK_BACKTEST_PREDICTION = (
    C("scope", "string", nullable=False),
    C("method", "string", nullable=False),
    C("h3_cell", "string", nullable=False),
    C("target_week_start", "date", nullable=False),
    C("origin_week_start", "date", nullable=False, description="first target week of the model that predicted it"),
    C("predicted", "double", nullable=False),
    C("actual", "double", nullable=False),
)

RISK_BACKTEST_SCORE = (
    C("scope", "string", nullable=False),
    C("method", "string", nullable=False),
    C("target_week_start", "date", nullable=False),
    C("cells", "bigint", nullable=False),
    C("events", "double", nullable=False),
    *(C(f"{m}_{s}", "double") for m in ("pai", "pei", "hit_rate") for s in ("1", "5", "10")),
    C("poisson_deviance", "double"),
    C("spearman_truth", "double", description="rank correlation with the true intensity (synthetic city)"),
)

FORECAST = (
    C("series_id", "string", nullable=False, description="<measure>|<district_code or CITY>|<domain_code>"),
    C("measure", "string", nullable=False, description="incidents or hazards_found"),
    C("level", "string", nullable=False, description="district or city"),
    C("district_code", "string", nullable=False, description="CITY for the city-wide series"),
    C("domain_code", "string", nullable=False),
    C("origin_week_start", "date", nullable=False, description="newest complete week the forecast is made from"),
    C("target_week_start", "date", nullable=False),
    C("horizon", "int", nullable=False, description="weeks ahead (1 = the week after the origin)"),
    C("method", "string", nullable=False),
    C("p10", "double", nullable=False, description="lower end of the 80% interval (conformal, clipped at 0)"),
    C("p50", "double", nullable=False, description="point forecast (the interval's centre)"),
    C("p90", "double", nullable=False, description="upper end of the 80% interval"),
    C("model_run_key", "string", nullable=False),
)

FORECAST_BACKTEST = (
    C("series_id", "string", nullable=False),
    C("measure", "string", nullable=False),
    C("cutoff_week_start", "date", nullable=False, description="the origin: newest week the forecast saw"),
    C("target_week_start", "date", nullable=False),
    C("horizon", "int", nullable=False),
    C("actual", "double", nullable=False),
    C("lightgbm", "double", nullable=False),
    C("seasonal_naive", "double", nullable=False),
    C("naive", "double", nullable=False),
    C("mean_4w", "double", nullable=False),
    C("lightgbm_p10", "double", description="NULL while too few earlier scores exist to calibrate"),
    C("lightgbm_p90", "double"),
)

FORECAST_METRIC = (
    C("method", "string", nullable=False),
    C("measure", "string", nullable=False),
    C("horizon", "int", nullable=False),
    C("mase", "double"),
    C("coverage_80", "double", description="share of actuals inside the 80% interval (LightGBM)"),
    C("winkler_80", "double", description="interval (Winkler) score of the 80% interval, lower is better"),
    C("mase_scale", "string", nullable=False, description="in-sample scale of MASE: seasonal_naive_52 or naive_1"),
    C("series_points", "bigint", nullable=False),
    C("origins", "bigint", nullable=False),
)

MODEL_RUN = (
    C("model_run_key", "string", nullable=False, description="digest of inputs, parameters and code"),
    C("run_id", "string", nullable=False, description="the citysafe run that first produced it"),
    C("created_at", "timestamp", nullable=False),
    C("feature_weeks", "string", nullable=False, description="first..last week of the feature mart"),
    C("hotspot_train_weeks", "string", description="feature weeks of the published model's training rows"),
    C("silver_versions", "string", nullable=False, description="JSON: silver table -> Delta version read"),
    C("warehouse_build", "string", nullable=False, description="JSON: the marts build the models read"),
    C("parameters", "string", nullable=False, description="JSON: ml config, seed, library versions"),
    C("metrics", "string", nullable=False, description="JSON: backtest summary per scope and method"),
    C("published", "string", nullable=False, description="JSON: scope -> published method and why"),
    C("mlflow_run_id", "string"),
)

CELL_GEOMETRY = (
    C("h3_cell", "string", nullable=False),
    C("district_code", "string"),
    C("centroid_lon", "double", nullable=False),
    C("centroid_lat", "double", nullable=False),
    C("boundary_geojson", "string", nullable=False, description="GeoJSON Polygon of the cell (lon/lat)"),
)

TABLES = {
    "risk_cell_week": (RISK_CELL_WEEK, ("scope", "h3_cell", "target_week_start")),
    "risk_backtest_prediction": (RISK_BACKTEST_PREDICTION, ("scope", "method", "h3_cell", "target_week_start")),
    "risk_backtest_score": (RISK_BACKTEST_SCORE, ("scope", "method", "target_week_start")),
    "forecast": (FORECAST, ("series_id", "origin_week_start", "target_week_start")),
    "forecast_backtest": (FORECAST_BACKTEST, ("series_id", "cutoff_week_start", "target_week_start")),
    "forecast_metric": (FORECAST_METRIC, ("method", "measure", "horizon")),
    "model_run": (MODEL_RUN, ("model_run_key",)),
    "cell_geometry": (CELL_GEOMETRY, ("h3_cell",)),
}


def gold_tables(gold_dir: Path) -> dict[str, TableSpec]:
    return {
        name: TableSpec(f"gold.{name}", as_path(gold_dir) / name, columns, key=key)
        for name, (columns, key) in TABLES.items()
    }
