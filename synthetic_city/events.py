"""The known space-time intensity and the real events drawn from it.

For each domain d the conditional intensity of real events at H3 cell c, time t is

    lambda_d(c, t) = mu_d * w_d(c) * f_d(day(t)) * h_d(hour(t))                       (background)
                   + sum_{events i of domain d, t_i < t} alpha_d * K(c | c_i) * exp(-(t - t_i)/tau_d) / tau_d

* w_d(c): hotspot surface (urban density, roads, industry, river and lakes, seeded hotspots, cell noise),
  proportional to the share of the cell inside the city, summing to 1 over the city's cells;
* f_d(day): day-of-week profile x yearly seasonality x weather multiplier (normalised by its climatology);
* h_d(hour): hour-of-day profile (integrates to one day);
* near-repeat triggering (Hawkes): each event spawns Poisson(alpha_d) offspring of its domain, after an
  exponential delay of mean tau_d days, in its own cell with probability 0.6 or in one of the six
  neighbouring cells (0.4 / 6 each; offspring falling outside the city or after the window are lost).

The oracle written to truth/intensity_cell_week.csv.gz is, per (cell, local week, domain), the integral
of lambda over the cell and the week given the realised events: the background integral plus, for
every realised event, alpha_d times the share of its offspring kernel that falls in that cell and week.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import weather as wx
from ._util import Clock, rng_for

DOMAINS = ["PS", "FE", "TR", "NH", "PR", "UL", "PH", "PO"]
SAME_CELL_P = 0.6
INHERIT_CODE_P = 0.5


@dataclass(frozen=True)
class DomainParams:
    alpha: float  # branching ratio (expected offspring per event)
    tau_days: float  # mean triggering delay
    season_amp: float  # yearly seasonality amplitude
    season_peak_doy: int  # day of year of the seasonal peak
    dow: tuple[float, ...]  # Monday..Sunday
    hour_base: float
    hour_bumps: tuple[tuple[float, float, float], ...]  # (centre hour, width h, amplitude)


PARAMS: dict[str, DomainParams] = {
    "PS": DomainParams(
        0.25, 3.0, 0.10, 200, (1.0, 0.97, 0.97, 1.0, 1.06, 1.1, 1.02), 0.5, ((11, 3, 0.6), (20.5, 3, 1.0), (1, 2, 0.4))
    ),
    "FE": DomainParams(0.10, 2.0, 0.25, 15, (1, 1, 1, 1, 1, 1.05, 1.05), 0.4, ((12, 2, 0.6), (19, 3, 0.9))),
    "TR": DomainParams(
        0.05,
        1.0,
        0.08,
        350,
        (1.05, 1.03, 1.03, 1.04, 1.1, 0.9, 0.85),
        0.25,
        ((8, 1.5, 1.0), (18, 1.8, 1.1), (13, 3, 0.4)),
    ),
    "NH": DomainParams(0.30, 1.5, 0.30, 190, (1, 1, 1, 1, 1, 1, 1), 0.6, ((15, 4, 0.5),)),
    "PR": DomainParams(
        0.05, 4.0, 0.10, 170, (1.15, 1.15, 1.15, 1.15, 1.1, 0.75, 0.55), 0.1, ((10, 2, 1.0), (15, 2, 0.9))
    ),
    "UL": DomainParams(0.20, 2.0, 0.15, 200, (1.02, 1, 1, 1, 1, 0.99, 0.99), 0.35, ((9, 3, 0.8), (19, 3, 0.8))),
    "PH": DomainParams(0.15, 3.0, 0.30, 215, (1, 1, 1, 1, 1, 1.02, 1.02), 0.4, ((12, 2, 0.6), (19, 2.5, 0.7))),
    "PO": DomainParams(
        0.10,
        3.0,
        0.20,
        200,
        (0.97, 0.96, 0.97, 1.0, 1.05, 1.08, 0.98),
        0.15,
        ((10, 3, 0.9), (16, 3, 0.8), (22, 1.5, 0.7)),
    ),
}


def hour_profile(p: DomainParams) -> np.ndarray:
    h = np.arange(24) + 0.5
    prof = np.full(24, p.hour_base)
    for c, w, a in p.hour_bumps:
        d = np.abs(h - c)
        d = np.minimum(d, 24 - d)
        prof += a * np.exp(-d * d / (2 * w * w))
    return prof / prof.sum()


def hotspot_weights(rng: np.random.Generator, city, domain: str) -> np.ndarray:
    f = city.features()
    x, y = city.cell_x, city.cell_y
    u = f["urban"]
    hot = np.zeros(city.n_cells)
    for _ in range(6):  # seeded hotspots: markets, nightlife, transport hubs, old estates ...
        k = int(rng.integers(0, city.n_cells))
        s = rng.uniform(0.5, 1.5)
        hot += rng.uniform(0.5, 2.0) * np.exp(-((x - x[k]) ** 2 + (y - y[k]) ** 2) / (2 * s * s))
    if domain == "PS":
        w = u**1.2 * (1 + hot)
    elif domain == "TR":
        w = u * (0.3 + f["roads"]) * (1 + 0.3 * hot)
    elif domain == "FE":
        w = u**0.8 * (1 + 0.5 * f["industrial"]) * (1 + 0.3 * hot)
    elif domain == "NH":
        w = 0.25 * u + f["river"] + 0.8 * f["lake"] + 0.2 * hot
    elif domain == "PR":
        w = 0.12 * u + f["industrial"] + 0.2 * hot
    elif domain == "UL":
        w = u * (1 + 0.5 * hot)
    elif domain == "PH":
        w = u**1.1 * (1 + 0.4 * hot)
    elif domain == "PO":
        w = u**1.3 * (1 + hot)
    else:
        raise ValueError(domain)
    w = w * rng.lognormal(0.0, 0.3, city.n_cells) * f["area"]
    return w / w.sum()


@dataclass
class CodeBook:
    """Codes of one department: code, label, subcategory, domain, weight (relative frequency)."""

    dept: str
    table: pd.DataFrame  # columns: code, label, subcategory_code, domain_code, weight


@dataclass
class EventSet:
    events: pd.DataFrame  # one row per real event
    intensity: pd.DataFrame  # truth/intensity_cell_week
    domain_targets: dict  # expected yearly counts at scale 1


def code_pairs(books: dict[str, CodeBook], dept_totals: dict[str, float]) -> pd.DataFrame:
    """(dept, code) pairs per domain with their yearly targets at scale 1."""
    pairs = []
    for dept, book in books.items():
        t = book.table
        share = t.weight / t.weight.sum()
        for code, sub, dom, s in zip(t.code, t.subcategory_code, t.domain_code, share):
            pairs.append((dom, dept, code, sub, dept_totals[dept] * s))
    return pd.DataFrame(pairs, columns=["domain", "dept", "code", "subcategory", "target"])


def simulate(
    seed: int,
    clock: Clock,
    city,
    weather_df: pd.DataFrame,
    scale: float,
    books: dict[str, CodeBook],
    dept_totals: dict[str, float],
) -> EventSet:
    norms = wx.climatology_norm(DOMAINS)
    ndays = clock.days
    pairs = code_pairs(books, dept_totals)

    all_events = []
    intensity = []
    targets = {}
    for dom in DOMAINS:
        rng = rng_for(seed, f"events:{dom}")
        p = PARAMS[dom]
        pr = pairs[pairs.domain == dom].reset_index(drop=True)
        T = float(pr.target.sum())
        targets[dom] = T
        if T <= 0:
            raise ValueError(f"no department has codes for domain {dom}")
        w = hotspot_weights(rng_for(seed, f"hotspots:{dom}"), city, dom)
        dow = np.array(p.dow) / np.mean(p.dow)
        season = 1 + p.season_amp * np.cos(2 * np.pi * (clock.doy - p.season_peak_doy) / 365.25)
        wf = wx.domain_weather_factor(dom, weather_df) / norms[dom]
        daily = T * scale * (1 - p.alpha) / 365.0 * dow[clock.dow] * season * wf  # background per day
        # --- background events
        n_day = rng.poisson(daily)
        day = np.repeat(np.arange(ndays), n_day)
        n0 = len(day)
        cell = rng.choice(city.n_cells, size=n0, p=w)
        hour = rng.choice(24, size=n0, p=hour_profile(p))
        t = clock.day_start[day] + hour * 3600 + rng.integers(0, 3600, n0)
        pair = rng.choice(len(pr), size=n0, p=(pr.target / T).to_numpy()) if len(pr) else np.zeros(n0, int)
        gen = np.zeros(n0, dtype=np.int64)
        parent = np.full(n0, -1, dtype=np.int64)
        # --- offspring, generation by generation
        T_list, C_list, P_list, G_list, Par_list = [t], [cell], [pair], [gen], [parent]
        cur_idx = np.arange(n0)
        cur_t, cur_c, cur_p = t, cell, pair
        offset = n0
        g = 0
        while len(cur_t):
            g += 1
            k = rng.poisson(p.alpha, len(cur_t))
            par = np.repeat(cur_idx, k)
            pt = np.repeat(cur_t, k)
            pc = np.repeat(cur_c, k)
            pp = np.repeat(cur_p, k)
            m = len(par)
            ct = pt + np.floor(rng.exponential(p.tau_days * 86400.0, m)).astype(np.int64)
            same = rng.random(m) < SAME_CELL_P
            slot = rng.integers(0, 6, m)
            cc = np.where(same, pc, city.neighbours[pc, slot])
            inherit = rng.random(m) < INHERIT_CODE_P
            cp = np.where(inherit, pp, rng.choice(len(pr), size=m, p=(pr.target / T).to_numpy()))
            keep = (cc >= 0) & (ct < clock.t1)
            par, ct, cc, cp = par[keep], ct[keep], cc[keep], cp[keep]
            ids = offset + np.arange(len(par))
            offset += len(par)
            T_list.append(ct), C_list.append(cc), P_list.append(cp)
            G_list.append(np.full(len(par), g)), Par_list.append(par)
            cur_idx, cur_t, cur_c, cur_p = ids, ct, cc, cp
        ev = pd.DataFrame(
            {
                "t": np.concatenate(T_list),
                "cell": np.concatenate(C_list),
                "pair": np.concatenate(P_list),
                "generation": np.concatenate(G_list),
                "parent_local": np.concatenate(Par_list),
            }
        )
        ev["domain"] = dom
        ev["local_id"] = np.arange(len(ev))
        ev["dept"] = pr.dept.to_numpy()[ev.pair]
        ev["code"] = pr.code.to_numpy()[ev.pair]
        ev["subcategory"] = pr.subcategory.to_numpy()[ev.pair]
        all_events.append(ev)
        intensity.append(_integrate(clock, city, dom, p, w, daily, ev.t.to_numpy(), ev.cell.to_numpy()))

    events = pd.concat(all_events, ignore_index=True)
    # global ids in time order
    events["dom_i"] = events.domain.map({d: i for i, d in enumerate(DOMAINS)})
    events = events.sort_values(["t", "dom_i", "cell", "local_id"], kind="stable").reset_index(drop=True)
    events["event_id"] = [f"EV{i:09d}" for i in range(1, len(events) + 1)]
    key = dict(zip(zip(events.domain, events.local_id), events.event_id))
    events["parent_event_id"] = [
        key.get((d, p), "") if p >= 0 else "" for d, p in zip(events.domain, events.parent_local)
    ]
    lon, lat, dist = city.sample_in_cells(rng_for(seed, "events:locations"), events.cell.to_numpy())
    events["lon"], events["lat"], events["district"] = lon, lat, dist
    events = events.drop(columns=["pair", "dom_i", "parent_local", "local_id"])
    return EventSet(events, pd.concat(intensity, ignore_index=True), targets)


def _integrate(
    clock: Clock, city, dom: str, p: DomainParams, w: np.ndarray, daily: np.ndarray, t: np.ndarray, cell: np.ndarray
) -> pd.DataFrame:
    nW, nC = clock.n_weeks, city.n_cells
    weekly_bg = np.bincount(clock.week_of_day, weights=daily, minlength=nW)
    E = np.outer(w, weekly_bg)  # (cells, weeks) background
    tau = p.tau_days * 86400.0
    wk_lo = np.maximum(clock.week_start[:-1], clock.t0)
    wk_hi = np.minimum(clock.week_start[1:], clock.t1)
    w0 = np.searchsorted(clock.week_start, t, side="right") - 1
    max_k = int(np.ceil(12 * p.tau_days / 7)) + 1
    cdf = lambda x: 1 - np.exp(-np.maximum(x, 0) / tau)  # noqa: E731
    flat = E.ravel()
    for k in range(max_k + 1):
        wk = w0 + k
        ok = wk < nW
        if not ok.any():
            break
        ww, tt, cc = wk[ok], t[ok], cell[ok]
        mass = p.alpha * (cdf(wk_hi[ww] - tt) - cdf(np.maximum(wk_lo[ww], tt) - tt))
        flat += np.bincount(cc * nW + ww, weights=mass * SAME_CELL_P, minlength=nC * nW)
        for s in range(6):
            nb = city.neighbours[cc, s]
            good = nb >= 0
            flat += np.bincount(nb[good] * nW + ww[good], weights=mass[good] * (1 - SAME_CELL_P) / 6, minlength=nC * nW)
    E = flat.reshape(nC, nW)
    return pd.DataFrame(
        {
            "h3_cell": np.repeat(city.cells, nW),
            "week_start": np.tile([d.isoformat() for d in clock.week_start_dates[:nW]], nC),
            "domain_code": dom,
            "expected_count": E.ravel(),
        }
    )


# ------------------------------------------------------------------------------------------ one more day
TRIGGER_HORIZON_TAUS = 12  # a parent older than 12 mean delays leaves < 1e-5 of its offspring to come


def simulate_day(
    seed: int,
    clock: Clock,
    city,
    weather_day: pd.DataFrame,
    scale: float,
    books: dict[str, CodeBook],
    dept_totals: dict[str, float],
    history: pd.DataFrame,
    min_per_dept: int = 0,
) -> EventSet:
    """The real events of one more day (`clock`: a DayClock), continuing the window's process: the
    day's background (same hotspot surfaces, day-of-week, season and weather factor, the window's event
    scale) plus the offspring that the events before it (`history`: t, domain, cell, dept, subcategory,
    generation, event_id) place in this day, plus the offspring of the day's own events within it.

    Given the history, the number of offspring a parent places in the day is Poisson(alpha x the
    share of its delay kernel falling in the day), independent of what it placed earlier: drawing them
    afresh per day is the same process as drawing them once. `intensity` holds the oracle for the day
    per cell and domain (background + triggered mass in the day). With `min_per_dept`, a department
    the process left below it that day gets background events of its own codes up to it (tiny scales:
    a daily extract is never empty); they are real events, not in the oracle."""
    norms = wx.climatology_norm(DOMAINS)
    pairs = code_pairs(books, dept_totals)
    day_tag = clock.start_date.isoformat()
    t0, t1 = clock.t0, clock.t1
    all_events, intensity, surfaces = [], [], {}
    for dom in DOMAINS:
        rng = rng_for(seed, f"events:{dom}:{day_tag}")
        p = PARAMS[dom]
        pr = pairs[pairs.domain == dom].reset_index(drop=True)
        T = float(pr.target.sum())
        prob = (pr.target / T).to_numpy()
        w = surfaces[dom] = hotspot_weights(rng_for(seed, f"hotspots:{dom}"), city, dom)
        dow = np.array(p.dow) / np.mean(p.dow)
        season = 1 + p.season_amp * np.cos(2 * np.pi * (clock.doy - p.season_peak_doy) / 365.25)
        wf = wx.domain_weather_factor(dom, weather_day) / norms[dom]
        daily = float((T * scale * (1 - p.alpha) / 365.0 * dow[clock.dow] * season * wf)[0])
        tau = p.tau_days * 86400.0
        # --- background
        n0 = int(rng.poisson(daily))
        cell = rng.choice(city.n_cells, size=n0, p=w)
        hour = rng.choice(24, size=n0, p=hour_profile(p))
        t = t0 + hour * 3600 + rng.integers(0, 3600, n0)
        pair = rng.choice(len(pr), size=n0, p=prob)
        # --- offspring of earlier events falling in this day
        h = history[(history.domain == dom) & (history.t >= t0 - TRIGGER_HORIZON_TAUS * tau)]
        ht, hc = h.t.to_numpy(np.int64), h.cell.to_numpy(np.int64)
        lo, hi = _delay_cdf(t0 - ht, tau), _delay_cdf(t1 - ht, tau)
        k = rng.poisson(p.alpha * (hi - lo))
        par = np.repeat(np.arange(len(h)), k)
        u = rng.uniform(lo[par], hi[par])
        ct = np.clip(ht[par] + np.floor(-tau * np.log1p(-u)).astype(np.int64), t0, t1 - 1)
        same = rng.random(len(par)) < SAME_CELL_P
        slot = rng.integers(0, 6, len(par))
        cc = np.where(same, hc[par], city.neighbours[hc[par], slot])
        inherit = rng.random(len(par)) < INHERIT_CODE_P
        cp = rng.choice(len(pr), size=len(par), p=prob)
        cp = np.where(inherit, _inherited_pairs(rng, pr, h.dept.to_numpy()[par], h.subcategory.to_numpy()[par], cp), cp)
        keep = cc >= 0
        # parents: history ids (strings) for these, local indices for the day's own generations
        T_list = [t, ct[keep]]
        C_list = [cell, cc[keep]]
        P_list = [pair, cp[keep]]
        G_list = [np.zeros(n0, np.int64), h.generation.to_numpy(np.int64)[par][keep] + 1]
        Par_list = [np.full(n0, -1, np.int64), np.full(int(keep.sum()), -1, np.int64)]
        ParId_list = [np.full(n0, "", dtype=object), h.event_id.to_numpy()[par][keep].astype(object)]
        cur_idx = np.arange(len(t) + int(keep.sum()))
        cur_t, cur_c, cur_p = np.concatenate(T_list), np.concatenate(C_list), np.concatenate(P_list)
        cur_g = np.concatenate(G_list)
        offset = len(cur_idx)
        while len(cur_t):  # the day's own events trigger within the day
            k = rng.poisson(p.alpha, len(cur_t))
            par = np.repeat(cur_idx, k)
            m = len(par)
            ct = np.repeat(cur_t, k) + np.floor(rng.exponential(tau, m)).astype(np.int64)
            same = rng.random(m) < SAME_CELL_P
            slot = rng.integers(0, 6, m)
            pc = np.repeat(cur_c, k)
            cc = np.where(same, pc, city.neighbours[pc, slot])
            inherit = rng.random(m) < INHERIT_CODE_P
            cp = np.where(inherit, np.repeat(cur_p, k), rng.choice(len(pr), size=m, p=prob))
            keep = (cc >= 0) & (ct < t1)
            par, ct, cc, cp = par[keep], ct[keep], cc[keep], cp[keep]
            gen = np.repeat(cur_g, k)[keep] + 1
            ids = offset + np.arange(len(par))
            offset += len(par)
            T_list.append(ct), C_list.append(cc), P_list.append(cp), G_list.append(gen), Par_list.append(par)
            ParId_list.append(np.full(len(par), "", dtype=object))
            cur_idx, cur_t, cur_c, cur_p, cur_g = ids, ct, cc, cp, gen
        ev = pd.DataFrame(
            {
                "t": np.concatenate(T_list).astype(np.int64),
                "cell": np.concatenate(C_list).astype(np.int64),
                "pair": np.concatenate(P_list).astype(np.int64),
                "generation": np.concatenate(G_list).astype(np.int64),
                "parent_local": np.concatenate(Par_list).astype(np.int64),
                "parent_history_id": np.concatenate(ParId_list),
            }
        )
        ev["domain"] = dom
        ev["local_id"] = np.arange(len(ev))
        ev["dept"] = pr.dept.to_numpy()[ev.pair]
        ev["code"] = pr.code.to_numpy()[ev.pair]
        ev["subcategory"] = pr.subcategory.to_numpy()[ev.pair]
        all_events.append(ev)
        # --- the oracle for the day: background plus every triggered mass that falls in it
        E = w * daily
        src_t = np.concatenate([ht, ev.t.to_numpy()])
        src_c = np.concatenate([hc, ev.cell.to_numpy()])
        mass = p.alpha * (_delay_cdf(t1 - src_t, tau) - _delay_cdf(np.maximum(t0, src_t) - src_t, tau))
        E = E + np.bincount(src_c, weights=mass * SAME_CELL_P, minlength=city.n_cells)
        for s in range(6):
            nb = city.neighbours[src_c, s]
            good = nb >= 0
            E = E + np.bincount(nb[good], weights=mass[good] * (1 - SAME_CELL_P) / 6, minlength=city.n_cells)
        intensity.append(pd.DataFrame({"h3_cell": city.cells, "domain_code": dom, "expected_count": E}))

    events = pd.concat(all_events, ignore_index=True)
    if min_per_dept:
        events = _department_floor(seed, clock, city, pairs, surfaces, events, min_per_dept)
    events["dom_i"] = events.domain.map({d: i for i, d in enumerate(DOMAINS)})
    events = events.sort_values(["t", "dom_i", "cell", "local_id"], kind="stable").reset_index(drop=True)
    events["event_id"] = [f"EV{day_tag.replace('-', '')}{i:06d}" for i in range(1, len(events) + 1)]
    key = dict(zip(zip(events.domain, events.local_id), events.event_id))
    events["parent_event_id"] = [
        hid if hid else (key.get((d, p), "") if p >= 0 else "")
        for d, p, hid in zip(events.domain, events.parent_local, events.parent_history_id)
    ]
    lon, lat, dist = city.sample_in_cells(rng_for(seed, f"events:locations:{day_tag}"), events.cell.to_numpy())
    events["lon"], events["lat"], events["district"] = lon, lat, dist
    events = events.drop(columns=["pair", "dom_i", "parent_local", "parent_history_id", "local_id"])
    return EventSet(events, pd.concat(intensity, ignore_index=True), {})


def _department_floor(seed, clock, city, pairs: pd.DataFrame, surfaces: dict, events: pd.DataFrame, minimum: int):
    """Background events of a department's own codes (by their weights) until it has `minimum`."""
    extra = []
    for dept in sorted(pairs.dept.unique()):
        k = minimum - int((events.dept == dept).sum())
        if k <= 0:
            continue
        rng = rng_for(seed, f"events:floor:{dept}:{clock.start_date.isoformat()}")
        own = pairs[pairs.dept == dept].reset_index(drop=True)
        pick = rng.choice(len(own), size=k, p=(own.target / own.target.sum()).to_numpy())
        for j, row in own.iloc[pick].reset_index(drop=True).iterrows():
            hour = int(rng.choice(24, p=hour_profile(PARAMS[row.domain])))
            extra.append(
                {
                    "t": clock.t0 + hour * 3600 + int(rng.integers(0, 3600)),
                    "cell": int(rng.choice(city.n_cells, p=surfaces[row.domain])),
                    "pair": -1,
                    "generation": 0,
                    "parent_local": -1,
                    "parent_history_id": "",
                    "domain": row.domain,
                    "local_id": 1_000_000 + j,  # after the domain's own events
                    "dept": dept,
                    "code": row.code,
                    "subcategory": row.subcategory,
                }
            )
    if not extra:
        return events
    return pd.concat([events, pd.DataFrame(extra)], ignore_index=True)


def _delay_cdf(x: np.ndarray, tau: float) -> np.ndarray:
    """Share of a parent's offspring born within x seconds of it (exponential delays, mean tau)."""
    return 1 - np.exp(-np.maximum(x, 0) / tau)


def _inherited_pairs(rng, pr: pd.DataFrame, dept: np.ndarray, subcategory: np.ndarray, fallback: np.ndarray):
    """A code pair of the parent's department and subcategory (the history keeps no code), weighted
    like the codes themselves; the fallback where that department has no such code."""
    out = fallback.copy()
    groups = {k: v.to_numpy() for k, v in pr.groupby(["dept", "subcategory"], sort=True).groups.items()}
    for i, (d, sc) in enumerate(zip(dept, subcategory)):
        idx = groups.get((d, sc))
        if idx is not None:
            wts = pr.target.to_numpy()[idx]
            out[i] = idx[rng.choice(len(idx), p=wts / wts.sum())]
    return out
