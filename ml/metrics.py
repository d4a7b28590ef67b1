"""Scores of hotspot predictions for one target week: PAI, PEI*, hit rate, Poisson deviance, rank correlation.

Definitions (NIJ Real-Time Crime Forecasting Challenge; Chainey et al. 2008; Hunt 2016 for PEI*):
- the forecast flags the k cells with the highest prediction, k = round(share x A) (at least one), A = cells
  of the study area (H3 cells of one resolution have near-equal areas, so cell counts stand for areas);
- hit rate = n / N, n = events in the flagged cells, N = events in the study area that week;
- PAI = (n / N) / (k / A): how many times more events the flagged area holds than its share of area;
- PEI* = n / n*, n* = events in the k cells that actually had the most (the best any forecast could do);
- Poisson deviance: mean over cells of 2 (y log(y / mu) - (y - mu)), mu clipped to 1e-9 (lower is better).

Ties in the prediction are broken by a fixed pseudo-random order of the cells (a hash of the cell id), so
a baseline with many equal values is neither favoured nor penalised by the cells' alphabetical order.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

AREA_SHARES = (0.01, 0.05, 0.10)
MIN_MU = 1e-9


def share_label(share: float) -> str:
    return f"{round(share * 100):d}"


def tie_break_order(cells: pd.Series | np.ndarray) -> np.ndarray:
    """A fixed pseudo-random number per cell id (same cell -> same number in every run and process)."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(str(c).encode(), digest_size=8).digest(), "big") for c in cells],
        dtype=np.uint64,
    )


def flagged_count(area_cells: int, share: float) -> int:
    return max(1, int(round(share * area_cells)))


def top_k_mask(predicted: np.ndarray, k: int, tie_break: np.ndarray) -> np.ndarray:
    """Boolean mask of the k cells with the highest prediction (ties broken by `tie_break`)."""
    order = np.lexsort((tie_break, -np.asarray(predicted, dtype=float)))
    mask = np.zeros(len(predicted), dtype=bool)
    mask[order[:k]] = True
    return mask


def poisson_deviance(actual: np.ndarray, predicted: np.ndarray) -> float:
    y = np.asarray(actual, dtype=float)
    mu = np.maximum(np.asarray(predicted, dtype=float), MIN_MU)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(y > 0, y * np.log(y / mu), 0.0)
    return float(np.mean(2.0 * (term - (y - mu))))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    ra = pd.Series(a).rank(method="average").to_numpy()
    rb = pd.Series(b).rank(method="average").to_numpy()
    if np.std(ra) == 0 or np.std(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def week_scores(
    actual: np.ndarray,
    predicted: np.ndarray,
    tie_break: np.ndarray,
    *,
    truth: np.ndarray | None = None,
    shares: tuple[float, ...] = AREA_SHARES,
) -> dict[str, float]:
    """Every score of one method on one target week over the study area's cells (arrays aligned by cell)."""
    y = np.asarray(actual, dtype=float)
    p = np.asarray(predicted, dtype=float)
    area = len(y)
    total = y.sum()
    out: dict[str, float] = {"cells": float(area), "events": float(total)}
    best_order = np.lexsort((tie_break, -y))
    for share in shares:
        k = flagged_count(area, share)
        n = y[top_k_mask(p, k, tie_break)].sum()
        n_best = y[best_order[:k]].sum()
        label = share_label(share)
        out[f"hit_rate_{label}"] = n / total if total > 0 else float("nan")
        out[f"pai_{label}"] = (n / total) / (k / area) if total > 0 else float("nan")
        out[f"pei_{label}"] = n / n_best if n_best > 0 else float("nan")
    out["poisson_deviance"] = poisson_deviance(y, p)
    out["spearman_truth"] = spearman(p, truth) if truth is not None else float("nan")
    return out


SCORE_COLUMNS = (
    *(f"{m}_{share_label(s)}" for m in ("pai", "pei", "hit_rate") for s in AREA_SHARES),
    "poisson_deviance",
    "spearman_truth",
)
