"""Mess planning shared by the incident-like sources: exactly counted, mutually exclusive corruption
kinds, revisions re-delivered in the next month's file, exact duplicate lines."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._util import Clock, corruption_count


def assign_kinds(
    rng: np.random.Generator,
    n: int,
    rates: dict[str, float],
    eligible: dict[str, np.ndarray] | None = None,
    minimum: int = 3,
) -> np.ndarray:
    """One label per row ('' = clean): each kind gets exactly corruption_count(n, rate) rows, drawn
    without replacement from rows not yet labelled (and eligible for that kind, if a mask is given)."""
    kinds = np.full(n, "", dtype=object)
    eligible = eligible or {}
    for kind, rate in rates.items():
        k = corruption_count(n, rate, minimum)
        free = kinds == ""
        if kind in eligible:
            free &= eligible[kind]
        cand = np.nonzero(free)[0]
        k = min(k, len(cand))
        if k:
            kinds[rng.choice(cand, size=k, replace=False)] = kind
    return kinds


def plan_revisions(rng: np.random.Generator, clock: Clock, month_idx: np.ndarray, eligible: np.ndarray, frac: float):
    """Pick rows to be re-delivered in the next month's file; returns (row indices, new updated_at)."""
    last = len(clock.months) - 1
    cand = np.nonzero(eligible & (month_idx < last))[0]
    k = int(round(frac * len(cand)))
    if len(cand) and k == 0:
        k = min(len(cand), 2)
    rows = np.sort(rng.choice(cand, size=k, replace=False)) if k else np.array([], dtype=np.int64)
    nm = month_idx[rows] + 1
    lo = clock.month_start[nm]
    hi = np.minimum(clock.month_start[nm + 1], clock.t1)
    upd = lo + (rng.random(len(rows)) * (hi - lo - 1)).astype(np.int64)
    return rows, upd


def extraction_cap(clock: Clock, month_idx: np.ndarray) -> np.ndarray:
    """Export time of each row's monthly file: end of its month (or end of the window)."""
    return np.minimum(clock.month_start[month_idx + 1], clock.t1) - 1


def pick_duplicates(rng: np.random.Generator, eligible: np.ndarray, rate: float, minimum: int = 2) -> np.ndarray:
    cand = np.nonzero(eligible)[0]
    k = min(len(cand), max(minimum, int(round(rate * len(cand)))))
    return np.sort(rng.choice(cand, size=k, replace=False)) if k else np.array([], dtype=np.int64)


def in_delivery_order(*parts: pd.DataFrame) -> pd.DataFrame:
    """All delivered rows (originals, revisions, duplicates) ordered as the department's files hold
    them: by file (`_file`), then delivery time (`_key`), ties in the order given (stable)."""
    rows = pd.concat(parts, ignore_index=True)
    rows["_n"] = np.arange(len(rows))
    return rows.sort_values(["_file", "_key", "_n"], kind="stable")
