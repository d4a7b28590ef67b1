"""Police incident records (110 接处警): monthly UTF-8 CSV files with the department's own offence codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import people
from ._delivery import DayDelivery, assign_kinds, extraction_cap, in_delivery_order, pick_duplicates, plan_revisions
from ._util import Clock, SourceCounts, fmt_fixed, fmt_time, rng_for, write_csv, zfill
from .geo import DISTRICTS, district_names

COLUMNS = [
    "case_no",
    "report_time",
    "offence_code",
    "offence_desc",
    "district",
    "lon",
    "lat",
    "address",
    "reporter_name",
    "reporter_phone",
    "reporter_id_no",
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
    "invalid_timestamp": 0.006,
    "timestamp_out_of_range": 0.004,
    "unmapped_code": 0.005,
    "coordinates_outside_city": 0.004,
    "unknown_district": 0.003,
    # published, not quarantined:
    "missing_coordinates": 0.010,
    "unknown_typo_with_coordinates": 0.003,
}
DISTRICT_KIND_WEIGHTS = {
    "official_zh": 0.80,
    "short_zh": 0.07,
    "code": 0.04,
    "english": 0.02,
    "pinyin": 0.03,
    "known_typo": 0.04,
}
UNKNOWN_CODES = [
    ("9901", "其他警情"),
    ("9907", "未分类"),
    ("8802", "测试警情"),
    ("7700", "其他求助"),
    ("1999", "其他刑事"),
]
STATUSES = ["已受理", "处理中", "已结案"]
PUBLISHED_KINDS = ("", "missing_coordinates", "unknown_typo_with_coordinates")


def invalid_timestamps(rng, year: int, n: int) -> np.ndarray:
    opts = [
        f"{year}-13-45 25:61:00",
        "N/A",
        "",
        "昨天晚上",
        f"{year}-02-30 10:00:00",
        "0000-00-00 00:00:00",
        f"{year}/1/5 下午3点",
        "#VALUE!",
    ]
    return np.array(opts, dtype=object)[rng.integers(0, len(opts), n)]


def out_of_range_timestamps(rng, local_sec: np.ndarray, allow_iso_z: bool = True) -> np.ndarray:
    """Parseable but impossible: 1900, the Unix epoch, or the event's own date moved to 2099."""
    n = len(local_sec)
    base = fmt_time(local_sec, "iso_space").astype(object)
    out = np.empty(n, dtype=object)
    pick = rng.integers(0, 4, n)
    for i in range(n):
        s = base[i]
        if pick[i] == 0:
            out[i] = "1900-01-01 00:00:00"
        elif pick[i] == 1 or (pick[i] == 2 and not allow_iso_z):
            out[i] = "1970-01-01 08:00:00"
        elif pick[i] == 2:
            out[i] = "1970-01-01T00:00:00Z"
        else:
            md = s[5:10] if s[5:10] != "02-29" else "02-28"
            out[i] = "2099-" + md + s[10:]
    return out


def generate(
    out_dir: Path,
    ev: pd.DataFrame,
    clock: Clock,
    seed: int,
    crosswalk: pd.DataFrame,
    city,
    daily: DayDelivery | None = None,
):
    """The monthly files of the window, or with `daily` (and a DayClock) one daily extract."""
    rng = rng_for(seed, daily.stream if daily else "police")
    ev = ev.sort_values(["t", "event_id"]).reset_index(drop=True)
    n = len(ev)
    labels = dict(zip(crosswalk.source_code, crosswalk.source_label))
    t = ev.t.to_numpy().astype(np.int64).copy()
    style = rng.choice(4, n, p=[0.55, 0.20, 0.15, 0.10])
    t[style == 1] = t[style == 1] // 60 * 60  # no seconds in that format: true time is the minute
    local = clock.local_seconds(t)
    offset = local - t
    month = clock.month_index(t)
    dist = ev.district.to_numpy()
    kinds = (
        assign_kinds(rng, n, RATES, minimum=daily.min_per_kind, max_share=daily.max_corrupt_share)
        if daily
        else assign_kinds(rng, n, RATES)
    )

    # case numbers: JQ + local date + per-day sequence in time order
    ymd = fmt_time(local, "ymd")
    day = clock.day_index(t)
    seq = pd.Series(np.arange(n)).groupby(day).cumcount().to_numpy() + 1
    case_no = np.char.add(np.char.add("JQ", ymd), zfill(seq.astype(str), 6)).astype(object)

    # report_time
    rt = np.empty(n, dtype=object)
    for s_i, st in enumerate(["iso_space", "slash_minute", "iso_z", "iso_offset"]):
        m = style == s_i
        if st == "iso_z":
            rt[m] = fmt_time(t[m], "iso_z")
        elif st == "iso_offset":
            rt[m] = fmt_time(local[m], "iso_offset", offset[m])
        else:
            rt[m] = fmt_time(local[m], st)
    m = kinds == "invalid_timestamp"
    rt[m] = invalid_timestamps(rng, clock.start_date.year, int(m.sum()))
    m = kinds == "timestamp_out_of_range"
    rt[m] = out_of_range_timestamps(rng, local[m])

    # codes
    code = ev.code.to_numpy().astype(object).copy()
    desc = np.array([labels[c] for c in code], dtype=object)
    m = kinds == "unmapped_code"
    pick = rng.integers(0, len(UNKNOWN_CODES), int(m.sum()))
    code[m] = [UNKNOWN_CODES[i][0] for i in pick]
    desc[m] = [UNKNOWN_CODES[i][1] for i in pick]

    # coordinates
    lon_s = np.array(fmt_fixed(ev.lon.to_numpy(), 6), dtype=object)
    lat_s = np.array(fmt_fixed(ev.lat.to_numpy(), 6), dtype=object)
    m = kinds == "coordinates_outside_city"
    flon, flat = city.far_outside(rng, int(m.sum()))
    lon_s[m], lat_s[m] = fmt_fixed(flon, 6), fmt_fixed(flat, 6)
    m = np.isin(kinds, ["missing_coordinates", "unknown_district"])
    zero = rng.random(n) < 0.5
    lon_s[m & zero], lat_s[m & zero] = "0", "0"
    lon_s[m & ~zero], lat_s[m & ~zero] = "", ""
    has_cell = ~m & (kinds != "coordinates_outside_city")

    # district name variants
    dname, dkind = district_names(rng, dist, DISTRICT_KIND_WEIGHTS)
    m = np.isin(kinds, ["unknown_district", "unknown_typo_with_coordinates"])
    sub = rng.integers(0, 2, n)
    dname[m] = [DISTRICTS[d].unknown_typos[s] for d, s in zip(dist[m], sub[m])]
    dkind[m] = "unknown_typo"

    # address, reporter
    zh = np.array([d.name_zh for d in DISTRICTS], dtype=object)[dist]
    address = people.addresses(rng, zh)
    female = rng.random(n) < 0.45
    rname = people.names(rng, n, female)
    rphone = people.mobiles(rng, n)
    rid = people.id_numbers(rng, n, [d.code for d in DISTRICTS], clock.start_date.year, female)
    anon = rng.random(n) < 0.03
    rname[anon], rphone[anon], rid[anon] = "", "", ""
    phone_rows = np.sort(rng.choice(n, size=min(n, max(3, int(round(0.01 * n)))), replace=False))
    extra_phone = people.mobiles(rng, len(phone_rows))
    address[phone_rows] = [f"{a}（报警人电话{p}）" for a, p in zip(address[phone_rows], extra_phone)]

    # status and updated_at (the monthly export is taken at the end of the month)
    status_i = rng.choice(3, n, p=[0.15, 0.30, 0.55])
    median_h = np.array([0.5, 5.0, 20.0])[status_i]
    delay = (rng.lognormal(0, 0.9, n) * median_h * 3600).astype(np.int64) + 60
    cap = extraction_cap(clock, month)
    upd = np.maximum(t, np.minimum(t + delay, cap))

    published = np.isin(kinds, PUBLISHED_KINDS)
    rev_rows, rev_upd = plan_revisions(rng, clock, month, published & (status_i < 2), 0.12)
    rev_status = np.where(status_i[rev_rows] == 0, np.where(rng.random(len(rev_rows)) < 0.3, 1, 2), 2)
    dup_rows = pick_duplicates(rng, published, 0.01)
    final_status = status_i.copy()
    final_status[rev_rows] = rev_status

    upd_local = clock.local_seconds(upd)
    base = pd.DataFrame(
        {
            "case_no": case_no,
            "report_time": rt,
            "offence_code": code,
            "offence_desc": desc,
            "district": dname,
            "lon": lon_s,
            "lat": lat_s,
            "address": address,
            "reporter_name": rname,
            "reporter_phone": rphone,
            "reporter_id_no": rid,
            "status": np.array(STATUSES, dtype=object)[status_i],
            "updated_at": fmt_time(upd_local, "iso_space").astype(object),
        }
    )
    base["_file"] = month
    base["_key"] = t
    rev = base.iloc[rev_rows].copy()
    rev["status"] = np.array(STATUSES, dtype=object)[rev_status]
    rev["updated_at"] = fmt_time(clock.local_seconds(rev_upd), "iso_space").astype(object)
    rev["_file"] = month[rev_rows] + 1
    rev["_key"] = rev_upd
    dup = base.iloc[dup_rows].copy()
    dup["_key"] = t[dup_rows] + rng.integers(1, 3 * 86400, len(dup_rows))
    carried = [] if daily is None else [daily.revisions.assign(_file=0)]
    rows = in_delivery_order(base, rev, dup, *carried)

    counts = SourceCounts()
    for k in range(len(clock.months)):
        part = rows[rows._file == k]
        write_csv(out_dir / "police" / f"police_incidents_{clock.month_label(k)}.csv", part[COLUMNS])
        counts.files += 1
    counts.rows_delivered = len(rows)
    counts.duplicates = len(rev_rows) + len(dup_rows) + (len(daily.revisions) if daily else 0)
    counts.quarantined = {q: int((kinds == q).sum()) for q in QUARANTINE_KINDS}
    counts.published = int(published.sum())
    counts.published_without_cell = int((kinds == "missing_coordinates").sum())
    counts.check("police_incidents")

    pub = np.nonzero(published)[0]
    truth = pd.DataFrame(
        {
            "case_no": case_no[pub],
            "occurred_at_utc": fmt_time(t[pub], "iso_z"),
            "district_code": np.array([d.code for d in DISTRICTS])[dist[pub]],
            "subcategory_code": ev.subcategory.to_numpy()[pub],
            "h3_cell": np.where(has_cell[pub], city.cells[ev.cell.to_numpy()[pub]], ""),
            "status": np.array(STATUSES)[final_status[pub]],
        }
    ).sort_values("case_no", kind="stable")
    linkable = pd.DataFrame(
        {
            "record_id": case_no,
            "event_id": ev.event_id.to_numpy(),
            "t": t,
            "lon": ev.lon.to_numpy(),
            "lat": ev.lat.to_numpy(),
            "subcategory": ev.subcategory.to_numpy(),
            "domain": ev.domain.to_numpy(),
        }
    )
    linkable = linkable[(kinds == "") | (kinds == "unknown_typo_with_coordinates")].reset_index(drop=True)
    record_map = pd.DataFrame(
        {
            "event_id": ev.event_id.to_numpy(),
            "source": "police_incidents",
            "record_id": case_no,
            "delivery": np.where(kinds == "", "clean", kinds),
            "t_reported": t,
        }
    )
    pii = pd.DataFrame({"source": "police_incidents", "record_id": case_no[phone_rows], "field": "address"})
    details = {
        "revisions": int(len(rev_rows)),
        "exact_duplicates": int(len(dup_rows)),
        "published_with_unresolvable_district_name": int((kinds == "unknown_typo_with_coordinates").sum()),
        "district_name_kinds": {k: int(v) for k, v in sorted(pd.Series(dkind).value_counts().items())},
        "report_time_styles": {
            s: int((style == i).sum())
            for i, s in enumerate(["YYYY-MM-DD HH:MM:SS", "YYYY/MM/DD HH:MM", "ISO-Z", "ISO+offset"])
        },
        "addresses_with_phone_number": int(len(phone_rows)),
    }
    return counts, truth, linkable, record_map, pii, details
