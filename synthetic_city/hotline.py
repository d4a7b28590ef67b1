"""12345 citizen hotline tickets: monthly CSV files encoded in GBK, free-text categories in Chinese or
English, complaint text, caller PII; some tickets report the same real event as a police incident or
a fire call (cross-department duplicates, recorded in truth/cross_department_links.csv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import people
from ._delivery import DayDelivery, assign_kinds, extraction_cap, in_delivery_order, pick_duplicates, plan_revisions
from ._util import Clock, SourceCounts, fmt_fixed, fmt_time, rng_for, write_csv, zfill
from .geo import DISTRICTS, district_names, lonlat_to_km
from .police import invalid_timestamps, out_of_range_timestamps

COLUMNS = [
    "ticket_no",
    "accepted_at",
    "channel",
    "category",
    "content",
    "caller_name",
    "caller_phone",
    "district",
    "address",
    "lon",
    "lat",
    "status",
    "updated_at",
]
QUARANTINE_KINDS = [
    "invalid_timestamp",
    "timestamp_out_of_range",
    "unmapped_code",
    "coordinates_outside_city",
    "unknown_district",
]
RATES = {
    "invalid_timestamp": 0.005,
    "timestamp_out_of_range": 0.003,
    "unmapped_code": 0.006,
    "coordinates_outside_city": 0.003,
    "unknown_district": 0.004,
    "unknown_typo_with_coordinates": 0.003,
}
DISTRICT_KIND_WEIGHTS = {
    "official_zh": 0.70,
    "short_zh": 0.15,
    "english": 0.03,
    "pinyin": 0.04,
    "known_typo": 0.05,
    "code": 0.03,
}
UNMAPPED = ["其他", "Other", "咨询类", "投诉-其他", "建议"]
STATUSES = ["已受理", "办理中", "已办结"]
CHANNELS = ["电话", "网站", "APP", "微信"]
LINK_RATE = {"police_incidents": 0.05, "fire_calls": 0.08}

TEMPLATES = {
    "PO": [
        "市民反映{addr}{cat}问题，{when}，严重影响周边居民正常生活，要求相关部门尽快处理。",
        "来电人称{addr}存在{cat}情况，已持续多日，多次反映未果，希望执法部门到场查处。",
        "{when}{addr}{cat}，噪音和环境问题突出，请求核实处理并回复。",
    ],
    "UL": [
        "市民反映{addr}{cat}，{when}至今未恢复，家中老人小孩生活不便，请尽快抢修。",
        "来电反映{addr}出现{cat}问题，影响整栋楼住户，希望供应单位派人处理。",
        "{addr}{cat}，{when}开始，请相关单位尽快排查原因。",
    ],
    "TR": [
        "市民反映{addr}{cat}，{when}，存在安全隐患，要求交管及城管部门处理。",
        "来电人称{addr}路段{cat}，车辆通行困难，请尽快处置。",
        "{addr}{cat}问题严重，{when}已有车辆受损，请求维修。",
    ],
    "PH": [
        "市民反映{addr}附近商户存在{cat}问题，{when}，担心影响健康，请市场监管部门查处。",
        "来电人称在{addr}就餐后身体不适，怀疑{cat}，要求调查。",
        "{addr}{cat}问题突出，{when}，请卫生部门处理。",
    ],
    "NH": [
        "市民反映{addr}{cat}，{when}，积水较深，行人车辆无法通行，请求排涝。",
        "来电人称{addr}出现{cat}情况，存在安全风险，请尽快派人查看。",
        "{when}{addr}{cat}，请相关部门及时处置。",
    ],
    "FE": [
        "市民反映{addr}{cat}，{when}，存在严重消防安全隐患，请消防部门检查。",
        "来电人称{addr}楼道内{cat}，多次劝阻无效，担心引发火灾。",
        "{addr}{cat}问题，请求物业和消防部门督促整改。",
    ],
    "PS": [
        "市民反映{addr}{cat}，{when}，希望公安部门加强巡逻。",
        "来电人称在{addr}遇到{cat}情况，请求警方介入处理。",
        "{when}{addr}发生{cat}，来电人情绪激动，要求尽快处理。",
    ],
    "PR": [
        "市民反映{addr}{cat}，{when}，工人作业无安全防护，请安监部门检查。",
        "来电人称{addr}存在{cat}，担心发生事故，请尽快核查。",
        "{addr}{cat}问题，{when}，请主管部门督促整改。",
    ],
}
WHEN = ["今天上午", "今天下午", "今天晚上", "昨晚开始", "近一周来", "每天夜间", "从上周起", "凌晨时分", "刚才"]


def _landlines(rng, n):
    return np.char.add("027-8", zfill(rng.integers(0, 10_000_000, n).astype(str), 7)).astype(object)


def generate(
    out_dir: Path,
    ev: pd.DataFrame,
    clock: Clock,
    seed: int,
    cats: pd.DataFrame,
    city,
    linkables: dict[str, pd.DataFrame],
    daily: DayDelivery | None = None,
):
    """The monthly files of the window, or with `daily` (and a DayClock) one daily extract."""
    stream = daily.stream if daily else "hotline"
    rng = rng_for(seed, stream)
    cats = cats.reset_index(drop=True)
    cat_of_code = {c: i for i, c in enumerate(cats.category_id)}
    # --- the hotline's own events
    own = pd.DataFrame(
        {
            "event_id": ev.event_id.to_numpy(),
            "t": ev.t.to_numpy().astype(np.int64),
            "cat": [cat_of_code[c] for c in ev.code],
            "lon": ev.lon.to_numpy(),
            "lat": ev.lat.to_numpy(),
            "district": ev.district.to_numpy(),
            "cell": ev.cell.to_numpy(),
            "subcategory": ev.subcategory.to_numpy(),
            "domain": ev.domain.to_numpy(),
            "link_source": "",
            "link_record": "",
        }
    )
    # --- linked tickets: a citizen also calls 12345 about a police incident or a fire call
    sub_to_cats: dict[str, list[int]] = {}
    catg_to_cats: dict[str, list[int]] = {}
    for i, s in enumerate(cats.subcategory_code):
        sub_to_cats.setdefault(s, []).append(i)
        catg_to_cats.setdefault(s[:4], []).append(i)
    linked = []
    for src in sorted(linkables):
        lk = linkables[src]
        lrng = rng_for(seed, f"{stream}:links:{src}")
        options = [sub_to_cats.get(s) or catg_to_cats.get(s[:4]) or [] for s in lk.subcategory]
        ok = np.array([len(o) > 0 for o in options], dtype=bool) & (lrng.random(len(lk)) < LINK_RATE[src])
        idx = np.nonzero(ok)[0]
        if len(idx) == 0:
            continue
        sel = lk.iloc[idx].reset_index(drop=True)
        cat = np.array([options[i][int(lrng.integers(0, len(options[i])))] for i in idx])
        dt = lrng.integers(-5 * 60, 25 * 60, len(sel))
        t = sel.t.to_numpy() + dt
        lon, lat, d = city.jitter_inside(lrng, sel.lon.to_numpy(), sel.lat.to_numpy(), 150.0)
        keep = (t >= clock.t0) & (t < clock.t1)
        cell = np.array([city.cell_index.get(c, -1) for c in _h3_str(city, lon, lat)], dtype=np.int64)
        part = pd.DataFrame(
            {
                "event_id": sel.event_id,
                "t": t,
                "cat": cat,
                "lon": lon,
                "lat": lat,
                "district": d,
                "cell": cell,
                "subcategory": cats.subcategory_code.to_numpy()[cat],
                "domain": cats.subcategory_code.str[:2].to_numpy()[cat],
                "link_source": src,
                "link_record": sel.record_id,
                "_ref_t": sel.t.to_numpy(),
                "_ref_lon": sel.lon.to_numpy(),
                "_ref_lat": sel.lat.to_numpy(),
            }
        )
        linked.append(part[keep & (cell >= 0)])
    tk = pd.concat([own] + linked, ignore_index=True)
    for col in ("_ref_t", "_ref_lon", "_ref_lat"):  # a small day may have no linked ticket at all
        if col not in tk:
            tk[col] = np.nan
    tk = tk.sort_values(["t", "event_id", "link_source"], kind="stable").reset_index(drop=True)
    n = len(tk)
    is_link = (tk.link_source != "").to_numpy()

    t = tk.t.to_numpy().astype(np.int64).copy()
    style = rng.choice(3, n, p=[0.70, 0.20, 0.10])
    t[style > 0] = t[style > 0] // 60 * 60
    local = clock.local_seconds(t)
    month = clock.month_index(t)
    dist = tk.district.to_numpy().astype(np.int64)
    own_only = {k: ~is_link for k in RATES}
    kinds = (
        assign_kinds(rng, n, RATES, own_only, minimum=daily.min_per_kind, max_share=daily.max_corrupt_share)
        if daily
        else assign_kinds(rng, n, RATES, eligible=own_only)
    )

    ymd = fmt_time(local, "ymd")
    day = clock.day_index(t)
    seq = pd.Series(np.arange(n)).groupby(day).cumcount().to_numpy() + 1
    ticket = np.char.add(np.char.add("GD", ymd), zfill(seq.astype(str), 6)).astype(object)

    acc = np.empty(n, dtype=object)
    for s_i, st in enumerate(["iso_space", "zh_minute", "slash_minute"]):
        m = style == s_i
        acc[m] = fmt_time(local[m], st)
    m = kinds == "invalid_timestamp"
    acc[m] = invalid_timestamps(rng, clock.start_date.year, int(m.sum()))
    m = kinds == "timestamp_out_of_range"
    acc[m] = out_of_range_timestamps(rng, local[m], allow_iso_z=False)

    channel_i = rng.choice(4, n, p=[0.60, 0.10, 0.20, 0.10])
    has_coord = np.where(channel_i >= 2, rng.random(n) < 0.9, rng.random(n) < 0.3) | is_link
    has_coord |= np.isin(kinds, ["coordinates_outside_city", "unknown_typo_with_coordinates"])
    has_coord &= kinds != "unknown_district"
    lon_s = np.array(fmt_fixed(tk.lon.to_numpy(), 6), dtype=object)
    lat_s = np.array(fmt_fixed(tk.lat.to_numpy(), 6), dtype=object)
    lon_s[~has_coord], lat_s[~has_coord] = "", ""
    m = kinds == "coordinates_outside_city"
    fl, ft = city.far_outside(rng, int(m.sum()))
    lon_s[m], lat_s[m] = fmt_fixed(fl, 6), fmt_fixed(ft, 6)
    has_cell = has_coord & (kinds != "coordinates_outside_city")

    cat = tk.cat.to_numpy().astype(np.int64)  # int also when the day has no ticket
    en = rng.random(n) < 0.2
    category = np.where(en, cats.label_en.to_numpy()[cat], cats.label_zh.to_numpy()[cat]).astype(object)
    m = kinds == "unmapped_code"
    category[m] = [UNMAPPED[i] for i in rng.integers(0, len(UNMAPPED), int(m.sum()))]

    dname, _ = district_names(rng, dist, DISTRICT_KIND_WEIGHTS)
    m = np.isin(kinds, ["unknown_district", "unknown_typo_with_coordinates"])
    sub = rng.integers(0, 2, n)
    dname[m] = [DISTRICTS[d].unknown_typos[s] for d, s in zip(dist[m], sub[m])]

    zh = np.array([d.name_zh for d in DISTRICTS], dtype=object)[dist]
    address = people.addresses(rng, zh)
    female = rng.random(n) < 0.5
    cname = people.names(rng, n, female)
    cphone = people.mobiles(rng, n)
    land = rng.random(n) < 0.05
    cphone[land] = _landlines(rng, int(land.sum()))
    anon = rng.random(n) < 0.04
    cname[anon] = "匿名"
    # complaint text (some with the caller's number or name inside: free-text PII)
    label_zh = cats.label_zh.to_numpy()[cat]
    dom = tk.domain.to_numpy()
    tpl_i = rng.integers(0, 3, n)
    when = np.array(WHEN)[rng.integers(0, len(WHEN), n)]
    content = np.array(
        [
            TEMPLATES[d][k].format(addr=a, cat=c.split("-")[-1], when=w)
            for d, k, a, c, w in zip(dom, tpl_i, address, label_zh, when)
        ],
        dtype=object,
    )
    pii_rows = np.sort(rng.choice(n, size=min(n, max(3, int(round(0.02 * n)))), replace=False))
    for i in pii_rows:
        content[i] = content[i] + (
            f"请回电{cphone[i]}，联系人{cname[i]}。" if i % 2 else f"来电人手机{people.mobiles(rng, 1)[0]}。"
        )

    status_i = rng.choice(3, n, p=[0.15, 0.25, 0.60])
    delay = (rng.lognormal(0, 1.0, n) * np.array([1.0, 24.0, 72.0])[status_i] * 3600).astype(np.int64) + 120
    upd = np.maximum(t, np.minimum(t + delay, extraction_cap(clock, month)))

    published = np.isin(kinds, ("", "unknown_typo_with_coordinates"))
    rev_rows, rev_upd = plan_revisions(rng, clock, month, published & (status_i < 2), 0.3)
    dup_rows = pick_duplicates(rng, published, 0.015)
    final_status = status_i.copy()
    final_status[rev_rows] = 2

    base = pd.DataFrame(
        {
            "ticket_no": ticket,
            "accepted_at": acc,
            "channel": np.array(CHANNELS, dtype=object)[channel_i],
            "category": category,
            "content": content,
            "caller_name": cname,
            "caller_phone": cphone,
            "district": dname,
            "address": address,
            "lon": lon_s,
            "lat": lat_s,
            "status": np.array(STATUSES, dtype=object)[status_i],
            "updated_at": fmt_time(clock.local_seconds(upd), "iso_space").astype(object),
        }
    )
    base["_file"], base["_key"] = month, t
    rev = base.iloc[rev_rows].copy()
    rev["status"] = STATUSES[2]
    rev["updated_at"] = fmt_time(clock.local_seconds(rev_upd), "iso_space").astype(object)
    rev["_file"], rev["_key"] = month[rev_rows] + 1, rev_upd
    dup = base.iloc[dup_rows].copy()
    dup["_key"] = t[dup_rows] + rng.integers(1, 2 * 86400, len(dup_rows))
    carried = [] if daily is None else [daily.revisions.assign(_file=0)]
    rows = in_delivery_order(base, rev, dup, *carried)

    counts = SourceCounts()
    for k in range(len(clock.months)):
        part = rows[rows._file == k]
        write_csv(out_dir / "hotline" / f"hotline_tickets_{clock.month_label(k)}.csv", part[COLUMNS], encoding="gbk")
        counts.files += 1
    counts.rows_delivered = len(rows)
    counts.duplicates = len(rev_rows) + len(dup_rows) + (len(daily.revisions) if daily else 0)
    counts.quarantined = {q: int((kinds == q).sum()) for q in QUARANTINE_KINDS}
    counts.published = int(published.sum())
    counts.published_without_cell = int((published & ~has_cell).sum())
    counts.check("hotline_tickets")

    pub = np.nonzero(published)[0]
    truth = pd.DataFrame(
        {
            "ticket_no": ticket[pub],
            "accepted_at_utc": fmt_time(t[pub], "iso_z"),
            "district_code": np.array([d.code for d in DISTRICTS])[dist[pub]],
            "subcategory_code": tk.subcategory.to_numpy()[pub],
            "h3_cell": np.where(has_cell[pub], city.cells[np.maximum(tk.cell.to_numpy()[pub], 0)], ""),
            "status": np.array(STATUSES)[final_status[pub]],
            "linked_source": tk.link_source.to_numpy()[pub],
            "linked_record_id": tk.link_record.to_numpy()[pub],
        }
    ).sort_values("ticket_no", kind="stable")
    li = np.nonzero(is_link)[0]
    lx, ly = lonlat_to_km(tk.lon.to_numpy()[li], tk.lat.to_numpy()[li])
    rx, ry = lonlat_to_km(tk._ref_lon.to_numpy()[li].astype(float), tk._ref_lat.to_numpy()[li].astype(float))
    links = pd.DataFrame(
        {
            "hotline_ticket_no": ticket[li],
            "other_source": tk.link_source.to_numpy()[li],
            "other_record_id": tk.link_record.to_numpy()[li],
            "event_id": tk.event_id.to_numpy()[li],
            "distance_m": np.round(np.hypot(lx - rx, ly - ry) * 1000, 1),
            "time_diff_s": t[li] - tk._ref_t.to_numpy()[li].astype(np.int64),
        }
    ).sort_values("hotline_ticket_no", kind="stable")
    own_rows = ~is_link
    record_map = pd.DataFrame(
        {
            "event_id": tk.event_id.to_numpy()[own_rows],
            "source": "hotline_tickets",
            "record_id": ticket[own_rows],
            "delivery": np.where(kinds == "", "clean", kinds)[own_rows],
            "t_reported": t[own_rows],
        }
    )
    pii = pd.DataFrame({"source": "hotline_tickets", "record_id": ticket[pii_rows], "field": "content"})
    details = {
        "revisions": int(len(rev_rows)),
        "exact_duplicates": int(len(dup_rows)),
        "cross_department_links": {s: int((tk.link_source == s).sum()) for s in sorted(linkables)},
        "published_with_unresolvable_district_name": int((kinds == "unknown_typo_with_coordinates").sum()),
        "category_in_english": int(en.sum()),
    }
    return counts, truth, links, record_map, pii, details


def _h3_str(city, lon, lat):
    import h3

    ints = city.h3_int(lon, lat)
    return [h3.int_to_str(int(v)) for v in ints]
