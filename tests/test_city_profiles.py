"""City profiles (config/cities/<city>.yaml): the overlay mechanics, a city without district polygons
(districts from the records' own area codes, the H3 grid and study area from the incidents), and the
committed Chicago profile run end to end by `citysafe run` on the sample in tests/data/cities/chicago
(every 3rd record of the real Chicago crimes sample from 2018-07-01 on: scripts/make_city_sample.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import h3
import pandas as pd
import pytest
import shapely
from deltalake import DeltaTable

from citysafe import city
from citysafe.config import REPO_ROOT, ConfigError, load_settings
from citysafe.sources import get_source
from spark_jobs.silver_reference import area_km2, event_grid_frames

CITIES = REPO_ROOT / "config" / "cities"
SAMPLE = REPO_ROOT / "tests" / "data" / "cities" / "chicago"
CROSSWALK = REPO_ROOT / "reference" / "districts" / "chicago_police_districts.csv"


# --- the overlay mechanics ---------------------------------------------------------------------------


def test_every_city_profile_is_an_overlay_that_validates():
    base = load_settings(environ={})
    for path in sorted(CITIES.glob("*.yaml")):
        s = load_settings(path, environ={})
        assert s.config_file == path
        assert s.districts_geojson is None and s.bounds is not None and s.sources, path.name
        # only what the profile states differs: the ml section comes from config/citysafe.yaml
        assert s.ml == base.ml and s.engine == base.engine
        # relative paths resolve against the repository root, each city in its own folders
        assert s.lake_root.is_relative_to(REPO_ROOT / "var" / "cities" / path.stem)
        assert s.warehouse_path.is_relative_to(REPO_ROOT / "var" / "cities" / path.stem)
        assert s.real_data_root == base.real_data_root
        # every source it names has a geography, so its records carry their own district codes
        for name in s.sources:
            assert get_source(name).silver.geography is not None, name
        assert city.district_names(s)


def test_environment_overrides_a_profile_and_extends_errors_are_one_line(tmp_path):
    s = load_settings(CITIES / "chicago.yaml", environ={"CITYSAFE_H3_RESOLUTION": "8"})
    assert s.h3_resolution == 8 and s.timezone == "America/Chicago"

    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_settings(tmp_path / "a.yaml", environ={})
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigError, match="config file not found: .*missing.yaml"):
        load_settings(tmp_path / "c.yaml", environ={})
    (tmp_path / "d.yaml").write_text(f"extends: {CITIES / 'chicago.yaml'}\nbounds: null\n")
    with pytest.raises(ConfigError, match="needs `bounds` and `sources`") as err:
        load_settings(tmp_path / "d.yaml", environ={})
    assert "\n" not in str(err.value)


# --- the grid of a city known only from its records ---------------------------------------------------


def test_event_grid_cells_districts_and_neighbours_by_hand():
    a = h3.latlng_to_cell(41.88, -87.63, 7)
    b, c = sorted(x for x in h3.grid_ring(a, 1))[:2]
    far = h3.latlng_to_cell(41.70, -87.60, 7)
    rows = pd.DataFrame(
        {
            #            a: 2 x D1, 1 x D2 -> D1;  b: 1 x D2, 1 x D3 -> tie, the smaller code D2
            "h3_cell": [a, a, a, b, b, far, None],
            "district_code": ["D1", "D1", "D2", "D3", "D2", "D1", "D9"],
        }
    )
    district, grid = event_grid_frames(rows, {"D1": "First", "D2": "Second"}, 7)
    grid = grid.set_index("h3_cell")
    assert set(grid.index) == {a, b, far}  # c had no event; the row without a cell counts for nothing
    assert grid.loc[a, "district_code"] == "D1" and grid.loc[b, "district_code"] == "D2"
    assert json.loads(grid.loc[a, "neighbors"]) == ([b] if h3.are_neighbor_cells(a, b) else [])
    assert json.loads(grid.loc[far, "neighbors"]) == []
    assert c not in json.loads(grid.loc[a, "neighbors"])
    district = district.set_index("district_code")
    assert list(district.index) == ["D1", "D2"] and district.loc["D1", "name_en"] == "First"
    # a district's polygon is the union of its cells: D1 = cells a and far (two parts), D2 = cell b
    hexagon = lambda cell: shapely.Polygon([(lon, lat) for lat, lon in h3.cell_to_boundary(cell)])  # noqa: E731
    assert district.loc["D1", "area_km2"] == pytest.approx(area_km2(hexagon(a)) + area_km2(hexagon(far)), rel=0.01)
    assert district.loc["D1", "geometry_wkt"].startswith("MULTIPOLYGON")
    assert district.loc["D2", "geometry_wkt"].startswith("POLYGON")


# --- Chicago end to end -------------------------------------------------------------------------------

ML_SMALL = {  # 62 weeks of a 1-in-3 sample: a shorter backtest and horizon than the profile's defaults
    "CITYSAFE_ML__HOTSPOT__BACKTEST_WEEKS": "8",
    "CITYSAFE_ML__HOTSPOT__KDE_VALIDATION_WEEKS": "4",
    "CITYSAFE_ML__HOTSPOT__NUM_BOOST_ROUND": "60",
    "CITYSAFE_ML__FORECAST__HORIZON_WEEKS": "4",
    "CITYSAFE_ML__FORECAST__BACKTEST_WEEKS": "8",
    "CITYSAFE_ML__FORECAST__LAGS": "[1, 2, 4]",
    "CITYSAFE_ML__FORECAST__MIN_TRAIN_WEEKS": "12",
}


def _cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "citysafe"), *args], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def chicago(tmp_path_factory):
    root = tmp_path_factory.mktemp("chicago")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSAFE_")}
    env.update(
        {
            "CITYSAFE_CONFIG": str(CITIES / "chicago.yaml"),
            "CITYSAFE_LAKE_ROOT": str(root / "lake"),
            "CITYSAFE_WAREHOUSE_PATH": str(root / "warehouse" / "marts.duckdb"),
            "CITYSAFE_MLFLOW_ROOT": str(root / "mlflow"),
            "CITYSAFE_SYNTHETIC_ROOT": str(root / "synthetic"),
            "CITYSAFE_REAL_DATA_ROOT": str(SAMPLE),
            "CITYSAFE_PII_KEY": "city-profile-test-key-0123456789",
            **ML_SMALL,
        }
    )
    first = _cli(["run", "--run-id", "first"], env)
    settings = load_settings(environ=env)
    summary = json.loads((settings.runs_dir / "first" / "summary.json").read_text())
    return settings, env, first.stdout, summary


def _q(settings, sql: str) -> pd.DataFrame:
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        return con.execute(sql).df()
    finally:
        con.close()


def _silver(settings, table: str) -> pd.DataFrame:
    return DeltaTable(str(settings.silver_dir / table)).to_pandas()


def test_run_builds_the_city_without_generator_or_truth(chicago):
    settings, env, stdout, summary = chicago
    assert "city: Chicago" in stdout and "sources: real_chicago_crimes" in stdout
    assert summary["stages"]["generate"]["status"] == "ok" and summary["stages"]["reconcile"]["status"] == "ok"
    assert not (settings.synthetic_root).exists()  # nothing generated
    assert "reconciliation" not in summary["tables"]
    # every delivered record is published, quarantined with a reason, or a duplicate
    e = summary["tables"]["silver.incident[real_chicago_crimes]"]
    assert e["rows_read"] == 2758
    assert e["published"] + sum(e["quarantined"].values()) + e["duplicates"] == e["rows_read"]
    assert e["published"] > 2500


def test_districts_come_from_the_records_and_the_grid_from_their_cells(chicago):
    settings, *_ = chicago
    incident = _silver(settings, "incident")
    cells = _silver(settings, "h3_cell")
    district = _silver(settings, "district")
    known = set(pd.read_csv(CROSSWALK, dtype=str)["district_code"])
    assert set(incident["district_code"]) <= known
    # the grid: exactly the cells with a published incident, at the profile's resolution
    assert set(cells["h3_cell"]) == set(incident["h3_cell"].dropna())
    assert (cells["resolution"] == 7).all() and {h3.get_resolution(c) for c in cells["h3_cell"]} == {7}
    # each cell's district is the one most of its incidents carry
    majority = (
        incident.groupby(["h3_cell", "district_code"])
        .size()
        .rename("n")
        .reset_index()
        .sort_values(["h3_cell", "n", "district_code"], ascending=[True, False, True])
        .drop_duplicates("h3_cell")
        .set_index("h3_cell")["district_code"]
    )
    assert cells.set_index("h3_cell")["district_code"].sort_index().equals(majority.sort_index())
    assert set(district["district_code"]) == set(cells["district_code"]) and set(district["district_code"]) <= known
    assert (district["area_km2"] > 0).all() and district["name_en"].str.startswith("CPD District").all()
    dims = _q(settings, "select count(*) as n, count(*) filter (where is_city_grid_cell) as grid from dim_h3_cell")
    assert dims["n"][0] == dims["grid"][0] == len(cells)  # no edge cells: every incident cell is in the grid


def test_backtest_scores_only_cells_seen_before_its_first_target_week(chicago):
    settings, *_ = chicago
    pred = DeltaTable(str(settings.gold_dir / "risk_backtest_prediction")).to_pandas()
    first_target = pd.Timestamp(pred["target_week_start"].min())
    feats = _q(settings, "select h3_cell, week_start, incident_count from mart_cell_week_features")
    seen = set(
        feats.loc[(pd.to_datetime(feats["week_start"]) < first_target) & (feats["incident_count"] > 0), "h3_cell"]
    )
    scored = set(pred["h3_cell"])
    assert scored == seen
    # the published map covers every cell with an event so far (also those first seen in the backtest)
    risk = _q(settings, "select * from mart_risk_map where scope = 'ALL'")
    assert set(risk["h3_cell"]) == set(feats.loc[feats["incident_count"] > 0, "h3_cell"]) >= scored
    run = _q(settings, "select * from mart_model_runs")
    assert len(run) == 1
    params = json.loads(run["parameters"][0])
    assert params["study_area"] == "cells with at least one event in the training window"


def test_evaluate_prints_every_method_and_forecasts_only_what_is_reported(chicago):
    settings, env, *_ = chicago
    out = _cli(["ml", "evaluate"], env).stdout
    for method in ("lightgbm", "persistence_4w", "long_run_52w", "kde_52w"):
        assert method in out
    assert "oracle" not in out  # a real city has no truth
    published = json.loads(_q(settings, "select published from mart_model_runs")["published"][0])
    scores = DeltaTable(str(settings.gold_dir / "risk_backtest_score")).to_pandas()
    best = scores[scores["scope"] == "ALL"].groupby("method")["pai_5"].mean()
    assert best[published["ALL"]["method"]] == best.max()  # the champion rule on a real city
    fc = DeltaTable(str(settings.gold_dir / "forecast")).to_pandas()
    assert set(fc["measure"]) == {"incidents"}  # no hazard feed: no hazard forecast of zeros
    assert set(fc.loc[fc["level"] == "district", "district_code"]) <= set(
        _silver(settings, "district")["district_code"]
    )


def test_a_second_run_changes_nothing(chicago):
    settings, env, *_ = chicago

    def versions():
        return {
            f"{zone}/{p.name}": DeltaTable(str(p)).version()
            for zone in (settings.silver_dir, settings.gold_dir)
            for p in sorted(zone.iterdir())
            if (p / "_delta_log").is_dir()
        }

    before = versions()
    _cli(["run", "--run-id", "second"], env)
    assert versions() == before
    second = json.loads((settings.runs_dir / "second" / "summary.json").read_text())
    assert {st["status"] for name, st in second["stages"].items() if name != "reference"} <= {"skipped", "ok"}
    assert second["stages"]["silver"]["status"] == "skipped" and second["stages"]["ml"]["status"] == "skipped"
