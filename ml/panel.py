"""The cell x week panel the hotspot models learn from: the feature mart as dense matrices plus history
features computed from the past only.

`mart_cell_week_features` has one row per city grid cell and week (zeros included). Here every count
column becomes a (cells x weeks) matrix, and the model's extra inputs are computed from columns
0..t only for week t: trailing means (the persistence and long-run baselines' own numbers), decayed
near-repeat counts of the cell and its ring-1 neighbours, every domain's decayed counts (leading
indicators), and a kernel density surface of the last 52 weeks (the KDE baseline's number). The label
of week t is the count of week t + 1. tests/test_ml_hotspot.py proves the no-look-ahead property by
changing every week after t and checking that no feature of week t moves.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd

from citysafe import warehouse
from citysafe.config import Settings

log = logging.getLogger(__name__)

DOMAINS = ("PS", "FE", "TR", "NH", "PR", "UL", "PH", "PO")
LONG_RUN_WEEKS = 52
SHORT_RUN_WEEKS = 4
EARTH_KM_PER_DEG = 111.32

# Mart columns used as features as they are (all describe the row's week or earlier).
MART_FEATURES = (
    "incident_count",
    "incident_count_lag_1w",
    "incident_count_lag_2w",
    "incident_count_lag_4w",
    "incident_count_mean_past_12w",
    "neighbor_cell_count",
    "neighbor_incident_count",
    "neighbor_incident_count_lag_1w",
    "open_hazard_count",
    "overdue_open_hazard_count",
    "open_major_hazard_count",
    "device_count",
    "device_alert_episodes_started",
    "device_alert_episodes_peak_red",
    "device_alert_hours",
    "precipitation_mm_total",
    "temperature_max_c",
    "wind_speed_max_ms",
    "weeks_of_history",
)

_MART_SQL = """
select f.*, c.centroid_lon, c.centroid_lat
from mart_cell_week_features as f
inner join dim_h3_cell as c using (h3_cell)
order by f.h3_cell, f.week_start
"""


@dataclasses.dataclass
class Panel:
    """Dense cell x week data: `cells` and `weeks` index the matrices' rows and columns."""

    cells: np.ndarray  # h3 cell ids, sorted
    weeks: pd.DatetimeIndex  # week starts (Mondays), consecutive
    district: np.ndarray  # district code per cell ('' when none)
    lon: np.ndarray
    lat: np.ndarray
    counts: np.ndarray  # (cells, weeks) all incidents
    domain_counts: dict[str, np.ndarray]  # domain -> (cells, weeks)
    complete: np.ndarray  # (weeks,) the week has 7 days of data
    mart: dict[str, np.ndarray]  # MART_FEATURES -> (cells, weeks), NaN where the mart has NULL

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    @property
    def n_weeks(self) -> int:
        return len(self.weeks)

    def target(self, scope: str) -> np.ndarray:
        """The counts a scope predicts: 'all' incidents or one domain's."""
        return self.counts if scope == "all" else self.domain_counts[scope]


def read_panel(settings: Settings) -> Panel:
    """The feature mart of the served warehouse as a Panel."""
    frame = warehouse.query(settings, _MART_SQL)
    if frame.empty:
        raise warehouse.MartsError(
            "mart_cell_week_features is empty: the warehouse holds no located incidents to learn from"
        )
    return panel_from_frame(frame)


def panel_from_frame(frame: pd.DataFrame) -> Panel:
    frame = frame.sort_values(["h3_cell", "week_start"], kind="stable")
    cells = frame["h3_cell"].drop_duplicates().to_numpy()
    weeks = pd.DatetimeIndex(sorted(pd.to_datetime(frame["week_start"]).unique()))
    n_c, n_w = len(cells), len(weeks)
    if len(frame) != n_c * n_w:
        raise ValueError(f"feature mart is not a dense grid: {len(frame)} rows for {n_c} cells x {n_w} weeks")
    if n_w > 1 and not (np.diff(weeks.values).astype("timedelta64[D]") == np.timedelta64(7, "D")).all():
        raise ValueError("feature mart weeks are not consecutive")

    def matrix(column: str) -> np.ndarray:
        return frame[column].to_numpy(dtype=float, na_value=np.nan).reshape(n_c, n_w)

    first = frame.groupby("h3_cell", sort=True).first()
    complete = frame.groupby("week_start", sort=True)["is_complete_week"].first().to_numpy(dtype=bool)
    return Panel(
        cells=cells,
        weeks=weeks,
        district=first["district_code"].fillna("").astype(str).to_numpy(),
        lon=first["centroid_lon"].to_numpy(dtype=float),
        lat=first["centroid_lat"].to_numpy(dtype=float),
        counts=matrix("incident_count"),
        domain_counts={d: matrix(f"incident_count_{d.lower()}") for d in DOMAINS},
        complete=complete,
        mart={c: matrix(c) for c in MART_FEATURES},
    )


# --- history transforms: column t uses columns 0..t only --------------------------------------------


def trailing_mean(m: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` weeks up to and including each week (fewer at the start of the data)."""
    csum = np.cumsum(np.nan_to_num(m), axis=1)
    shifted = np.zeros_like(csum)
    if window < m.shape[1]:
        shifted[:, window:] = csum[:, :-window]
    n = np.minimum(np.arange(1, m.shape[1] + 1), window)
    return (csum - shifted) / n


def decayed_sum(m: np.ndarray, half_life_weeks: float) -> np.ndarray:
    """Exponentially decayed sum of the counts up to each week: d_t = x_t + g d_(t-1), g = 2^(-1/half life)."""
    g = 0.5 ** (1.0 / half_life_weeks)
    out = np.empty_like(m, dtype=float)
    acc = np.zeros(m.shape[0])
    for t in range(m.shape[1]):
        acc = np.nan_to_num(m[:, t]) + g * acc
        out[:, t] = acc
    return out


def cell_xy_km(panel: Panel) -> tuple[np.ndarray, np.ndarray]:
    lat0 = float(np.nanmean(panel.lat))
    x = (panel.lon - np.nanmean(panel.lon)) * EARTH_KM_PER_DEG * np.cos(np.radians(lat0))
    y = (panel.lat - lat0) * EARTH_KM_PER_DEG
    return x, y


def kde_weights(panel: Panel, bandwidth_km: float) -> np.ndarray:
    """(cells x cells) Gaussian kernel between cell centres, each SOURCE column summing to 1, so the
    smoothed surface keeps the number of events (events are placed at their cell's centre)."""
    x, y = cell_xy_km(panel)
    d2 = (x[:, None] - x[None, :]) ** 2 + (y[:, None] - y[None, :]) ** 2
    w = np.exp(-0.5 * d2 / bandwidth_km**2)
    return w / w.sum(axis=0, keepdims=True)


@dataclasses.dataclass
class History:
    """The baselines' numbers and the model's history features for every cell and week."""

    mean_short: np.ndarray  # persistence: mean of the last 4 weeks
    mean_long: np.ndarray  # long run: mean of the last 52 weeks
    kde: np.ndarray  # KDE of the last 52 weeks' events (mean per week), at the chosen bandwidth
    features: dict[str, np.ndarray]


def history(panel: Panel, scope: str, kde_w: np.ndarray) -> History:
    y = panel.target(scope)
    mean_short = trailing_mean(y, SHORT_RUN_WEEKS)
    mean_long = trailing_mean(y, LONG_RUN_WEEKS)
    kde = kde_w @ mean_long
    x_km, y_km = cell_xy_km(panel)
    feats: dict[str, np.ndarray] = {
        f"{scope}_mean_last_4w": mean_short,
        f"{scope}_mean_last_52w": mean_long,
        f"{scope}_kde_52w": kde,
        f"{scope}_decayed_hl1w": decayed_sum(y, 1.0),
        f"{scope}_decayed_hl4w": decayed_sum(y, 4.0),
        "all_mean_last_52w": trailing_mean(panel.counts, LONG_RUN_WEEKS),
        "neighbor_decayed_hl2w": decayed_sum(panel.mart["neighbor_incident_count"], 2.0),
        "neighbor_mean_last_52w": trailing_mean(panel.mart["neighbor_incident_count"], LONG_RUN_WEEKS),
        "cell_x_km": np.repeat(x_km[:, None], panel.n_weeks, axis=1),
        "cell_y_km": np.repeat(y_km[:, None], panel.n_weeks, axis=1),
    }
    for d in DOMAINS:  # other domains as leading indicators
        feats[f"domain_{d.lower()}_decayed_hl4w"] = decayed_sum(panel.domain_counts[d], 4.0)
    for name, m in panel.mart.items():
        feats[f"mart_{name}"] = m
    # the target week's week of year (a calendar fact, known in advance)
    target_weeks = panel.weeks + pd.Timedelta(days=7)
    feats["target_week_of_year"] = np.repeat(
        target_weeks.isocalendar().week.to_numpy(dtype=float)[None, :], panel.n_cells, axis=0
    )
    return History(mean_short=mean_short, mean_long=mean_long, kde=kde, features=feats)


def feature_frame(hist: History, week_idx: np.ndarray | list[int]) -> pd.DataFrame:
    """Rows (cell-major within each week) of the feature matrices at the given week columns."""
    week_idx = np.asarray(week_idx, dtype=int)
    return pd.DataFrame({name: m[:, week_idx].T.ravel() for name, m in hist.features.items()})
