"""Hotspot risk per H3 cell and week: LightGBM (count objective) against persistence, long-run and KDE
baselines (and, on the synthetic city, the generator's true intensity), a rolling-origin backtest, the
champion chosen on PAI at 5%, and the published next-week map with graded levels and explanations.

Time convention: the row of week t (features from weeks <= t) predicts the count of target week t + 1.
A backtest origin at target week T trains on rows whose target week is before T (so nothing of week T or
later is seen) and predicts the next `retrain_every_weeks` target weeks with that model.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from citysafe.config import HotspotConfig, RiskLevels
from citysafe.errors import ConfigurationError
from ml import metrics
from ml.panel import LONG_RUN_WEEKS, History, Panel, feature_frame, history, kde_weights, trailing_mean

log = logging.getLogger(__name__)

LIGHTGBM = "lightgbm"
PERSISTENCE = "persistence_4w"
LONG_RUN = "long_run_52w"
KDE = "kde_52w"
ORACLE = "oracle"
BASELINES = (PERSISTENCE, LONG_RUN, KDE)
METHODS = (LIGHTGBM, *BASELINES)  # ORACLE is scored when the truth is known, never published
CHAMPION_METRIC = "pai_5"
CONTRIBUTIONS = 3


class NotEnoughHistory(ConfigurationError):
    """Too few complete weeks for the configured backtest and horizon (exit 2: shorten them, or load more)."""


def lgb_params(cfg: HotspotConfig, seed: int, threads: int) -> dict:
    return {
        "objective": cfg.objective,
        "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves,
        "min_data_in_leaf": cfg.min_data_in_leaf,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "max_bin": 63,  # counts and means: 63 bins lose nothing measurable and halve the training time
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": threads,
        "verbosity": -1,
    }


@dataclasses.dataclass
class ScopeResult:
    """Everything one scope ('all' or a domain) produced."""

    scope: str
    bandwidth_km: float
    bandwidth_scores: dict[float, float]  # validation PAI@5 per candidate
    predictions: pd.DataFrame  # backtest: method, h3_cell, target_week_start, origin_week_start, predicted, actual
    scores: pd.DataFrame  # per method and target week
    summary: pd.DataFrame  # per method: mean of every score over the backtest weeks
    champion: str
    champion_reason: str
    published: pd.DataFrame  # next week's map
    model: object  # the final LightGBM booster (trained even when a baseline is published: MLflow logs it)
    feature_names: list[str]
    train_weeks: tuple[str, str]  # first and last feature week of the final model's training rows
    seconds: dict[str, float]


def labelled_weeks(panel: Panel) -> np.ndarray:
    """Feature-week indices t whose target week t + 1 is complete (a full week of data)."""
    t = np.arange(panel.n_weeks - 1)
    return t[panel.complete[t + 1]]


def backtest_plan(panel: Panel, backtest_weeks: int, retrain_every: int, validation_weeks: int):
    """(validation feature weeks, [(train feature weeks, predicted feature weeks), ...]).

    The backtest scores the newest `backtest_weeks` labelled weeks; KDE's bandwidth is chosen on the
    `validation_weeks` before them. Raises NotEnoughHistory when fewer than 4 weeks would be left to train on."""
    labelled = labelled_weeks(panel)
    if len(labelled) < backtest_weeks + 4:
        raise NotEnoughHistory(
            f"{len(labelled)} weeks with a complete next week; the backtest needs {backtest_weeks} plus at least 4 "
            "to train on (lower ml.hotspot.backtest_weeks or load more history)"
        )
    scored = labelled[-backtest_weeks:]
    before = labelled[labelled < scored[0]]
    validation = before[-min(validation_weeks, max(1, len(before) // 2)) :]
    blocks = []
    for i in range(0, len(scored), retrain_every):
        block = scored[i : i + retrain_every]
        train = labelled[labelled + 1 <= block[0]]  # target weeks up to the block's feature week, not after
        blocks.append((train, block))
    return validation, blocks


def choose_bandwidth(panel: Panel, scope: str, candidates, validation: np.ndarray, tie: np.ndarray):
    """The KDE bandwidth with the best mean PAI@5% over the validation weeks (ties: the narrower)."""
    y = panel.target(scope)
    mean_long = trailing_mean(y, LONG_RUN_WEEKS)
    scores = {}
    for bw in candidates:
        w = kde_weights(panel, bw)
        vals = [
            metrics.week_scores(y[:, t + 1], w @ mean_long[:, t], tie)[CHAMPION_METRIC]
            for t in validation
            if y[:, t + 1].sum() > 0
        ]
        scores[float(bw)] = float(np.nanmean(vals)) if vals else float("nan")
    best = max(sorted(scores), key=lambda b: (np.nan_to_num(scores[b], nan=-1.0), -b))
    return best, scores


def _train(features: pd.DataFrame, label: np.ndarray, params: dict, rounds: int):
    import lightgbm as lgb

    data = lgb.Dataset(features, label=label, free_raw_data=True, params={"verbosity": -1})
    return lgb.train(params, data, num_boost_round=rounds)


def _rows(hist: History, weeks: np.ndarray, target: np.ndarray, keep: np.ndarray):
    """Feature rows and labels of the given feature weeks, restricted to study-area cells."""
    frame = feature_frame(hist, weeks)
    mask = np.tile(keep, len(weeks))
    label = target[:, np.asarray(weeks) + 1].T.ravel()
    return frame[mask].reset_index(drop=True), label[mask]


def run_scope(
    panel: Panel,
    scope: str,
    cfg: HotspotConfig,
    levels: RiskLevels,
    *,
    seed: int,
    threads: int,
    study_area: np.ndarray,
    publish_area: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    on_step: Callable[[str], None] = lambda _msg: None,
) -> ScopeResult:
    """Backtest every method for one scope, choose the champion, train the final model, publish the map.

    study_area: boolean mask of the cells that are scored in the backtest; publish_area: those the final
    model trains on and the map shows (default: the same). truth: (cells, weeks) true expected counts of
    the scope (synthetic city) or None."""
    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    y = panel.target(scope)
    cells = panel.cells[study_area]
    tie = metrics.tie_break_order(cells)
    validation, blocks = backtest_plan(panel, cfg.backtest_weeks, cfg.retrain_every_weeks, cfg.kde_validation_weeks)
    bandwidth, bw_scores = choose_bandwidth(_restrict(panel, study_area), scope, cfg.kde_bandwidths_km, validation, tie)
    hist = history(panel, scope, kde_weights(panel, bandwidth))
    seconds["features"] = time.monotonic() - t0
    on_step(f"{scope}: features ready, KDE bandwidth {bandwidth} km; backtest {len(blocks)} origins")

    params = lgb_params(cfg, seed, threads)
    rows = []
    t1 = time.monotonic()
    for train_weeks, block in blocks:
        X, label = _rows(hist, train_weeks, y, study_area)
        booster = _train(X, label, params, cfg.num_boost_round)
        Xp, _ = _rows(hist, block, y, study_area)
        pred = booster.predict(Xp, num_threads=threads).reshape(len(block), -1)
        origin = panel.weeks[block[0] + 1]
        for i, t in enumerate(block):
            by_method = {
                LIGHTGBM: pred[i],
                PERSISTENCE: hist.mean_short[study_area, t],
                LONG_RUN: hist.mean_long[study_area, t],
                KDE: hist.kde[study_area, t],
            }
            if truth is not None:
                by_method[ORACLE] = truth[study_area, t + 1]
            for method, values in by_method.items():
                rows.append(
                    pd.DataFrame(
                        {
                            "method": method,
                            "h3_cell": cells,
                            "target_week_start": panel.weeks[t] + pd.Timedelta(days=7),
                            "origin_week_start": origin,
                            "predicted": np.asarray(values, dtype=float),
                            "actual": y[study_area, t + 1],
                        }
                    )
                )
        on_step(f"{scope}: origin {origin.date()} scored ({len(block)} weeks)")
    seconds["backtest"] = time.monotonic() - t1
    predictions = pd.concat(rows, ignore_index=True)
    scores = score_predictions(predictions, tie=tie, cells=cells)
    summary = summarise(scores)
    champion, reason = choose_champion(summary)
    on_step(f"{scope}: champion {champion} ({reason})")

    # the final model: every labelled week; the map: the newest complete week's rows
    t2 = time.monotonic()
    booster, published, train_span, names = fit_and_publish(
        panel,
        hist,
        scope,
        champion,
        study_area if publish_area is None else publish_area,
        cfg,
        levels,
        seed=seed,
        threads=threads,
    )
    seconds["final_fit"] = time.monotonic() - t2
    seconds["total"] = time.monotonic() - t0
    return ScopeResult(
        scope=scope,
        bandwidth_km=bandwidth,
        bandwidth_scores=bw_scores,
        predictions=predictions,
        scores=scores,
        summary=summary,
        champion=champion,
        champion_reason=reason,
        published=published,
        model=booster,
        feature_names=names,
        train_weeks=train_span,
        seconds=seconds,
    )


def fit_and_publish(
    panel: Panel,
    hist: History,
    scope: str,
    method: str,
    study_area: np.ndarray,
    cfg: HotspotConfig,
    levels: RiskLevels,
    *,
    seed: int,
    threads: int,
):
    """Fit LightGBM on every labelled week and publish `method`'s map for the week after the newest
    complete week. Returns (booster, map, (first, last) training feature week, feature names)."""
    y = panel.target(scope)
    labelled = labelled_weeks(panel)
    X, label = _rows(hist, labelled, y, study_area)
    booster = _train(X, label, lgb_params(cfg, seed, threads), cfg.num_boost_round)
    latest = int(np.flatnonzero(panel.complete)[-1])
    published = publish_map(panel, hist, booster, method, latest, study_area, levels, threads, scope)
    span = (str(panel.weeks[labelled[0]].date()), str(panel.weeks[labelled[-1]].date()))
    return booster, published, span, list(X.columns)


def _restrict(panel: Panel, keep: np.ndarray) -> Panel:
    return dataclasses.replace(
        panel,
        cells=panel.cells[keep],
        district=panel.district[keep],
        lon=panel.lon[keep],
        lat=panel.lat[keep],
        counts=panel.counts[keep],
        domain_counts={d: m[keep] for d, m in panel.domain_counts.items()},
        mart={c: m[keep] for c, m in panel.mart.items()},
    )


def score_predictions(predictions: pd.DataFrame, *, tie: np.ndarray, cells: np.ndarray) -> pd.DataFrame:
    """Scores per method and target week from the kept backtest predictions (cells in `cells` order); the
    oracle's predictions, when present, are the truth the rank correlation is measured against."""
    order = pd.Series(np.arange(len(cells)), index=cells)
    truth_by_week = {}
    oracle = predictions[predictions["method"] == ORACLE]
    for week, g in oracle.groupby("target_week_start"):
        truth_by_week[week] = g.set_index("h3_cell")["predicted"].reindex(cells).to_numpy()
    out = []
    for (method, week), g in predictions.groupby(["method", "target_week_start"], sort=True):
        g = g.iloc[np.argsort(order[g["h3_cell"]].to_numpy())]
        s = metrics.week_scores(g["actual"].to_numpy(), g["predicted"].to_numpy(), tie, truth=truth_by_week.get(week))
        out.append({"method": method, "target_week_start": week, **s})
    return pd.DataFrame(out)


def summarise(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean of every score over the backtest weeks, per method (weeks without events are left out)."""
    cols = [c for c in metrics.SCORE_COLUMNS if c in scores.columns]
    summary = scores.groupby("method")[cols].mean()
    summary["weeks"] = scores.groupby("method")["target_week_start"].nunique()
    if ORACLE in summary.index:
        summary["pai_5_share_of_oracle"] = summary["pai_5"] / summary.loc[ORACLE, "pai_5"]
    return summary.reset_index()


def choose_champion(summary: pd.DataFrame) -> tuple[str, str]:
    """The method with the best mean PAI@5% among the publishable ones; the model must beat every baseline
    strictly (on a tie the simpler baseline is published)."""
    s = summary.set_index("method")
    candidates = [m for m in METHODS if m in s.index]
    best_baseline = max(
        (m for m in BASELINES if m in s.index), key=lambda m: (np.nan_to_num(s.loc[m, CHAMPION_METRIC], nan=-1), m)
    )
    model, base = s.loc[LIGHTGBM, CHAMPION_METRIC], s.loc[best_baseline, CHAMPION_METRIC]
    if LIGHTGBM in candidates and np.nan_to_num(model, nan=-1) > np.nan_to_num(base, nan=-1):
        return LIGHTGBM, f"PAI@5% {model:.3f} beats the best baseline {best_baseline} ({base:.3f})"
    return best_baseline, (
        f"baseline published: {best_baseline} PAI@5% {base:.3f} >= {LIGHTGBM} {model:.3f} on the backtest"
    )


def risk_level(rank: np.ndarray, n: int, levels: RiskLevels) -> np.ndarray:
    """blue / yellow / orange / red from a cell's rank (1 = highest) among n cells."""
    share = rank / n
    return np.select(
        [share <= levels.red, share <= levels.orange, share <= levels.yellow], ["red", "orange", "yellow"], "blue"
    )


def publish_map(
    panel: Panel,
    hist: History,
    booster,
    champion: str,
    week: int,
    study_area: np.ndarray,
    levels: RiskLevels,
    threads: int,
    scope: str,
) -> pd.DataFrame:
    """The champion's expectation for week `week` + 1 per study-area cell, ranked, graded and explained."""
    cells = panel.cells[study_area]
    X = feature_frame(hist, [week])[study_area].reset_index(drop=True)
    contrib_names: list[list[str | None]]
    contrib_values: list[list[float | None]]
    if champion == LIGHTGBM:
        expected = booster.predict(X, num_threads=threads)
        contrib = booster.predict(X, num_threads=threads, pred_contrib=True)[:, :-1]  # last column: the bias
        top = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :CONTRIBUTIONS]
        names = np.asarray(X.columns)
        contrib_names = [list(names[row]) for row in top]
        contrib_values = [list(contrib[i, row]) for i, row in enumerate(top)]
    else:
        basis = {PERSISTENCE: hist.mean_short, LONG_RUN: hist.mean_long, KDE: hist.kde}[champion]
        expected = basis[study_area, week]
        label = {PERSISTENCE: "mean_last_4w", LONG_RUN: "mean_last_52w", KDE: "kde_52w"}[champion]
        contrib_names = [[f"{scope}_{label}", None, None] for _ in cells]
        contrib_values = [[float(v), None, None] for v in expected]
    tie = metrics.tie_break_order(cells)
    order = np.lexsort((tie, -expected))
    rank = np.empty(len(cells), dtype=int)
    rank[order] = np.arange(1, len(cells) + 1)
    n = len(cells)
    mean = float(np.mean(expected)) if n else 0.0
    out = pd.DataFrame(
        {
            "scope": scope,
            "h3_cell": cells,
            "district_code": panel.district[study_area],
            "feature_week_start": panel.weeks[week],
            "target_week_start": panel.weeks[week] + pd.Timedelta(days=7),
            "method": champion,
            "expected_count": expected.astype(float),
            "risk_score": (expected / mean) if mean > 0 else np.zeros(n),
            "percentile": 100.0 * (n - rank) / max(n - 1, 1),
            "risk_rank": rank,
            "risk_level": risk_level(rank, n, levels),
        }
    )
    for k in range(CONTRIBUTIONS):
        out[f"contribution_{k + 1}_feature"] = [row[k] for row in contrib_names]
        out[f"contribution_{k + 1}_value"] = [row[k] for row in contrib_values]
    return out.sort_values("risk_rank", kind="stable").reset_index(drop=True)
