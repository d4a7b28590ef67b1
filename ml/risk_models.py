"""The ML stage: read the warehouse, backtest and fit the hotspot and forecast models, publish the
champions' outputs into the gold zone, track the run in MLflow.

`train_and_publish` does it all (`citysafe ml train` and the `ml` stage of `citysafe run`);
`evaluate` prints the comparison tables from the gold tables. Deterministic: the same inputs give the
same rows, so a re-run commits no new table version and logs no new MLflow run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from citysafe import city, delta_io, fingerprint
from citysafe.config import REPO_ROOT, Settings
from ml import forecast, gold, hotspot, tracking
from ml.panel import DOMAINS, Panel, history, kde_weights, read_panel

log = logging.getLogger(__name__)

ALL = "ALL"
FORECAST = "forecast"  # key of the forecast model in `published` and among the MLflow models
HISTORY_KEPT = ("risk_cell_week", "forecast")  # every week's map / origin's forecast is kept
ML_CODE = Path(__file__).resolve().parent
LIBRARIES = ("lightgbm", "mlforecast", "utilsforecast", "numpy", "pandas")


def truth_matrix(settings: Settings, panel: Panel) -> dict[str, np.ndarray] | None:
    """The synthetic generator's true expected counts per scope as (cells, weeks) matrices, or None when
    the lake is not the synthetic city's (no truth file, or it does not cover the panel's cells)."""
    path = settings.synthetic_root / "truth" / "intensity_cell_week.csv.gz"
    if not path.is_file():
        return None
    t = pd.read_csv(path, dtype={"h3_cell": str, "domain_code": str}, parse_dates=["week_start"])
    if t["h3_cell"].isin(set(panel.cells)).mean() < 0.5:
        return None
    cell_idx = pd.Series(np.arange(panel.n_cells), index=panel.cells)
    week_idx = pd.Series(np.arange(panel.n_weeks), index=panel.weeks)
    t = t[t["h3_cell"].isin(cell_idx.index) & t["week_start"].isin(week_idx.index)]
    out = {}
    for scope in (ALL, *DOMAINS):
        sub = t if scope == ALL else t[t["domain_code"] == scope]
        m = np.zeros((panel.n_cells, panel.n_weeks))
        np.add.at(
            m, (cell_idx[sub["h3_cell"]].to_numpy(), week_idx[sub["week_start"]].to_numpy()), sub["expected_count"]
        )
        out[scope] = m
    return out


def study_area(settings: Settings, panel: Panel) -> tuple[np.ndarray, np.ndarray, str]:
    """(cells scored in the backtest, cells published, the rule). The city grid when the city has
    district polygons; else the cells with at least one event in the training window: for the backtest,
    the weeks before its first target week (a cell first seen in the scored weeks would tell the methods
    where events will be); for the published map, every week."""
    if city.has_polygons(settings):
        every = np.ones(panel.n_cells, dtype=bool)
        return every, every, "city grid (district polygons)"
    hot = settings.ml.hotspot
    _, blocks = hotspot.backtest_plan(panel, hot.backtest_weeks, hot.retrain_every_weeks, hot.kde_validation_weeks)
    first_feature_week = int(blocks[0][1][0])
    backtest = panel.counts[:, : first_feature_week + 1].sum(axis=1) > 0
    return backtest, panel.counts.sum(axis=1) > 0, "cells with at least one event in the training window"


def scopes(panel: Panel, min_weekly: float) -> list[str]:
    """ALL, plus every domain whose city-wide weekly mean reaches `min_weekly` events and which is not
    ALL under another name (a city whose only source reports one domain)."""
    out = [ALL]
    for d in DOMAINS:
        counts = panel.domain_counts[d]
        if np.array_equal(counts, panel.counts):
            continue
        if counts[:, panel.complete].sum(axis=0).mean() >= min_weekly:
            out.append(d)
    return out


# The models learn from complete weeks only: the hotspot model from weeks whose next week is complete
# and maps the week after the newest complete one; the forecasts from complete weeks. A digest of
# exactly those rows (the feature mart joined as read_panel reads it, the weekly counts read_series
# aggregates, the districts) is what decides whether they must be trained again. A daily delivery that
# completes no week and revises no complete week leaves the models, and their maps, as they are.
_TRAINING_ROWS_SQL = """
with complete_weeks as (
    select week_start from mart_cell_week_features group by 1 having bool_and(is_complete_week)
),
features as (
    -- the mart's label columns are for analysts; the models count their own targets from the panel, and
    -- the newest complete week's label (the unfinished next week) moves with every day delivered.
    -- Doubles are rounded: DuckDB's parallel sums may differ in the last bits between two builds of the
    -- same rows, which would retrain the models for nothing (seen once at scale 1: 81 s).
    select {feature_columns}, round(c.centroid_lon, 6) as centroid_lon, round(c.centroid_lat, 6) as centroid_lat
    from mart_cell_week_features as f
    inner join dim_h3_cell as c using (h3_cell)
    where f.week_start in (select week_start from complete_weeks)
),
incidents as (
    select district_code, domain_code, week_start_local as week_start, count(*) as n
    from fct_incident
    where district_code is not null and domain_code is not null
        and week_start_local in (select week_start from complete_weeks)
    group by 1, 2, 3
),
hazards as (
    select district_code, domain_code, cast(date_trunc('week', found_date) as date) as week_start, count(*) as n
    from fct_hazard
    where district_code is not null and domain_code is not null
        and cast(date_trunc('week', found_date) as date) in (select week_start from complete_weeks)
    group by 1, 2, 3
)
select 'weeks' as part, count(*) as n, cast(sum(hash(w)::hugeint) as varchar) as digest from complete_weeks as w
union all select 'features', count(*), cast(sum(hash(r)::hugeint) as varchar) from features as r
union all select 'incidents', count(*), cast(sum(hash(r)::hugeint) as varchar) from incidents as r
union all select 'hazards', count(*), cast(sum(hash(r)::hugeint) as varchar) from hazards as r
union all select 'districts', count(*), cast(sum(hash(district_code)::hugeint) as varchar)
    from (select distinct district_code from dim_h3_cell where district_code is not null)
"""


def training_rows(settings: Settings) -> dict:
    """Row counts and order-free digests of what the models train on (see _TRAINING_ROWS_SQL); None
    before the warehouse exists."""
    from citysafe import warehouse

    if not Path(settings.warehouse_path).is_file():
        return {"warehouse": None}
    columns = warehouse.query(
        settings,
        "select column_name, data_type from information_schema.columns "
        "where table_name = 'mart_cell_week_features' order by ordinal_position",
    )
    feature_columns = ", ".join(
        f'round(f."{name}", 6) as "{name}"' if kind in ("DOUBLE", "FLOAT") else f'f."{name}"'
        for name, kind in zip(columns["column_name"], columns["data_type"], strict=True)
        if name not in ("target_next_week_count", "is_target_week_complete")
    )
    frame = warehouse.query(settings, _TRAINING_ROWS_SQL.format(feature_columns=feature_columns))
    return {row.part: [int(row.n), row.digest] for row in frame.itertuples()}


def inputs(settings: Settings) -> dict:
    """What the models read: the complete weeks of the served marts (training_rows), the dbt project,
    the ML code and config. Same inputs, same models: this decides `ml train --skip-unchanged` and
    the model run key."""
    truth = settings.synthetic_root / "truth" / "intensity_cell_week.csv.gz"
    return {
        "training_rows": training_rows(settings),
        "dbt_project": fingerprint.files_digest([REPO_ROOT / "dbt"], REPO_ROOT),
        "ml_code": fingerprint.files_digest([ML_CODE], REPO_ROOT),
        "config": {"ml": settings.ml.model_dump(mode="json"), "districts": str(settings.districts_geojson)},
        "truth": fingerprint.file_state(truth),
        "libraries": {name: importlib.metadata.version(name) for name in LIBRARIES},
    }


def warehouse_build(settings: Settings) -> dict:
    """The marts build a model run read (its lineage; not an input: a rebuild with the same rows is the same)."""
    marts_state = settings.state_dir / "stages" / "marts.json"
    build = json.loads(marts_state.read_text()) if marts_state.is_file() else {}
    return {"run_id": build.get("run_id"), "path": str(settings.warehouse_path)}


def cell_geometry(panel: Panel, area: np.ndarray) -> pd.DataFrame:
    """Each mapped cell's polygon as GeoJSON (lon/lat, closed ring) and its centre."""
    import h3

    rows = []
    for cell, district, lon, lat in zip(panel.cells[area], panel.district[area], panel.lon[area], panel.lat[area]):
        ring = [[round(p[1], 7), round(p[0], 7)] for p in h3.cell_to_boundary(str(cell))]
        ring.append(ring[0])
        rows.append(
            {
                "h3_cell": cell,
                "district_code": district or None,
                "centroid_lon": float(lon),
                "centroid_lat": float(lat),
                "boundary_geojson": json.dumps({"type": "Polygon", "coordinates": [ring]}, separators=(",", ":")),
            }
        )
    return pd.DataFrame(rows)


def run_key(inp: dict) -> str:
    return hashlib.sha256(json.dumps(inp, sort_keys=True, default=str).encode()).hexdigest()


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate maps; a baseline's map has no 2nd/3rd contribution (all-NULL columns), which is fine."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message="The behavior of DataFrame concatenation")
        return pd.concat(frames, ignore_index=True)


def _dates(frame: pd.DataFrame, *cols: str) -> pd.DataFrame:
    for c in cols:
        frame[c] = pd.to_datetime(frame[c]).dt.date
    return frame


def train_and_publish(settings: Settings, spark_factory, run_id: str) -> dict:
    """Backtest, fit and publish every model; write the gold tables; log the run to MLflow."""
    started = time.monotonic()
    steps: dict[str, float] = {}
    inp = inputs(settings)
    key = run_key(inp)
    cfg = settings.ml

    t = time.monotonic()
    panel = read_panel(settings)
    truth = truth_matrix(settings, panel)
    area, publish_area, area_rule = study_area(settings, panel)
    chosen = scopes(panel, cfg.hotspot.domain_min_weekly_events)
    steps["read"] = time.monotonic() - t
    log.info(
        "hotspot: %d cells (%s: %d scored, %d mapped), %d weeks %s..%s, scopes %s, truth %s",
        panel.n_cells,
        area_rule,
        int(area.sum()),
        int(publish_area.sum()),
        panel.n_weeks,
        panel.weeks[0].date(),
        panel.weeks[-1].date(),
        ",".join(chosen),
        "yes" if truth is not None else "no",
    )
    results: dict[str, hotspot.ScopeResult] = {}
    t = time.monotonic()
    for scope in chosen:
        target_scope = "all" if scope == ALL else scope
        results[scope] = hotspot.run_scope(
            panel,
            target_scope,
            cfg.hotspot,
            cfg.risk_levels,
            seed=cfg.seed,
            threads=cfg.threads,
            study_area=area,
            publish_area=publish_area,
            truth=None if truth is None else truth[scope],
            on_step=log.info,
        )
    steps["hotspot"] = time.monotonic() - t

    t = time.monotonic()
    series = forecast.read_series(settings)
    fc = forecast.run(series, cfg.forecast, seed=cfg.seed, threads=cfg.threads, on_step=log.info)
    steps["forecast"] = time.monotonic() - t

    # --- gold rows -------------------------------------------------------------------------------
    t = time.monotonic()
    rows = {}
    maps, preds, scores = [], [], []
    for scope, r in results.items():
        maps.append(r.published.assign(scope=scope))
        preds.append(r.predictions.assign(scope=scope))
        scores.append(r.scores.assign(scope=scope))
    risk = _concat(maps)
    risk["model_run_key"] = key
    rows["risk_cell_week"] = _dates(risk, "feature_week_start", "target_week_start")
    rows["risk_backtest_prediction"] = _dates(
        pd.concat(preds, ignore_index=True), "target_week_start", "origin_week_start"
    )
    rows["risk_backtest_score"] = _dates(pd.concat(scores, ignore_index=True), "target_week_start")

    rows["forecast"] = _dates(_forecast_rows(fc.forecast, series, key), "origin_week_start", "target_week_start")
    b = fc.backtest.rename(
        columns={
            "unique_id": "series_id",
            "cutoff": "cutoff_week_start",
            "ds": "target_week_start",
            "y": "actual",
            "lo": "lightgbm_p10",
            "hi": "lightgbm_p90",
        }
    )
    rows["forecast_backtest"] = _dates(b, "cutoff_week_start", "target_week_start")
    m = fc.metrics.rename(columns={"coverage": "coverage_80", "winkler": "winkler_80", "mase_n": "series_points"}).drop(
        columns=["interval_n"]
    )
    rows["forecast_metric"] = m
    rows["cell_geometry"] = cell_geometry(panel, area | publish_area)

    published = {
        scope: {"method": r.champion, "reason": r.champion_reason, "kde_bandwidth_km": r.bandwidth_km}
        for scope, r in results.items()
    }
    published[FORECAST] = {
        "method": ",".join(f"{m}={c['method']}" for m, c in fc.published.items()),
        "reason": "per measure, the backtest champion by mean MASE; intervals are conformal on its backtest errors",
        "methods": {m: c["method"] for m, c in fc.published.items()},
        "reasons": {m: c["reason"] for m, c in fc.published.items()},
        "conformal_quantiles": {str(k): v for k, v in fc.quantiles.items()},
    }
    summary = {scope: r.summary.set_index("method").round(6).to_dict(orient="index") for scope, r in results.items()}
    forecast_summary = (
        fc.metrics[fc.metrics["horizon"].isin([1, 4, 13])]
        .set_index(["measure", "method", "horizon"])[["mase", "coverage", "winkler"]]
        .round(6)
    )
    metrics_json = {
        "hotspot": summary,
        "forecast": {"|".join(map(str, k)): v for k, v in forecast_summary.to_dict(orient="index").items()},
    }
    params = {
        "ml": cfg.model_dump(mode="json"),
        "study_area": area_rule,
        "scopes": chosen,
        "libraries": inp["libraries"],
        "hotspot_lightgbm": hotspot.lgb_params(cfg.hotspot, cfg.seed, cfg.threads),
    }
    steps["assemble"] = time.monotonic() - t

    # --- writes ----------------------------------------------------------------------------------
    t = time.monotonic()
    specs = gold.gold_tables(settings.gold_dir)
    spark = spark_factory()
    written = write_gold(spark, specs, rows)
    steps["write"] = time.monotonic() - t

    t = time.monotonic()
    flat_metrics = {
        f"{scope}.{method}.{metric}": value
        for scope, by_method in summary.items()
        for method, values in by_method.items()
        for metric, value in values.items()
        if isinstance(value, (int, float))
    }
    flat_metrics.update(
        {
            f"forecast.{k.replace('|', '.')}.{metric}": v
            for k, values in metrics_json["forecast"].items()
            for metric, v in values.items()
        }
    )
    models = {scope: r.model for scope, r in results.items()}
    models[FORECAST] = fc.model
    mlflow_run = tracking.log_run(
        settings.mlflow_root,
        key,
        run_id,
        {"model_run_key": key, **{k: json.dumps(v, default=str) for k, v in params.items()}},
        flat_metrics,
        {k: v for k, v in models.items() if v is not None},
        published,
    )
    steps["mlflow"] = time.monotonic() - t

    r_all = results[ALL]
    run_row = pd.DataFrame(
        [
            {
                "model_run_key": key,
                "run_id": run_id,
                "created_at": pd.Timestamp(dt.datetime.now(dt.UTC)),
                "feature_weeks": f"{panel.weeks[0].date()}..{panel.weeks[-1].date()}",
                "hotspot_train_weeks": "..".join(r_all.train_weeks),
                "silver_versions": json.dumps(fingerprint.delta_versions(settings.silver_dir), sort_keys=True),
                "warehouse_build": json.dumps(warehouse_build(settings), sort_keys=True),
                "parameters": json.dumps(params, sort_keys=True, default=str),
                "metrics": json.dumps(metrics_json, sort_keys=True, default=str),
                "published": json.dumps(published, sort_keys=True),
                "mlflow_run_id": mlflow_run,
            }
        ]
    )
    model_runs = specs["model_run"]
    delta_io.ensure_table(model_runs)
    seen = delta_io.arrow_rows(run_row, model_runs)
    existing = delta_io.read_arrow(model_runs, columns=["model_run_key"])
    if key in set(existing.column("model_run_key").to_pylist()):
        written["model_run"] = delta_io.WriteResult(model_runs.name, "none", rows_unchanged=1)
    else:
        written["model_run"] = delta_io.append(spark.createDataFrame(seen), model_runs, expected_rows=1)
    steps["total"] = time.monotonic() - started
    for name, seconds in steps.items():
        log.info("ml step %-10s %6.1f s", name, seconds)
    return {
        "model_run_key": key,
        "mlflow_run_id": mlflow_run,
        "published": published,
        "scopes": chosen,
        "written": {k: v.operation for k, v in written.items()},
        "changed": any(v.operation != "none" for v in written.values()),
        "seconds": {k: round(v, 2) for k, v in steps.items()},
        "hotspot_seconds": {s: {k: round(v, 2) for k, v in r.seconds.items()} for s, r in results.items()},
        "forecast_seconds": {k: round(v, 2) for k, v in fc.seconds.items()},
        "summary": {scope: r.summary for scope, r in results.items()},
        "forecast_metrics": fc.metrics,
    }


def write_gold(spark, specs: dict, rows: dict[str, pd.DataFrame]) -> dict[str, delta_io.WriteResult]:
    written = {}
    for name, frame in rows.items():
        spec = specs[name]
        frame = frame[[c.name for c in spec.columns]]
        written[name] = delta_io.sync_rows(spark, frame, spec, delete_missing=name not in HISTORY_KEPT)
        log.info("gold.%s: %s (%d rows)", name, written[name].operation, len(frame))
    return written


def latest_model_run(settings: Settings) -> dict:
    spec = gold.gold_tables(settings.gold_dir)["model_run"]
    if delta_io.version(spec) is None:
        raise FileNotFoundError(f"{spec.path}: no model run yet; run `citysafe ml train` first")
    runs = delta_io.read_arrow(spec).to_pandas()
    if runs.empty:
        raise FileNotFoundError(f"{spec.path}: no model run yet; run `citysafe ml train` first")
    return runs.sort_values(["created_at", "model_run_key"]).iloc[-1].to_dict()


def predict_and_publish(settings: Settings, spark_factory, run_id: str) -> dict:
    """The newest maps and forecasts from the current warehouse with the methods the last training run
    chose (no backtest): refit on every labelled week, publish. For a weekly refresh between trainings."""
    started = time.monotonic()
    last = latest_model_run(settings)
    published = json.loads(last["published"])
    cfg = settings.ml
    panel = read_panel(settings)
    _, area, _ = study_area(settings, panel)
    maps = []
    for scope, choice in published.items():
        if scope == FORECAST:
            continue
        target_scope = "all" if scope == ALL else scope
        hist = history(panel, target_scope, kde_weights(panel, float(choice["kde_bandwidth_km"])))
        _, risk, _, _ = hotspot.fit_and_publish(
            panel,
            hist,
            target_scope,
            choice["method"],
            area,
            cfg.hotspot,
            cfg.risk_levels,
            seed=cfg.seed,
            threads=cfg.threads,
        )
        maps.append(risk.assign(scope=scope))
        log.info("predict %s: %s map for %s", scope, choice["method"], risk["target_week_start"].iloc[0].date())
    series = forecast.read_series(settings)
    quantiles = {str(k): float(v) for k, v in published[FORECAST]["conformal_quantiles"].items()}
    rows_fc, _ = forecast.fit_future(
        series,
        cfg.forecast,
        quantiles,
        seed=cfg.seed,
        threads=cfg.threads,
        methods=published[FORECAST].get("methods"),  # runs recorded before champions published LightGBM
    )
    key = last["model_run_key"]
    risk = _concat(maps).assign(model_run_key=key)
    rows = {
        "risk_cell_week": _dates(risk, "feature_week_start", "target_week_start"),
        "forecast": _dates(_forecast_rows(rows_fc, series, key), "origin_week_start", "target_week_start"),
        "cell_geometry": cell_geometry(panel, area),
    }
    written = write_gold(spark_factory(), gold.gold_tables(settings.gold_dir), rows)
    return {
        "model_run_key": key,
        "published": {s: c["method"] for s, c in published.items()},
        "written": {k: v.operation for k, v in written.items()},
        "changed": any(v.operation != "none" for v in written.values()),
        "seconds": round(time.monotonic() - started, 2),
    }


def _forecast_rows(rows: pd.DataFrame, series: pd.DataFrame, key: str) -> pd.DataFrame:
    meta = series.drop_duplicates("unique_id").set_index("unique_id")
    f = rows.rename(columns={"unique_id": "series_id"})
    for c in ("measure", "level", "district_code", "domain_code"):
        f[c] = f["series_id"].map(meta[c])
    if "method" not in f:
        f["method"] = forecast.LIGHTGBM
    f["model_run_key"] = key
    return f


def comparison_tables(settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(hotspot summary per scope and method, forecast metrics per measure, method and horizon) from gold."""
    specs = gold.gold_tables(settings.gold_dir)
    for name in ("risk_backtest_score", "forecast_metric"):
        if delta_io.version(specs[name]) is None:
            raise FileNotFoundError(
                f"{specs[name].path}: no backtest yet; run `citysafe ml train` (or `citysafe run`) first"
            )
    scores = delta_io.read_arrow(specs["risk_backtest_score"]).to_pandas()
    parts = []
    for scope, g in scores.groupby("scope"):
        s = hotspot.summarise(g)
        s.insert(0, "scope", scope)
        parts.append(s)
    hot = pd.concat(parts, ignore_index=True)
    fm = delta_io.read_arrow(specs["forecast_metric"]).to_pandas()
    return hot, fm.sort_values(["measure", "horizon", "method"], ignore_index=True)
