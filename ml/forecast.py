"""Weekly trend forecasts with 80% intervals per district x domain and city x domain, for incidents (real
events, fct_incident) and hazards found (fct_hazard), horizons 1..H weeks.

Model: one global LightGBM (Poisson objective) over every series, run by Nixtla `mlforecast` (lags,
rolling means, week-of-year, the series' level/measure/domain as static features; recursive multi-step),
its rolling-origin `cross_validation` giving the backtest. No learned target transform (they distort
conformal intervals, Nixtla/mlforecast#733).

Intervals: split conformal, pooled over series. mlforecast's own conformal intervals take per-series
quantiles over a handful of windows (too few points with one or two years of weekly data: they
under-cover). Here the nonconformity score is |y - yhat| / sqrt(max(yhat, 1)) (counts: the error grows
like the square root of the level), pooled over every series at each horizon, from origins whose target
week had been observed before the origin being forecast (never from the future); the interval is
yhat -+ q * sqrt(max(yhat, 1)), clipped at 0. P50 is the point forecast the interval is centred on.

Baselines on the same origins and horizons: naive (the origin week's count), the mean of the last 4
weeks, and seasonal naive (the same week one year earlier; naive where the series has less than a year
before the target week). Metrics (utilsforecast.losses): MASE scaled by the in-sample seasonal naive
(lag 52) MAE when a series has more than a year of training data, else by the in-sample naive (lag 1)
MAE (the `mase_scale` column says which), coverage of the interval and the Winkler (interval) score.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd

from citysafe import warehouse
from citysafe.config import ForecastConfig, Settings
from citysafe.errors import ConfigurationError
from ml.panel import DOMAINS

log = logging.getLogger(__name__)

LIGHTGBM = "lightgbm"
NAIVE = "naive"
SEASONAL_NAIVE = "seasonal_naive"
MEAN_4W = "mean_4w"
BASELINES = (SEASONAL_NAIVE, NAIVE, MEAN_4W)
METHODS = (LIGHTGBM, *BASELINES)
SEASON = 52
MIN_CALIBRATION = 20  # scores needed before an interval is given
INTERVAL_LEVEL = 80  # P10 / P90
CITY = "CITY"  # district code of the city-wide series

_INCIDENT_SQL = """
select district_code, domain_code, week_start_local as week_start, count(*) as n
from fct_incident
where district_code is not null and domain_code is not null and week_start_local is not null
group by 1, 2, 3
"""
_HAZARD_SQL = """
select district_code, domain_code, cast(date_trunc('week', found_date) as date) as week_start, count(*) as n
from fct_hazard
where district_code is not null and domain_code is not null and found_date is not null
group by 1, 2, 3
"""
_WEEKS_SQL = "select week_start, bool_and(is_complete_week) as complete from mart_cell_week_features group by 1"
_DISTRICTS_SQL = "select distinct district_code from dim_h3_cell where district_code is not null"


class NotEnoughHistory(ConfigurationError):
    """Too few complete weeks for the configured backtest and horizon (exit 2: shorten them, or load more)."""


@dataclasses.dataclass
class ForecastResult:
    series: pd.DataFrame  # unique_id, measure, level, district_code, domain_code, ds, y (complete weeks)
    backtest: pd.DataFrame  # unique_id, cutoff, ds, horizon, y, one column per method, lo, hi
    metrics: pd.DataFrame  # method, measure, horizon, mase, coverage, winkler, series, points
    forecast: pd.DataFrame  # unique_id, origin (cutoff), ds, horizon, p10, p50, p90
    quantiles: dict[str, float]  # "<measure>|<level>|<horizon>" -> conformal q of the published forecast
    seconds: dict[str, float]
    model: object = None  # the final fitted LightGBM (sklearn API)
    published: dict[str, dict] = dataclasses.field(default_factory=dict)  # measure -> {method, reason}


def read_series(settings: Settings) -> pd.DataFrame:
    """Dense weekly counts: (measure, level, district, domain) x every complete week of the data, for
    every measure x domain with at least one event."""
    weeks = warehouse.query(settings, _WEEKS_SQL)
    incidents = warehouse.query(settings, _INCIDENT_SQL)
    hazards = warehouse.query(settings, _HAZARD_SQL)
    districts = warehouse.query(settings, _DISTRICTS_SQL)["district_code"].tolist()
    return dense_series(
        weeks,
        {"incidents": incidents, "hazards_found": hazards},
        districts,
        min_weekly=settings.ml.forecast.min_weekly_events,
    )


def dense_series(
    weeks: pd.DataFrame, counts: dict[str, pd.DataFrame], districts: list[str], min_weekly: float = 0.0
) -> pd.DataFrame:
    weeks = weeks.sort_values("week_start")
    complete = pd.to_datetime(weeks.loc[weeks["complete"].astype(bool), "week_start"])
    if complete.empty:
        raise NotEnoughHistory("no complete week of data to forecast from")
    # the run of consecutive complete weeks up to the newest complete one
    all_weeks = pd.date_range(complete.min(), complete.max(), freq="7D")
    frames = []
    for measure, c in counts.items():
        c = c.assign(week_start=pd.to_datetime(c["week_start"]))
        c = c[c["week_start"].isin(set(all_weeks))]
        grid = pd.MultiIndex.from_product(
            [sorted(set(districts) | set(c["district_code"])), list(DOMAINS), all_weeks],
            names=["district_code", "domain_code", "ds"],
        )
        district = (
            c.rename(columns={"week_start": "ds"})
            .groupby(["district_code", "domain_code", "ds"])["n"]
            .sum()
            .reindex(grid, fill_value=0)
            .rename("y")
            .reset_index()
        )
        district["level"] = "district"
        city = district.groupby(["domain_code", "ds"], as_index=False)["y"].sum()
        city["district_code"], city["level"] = CITY, "city"
        both = pd.concat([district, city], ignore_index=True)
        both["measure"] = measure
        frames.append(both)
    out = pd.concat(frames, ignore_index=True)
    # A measure x domain that no source reports (a city without a hazard inspection feed) or that is too
    # rare to forecast per district (a police-only city's two fire calls in three years) gets no series:
    # its city-wide weekly mean must reach min_weekly (and be above zero).
    weekly = out[out["level"] == "city"].groupby(["measure", "domain_code"])["y"].mean()
    kept = weekly[(weekly > 0) & (weekly >= min_weekly)]
    dropped = weekly.drop(kept.index)
    if len(dropped):
        log.info(
            "forecast: no series for %s (city-wide mean per week below %s)",
            ", ".join(f"{m} {d} ({v:.2f})" for (m, d), v in dropped.items()),
            min_weekly,
        )
    kept = set(kept.index)
    out = out[[pair in kept for pair in zip(out["measure"], out["domain_code"])]].copy()
    if out.empty:
        raise NotEnoughHistory("no event in any complete week: nothing to forecast")
    out["unique_id"] = out["measure"] + "|" + out["district_code"] + "|" + out["domain_code"]
    out["y"] = out["y"].astype(float)
    return out[["unique_id", "measure", "level", "district_code", "domain_code", "ds", "y"]].sort_values(
        ["unique_id", "ds"], ignore_index=True
    )


def _model_frame(series: pd.DataFrame) -> pd.DataFrame:
    """mlforecast input: unique_id, ds, y plus numeric static features."""
    f = series[["unique_id", "ds", "y"]].copy()
    f["is_city"] = (series["level"] == "city").astype(float)
    f["is_hazard"] = (series["measure"] != "incidents").astype(float)
    f["domain_idx"] = series["domain_code"].map({d: i for i, d in enumerate(DOMAINS)}).astype(float)
    return f


STATIC = ["is_city", "is_hazard", "domain_idx"]


def _forecaster(lags, seed: int, threads: int, rounds: int = 200):
    import lightgbm as lgb
    from mlforecast import MLForecast
    from mlforecast.lag_transforms import ExpandingMean, RollingMean

    model = lgb.LGBMRegressor(
        objective="poisson",
        n_estimators=rounds,
        learning_rate=0.05,
        num_leaves=15,
        min_child_samples=20,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.9,
        random_state=seed,
        deterministic=True,
        force_row_wise=True,
        n_jobs=threads,
        verbosity=-1,
    )
    return MLForecast(
        models={LIGHTGBM: model},
        freq="7D",
        lags=list(lags),
        # trailing means of the last 4 and 13 weeks and the series' mean so far
        lag_transforms={1: [RollingMean(window_size=4), RollingMean(window_size=13, min_samples=1), ExpandingMean()]},
        date_features=["week"],
    )


def _baselines(history: pd.Series, cutoff: pd.Timestamp, targets: pd.DatetimeIndex) -> dict[str, np.ndarray]:
    """Baseline forecasts of one series from its history up to `cutoff` (inclusive)."""
    past = history[history.index <= cutoff]
    last = float(past.iloc[-1])
    mean4 = float(past.iloc[-4:].mean())
    seasonal = []
    for ds in targets:
        same_week = ds - pd.Timedelta(weeks=SEASON)
        seasonal.append(float(past[same_week]) if same_week in past.index else last)
    n = len(targets)
    return {NAIVE: np.full(n, last), MEAN_4W: np.full(n, mean4), SEASONAL_NAIVE: np.asarray(seasonal)}


def add_baselines(cv: pd.DataFrame, series: pd.DataFrame) -> pd.DataFrame:
    by_id = {uid: g.set_index("ds")["y"] for uid, g in series.groupby("unique_id")}
    parts = []
    for (uid, cutoff), g in cv.groupby(["unique_id", "cutoff"], sort=False):
        g = g.sort_values("ds")
        for name, values in _baselines(by_id[uid], cutoff, pd.DatetimeIndex(g["ds"])).items():
            g[name] = values
        parts.append(g)
    return pd.concat(parts, ignore_index=True)


def calibration_group(meta: pd.DataFrame) -> pd.Series:
    """Series calibrated together: same measure and level (district series and city-wide totals differ in
    scale and dispersion; pooling them all over-covers one and under-covers the other)."""
    return meta["measure"] + "|" + meta["level"]


def conformity(actual, predicted) -> np.ndarray:
    p = np.asarray(predicted, dtype=float)
    return np.abs(np.asarray(actual, dtype=float) - p) / np.sqrt(np.maximum(p, 1.0))


def conformal_quantile(scores: np.ndarray, level: int) -> float:
    """The split-conformal quantile: the ceil((n + 1) level)-th smallest score (inf when n is too small)."""
    s = np.sort(np.asarray(scores, dtype=float))
    n = len(s)
    k = int(np.ceil((n + 1) * level / 100.0))
    return float(s[k - 1]) if 0 < k <= n else float("inf")


def add_intervals(cv: pd.DataFrame, level: int) -> pd.DataFrame:
    """lo/hi for every backtest row from the scores of rows whose target week is before its cutoff."""
    cv = cv.copy()
    cv["score"] = conformity(cv["y"], cv[LIGHTGBM])
    q = np.full(len(cv), np.nan)
    for (group, cutoff, h), idx in cv.groupby(["calibration_group", "cutoff", "horizon"]).groups.items():
        pool = cv.loc[
            (cv["calibration_group"] == group) & (cv["horizon"] == h) & (cv["ds"] <= cutoff), "score"
        ].to_numpy()
        q[cv.index.get_indexer(idx)] = conformal_quantile(pool, level) if len(pool) >= MIN_CALIBRATION else np.nan
    width = q * np.sqrt(np.maximum(cv[LIGHTGBM].to_numpy(), 1.0))
    cv["lo"] = np.maximum(cv[LIGHTGBM] - width, 0.0)
    cv["hi"] = cv[LIGHTGBM] + width
    return cv.drop(columns="score")


def score(cv: pd.DataFrame, series: pd.DataFrame, level: int) -> pd.DataFrame:
    """Per method, measure and horizon: MASE (utilsforecast), and for LightGBM coverage and Winkler score."""
    from utilsforecast.losses import coverage, mase, winkler_score

    rows = []
    for cutoff, g in cv.groupby("cutoff"):
        train = series[series["ds"] <= cutoff][["unique_id", "ds", "y"]]
        train_weeks = train["ds"].nunique()
        season = SEASON if train_weeks > SEASON + 4 else 1
        g = g.rename(columns={"lo": f"{LIGHTGBM}-lo-{level}", "hi": f"{LIGHTGBM}-hi-{level}"})
        for h, gh in g.groupby("horizon"):
            m = mase(gh, list(METHODS), seasonality=season, train_df=train)
            m = m.replace([np.inf, -np.inf], np.nan)
            interval = gh.dropna(subset=[f"{LIGHTGBM}-lo-{level}"])
            cov = coverage(interval, [LIGHTGBM], level=level) if len(interval) else None
            wink = winkler_score(interval, [LIGHTGBM], level=level) if len(interval) else None
            measure = gh.set_index("unique_id")["measure"].groupby(level=0).first()
            m["measure"] = m["unique_id"].map(measure)
            for meas, mm in m.groupby("measure"):
                ids = set(mm["unique_id"])
                for method in METHODS:
                    row = {
                        "cutoff": cutoff,
                        "measure": meas,
                        "horizon": int(h),
                        "method": method,
                        "mase_scale": "seasonal_naive_52" if season == SEASON else "naive_1",
                        "mase_sum": float(mm[method].sum(skipna=True)),
                        "mase_n": int(mm[method].notna().sum()),
                        "covered_sum": np.nan,
                        "winkler_sum": np.nan,
                        "interval_n": 0,
                    }
                    if method == LIGHTGBM and cov is not None:
                        c = cov[cov["unique_id"].isin(ids)]
                        w = wink[wink["unique_id"].isin(ids)]
                        row.update(
                            covered_sum=float(c[LIGHTGBM].sum()),
                            winkler_sum=float(w[LIGHTGBM].sum()),
                            interval_n=len(c),
                        )
                    rows.append(row)
    raw = pd.DataFrame(rows)
    agg = raw.groupby(["method", "measure", "horizon"], as_index=False).agg(
        mase_sum=("mase_sum", "sum"),
        mase_n=("mase_n", "sum"),
        covered_sum=("covered_sum", "sum"),
        winkler_sum=("winkler_sum", "sum"),
        interval_n=("interval_n", "sum"),
        origins=("cutoff", "nunique"),
        mase_scale=("mase_scale", lambda s: ",".join(sorted(set(s)))),
    )
    agg["mase"] = agg["mase_sum"] / agg["mase_n"].where(agg["mase_n"] > 0)
    has = agg["interval_n"] > 0
    agg["coverage"] = np.where(has, agg["covered_sum"] / agg["interval_n"].where(has), np.nan)
    agg["winkler"] = np.where(has, agg["winkler_sum"] / agg["interval_n"].where(has), np.nan)
    return agg[
        ["method", "measure", "horizon", "mase", "coverage", "winkler", "mase_scale", "mase_n", "interval_n", "origins"]
    ]


def run(
    series: pd.DataFrame,
    cfg: ForecastConfig,
    *,
    seed: int,
    threads: int,
    on_step: Callable[[str], None] = lambda _msg: None,
) -> ForecastResult:
    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    weeks = series["ds"].nunique()
    h = cfg.horizon_weeks
    min_train = cfg.min_train_weeks  # lags reaching before the data are missing values LightGBM handles
    # origins every step_weeks from the first with enough training data to the last with a full horizon
    # (the early ones fill the calibration pool; metrics are reported on the newest backtest_weeks)
    step = cfg.step_weeks
    n_windows = (weeks - min_train - h) // step + 1
    if n_windows < 2:
        raise NotEnoughHistory(
            f"{weeks} complete weeks: forecasts need at least {min_train + h + 1} "
            f"({min_train} to train, {h} horizon weeks to score, one more origin)"
        )
    frame = _model_frame(series)
    fcst = _forecaster(cfg.lags, seed, threads)
    on_step(f"forecast backtest: {series['unique_id'].nunique()} series, {n_windows} origins, horizon {h}")
    with warnings.catch_warnings():  # lags before the data are missing on purpose (LightGBM handles them)
        warnings.filterwarnings("ignore", message="Found null values")
        cv = fcst.cross_validation(
            frame, n_windows=n_windows, h=h, step_size=step, refit=True, static_features=STATIC, dropna=False
        )
    seconds["backtest"] = time.monotonic() - t0
    cv = cv.sort_values(["unique_id", "cutoff", "ds"], ignore_index=True)
    cv["horizon"] = ((cv["ds"] - cv["cutoff"]).dt.days // 7).astype(int)
    cv[LIGHTGBM] = cv[LIGHTGBM].clip(lower=0.0)
    meta = series.drop_duplicates("unique_id").set_index("unique_id")
    cv["measure"] = cv["unique_id"].map(meta["measure"])
    cv["calibration_group"] = cv["unique_id"].map(calibration_group(meta))
    cv = add_baselines(cv, series)
    cv = add_intervals(cv, INTERVAL_LEVEL)
    last_week = series["ds"].max()
    scored = cv[cv["ds"] > last_week - pd.Timedelta(weeks=cfg.backtest_weeks)]
    metrics = score(scored, series, INTERVAL_LEVEL)
    on_step(f"forecast backtest scored: {scored['cutoff'].nunique()} origins in the last {cfg.backtest_weeks} weeks")

    # the published forecast per measure: the backtest champion (never worse than a baseline), fit on
    # everything, intervals from every backtest score of that method
    published = champions(metrics)
    for measure, choice in published.items():
        on_step(f"forecast {measure}: publishing {choice['method']} ({choice['reason']})")
    t1 = time.monotonic()
    scores = conformity(cv["y"], published_point(cv, {m: c["method"] for m, c in published.items()}))
    quantiles = {
        f"{group}|{k}": conformal_quantile(
            scores[(cv["horizon"].to_numpy() == k) & (cv["calibration_group"] == group).to_numpy()], INTERVAL_LEVEL
        )
        for group in sorted(cv["calibration_group"].unique())
        for k in range(1, h + 1)
    }
    methods = {m: c["method"] for m, c in published.items()}
    forecast, model = fit_future(series, cfg, quantiles, seed=seed, threads=threads, forecaster=fcst, methods=methods)
    seconds["final_fit"] = time.monotonic() - t1
    seconds["total"] = time.monotonic() - t0
    return ForecastResult(series, cv, metrics, forecast, quantiles, seconds, model, published)


def champions(metrics: pd.DataFrame) -> dict[str, dict]:
    """Per measure, the method to publish: LightGBM when its mean backtest MASE over the horizons is below
    every baseline's, else the baseline with the lowest (the published forecast is never worse than a
    baseline on the backtest)."""
    mean = metrics.groupby(["measure", "method"])["mase"].mean()
    out = {}
    for measure in sorted(metrics["measure"].unique()):
        m = mean[measure].dropna()
        baselines = m.drop(LIGHTGBM, errors="ignore")
        best = baselines.idxmin() if len(baselines) else None
        if LIGHTGBM in m and (best is None or m[LIGHTGBM] < baselines[best]):
            reason = f"mean MASE {m[LIGHTGBM]:.3f} below every baseline (best {best}: {baselines[best]:.3f})"
            out[measure] = {"method": LIGHTGBM, "reason": reason}
        elif best is not None:
            lgb = f"{m[LIGHTGBM]:.3f}" if LIGHTGBM in m else "n/a"
            reason = f"mean MASE {baselines[best]:.3f}, LightGBM {lgb}: the baseline did as well or better"
            out[measure] = {"method": str(best), "reason": reason}
    return out


def published_point(frame: pd.DataFrame, methods: dict[str, str]) -> np.ndarray:
    """Each row's point forecast from its measure's published method (one column per method in `frame`)."""
    chosen = frame["measure"].map(methods).fillna(LIGHTGBM).to_numpy()
    return np.select([chosen == m for m in METHODS], [frame[m].to_numpy(dtype=float) for m in METHODS], np.nan)


def fit_future(
    series: pd.DataFrame,
    cfg: ForecastConfig,
    quantiles: dict[str, float],
    *,
    seed: int,
    threads: int,
    forecaster=None,
    methods: dict[str, str] | None = None,
):
    """Fit on every complete week and forecast horizons 1..H with the conformal quantiles per horizon,
    each measure by its published method (`methods`; LightGBM when not given).
    Returns (forecast rows, the fitted LightGBM)."""
    h = cfg.horizon_weeks
    last_week = series["ds"].max()
    fcst = forecaster or _forecaster(cfg.lags, seed, threads)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Found null values")
        fcst.fit(_model_frame(series), static_features=STATIC, dropna=False)
    future = fcst.predict(h=h).sort_values(["unique_id", "ds"], ignore_index=True)
    future[LIGHTGBM] = future[LIGHTGBM].clip(lower=0.0)
    future["horizon"] = ((future["ds"] - last_week).dt.days // 7).astype(int)
    meta = series.drop_duplicates("unique_id").set_index("unique_id")
    future["measure"] = future["unique_id"].map(meta["measure"])
    future = add_baselines(future.assign(cutoff=last_week), series)
    point = published_point(future, methods or {})
    group = future["unique_id"].map(calibration_group(meta)) + "|" + future["horizon"].astype(str)
    q = group.map({str(k): float(v) for k, v in quantiles.items()})
    if q.isna().any():
        raise ValueError(f"no conformal quantile for {sorted(set(group[q.isna()]))[:3]}")
    width = q.to_numpy() * np.sqrt(np.maximum(point, 1.0))
    rows = pd.DataFrame(
        {
            "unique_id": future["unique_id"],
            "origin_week_start": last_week,
            "target_week_start": future["ds"],
            "horizon": future["horizon"],
            "method": future["measure"].map(methods or {}).fillna(LIGHTGBM),
            "p10": np.maximum(point - width, 0.0),
            "p50": point,
            "p90": point + width,
        }
    ).sort_values(["unique_id", "target_week_start"], ignore_index=True)
    return rows, fcst.models_[LIGHTGBM]
