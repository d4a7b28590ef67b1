"""The ml stage on the session's built city (`citysafe run` ran it): gold tables, the marts over them,
MLflow tracking, the champion rule on the real backtest, and a re-run that commits nothing."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from deltalake import DeltaTable

from citysafe import delta_io
from ml import hotspot
from ml.gold import gold_tables


def _q(warehouse: Path, sql: str) -> pd.DataFrame:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(sql).df()
    finally:
        con.close()


def _gold(city) -> dict:
    return gold_tables(city.lake / "gold")


def _versions(city) -> dict:
    return {name: DeltaTable(str(spec.path)).version() for name, spec in _gold(city).items()}


def test_ml_stage_ran_and_every_gold_table_matches_its_declaration(built_city):
    assert built_city.summary["stages"]["ml"]["status"] == "ok"
    for name, spec in _gold(built_city).items():
        table = delta_io.check_table_schema(spec)  # raises on any difference from the declaration
        assert table is not None, name
        rows = table.to_pyarrow_table().num_rows
        assert rows > 0, f"gold.{name} is empty"


def test_risk_map_mart_covers_the_study_area_with_levels_and_explanations(built_city):
    wh = built_city.warehouse
    cells = _q(wh, "select count(*) as n from dim_h3_cell where is_city_grid_cell")["n"][0]
    m = _q(wh, "select * from mart_risk_map where scope = 'ALL'")
    assert len(m) == cells and m["h3_cell"].is_unique
    assert m["target_week_start"].nunique() == 1
    features_last = _q(wh, "select max(week_start) as w from mart_cell_week_features where is_complete_week")["w"][0]
    assert pd.Timestamp(m["feature_week_start"][0]) == pd.Timestamp(features_last)
    assert sorted(m["risk_rank"]) == list(range(1, cells + 1))
    assert set(m["risk_level"]) <= {"red", "orange", "yellow", "blue"} and "red" in set(m["risk_level"])
    assert m["contribution_1_feature"].notna().all()
    geo = json.loads(m["boundary_geojson"][0])
    assert geo["type"] == "Polygon" and geo["coordinates"][0][0] == geo["coordinates"][0][-1]
    # higher rank, higher expectation
    ordered = m.sort_values("risk_rank")
    assert ordered["expected_count"].is_monotonic_decreasing


def test_published_method_is_never_below_the_best_baseline(built_city):
    b = _q(built_city.warehouse, "select * from mart_risk_backtest")
    for scope, g in b.groupby("scope"):
        g = g.set_index("method")
        assert set(hotspot.METHODS) <= set(g.index), scope
        assert "oracle" in g.index  # the synthetic city's truth is scored
        published = g[g["is_published"]]
        assert len(published) == 1, scope
        best_baseline = g.loc[list(hotspot.BASELINES), "pai_5"].max()
        assert published["pai_5"].iloc[0] >= best_baseline - 1e-12, g


def test_forecast_marts(built_city):
    wh = built_city.warehouse
    f = _q(wh, "select * from mart_forecast_vs_actual")
    assert len(f) and (f["p10"] <= f["p50"]).all() and (f["p50"] <= f["p90"]).all()
    assert set(f["measure"]) == {"incidents", "hazards_found"} and "CITY" in set(f["district_code"])
    assert set(f["horizon"]) == {1, 2}
    metrics = _q(wh, "select * from mart_forecast_metrics")
    assert {"lightgbm", "seasonal_naive", "naive", "mean_4w"} == set(metrics["method"])
    lgb = metrics[metrics["method"] == "lightgbm"]
    assert lgb["coverage_80"].between(0, 1).all() and lgb["mase"].notna().all()
    # the published forecast of each measure is its backtest champion: never worse than a baseline
    mean_mase = metrics.groupby(["measure", "method"])["mase"].mean()
    for measure, g in f.groupby("measure"):
        (method,) = set(g["method"])
        baselines = mean_mase[measure].drop("lightgbm")
        assert mean_mase[measure][method] <= baselines.min() + 1e-12, (measure, method, mean_mase[measure])
    runs = _q(wh, "select * from mart_model_runs")
    assert len(runs) == 1 and runs["published_method_all"][0] in hotspot.METHODS
    lineage = json.loads(runs["silver_versions"][0])
    assert lineage["incident"] is not None


def test_mlflow_tracks_the_run(built_city):
    db = built_city.root / "mlflow" / "mlflow.db"
    con = sqlite3.connect(db)
    try:
        keys = con.execute("select value from tags where key = 'model_run_key'").fetchall()
        metrics = {r[0] for r in con.execute("select distinct key from metrics")}
        registered = {r[0] for r in con.execute("select name from registered_models")}
    finally:
        con.close()
    assert len(keys) == 1
    assert {"ALL.lightgbm.pai_5", "ALL.kde_52w.pai_5", "ALL.oracle.pai_5"} <= metrics
    published = _q(built_city.warehouse, "select published_method_all from mart_model_runs")["published_method_all"][0]
    assert ("citysafe-all" in registered) == (published == "lightgbm")
    forecast_methods = set(_q(built_city.warehouse, "select distinct method from mart_forecast_vs_actual")["method"])
    assert ("citysafe-forecast" in registered) == ("lightgbm" in forecast_methods)


@pytest.mark.slow
def test_train_again_commits_nothing_and_evaluate_prints_every_method(built_city):
    """A forced re-run in a new process: the same predictions (deterministic), so no table version, no
    model_run row and no MLflow run is added; `ml predict` on the same data publishes the same rows."""
    from city_fixture import CLI, run_cli

    before = _versions(built_city)
    served = built_city.warehouse.stat().st_mtime_ns
    run_cli(["ml", "train"], built_city.env, "ml-again")
    assert _versions(built_city) == before
    # predict refits the published methods on the same data: the very same map and forecasts
    run_cli(["ml", "predict"], built_city.env, "ml-predict")
    assert _versions(built_city) == before
    assert built_city.warehouse.stat().st_mtime_ns == served  # gold unchanged: the gold marts are not rebuilt
    proc = subprocess.run([str(CLI), "ml", "evaluate"], env=built_city.env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for method in (*hotspot.METHODS, "oracle", "seasonal_naive", "mean_4w"):
        assert method in out, out


def test_ml_train_without_a_warehouse_exits_6(cli, tmp_path):
    code, out, err = cli("ml", "train", env={"CITYSAFE_WAREHOUSE_PATH": str(tmp_path / "none.duckdb")})
    assert code == 6 and "run `citysafe build-marts`" in err and "Traceback" not in err


def test_a_backtest_longer_than_the_data_exits_2_in_one_line(built_city):
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "citysafe"), "ml", "train", "--backtest-weeks", "500"],
        env=built_city.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "backtest needs 500" in proc.stderr and "Traceback" not in proc.stderr


def test_the_models_inputs_are_the_complete_weeks_only(built_city, tmp_path):
    """`ml train --skip-unchanged` compares risk_models.inputs: a row in the unfinished newest week (a
    daily delivery) leaves them as they are; a revised complete week changes them."""
    import shutil

    import duckdb

    from citysafe.config import load_settings
    from ml import risk_models

    copy = tmp_path / "marts.duckdb"
    shutil.copy(built_city.warehouse, copy)
    settings = load_settings(environ={**built_city.env, "CITYSAFE_WAREHOUSE_PATH": str(copy)})
    before = risk_models.training_rows(settings)
    assert before["features"][0] > 0 and before["incidents"][0] > 0 and before["weeks"][0] > 0

    con = duckdb.connect(str(copy))
    try:
        newest, complete = con.execute(
            "select week_start, bool_and(is_complete_week) from mart_cell_week_features group by 1 order by 1 desc limit 1"
        ).fetchone()
        assert not complete, "the test city ends in an unfinished week"
        con.execute(
            "insert into fct_incident select * replace (event_id || '-new' as event_id) from fct_incident "
            "where district_code is not null and domain_code is not null limit 1"
        )
        con.execute("update fct_incident set week_start_local = ? where event_id like '%-new'", [newest])
    finally:
        con.close()
    assert risk_models.training_rows(settings) == before

    con = duckdb.connect(str(copy))
    try:
        con.execute("update fct_incident set week_start_local = week_start_local - 7 where event_id like '%-new'")
    finally:
        con.close()
    after = risk_models.training_rows(settings)
    assert after["incidents"] != before["incidents"] and after["features"] == before["features"]
