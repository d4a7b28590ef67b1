"""Enterprise registry (market regulation snapshot) and hazard inspections (work-safety bureau)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from . import people
from ._delivery import assign_kinds, in_delivery_order, pick_duplicates
from ._util import (
    Clock,
    SourceCounts,
    corruption_count,
    csv_text,
    fmt_fixed,
    fmt_time,
    rng_for,
    write_bytes,
    write_csv,
    zfill,
)
from .geo import DISTRICTS, district_names

ENT_COLUMNS = [
    "credit_code",
    "legacy_reg_no",
    "enterprise_name",
    "industry_code",
    "industry_name",
    "district",
    "address",
    "lon",
    "lat",
    "established_date",
    "registered_capital_wan",
    "legal_representative",
    "reg_status",
    "updated_at",
]
HAZ_COLUMNS = [
    "hazard_id",
    "enterprise_id",
    "enterprise_name",
    "hazard_code",
    "hazard_desc",
    "severity",
    "found_date",
    "rectify_deadline",
    "rectified_date",
    "accepted_date",
    "status",
    "inspector_id",
    "district",
    "updated_at",
]
ENT_QUARANTINE = ["invalid_credit_code", "coordinates_outside_city"]
HAZ_QUARANTINE = ["invalid_timestamp", "time_order_violation", "unmapped_code", "unknown_enterprise"]
HAZ_STATUS = ["待整改", "已整改", "已验收"]
DAY = 86400


def _days(d: date) -> int:
    return (d - date(1970, 1, 1)).days


# ------------------------------------------------------------------------------------------ registry
def _draw_enterprises(
    rng: np.random.Generator, clock: Clock, city, industries: pd.DataFrame, n: int, taken: frozenset[str] = frozenset()
) -> dict:
    """n enterprises as the registry knows them (identity, place, founding, people), in one fixed order
    of draws; `upd` is a last update within the year before the clock's start. Their credit codes are
    unique and not in `taken` (codes already registered)."""
    ind = rng.choice(
        len(industries), n, p=(industries.enterprise_weight / industries.enterprise_weight.sum()).to_numpy()
    )
    f = city.features()
    w_ind = (0.03 + f["industrial"]) * f["area"]
    w_urb = f["urban"] ** 1.2 * f["area"]
    in_zone = rng.random(n) < industries.industrial_zone_share.to_numpy()[ind]
    cell = np.where(
        in_zone, rng.choice(city.n_cells, n, p=w_ind / w_ind.sum()), rng.choice(city.n_cells, n, p=w_urb / w_urb.sum())
    )
    lon, lat, dist = city.sample_in_cells(rng, cell)
    individual = np.isin(industries.industry_code.to_numpy()[ind], ["H62", "F52"]) & (rng.random(n) < 0.4)
    branch = np.where(
        (rng.random(n) < 0.05) & ~individual, np.array([d.short_zh for d in DISTRICTS], dtype=object)[dist], ""
    )
    area = np.where(rng.random(n) < 0.2, "420100", np.array([d.code for d in DISTRICTS])[dist])
    credit = people.credit_codes(rng, n, area, individual)
    # Uniqueness is part of the contract, and 8 random digits per area and kind do collide from about
    # 25k enterprises (scale 1.35 drew two alike): later copies are drawn again. A draw without
    # collisions uses the same random numbers as before, so the cities generated before stay identical.
    clash = pd.Series(credit).duplicated().to_numpy() | np.isin(credit, list(taken))
    while clash.any():
        credit[clash] = people.credit_codes(rng, int(clash.sum()), area[clash], individual[clash])
        clash = pd.Series(credit).duplicated().to_numpy() | np.isin(credit, list(taken))
    start_days = _days(clock.start_date)
    est = start_days - 30 - (rng.exponential(3000, n).clip(0, 11000)).astype(np.int64)
    legacy = people.legacy_reg_numbers(rng, n, area)
    has_legacy = (est < _days(date(2015, 10, 1))) & ~individual & (rng.random(n) < 0.8)
    legacy = np.where(has_legacy, legacy, "").astype(object)
    words = [w.split("|") for w in industries.name_words]
    names = people.enterprise_names(rng, n, words, ind, individual, branch)
    capital = np.round(np.where(individual, rng.lognormal(2.5, 0.8, n), rng.lognormal(6.0, 1.3, n)), 2)
    rep = people.names(rng, n)
    reg_status = rng.choice(["存续", "在业", "注销"], n, p=[0.90, 0.07, 0.03]).astype(object)
    dname, _ = district_names(rng, dist, {"official_zh": 0.85, "code": 0.10, "short_zh": 0.05})
    zh = np.array([d.name_zh for d in DISTRICTS], dtype=object)[dist]
    address = people.addresses(rng, zh, with_comma=0.05, with_quote=0.01)
    upd = clock.t0 - 86400 - rng.integers(0, 365 * 86400, n)
    return dict(
        ind=ind,
        cell=cell,
        lon=lon,
        lat=lat,
        dist=dist,
        individual=individual,
        credit=credit,
        est=est,
        legacy=legacy,
        has_legacy=has_legacy,
        names=names,
        capital=capital,
        rep=rep,
        reg_status=reg_status,
        dname=dname,
        address=address,
        upd=upd,
    )


def _registry_rows(e: dict, credit_out, typed, lon_s, lat_s, industries: pd.DataFrame, clock: Clock) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "credit_code": credit_out,
            "legacy_reg_no": e["legacy"],
            "enterprise_name": typed,
            "industry_code": industries.industry_code.to_numpy()[e["ind"]],
            "industry_name": industries.industry_zh.to_numpy()[e["ind"]],
            "district": e["dname"],
            "address": e["address"],
            "lon": lon_s,
            "lat": lat_s,
            "established_date": fmt_time(e["est"] * DAY, "date"),
            "registered_capital_wan": [f"{c:.2f}" for c in e["capital"]],
            "legal_representative": e["rep"],
            "reg_status": e["reg_status"],
            "updated_at": fmt_time(clock.local_seconds(e["upd"]), "iso_space"),
        }
    )


def generate_registry(out_dir: Path, clock: Clock, seed: int, city, industries: pd.DataFrame, n: int):
    rng = rng_for(seed, "enterprise")
    e = _draw_enterprises(rng, clock, city, industries, n)
    ind, cell, lon, lat, dist = e["ind"], e["cell"], e["lon"], e["lat"], e["dist"]
    credit, legacy, has_legacy, names = e["credit"], e["legacy"], e["has_legacy"], e["names"]
    individual, reg_status, upd = e["individual"], e["reg_status"], e["upd"]

    kinds = np.full(n, "", dtype=object)
    for k, rate in (("invalid_credit_code", 0.005), ("coordinates_outside_city", 0.003)):
        cand = np.nonzero(kinds == "")[0]
        kinds[rng.choice(cand, corruption_count(n, rate), replace=False)] = k
    credit_out = credit.copy()
    m = np.nonzero(kinds == "invalid_credit_code")[0]
    for j, i in enumerate(m):
        credit_out[i] = people.corrupt_credit_code(rng, credit[i]) if j % 3 else credit[i][:17]
    lon_s = np.array(fmt_fixed(lon, 6), dtype=object)
    lat_s = np.array(fmt_fixed(lat, 6), dtype=object)
    m = kinds == "coordinates_outside_city"
    fl, ft = city.far_outside(rng, int(m.sum()))
    lon_s[m], lat_s[m] = fmt_fixed(fl, 6), fmt_fixed(ft, 6)

    typed = names.copy()  # the registry itself is not consistently typed either
    vm = rng.random(n) < 0.10
    typed[vm] = people.name_variant(rng, names[vm])
    base = _registry_rows(e, credit_out, typed, lon_s, lat_s, industries, clock)
    published = kinds == ""
    cand = np.nonzero(published)[0]
    n_stale = min(len(cand), max(3, int(round(0.02 * len(cand)))))
    stale = np.sort(rng.choice(cand, n_stale, replace=False))
    st = base.iloc[stale].copy()
    st["enterprise_name"] = people.name_variant(rng, names[stale])
    st["updated_at"] = fmt_time(clock.local_seconds(upd[stale] - rng.integers(30, 700, n_stale) * 86400), "iso_space")
    n_exact = min(len(cand), max(2, int(round(0.003 * len(cand)))))
    exact = base.iloc[np.sort(rng.choice(cand, n_exact, replace=False))].copy()
    rows = pd.concat([base, st, exact], ignore_index=True)
    rows = rows.iloc[rng.permutation(len(rows))]
    write_csv(out_dir / "enterprise" / "enterprise_registry.csv", rows[ENT_COLUMNS])

    counts = SourceCounts(
        files=1,
        rows_delivered=len(rows),
        duplicates=n_stale + n_exact,
        published=int(published.sum()),
        published_without_cell=0,
        quarantined={k: int((kinds == k).sum()) for k in ENT_QUARANTINE},
    )
    counts.check("enterprise_registry")
    ent = pd.DataFrame(
        {
            "credit_code": credit,
            "legacy_reg_no": legacy,
            "name": names,
            "ind": ind,
            "district": dist,
            "lon": lon,
            "lat": lat,
            "cell": cell,
            "reg_status": reg_status,
            "published": published,
            "delivery": np.where(kinds == "", "clean", kinds),
        }
    )
    truth = pd.DataFrame(
        {
            "credit_code": credit,
            "legacy_reg_no": legacy,
            "enterprise_name": names,
            "industry_code": industries.industry_code.to_numpy()[ind],
            "district_code": np.array([d.code for d in DISTRICTS])[dist],
            "lon": lon_s,
            "lat": lat_s,
            "h3_cell": np.where(published, city.cells[cell], ""),
            "delivery": ent.delivery,
        }
    ).sort_values("credit_code", kind="stable")
    details = {
        "stale_duplicates_with_name_variant": int(n_stale),
        "exact_duplicates": int(n_exact),
        "with_legacy_reg_no": int(has_legacy.sum()),
        "individual_businesses": int(individual.sum()),
    }
    return counts, ent, truth, details


# ------------------------------------------------------------------------------------------ inspections
def generate_inspections(
    out_dir: Path,
    clock: Clock,
    seed: int,
    city,
    ent: pd.DataFrame,
    codes: pd.DataFrame,
    industries: pd.DataFrame,
    n: int,
):
    rng = rng_for(seed, "inspections")
    pool = ent[ent.published & (ent.reg_status != "注销")].reset_index(drop=True)
    rate = industries.inspection_rate.to_numpy()[pool.ind.to_numpy()]
    e = rng.choice(len(pool), n, p=rate / rate.sum())
    ind = pool.ind.to_numpy()[e]
    # hazard code: among the codes the enterprise's industry can have
    code_i = np.zeros(n, dtype=np.int64)
    prefixes = [set(p.split("|")) for p in industries.hazard_prefixes]
    for k in range(len(industries)):
        m = ind == k
        if not m.any():
            continue
        allowed = np.nonzero(codes.prefix.isin(prefixes[k]).to_numpy())[0]
        w = codes.weight.to_numpy()[allowed]
        code_i[m] = allowed[rng.choice(len(allowed), int(m.sum()), p=w / w.sum())]
    pre = codes.prefix.to_numpy()[code_i]
    major = rng.random(n) < np.where(np.isin(pre, ["WH", "KS", "JZ"]), 0.18, 0.06)
    # found on working days during office hours
    dw = np.where(clock.dow < 5, 1.0, np.where(clock.dow == 5, 0.15, 0.05))
    fday = np.sort(rng.choice(clock.days, n, p=dw / dw.sum()))
    start_days = _days(clock.start_date)
    f_days = start_days + fday
    f_time = clock.day_start[fday] + rng.integers(9 * 3600, 17 * 3600, n)
    dl = np.where(major, rng.choice([60, 90, 180], n, p=[0.4, 0.4, 0.2]), rng.choice([7, 15, 30], n, p=[0.3, 0.4, 0.3]))
    d_days = f_days + dl
    u = rng.random(n)
    on_time = f_days + 1 + (rng.random(n) * dl).astype(np.int64)
    late = d_days + np.ceil(rng.lognormal(np.log(10), 0.8, n)).astype(np.int64)
    r_days = np.where(u < 0.65, on_time, np.where(u < 0.85, late, -1))
    a_days = np.where(r_days >= 0, r_days + np.where(major, rng.integers(5, 31, n), rng.integers(0, 11, n)), -1)
    end_days = start_days + clock.days  # first day after the window
    r_days = np.where(r_days >= end_days, -1, r_days)
    a_days = np.where((r_days < 0) | (a_days >= end_days), -1, a_days)
    r_time = clock.day_start[np.clip(r_days - start_days, 0, clock.days - 1)] + rng.integers(9 * 3600, 18 * 3600, n)
    a_time = clock.day_start[np.clip(a_days - start_days, 0, clock.days - 1)] + rng.integers(9 * 3600, 18 * 3600, n)
    m_f = clock.month_index(f_time)
    m_r = np.where(r_days >= 0, clock.month_index(r_time), -1)
    m_a = np.where(a_days >= 0, clock.month_index(a_time), -1)

    local_f = clock.local_seconds(f_time)
    ymd = fmt_time(local_f, "ymd")
    seq = pd.Series(np.arange(n)).groupby(fday).cumcount().to_numpy() + 1
    hid = np.char.add(np.char.add("YH", ymd), zfill(seq.astype(str), 5)).astype(object)

    kinds = np.full(n, "", dtype=object)
    for k, r in (
        ("invalid_timestamp", 0.005),
        ("time_order_violation", 0.005),
        ("unmapped_code", 0.005),
        ("unknown_enterprise", 0.006),
    ):
        cand = np.nonzero(kinds == "")[0]
        kinds[rng.choice(cand, min(len(cand), corruption_count(n, r)), replace=False)] = k

    # enterprise reference: legacy number where the registry records one (40 %), else credit code
    credit = pool.credit_code.to_numpy()[e]
    legacy = pool.legacy_reg_no.to_numpy()[e]
    use_legacy = (legacy != "") & (rng.random(n) < 0.4)
    ent_id = np.where(use_legacy, legacy, credit).astype(object)
    m = np.nonzero(kinds == "unknown_enterprise")[0]
    fake_credit = people.credit_codes(rng, len(m), np.full(len(m), "420100"), np.zeros(len(m), bool))
    fake_legacy = people.legacy_reg_numbers(rng, len(m), np.full(len(m), "420100"))
    for j, i in enumerate(m):
        ent_id[i] = [people.corrupt_credit_code(rng, credit[i]), fake_credit[j], fake_legacy[j]][j % 3]
    ent_name = people.name_variant(rng, pool.name.to_numpy()[e])
    hcode = codes.source_code.to_numpy()[code_i].astype(object)
    hdesc = codes.source_label.to_numpy()[code_i].astype(object)
    m = np.nonzero(kinds == "unmapped_code")[0]
    for j, i in enumerate(m):
        hcode[i], hdesc[i] = [("QT-99", "其他隐患"), ("XX-00", "待分类"), ("YH-000", "其他")][j % 3]

    style = rng.choice(["date", "slash_date", "zh_date"], n, p=[0.6, 0.25, 0.15])
    inspector = np.char.add("AJ", zfill(rng.integers(1, 400, n).astype(str), 4)).astype(object)
    dname, _ = district_names(rng, pool.district.to_numpy()[e], {"official_zh": 0.9, "short_zh": 0.1})
    sev = np.where(major, "重大", "一般").astype(object)

    def fmt_dates(days: np.ndarray, rows: np.ndarray) -> np.ndarray:
        out = np.full(len(rows), "", dtype=object)
        for st in ("date", "slash_date", "zh_date"):
            m2 = (style[rows] == st) & (days >= 0)
            out[m2] = fmt_time(days[m2] * DAY, st)
        return out

    def make_rows(rows: np.ndarray, with_r: np.ndarray, with_a: np.ndarray, upd: np.ndarray, file_m: np.ndarray):
        r = np.where(with_r, r_days[rows], -1)
        a = np.where(with_a, a_days[rows], -1)
        status = np.where(a >= 0, 2, np.where(r >= 0, 1, 0))
        return pd.DataFrame(
            {
                "hazard_id": hid[rows],
                "enterprise_id": ent_id[rows],
                "enterprise_name": ent_name[rows],
                "hazard_code": hcode[rows],
                "hazard_desc": hdesc[rows],
                "severity": sev[rows],
                "found_date": fmt_dates(f_days[rows], rows),
                "rectify_deadline": fmt_dates(d_days[rows], rows),
                "rectified_date": fmt_dates(r, rows),
                "accepted_date": fmt_dates(a, rows),
                "status": np.array(HAZ_STATUS, dtype=object)[status],
                "inspector_id": inspector[rows],
                "district": dname[rows],
                "updated_at": fmt_time(clock.local_seconds(upd), "iso_space"),
                "_file": file_m,
                "_key": upd,
            }
        )

    allr = np.arange(n)
    clean = kinds == ""
    # corrupted hazards are delivered once, in their first month, with the state known then
    r0 = (m_r == m_f) & (m_r >= 0)
    a0 = (m_a == m_f) & (m_a >= 0)
    upd0 = np.where(a0, a_time, np.where(r0, r_time, f_time))
    first = make_rows(allr, r0, a0, upd0, m_f)
    m = np.nonzero(kinds == "invalid_timestamp")[0]
    bad = ["", "待定", f"{clock.start_date.year}-02-30", "0000-00-00", "2O25-01-01"]
    first.loc[m, "found_date"] = [bad[j % len(bad)] for j in range(len(m))]
    m = np.nonzero(kinds == "time_order_violation")[0]
    before = f_days[m] - rng.integers(3, 30, len(m))
    first.loc[m, "rectified_date"] = fmt_dates(before, m)
    first.loc[m, "accepted_date"] = ""
    first.loc[m, "status"] = HAZ_STATUS[1]
    s1 = np.nonzero(clean & (m_r > m_f))[0]
    second = make_rows(
        s1, np.ones(len(s1), bool), m_a[s1] == m_r[s1], np.where(m_a[s1] == m_r[s1], a_time[s1], r_time[s1]), m_r[s1]
    )
    s2 = np.nonzero(clean & (m_a > np.maximum(m_r, m_f)))[0]
    third = make_rows(s2, np.ones(len(s2), bool), np.ones(len(s2), bool), a_time[s2], m_a[s2])
    cand = np.nonzero(clean)[0]
    n_exact = min(len(cand), max(2, int(round(0.005 * len(cand)))))
    ex = np.sort(rng.choice(cand, n_exact, replace=False))
    exact = first.iloc[ex].copy()
    exact["_key"] = exact["_key"] + rng.integers(1, 3 * 86400, n_exact)
    rows = in_delivery_order(first, second, third, exact)
    counts = SourceCounts()
    for k in range(len(clock.months)):
        part = rows[rows._file == k]
        # the bureau exports from Excel: UTF-8 with a byte-order mark
        write_bytes(
            out_dir / "inspections" / f"hazards_{clock.month_label(k)}.csv",
            b"\xef\xbb\xbf" + csv_text(part[HAZ_COLUMNS]).encode("utf-8"),
        )
        counts.files += 1
    counts.rows_delivered = len(rows)
    counts.duplicates = len(s1) + len(s2) + n_exact
    counts.published = int(clean.sum())
    counts.quarantined = {k: int((kinds == k).sum()) for k in HAZ_QUARANTINE}
    counts.check("hazard_inspections")

    iso = lambda d: np.where(d >= 0, fmt_time(np.maximum(d, 0) * DAY, "date"), "")  # noqa: E731
    truth = pd.DataFrame(
        {
            "hazard_id": hid,
            "credit_code": credit,
            "hazard_code": codes.source_code.to_numpy()[code_i],
            "subcategory_code": codes.subcategory_code.to_numpy()[code_i],
            "severity": np.where(major, "major", "general"),
            "found_date": iso(f_days),
            "rectify_deadline": iso(d_days),
            "rectified_date": iso(r_days),
            "accepted_date": iso(a_days),
            "final_status": np.array(HAZ_STATUS)[np.where(a_days >= 0, 2, np.where(r_days >= 0, 1, 0))],
            "overdue_open": (r_days < 0) & (d_days < end_days - 1),
            "closed_late": (r_days >= 0) & (r_days > d_days),
            "h3_cell": city.cells[pool.cell.to_numpy()[e]],
            "delivery": np.where(kinds == "", "clean", kinds),
        }
    )
    details = {
        "revision_rows": int(len(s1) + len(s2)),
        "exact_duplicates": int(n_exact),
        "enterprise_id_legacy_reg_no": int(use_legacy.sum()),
        "open_overdue_at_window_end": int(((r_days < 0) & (d_days < end_days - 1) & clean).sum()),
        "closed_late": int(((r_days >= 0) & (r_days > d_days) & clean).sum()),
        "major": int((major & clean).sum()),
    }
    return counts, truth, details


# ------------------------------------------------------------------------------------------ one more day
NEW_REGISTRATIONS_PER_YEAR = 0.10  # of the registry's size
DEREGISTRATIONS_PER_YEAR = 0.02
ENT_RATES = {"invalid_credit_code": 0.005, "coordinates_outside_city": 0.003}
HAZ_RATES = {
    "invalid_timestamp": 0.005,
    "time_order_violation": 0.005,
    "unmapped_code": 0.005,
    "unknown_enterprise": 0.006,
}
ENT_TRUTH_COLUMNS = [
    "credit_code",
    "legacy_reg_no",
    "enterprise_name",
    "industry_code",
    "district_code",
    "lon",
    "lat",
    "h3_cell",
    "delivery",
    "reg_status",
    "change",
]


def _office_time(rng: np.random.Generator, clock: Clock, n: int, lo_h: int = 9, hi_h: int = 18) -> np.ndarray:
    return clock.t0 + rng.integers(lo_h * 3600, hi_h * 3600, n)


def registry_day(
    out_dir: Path,
    clock: Clock,
    seed: int,
    city,
    industries: pd.DataFrame,
    n_registry: int,
    active: pd.DataFrame,
    taken: set[str],
    max_share: float,
):
    """The registry's daily delta (`clock`: a DayClock): the enterprises registered that day and the
    deregistrations of earlier ones (their latest row again with reg_status 注销, a revision), in the
    snapshot's columns and habits: name variants, the same corruption kinds, an exact duplicate line.
    `active`: the latest delivered row of every published enterprise still registered."""
    day = clock.start_date.isoformat()
    rng = rng_for(seed, f"enterprise:{day}")
    # at least one a day: the silver gate takes no delivery without a publishable row
    n_new = max(1, int(rng.poisson(n_registry * NEW_REGISTRATIONS_PER_YEAR / 365)))
    n_gone = min(len(active), int(rng.poisson(n_registry * DEREGISTRATIONS_PER_YEAR / 365)))
    e = _draw_enterprises(rng, clock, city, industries, n_new, frozenset(taken))
    e["est"] = np.full(n_new, _days(clock.start_date))  # founded today: no pre-2015 legacy number
    e["legacy"] = np.full(n_new, "", dtype=object)
    e["reg_status"] = np.full(n_new, "存续", dtype=object)
    e["upd"] = _office_time(rng, clock, n_new)
    kinds = assign_kinds(rng, n_new, ENT_RATES, minimum=1, max_share=max_share)
    credit_out = e["credit"].copy()
    for j, i in enumerate(np.nonzero(kinds == "invalid_credit_code")[0]):
        credit_out[i] = people.corrupt_credit_code(rng, e["credit"][i]) if j % 3 else e["credit"][i][:17]
    lon_s = np.array(fmt_fixed(e["lon"], 6), dtype=object)
    lat_s = np.array(fmt_fixed(e["lat"], 6), dtype=object)
    m = kinds == "coordinates_outside_city"
    fl, ft = city.far_outside(rng, int(m.sum()))
    lon_s[m], lat_s[m] = fmt_fixed(fl, 6), fmt_fixed(ft, 6)
    typed = e["names"].copy()
    vm = rng.random(n_new) < 0.10
    typed[vm] = people.name_variant(rng, e["names"][vm])
    new = _registry_rows(e, credit_out, typed, lon_s, lat_s, industries, clock)
    published = kinds == ""
    exact = new.iloc[pick_duplicates(rng, published, 0.003, minimum=1)]
    gone = active.iloc[np.sort(rng.choice(len(active), n_gone, replace=False))].copy()
    gone["reg_status"] = "注销"
    gone["updated_at"] = fmt_time(clock.local_seconds(_office_time(rng, clock, n_gone)), "iso_space")
    rows = pd.concat([new, exact, gone[ENT_COLUMNS]], ignore_index=True)
    rows = rows.iloc[rng.permutation(len(rows))]
    write_csv(out_dir / "enterprise" / f"enterprise_registry_{day}.csv", rows[ENT_COLUMNS])
    counts = SourceCounts(
        files=1,
        rows_delivered=len(rows),
        duplicates=len(exact) + n_gone,
        published=int(published.sum()),
        quarantined={k: int((kinds == k).sum()) for k in ENT_QUARANTINE},
    )
    counts.check("enterprise_registry")
    codes = np.array([d.code for d in DISTRICTS])
    truth = pd.DataFrame(
        {
            "credit_code": e["credit"],
            "legacy_reg_no": e["legacy"],
            "enterprise_name": e["names"],
            "industry_code": industries.industry_code.to_numpy()[e["ind"]],
            "district_code": codes[e["dist"]],
            "lon": lon_s,
            "lat": lat_s,
            "h3_cell": np.where(published, city.cells[e["cell"]], ""),
            "delivery": np.where(published, "clean", kinds),
            "reg_status": e["reg_status"],
            "change": "registered",
        }
    )
    truth = pd.concat(
        [truth, gone.assign(delivery="clean", change="deregistered").reindex(columns=ENT_TRUTH_COLUMNS)],
        ignore_index=True,
    ).sort_values("credit_code", kind="stable")
    details = {"registered": n_new, "deregistered": n_gone, "exact_duplicates": len(exact)}
    return counts, truth, details


def _date_style(found: pd.Series) -> np.ndarray:
    """How a delivered hazard row spells its dates (the inspector's Excel habit), from its found_date."""
    return np.where(found.str.contains("年"), "zh_date", np.where(found.str.contains("/"), "slash_date", "date"))


def inspections_day(
    out_dir: Path,
    clock: Clock,
    seed: int,
    pool: pd.DataFrame,
    codes: pd.DataFrame,
    industries: pd.DataFrame,
    expected_new: float,
    earlier: pd.DataFrame,
    max_share: float,
):
    """The work-safety bureau's daily extract (`clock`: a DayClock): the hazards found that day (office
    hours; `expected_new` of them on average), and every earlier hazard rectified or accepted that day
    (its latest row again with the new date and status: a revision), with the monthly files' habits.

    `pool`: the enterprises inspectors visit (credit_code, legacy_reg_no, name, ind, district, h3_cell).
    `earlier`: open or not yet accepted clean hazards: their latest delivered row plus found/deadline/
    rectified/accepted as day numbers (-1: not yet), `major`, and their truth columns."""
    day = clock.start_date
    rng = rng_for(seed, f"inspections:{day.isoformat()}")
    today = _days(day)
    # --- earlier hazards rectified or accepted today: on time spread over the deadline, late ones slowly
    is_open = earlier.rectified.to_numpy() < 0
    span = np.maximum(1, earlier.deadline.to_numpy() - earlier.found.to_numpy())
    p_rect = np.where(today <= earlier.deadline.to_numpy(), 0.65 / span, 0.05)
    p_acc = np.where(earlier.major.to_numpy(), 1 / 18, 1 / 6)
    u = rng.random(len(earlier))
    moved = np.where(is_open, u < p_rect, u < p_acc)
    # --- hazards found today (at least one when nothing else moved: the gate takes no empty delivery)
    n = int(rng.poisson(expected_new))
    n = max(n, 0 if moved.any() else 1)
    rate = industries.inspection_rate.to_numpy()[pool.ind.to_numpy()]
    e = rng.choice(len(pool), n, p=rate / rate.sum())
    ind = pool.ind.to_numpy()[e]
    code_i = np.zeros(n, dtype=np.int64)
    prefixes = [set(p.split("|")) for p in industries.hazard_prefixes]
    for k in range(len(industries)):
        m = ind == k
        if m.any():
            allowed = np.nonzero(codes.prefix.isin(prefixes[k]).to_numpy())[0]
            w = codes.weight.to_numpy()[allowed]
            code_i[m] = allowed[rng.choice(len(allowed), int(m.sum()), p=w / w.sum())]
    pre = codes.prefix.to_numpy()[code_i]
    major = rng.random(n) < np.where(np.isin(pre, ["WH", "KS", "JZ"]), 0.18, 0.06)
    f_time = np.sort(_office_time(rng, clock, n, 9, 17))
    dl = np.where(major, rng.choice([60, 90, 180], n, p=[0.4, 0.4, 0.2]), rng.choice([7, 15, 30], n, p=[0.3, 0.4, 0.3]))
    d_days = today + dl
    ymd = day.strftime("%Y%m%d")
    hid = np.array([f"YH{ymd}{i:05d}" for i in range(1, n + 1)], dtype=object)
    kinds = assign_kinds(rng, n, HAZ_RATES, minimum=1, max_share=max_share)
    credit = pool.credit_code.to_numpy()[e]
    legacy = pool.legacy_reg_no.to_numpy()[e]
    ent_id = np.where((legacy != "") & (rng.random(n) < 0.4), legacy, credit).astype(object)
    m = np.nonzero(kinds == "unknown_enterprise")[0]
    fake_credit = people.credit_codes(rng, len(m), np.full(len(m), "420100"), np.zeros(len(m), bool))
    fake_legacy = people.legacy_reg_numbers(rng, len(m), np.full(len(m), "420100"))
    for j, i in enumerate(m):
        ent_id[i] = [people.corrupt_credit_code(rng, credit[i]), fake_credit[j], fake_legacy[j]][j % 3]
    hcode = codes.source_code.to_numpy()[code_i].astype(object)
    hdesc = codes.source_label.to_numpy()[code_i].astype(object)
    for j, i in enumerate(np.nonzero(kinds == "unmapped_code")[0]):
        hcode[i], hdesc[i] = [("QT-99", "其他隐患"), ("XX-00", "待分类"), ("YH-000", "其他")][j % 3]
    style = rng.choice(["date", "slash_date", "zh_date"], n, p=[0.6, 0.25, 0.15])
    dname, _ = district_names(rng, pool.district.to_numpy()[e], {"official_zh": 0.9, "short_zh": 0.1})

    def spell(days: np.ndarray, styles: np.ndarray) -> np.ndarray:
        out = np.full(len(days), "", dtype=object)
        for st in ("date", "slash_date", "zh_date"):
            m2 = (styles == st) & (days >= 0)
            out[m2] = fmt_time(days[m2] * DAY, st)
        return out

    found = spell(np.full(n, today), style)
    rectified = np.full(n, "", dtype=object)
    status = np.full(n, HAZ_STATUS[0], dtype=object)
    bad = ["", "待定", f"{day.year}-02-30", "0000-00-00", "2O25-01-01"]
    m = np.nonzero(kinds == "invalid_timestamp")[0]
    found[m] = [bad[j % len(bad)] for j in range(len(m))]
    m = np.nonzero(kinds == "time_order_violation")[0]
    rectified[m] = spell(today - rng.integers(3, 30, len(m)), style[m])
    status[m] = HAZ_STATUS[1]
    first = pd.DataFrame(
        {
            "hazard_id": hid,
            "enterprise_id": ent_id,
            "enterprise_name": people.name_variant(rng, pool.name.to_numpy()[e]),
            "hazard_code": hcode,
            "hazard_desc": hdesc,
            "severity": np.where(major, "重大", "一般").astype(object),
            "found_date": found,
            "rectify_deadline": spell(d_days, style),
            "rectified_date": rectified,
            "accepted_date": np.full(n, "", dtype=object),
            "status": status,
            "inspector_id": np.char.add("AJ", zfill(rng.integers(1, 400, n).astype(str), 4)).astype(object),
            "district": dname,
            "updated_at": fmt_time(clock.local_seconds(f_time), "iso_space"),
            "_file": 0,
            "_key": f_time,
        }
    )
    clean = kinds == ""
    exact = first.iloc[pick_duplicates(rng, clean, 0.005, minimum=1)].copy()
    exact["_key"] = exact["_key"] + rng.integers(1, 3600, len(exact))
    rev = earlier[moved].copy()
    rev_open = is_open[moved]
    styles = _date_style(rev.found_date)
    today_col = np.full(len(rev), today)
    rev.loc[rev_open, "rectified_date"] = spell(today_col[rev_open], styles[rev_open])
    rev.loc[~rev_open, "accepted_date"] = spell(today_col[~rev_open], styles[~rev_open])
    rev["status"] = np.where(rev_open, HAZ_STATUS[1], HAZ_STATUS[2])
    rev_time = _office_time(rng, clock, len(rev))
    rev["updated_at"] = fmt_time(clock.local_seconds(rev_time), "iso_space")
    rev["_file"], rev["_key"] = 0, rev_time
    rows = in_delivery_order(first, exact, rev[HAZ_COLUMNS + ["_file", "_key"]])
    write_bytes(
        out_dir / "inspections" / f"hazards_{day.isoformat()}.csv",
        b"\xef\xbb\xbf" + csv_text(rows[HAZ_COLUMNS]).encode("utf-8"),
    )
    counts = SourceCounts(
        files=1,
        rows_delivered=len(rows),
        duplicates=len(exact) + len(rev),
        published=int(clean.sum()),
        quarantined={k: int((kinds == k).sum()) for k in HAZ_QUARANTINE},
    )
    counts.check("hazard_inspections")

    iso = lambda d: np.where(d >= 0, fmt_time(np.maximum(d, 0) * DAY, "date"), "")  # noqa: E731
    new_truth = pd.DataFrame(
        {
            "hazard_id": hid,
            "credit_code": credit,
            "hazard_code": codes.source_code.to_numpy()[code_i],
            "subcategory_code": codes.subcategory_code.to_numpy()[code_i],
            "severity": np.where(major, "major", "general"),
            "found_date": iso(np.full(n, today)),
            "rectify_deadline": iso(d_days),
            "rectified_date": "",
            "accepted_date": "",
            "final_status": HAZ_STATUS[0],
            "overdue_open": False,
            "closed_late": False,
            "h3_cell": pool.h3_cell.to_numpy()[e],
            "delivery": np.where(clean, "clean", kinds),
        }
    )
    r_days = np.where(rev_open, today, rev.rectified.to_numpy())
    a_days = np.where(rev_open, rev.accepted.to_numpy(), today)
    d_rev = rev.deadline.to_numpy()
    rev_truth = rev[["hazard_id", "credit_code", "hazard_code", "subcategory_code"]].assign(
        severity=np.where(rev.major.to_numpy(), "major", "general"),
        found_date=iso(rev.found.to_numpy()),
        rectify_deadline=iso(d_rev),
        rectified_date=iso(r_days),
        accepted_date=iso(a_days),
        final_status=np.where(a_days >= 0, HAZ_STATUS[2], HAZ_STATUS[1]),
        overdue_open=False,
        closed_late=r_days > d_rev,
        h3_cell=rev.h3_cell.to_numpy(),
        delivery="clean",
    )
    truth = pd.concat([new_truth, rev_truth], ignore_index=True).sort_values("hazard_id", kind="stable")
    details = {
        "found": n,
        "rectified": int(rev_open.sum()),
        "accepted": int((~rev_open).sum()),
        "exact_duplicates": len(exact),
        "major": int((major & clean).sum()),
    }
    return counts, truth, details
