"""Mess planning shared by the incident-like sources: exactly counted, mutually exclusive corruption
kinds, revisions re-delivered in the next month's file, exact duplicate lines."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._util import Clock, corruption_count


def assign_kinds(
    rng: np.random.Generator,
    n: int,
    rates: dict[str, float],
    eligible: dict[str, np.ndarray] | None = None,
    minimum: int = 3,
    max_share: float | None = None,
) -> np.ndarray:
    """One label per row ('' = clean): each kind gets exactly corruption_count(n, rate) rows, drawn
    without replacement from rows not yet labelled (and eligible for that kind, if a mask is given).
    With max_share, at most that share of the rows gets a label, the kinds served in a random order:
    a daily file of a dozen rows stays mostly clean, and small days take turns at the kinds."""
    kinds = np.full(n, "", dtype=object)
    eligible = eligible or {}
    budget = n if max_share is None else int(max_share * n)
    order = list(rates.items())
    if max_share is not None:
        order = [order[i] for i in rng.permutation(len(order))]
    for kind, rate in order:
        k = corruption_count(n, rate, minimum)
        free = kinds == ""
        if kind in eligible:
            free &= eligible[kind]
        cand = np.nonzero(free)[0]
        k = min(k, len(cand), budget)
        budget -= k
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


@dataclass(frozen=True)
class DayDelivery:
    """What turns a department generator's monthly files into one daily extract: the day's own random
    stream, the earlier records the extract delivers again with their new status (revisions: rows in
    the department's delivered columns plus `_key`, the update time; for JSON lines a `line` column),
    and how many corrupted rows a kind gets (at least min_per_kind, at most max_corrupt_share of all)."""

    stream: str
    revisions: pd.DataFrame
    max_corrupt_share: float = 0.25
    min_per_kind: int = 1  # the window's floor is 3 per kind per source; a day's file is smaller


def pick_revisions(rng: np.random.Generator, n_candidates: int, frac: float) -> np.ndarray:
    """Which of n candidate records move on (the monthly rule of plan_revisions: frac of them, at
    least 2 when there are any)."""
    k = int(round(frac * n_candidates))
    if n_candidates and k == 0:
        k = min(n_candidates, 2)
    return np.sort(rng.choice(n_candidates, size=k, replace=False)) if k else np.array([], dtype=np.int64)
