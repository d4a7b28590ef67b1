"""Risk-model building blocks against hand-computed cases: metrics, history features without look-ahead,
champion selection, risk levels, forecast baselines and the conformal quantile."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from citysafe.config import HotspotConfig, RiskLevels
from ml import forecast, hotspot, metrics
from ml.panel import DOMAINS, MART_FEATURES, Panel, decayed_sum, history, kde_weights, trailing_mean

# --- metrics -------------------------------------------------------------------------------------------

ACTUAL = np.array([5, 3, 0, 0, 2, 0, 0, 0, 0, 0], dtype=float)  # 10 cells, 10 events
CELLS = np.array([f"c{i}" for i in range(10)])
TIE = metrics.tie_break_order(CELLS)


def test_pai_pei_and_hit_rate_by_hand():
    # 10% of 10 cells = 1 cell. Flagging c0 (5 of 10 events): hit rate 0.5, PAI 0.5 / 0.1 = 5, PEI* 5/5 = 1
    best = metrics.week_scores(ACTUAL, np.array([9, 1, 0, 0, 2, 0, 0, 0, 0, 0.0]), TIE)
    assert best["hit_rate_10"] == pytest.approx(0.5)
    assert best["pai_10"] == pytest.approx(5.0)
    assert best["pei_10"] == pytest.approx(1.0)
    # flagging c4 (2 events): hit rate 0.2, PAI 2, PEI* 2/5
    worse = metrics.week_scores(ACTUAL, np.array([0, 0, 0, 0, 9, 0, 0, 0, 0, 0.0]), TIE)
    assert (worse["hit_rate_10"], worse["pai_10"], worse["pei_10"]) == pytest.approx((0.2, 2.0, 0.4))
    # 1% and 5% of 10 cells still flag one cell (at least one)
    assert worse["pai_1"] == worse["pai_5"] == pytest.approx(2.0)


def test_no_events_gives_nan_not_a_score():
    s = metrics.week_scores(np.zeros(10), np.arange(10.0), TIE)
    assert math.isnan(s["pai_5"]) and math.isnan(s["pei_5"]) and math.isnan(s["hit_rate_5"])


def test_poisson_deviance_by_hand():
    # y=0, mu=1: 2 (0 - (0 - 1)) = 2 ; y=2, mu=1: 2 (2 ln 2 - 1) = 0.7725887
    assert metrics.poisson_deviance(np.array([0, 2.0]), np.array([1, 1.0])) == pytest.approx((2 + 0.7725887) / 2)
    assert metrics.poisson_deviance(np.array([3.0]), np.array([3.0])) == pytest.approx(0.0)


def test_spearman_and_ties():
    assert metrics.spearman(np.array([1, 2, 3.0]), np.array([10, 20, 30.0])) == pytest.approx(1.0)
    assert metrics.spearman(np.array([1, 2, 3.0]), np.array([3, 2, 1.0])) == pytest.approx(-1.0)
    assert math.isnan(metrics.spearman(np.ones(3), np.array([1, 2, 3.0])))


def test_ties_are_broken_by_cell_not_by_position():
    flat = np.zeros(10)
    mask = metrics.top_k_mask(flat, 3, TIE)
    shuffled = np.array([9, 3, 1, 7, 0, 2, 8, 6, 4, 5])
    mask_shuffled = metrics.top_k_mask(flat[shuffled], 3, metrics.tie_break_order(CELLS[shuffled]))
    assert set(CELLS[mask]) == set(CELLS[shuffled][mask_shuffled])


# --- history features: nothing of a later week ---------------------------------------------------------


def random_panel(n_cells=30, n_weeks=40, seed=1) -> Panel:
    rng = np.random.default_rng(seed)
    lon = 121.4 + rng.random(n_cells) * 0.2
    lat = 31.1 + rng.random(n_cells) * 0.2
    domain = {d: rng.poisson(0.3, (n_cells, n_weeks)).astype(float) for d in DOMAINS}
    counts = sum(domain.values())
    mart = {c: rng.poisson(1.0, (n_cells, n_weeks)).astype(float) for c in MART_FEATURES}
    mart["incident_count"] = counts
    return Panel(
        cells=np.array([f"cell{i:03d}" for i in range(n_cells)]),
        weeks=pd.date_range("2025-01-06", periods=n_weeks, freq="7D"),
        district=np.array(["D1"] * n_cells),
        lon=lon,
        lat=lat,
        counts=counts,
        domain_counts=domain,
        complete=np.ones(n_weeks, dtype=bool),
        mart=mart,
    )


def test_no_feature_of_week_t_uses_data_after_t():
    panel = random_panel()
    t = 25
    base = history(panel, "all", kde_weights(panel, 1.0))
    later = random_panel(seed=99)  # replace every week after t with other data
    changed = Panel(
        cells=panel.cells,
        weeks=panel.weeks,
        district=panel.district,
        lon=panel.lon,
        lat=panel.lat,
        counts=np.concatenate([panel.counts[:, : t + 1], later.counts[:, t + 1 :]], axis=1),
        domain_counts={
            d: np.concatenate([panel.domain_counts[d][:, : t + 1], later.domain_counts[d][:, t + 1 :]], axis=1)
            for d in DOMAINS
        },
        complete=panel.complete,
        mart={c: np.concatenate([panel.mart[c][:, : t + 1], later.mart[c][:, t + 1 :]], axis=1) for c in MART_FEATURES},
    )
    other = history(changed, "all", kde_weights(changed, 1.0))
    assert not np.allclose(base.features["all_mean_last_4w"][:, t + 3], other.features["all_mean_last_4w"][:, t + 3])
    for name, matrix in base.features.items():
        np.testing.assert_array_equal(matrix[:, : t + 1], other.features[name][:, : t + 1], err_msg=name)
    for m in ("mean_short", "mean_long", "kde"):
        np.testing.assert_array_equal(getattr(base, m)[:, : t + 1], getattr(other, m)[:, : t + 1])


def test_trailing_mean_and_decay_by_hand():
    m = np.array([[1.0, 2, 3, 4, 5]])
    np.testing.assert_allclose(trailing_mean(m, 2), [[1, 1.5, 2.5, 3.5, 4.5]])
    np.testing.assert_allclose(decayed_sum(np.array([[4.0, 0, 0]]), 1.0), [[4, 2, 1]])


def test_kde_keeps_the_number_of_events():
    panel = random_panel()
    w = kde_weights(panel, 0.8)
    np.testing.assert_allclose(w.sum(axis=0), 1.0)
    np.testing.assert_allclose((w @ panel.counts).sum(axis=0), panel.counts.sum(axis=0))


def test_backtest_trains_only_on_target_weeks_before_the_origin():
    panel = random_panel(n_weeks=40)
    validation, blocks = hotspot.backtest_plan(panel, backtest_weeks=10, retrain_every=4, validation_weeks=5)
    scored = np.concatenate([b for _, b in blocks])
    assert list(scored) == list(range(29, 39)) and [len(b) for _, b in blocks] == [4, 4, 2]
    for train, block in blocks:
        assert train.max() + 1 <= block[0]  # the newest training label is the block's feature week
    assert validation.max() < 29
    with pytest.raises(hotspot.NotEnoughHistory):
        hotspot.backtest_plan(panel, backtest_weeks=37, retrain_every=4, validation_weeks=5)


# --- champion / challenger -----------------------------------------------------------------------------


def summary(**pai5):
    return pd.DataFrame([{"method": m, "pai_5": v} for m, v in pai5.items()])


def test_the_model_is_published_only_when_it_beats_every_baseline():
    won = summary(lightgbm=3.2, persistence_4w=2.0, long_run_52w=3.0, kde_52w=2.9)
    assert hotspot.choose_champion(won)[0] == "lightgbm"
    lost = summary(lightgbm=2.95, persistence_4w=2.0, long_run_52w=3.0, kde_52w=2.9)
    method, reason = hotspot.choose_champion(lost)
    assert method == "long_run_52w" and "baseline published" in reason
    tie = summary(lightgbm=3.0, persistence_4w=2.0, long_run_52w=3.0, kde_52w=3.0)
    assert hotspot.choose_champion(tie)[0] in hotspot.BASELINES


def test_a_city_where_a_baseline_must_win():
    """A fixed hotspot surface (the long run knows it) and a model that cannot learn (one leaf):
    the backtest must publish a baseline, and the map must be that baseline's."""
    rng = np.random.default_rng(7)
    n_cells, n_weeks = 60, 40
    surface = np.r_[np.full(6, 6.0), np.full(54, 0.2)]
    rng.shuffle(surface)
    panel = random_panel(n_cells, n_weeks)
    counts = rng.poisson(surface[:, None], (n_cells, n_weeks)).astype(float)
    panel.counts = counts
    panel.domain_counts = {d: counts if d == "PS" else np.zeros_like(counts) for d in DOMAINS}
    panel.mart["incident_count"] = counts
    crippled = HotspotConfig(
        backtest_weeks=8,
        retrain_every_weeks=4,
        num_boost_round=10,
        min_data_in_leaf=100000,
        kde_bandwidths_km=(0.3,),
        kde_validation_weeks=4,
    )
    result = hotspot.run_scope(
        panel, "all", crippled, RiskLevels(), seed=1, threads=1, study_area=np.ones(n_cells, dtype=bool)
    )
    assert result.champion in hotspot.BASELINES, result.summary
    assert set(result.published["method"]) == {result.champion}
    s = result.summary.set_index("method")["pai_5"]
    assert s[result.champion] >= s.drop(["lightgbm"]).max() and s[result.champion] > s["lightgbm"]


def test_risk_levels_follow_the_configured_shares():
    levels = hotspot.risk_level(np.arange(1, 201), 200, RiskLevels(red=0.01, orange=0.05, yellow=0.15))
    assert list(pd.Series(levels).value_counts().reindex(["red", "orange", "yellow", "blue"])) == [2, 8, 20, 170]


# --- forecasts -----------------------------------------------------------------------------------------


def test_forecast_baselines_by_hand():
    weeks = pd.date_range("2024-01-01", periods=60, freq="7D")
    history_ = pd.Series(np.arange(60, dtype=float), index=weeks)
    cutoff = weeks[55]
    targets = pd.DatetimeIndex([weeks[56], weeks[57]])
    b = forecast._baselines(history_, cutoff, targets)
    assert list(b["naive"]) == [55, 55] and list(b["mean_4w"]) == [53.5, 53.5]
    assert list(b["seasonal_naive"]) == [4, 5]  # the same week 52 weeks earlier
    short = forecast._baselines(history_.iloc[:10], weeks[9], pd.DatetimeIndex([weeks[10]]))
    assert list(short["seasonal_naive"]) == [9]  # less than a year: naive


def test_conformal_quantile_by_hand():
    scores = np.arange(1, 10, dtype=float)  # n = 9: the ceil(10 x 0.8) = 8th smallest
    assert forecast.conformal_quantile(scores, 80) == 8.0
    assert forecast.conformal_quantile(np.array([1.0, 2.0]), 80) == math.inf  # too few scores: no finite bound
    np.testing.assert_allclose(forecast.conformity([4, 0], [1, 0.25]), [3.0, 0.25])


def test_forecast_champion_is_never_worse_than_a_baseline():
    def metrics(rows):
        return pd.DataFrame(
            [
                {"measure": meas, "method": method, "horizon": h, "mase": v}
                for meas, method, values in rows
                for h, v in enumerate(values, start=1)
            ]
        )

    m = metrics(
        [
            ("incidents", "lightgbm", [0.8, 0.9]),  # mean 0.85: below every baseline
            ("incidents", "mean_4w", [0.9, 0.9]),
            ("incidents", "seasonal_naive", [1.0, 1.0]),
            ("hazards_found", "lightgbm", [1.2, 1.3]),  # mean 1.25: mean_4w's 1.1 wins
            ("hazards_found", "mean_4w", [1.1, 1.1]),
            ("hazards_found", "naive", [1.4, np.nan]),
        ]
    )
    chosen = forecast.champions(m)
    assert chosen["incidents"]["method"] == "lightgbm"
    assert chosen["hazards_found"]["method"] == "mean_4w"
    # a tie goes to the baseline: the model must be strictly better to be published
    tie = forecast.champions(metrics([("x", "lightgbm", [1.0]), ("x", "naive", [1.0])]))
    assert tie["x"]["method"] == "naive"
    # each backtest row's point forecast comes from its measure's published method
    frame = pd.DataFrame(
        {"measure": ["incidents", "hazards_found"], "lightgbm": [5.0, 6.0], "mean_4w": [7.0, 8.0]}
        | {b: [0.0, 0.0] for b in ("naive", "seasonal_naive")}
    )
    np.testing.assert_allclose(forecast.published_point(frame, {k: v["method"] for k, v in chosen.items()}), [5.0, 8.0])
