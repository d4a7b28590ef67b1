"""Daily weather of Jiangcheng (humid subtropical, plum-rain season in June-July) and the weather
multipliers of incident intensity per domain."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

# month -> (wet-day probability, mean precipitation on a wet day in mm)
_WET = {
    1: (0.33, 6),
    2: (0.38, 8),
    3: (0.45, 10),
    4: (0.45, 13),
    5: (0.45, 16),
    6: (0.50, 22),
    7: (0.45, 24),
    8: (0.35, 18),
    9: (0.30, 12),
    10: (0.30, 10),
    11: (0.30, 8),
    12: (0.25, 5),
}


def simulate(rng: np.random.Generator, dates: list[date]) -> pd.DataFrame:
    return simulate_with_state(rng, dates)[0]


def simulate_with_state(rng: np.random.Generator, dates: list[date]) -> tuple[pd.DataFrame, bool, float]:
    """The daily weather, plus the state a next day continues from: whether the last day was wet and
    its temperature anomaly."""
    n = len(dates)
    month = np.array([d.month for d in dates])
    doy = np.array([d.timetuple().tm_yday for d in dates])
    p_wet = np.array([_WET[m][0] for m in month])
    mean_amt = np.array([_WET[m][1] for m in month])
    wet = np.zeros(n, dtype=bool)
    u = rng.random(n)
    prev = False
    for i in range(n):  # two-state Markov chain with persistence
        p = p_wet[i] + (0.25 * (1 - p_wet[i]) if prev else -0.25 * p_wet[i])
        prev = wet[i] = u[i] < p
    shape = 0.75
    amount = rng.gamma(shape, mean_amt / shape)
    precip = np.where(wet, np.maximum(0.1, amount), 0.0)
    # temperatures: seasonal cycle + AR(1) anomaly, cooler on wet days
    seasonal = 21.0 - 13.5 * np.cos(2 * np.pi * (doy - 15) / 365.25)
    anom = np.zeros(n)
    e = rng.normal(0, 2.2, n)
    for i in range(1, n):
        anom[i] = 0.75 * anom[i - 1] + e[i]
    tmax = seasonal + anom - 2.5 * wet
    tmin = tmax - (7.5 - 3.0 * wet) + rng.normal(0, 1.0, n)
    wind = rng.gamma(4.0, 1.1, n) + 3.0 * (precip > 25) + 0.2
    df = pd.DataFrame(
        {
            "date": [d.isoformat() for d in dates],
            "precip_mm": np.round(precip, 1),
            "tmax_c": np.round(tmax, 1),
            "tmin_c": np.round(tmin, 1),
            "wind_max_ms": np.round(wind, 1),
        }
    )
    return df, bool(wet[-1]) if n else False, float(anom[-1]) if n else 0.0


def next_day(
    rng: np.random.Generator, day: date, wet_before: bool, anom_before: float
) -> tuple[pd.DataFrame, bool, float]:
    """One more day of the same weather process, continuing the wet-day chain and the temperature
    anomaly of the day before. Returns the day's row and the state the day after continues from."""
    p_wet, mean_amt = _WET[day.month]
    p = p_wet + (0.25 * (1 - p_wet) if wet_before else -0.25 * p_wet)
    wet = bool(rng.random() < p)
    shape = 0.75
    amount = rng.gamma(shape, mean_amt / shape)
    precip = max(0.1, amount) if wet else 0.0
    doy = day.timetuple().tm_yday
    seasonal = 21.0 - 13.5 * np.cos(2 * np.pi * (doy - 15) / 365.25)
    anom = 0.75 * anom_before + rng.normal(0, 2.2)
    tmax = seasonal + anom - 2.5 * wet
    tmin = tmax - (7.5 - 3.0 * wet) + rng.normal(0, 1.0)
    wind = rng.gamma(4.0, 1.1) + 3.0 * (precip > 25) + 0.2
    row = pd.DataFrame(
        {
            "date": [day.isoformat()],
            "precip_mm": np.round([precip], 1),
            "tmax_c": np.round([tmax], 1),
            "tmin_c": np.round([tmin], 1),
            "wind_max_ms": np.round([wind], 1),
        }
    )
    return row, wet, float(anom)


def domain_weather_factor(domain: str, w: pd.DataFrame) -> np.ndarray:
    """Un-normalised multiplier of a domain's daily intensity given the day's weather."""
    p = w["precip_mm"].to_numpy(float)
    tmax = w["tmax_c"].to_numpy(float)
    tmin = w["tmin_c"].to_numpy(float)
    wind = w["wind_max_ms"].to_numpy(float)
    if domain == "TR":  # wet roads: +1.5 % per mm, capped
        return 1 + 0.015 * np.minimum(p, 60)
    if domain == "NH":  # waterlogging grows super-linearly with rain; heat, cold and gales add
        return 0.15 + (p / 10.0) ** 1.3 + 0.6 * (tmax > 35) + 0.6 * (tmin < 0) + 0.4 * (wind > 10)
    if domain == "FE":  # heating season and dry days
        return (1 + 0.025 * np.maximum(0, 12 - tmax)) * (1 - 0.2 * (p > 10))
    if domain == "UL":  # heat (power), cold (gas, water mains), heavy rain (drainage)
        return 1 + 0.04 * np.maximum(0, tmax - 30) + 0.03 * np.maximum(0, 5 - tmin) + 0.012 * np.minimum(p, 80)
    if domain == "PH":  # food poisoning and heat illness in hot weather
        return 1 + 0.03 * np.maximum(0, tmax - 24)
    if domain == "PO":  # fewer outdoor nuisances in rain
        return 1 - 0.02 * np.minimum(p, 20)
    if domain == "PS":
        return (1 - 0.008 * np.minimum(p, 30)) * (1 + 0.006 * (tmax - 20))
    if domain == "PR":
        return 1 + 0.01 * np.maximum(0, tmax - 30)
    raise ValueError(domain)


def climatology_norm(domains: list[str]) -> dict[str, float]:
    """Long-run mean of each weather factor (20 simulated years, fixed seed): dividing by it keeps
    yearly totals on target while wet or hot spells still raise the intensity."""
    rng = np.random.default_rng(19491001)
    start = date(2001, 1, 1)
    dates = [start + timedelta(days=i) for i in range(365 * 20)]
    w = simulate(rng, dates)
    return {d: float(domain_weather_factor(d, w).mean()) for d in domains}


def hourly_rain(rng: np.random.Generator, precip_mm: np.ndarray) -> np.ndarray:
    """City-wide hourly rain (days x 24, mm) that sums to each day's total: one contiguous spell."""
    n = len(precip_mm)
    out = np.zeros((n, 24))
    wet = np.nonzero(precip_mm > 0)[0]
    dur = np.clip(rng.poisson(4 + precip_mm[wet] / 6), 1, 20)
    start = rng.integers(0, 24, len(wet))
    for k, i in enumerate(wet):
        hrs = (start[k] + np.arange(dur[k])) % 24
        share = rng.dirichlet(np.full(dur[k], 1.5))
        out[i, hrs] = precip_mm[i] * share
    return out
