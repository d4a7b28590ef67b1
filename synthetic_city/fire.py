"""Fire and rescue / EMS calls (119 CAD export): monthly JSON-lines files with the fire service's own
call-type codes and mixed time-zone habits per field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import people
from ._delivery import DayDelivery, assign_kinds, extraction_cap, pick_duplicates, plan_revisions
from ._util import Clock, SourceCounts, fmt_time, rng_for, write_bytes, zfill
from .geo import DISTRICTS, district_names

QUARANTINE_KINDS = [
    "invalid_timestamp",
    "timestamp_out_of_range",
    "unmapped_code",
    "coordinates_outside_city",
    "unknown_district",
    "time_order_violation",
]
RATES = {
    "invalid_timestamp": 0.005,
    "timestamp_out_of_range": 0.004,
    "unmapped_code": 0.004,
    "coordinates_outside_city": 0.004,
    "unknown_district": 0.003,
    "time_order_violation": 0.005,
    "missing_coordinates": 0.012,
    "unknown_typo_with_coordinates": 0.003,
}
DISTRICT_KIND_WEIGHTS = {"code": 0.76, "official_zh": 0.15, "short_zh": 0.05, "known_typo": 0.04}
UNKNOWN_CODES = ["Z99", "F99", "Q00", "T01"]
PUBLISHED_KINDS = ("", "missing_coordinates", "unknown_typo_with_coordinates")


def _units(rng, code_prefix: np.ndarray, dist: np.ndarray) -> list[list[str]]:
    out = []
    n_units = rng.integers(1, 4, len(dist))
    nums = rng.integers(1, 5, (len(dist), 4))
    for i, (p, d) in enumerate(zip(code_prefix, dist)):
        ab = DISTRICTS[d].abbr
        kinds = {
            "F": ["E", "E", "L", "R"],
            "X": ["E"],
            "R": ["R", "E", "R"],
            "H": ["H", "E", "R"],
            "M": ["A"],
            "S": ["R"],
        }.get(p, ["E"])
        out.append([f"{ab}-{kinds[j % len(kinds)]}{nums[i, j]:02d}" for j in range(min(n_units[i], len(kinds)))])
    return out


def generate(
    out_dir: Path, ev: pd.DataFrame, clock: Clock, seed: int, book: pd.DataFrame, city, daily: DayDelivery | None = None
):
    """The monthly files of the window, or with `daily` (and a DayClock) one daily extract."""
    rng = rng_for(seed, daily.stream if daily else "fire")
    ev = ev.sort_values(["t", "event_id"]).reset_index(drop=True)
    n = len(ev)
    labels = dict(zip(book.code, book.label))
    ms = rng.integers(0, 1000, n)
    t = ev.t.to_numpy().astype(np.int64)
    t_ms = t * 1000 + ms
    local = clock.local_seconds(t)
    offset = local - t
    month = clock.month_index(t)
    dist = ev.district.to_numpy()
    kinds = (
        assign_kinds(rng, n, RATES, minimum=daily.min_per_kind, max_share=daily.max_corrupt_share)
        if daily
        else assign_kinds(rng, n, RATES)
    )
    code = ev.code.to_numpy().astype(object).copy()
    prefix = np.array([c[0] for c in code])

    ymd = fmt_time(local, "ymd")
    day = clock.day_index(t)
    seq = pd.Series(np.arange(n)).groupby(day).cumcount().to_numpy() + 1
    call_id = np.char.add(np.char.add("HJ", ymd), zfill(seq.astype(str), 5)).astype(object)

    # response times
    disp = t_ms + (rng.lognormal(np.log(70), 0.5, n) * 1000).astype(np.int64)
    travel = (rng.lognormal(np.log(480), 0.45, n) * 1000).astype(np.int64)
    scene = disp + travel
    status = rng.choice(["closed", "on_scene", "dispatched", "cancelled"], n, p=[0.80, 0.08, 0.05, 0.07]).astype(object)
    cap_ms = extraction_cap(clock, month) * 1000
    close = scene + (rng.lognormal(np.log(45 * 60), 0.6, n) * 1000).astype(np.int64)
    last = np.where(
        status == "closed",
        close,
        np.where(status == "cancelled", disp + 120_000, np.where(status == "on_scene", scene + 60_000, disp + 30_000)),
    )
    last = np.minimum(last, cap_ms)
    # keep the time chain consistent with the export time: what has not happened yet is not known
    status = np.where((status == "closed") & (close > cap_ms), "on_scene", status)
    status = np.where((status == "on_scene") & (scene > cap_ms), "dispatched", status)
    disp = np.minimum(disp, np.maximum(cap_ms, t_ms))
    last = np.maximum(last, disp)
    has_scene = np.isin(status, ["on_scene", "closed"])

    received = np.empty(n, dtype=object)
    iso_recv = rng.random(n) < 0.15
    received[~iso_recv] = t_ms[~iso_recv].tolist()
    received[iso_recv] = fmt_time(local[iso_recv], "iso_offset", offset[iso_recv])
    m = kinds == "invalid_timestamp"
    opts = ["N/A", "", None, f"{clock.start_date.year}-13-45T25:61:00+08:00", "0000-00-00 00:00:00", "unknown"]
    received[m] = [opts[i] for i in rng.integers(0, len(opts), int(m.sum()))]
    m = np.nonzero(kinds == "timestamp_out_of_range")[0]
    for j, i in enumerate(m):
        r = j % 3
        received[i] = (
            0
            if r == 0
            else (
                "1900-01-01T00:00:00+08:00"
                if r == 1
                else int(t_ms[i] + (2099 - clock.start_date.year) * 365 * 86400 * 1000)
            )
        )
    m = kinds == "time_order_violation"
    disp[m] = t_ms[m] - rng.integers(5 * 60_000, 60 * 60_000, int(m.sum()))
    dispatched = fmt_time(disp // 1000, "iso_z").astype(object)
    scene_local = clock.local_seconds(scene // 1000)
    on_scene = np.where(has_scene, fmt_time(scene_local, "iso_space"), None).astype(object)

    m = kinds == "unmapped_code"
    code[m] = [UNKNOWN_CODES[i] for i in rng.integers(0, len(UNKNOWN_CODES), int(m.sum()))]
    code_name = np.array([labels.get(c, "其他") for c in code], dtype=object)

    lon = ev.lon.to_numpy().astype(object).copy()
    lat = ev.lat.to_numpy().astype(object).copy()
    m = kinds == "coordinates_outside_city"
    fl, ft = city.far_outside(rng, int(m.sum()))
    lon[m], lat[m] = fl.tolist(), ft.tolist()
    m = np.isin(kinds, ["missing_coordinates", "unknown_district"])
    zero = rng.random(n) < 0.5
    lon[m & zero], lat[m & zero] = 0, 0
    lon[m & ~zero], lat[m & ~zero] = None, None
    has_cell = ~m & (kinds != "coordinates_outside_city")

    dname, _ = district_names(rng, dist, DISTRICT_KIND_WEIGHTS)
    m = np.isin(kinds, ["unknown_district", "unknown_typo_with_coordinates"])
    sub = rng.integers(0, 2, n)
    dname[m] = [DISTRICTS[d].unknown_typos[s] for d, s in zip(dist[m], sub[m])]
    zh = np.array([d.name_zh for d in DISTRICTS], dtype=object)[dist]
    address = people.addresses(rng, zh, with_comma=0.05, with_quote=0.0)
    phone = people.mobiles(rng, n)
    units = _units(rng, prefix, dist)
    priority = np.where(np.isin(prefix, ["F", "H"]), 1, np.where(prefix == "M", 1, rng.integers(2, 4, n)))

    published = np.isin(kinds, PUBLISHED_KINDS)
    open_ = np.isin(status, ["on_scene", "dispatched"])
    rev_rows, rev_upd = plan_revisions(rng, clock, month, published & open_, 0.9)
    dup_rows = pick_duplicates(rng, published, 0.012)

    def record(i, st, last_ms, scene_s, recv):
        return {
            "call_id": call_id[i],
            "received": recv,
            "dispatched": dispatched[i],
            "on_scene": scene_s,
            "call_type": code[i],
            "call_type_name": code_name[i],
            "priority": int(priority[i]),
            "district": dname[i],
            "lon": lon[i],
            "lat": lat[i],
            "address": address[i],
            "caller_phone": phone[i],
            "units": units[i],
            "status": st,
            "last_update": int(last_ms),
        }

    lines, files, keys = [], [], []
    for i in range(n):
        lines.append(
            json.dumps(
                record(i, status[i], last[i], on_scene[i], received[i]), ensure_ascii=False, separators=(",", ":")
            )
        )
        files.append(month[i])
        keys.append(int(t[i]))
    final_status = status.copy()
    for i, u in zip(rev_rows, rev_upd):
        sc = on_scene[i] or fmt_time(clock.local_seconds(np.array([min(scene[i] // 1000, u - 60)])), "iso_space")[0]
        lines.append(
            json.dumps(record(i, "closed", u * 1000, sc, received[i]), ensure_ascii=False, separators=(",", ":"))
        )
        files.append(month[i] + 1)
        keys.append(int(u))
        final_status[i] = "closed"
    for i in dup_rows:
        lines.append(lines[i])
        files.append(month[i])
        keys.append(int(t[i] + rng.integers(1, 86400)))
    if daily is not None:  # earlier calls closed today, delivered again
        for line, key in zip(daily.revisions["line"], daily.revisions["_key"]):
            lines.append(line)
            files.append(0)
            keys.append(int(key))
    order = np.lexsort((np.arange(len(lines)), np.array(keys), np.array(files)))
    files = np.array(files)
    counts = SourceCounts()
    for k in range(len(clock.months)):
        idx = order[files[order] == k]
        text = "".join(lines[i] + "\n" for i in idx)
        write_bytes(out_dir / "fire" / f"fire_calls_{clock.month_label(k)}.jsonl", text.encode("utf-8"))
        counts.files += 1
    counts.rows_delivered = len(lines)
    counts.duplicates = len(rev_rows) + len(dup_rows) + (len(daily.revisions) if daily else 0)
    counts.quarantined = {q: int((kinds == q).sum()) for q in QUARANTINE_KINDS}
    counts.published = int(published.sum())
    counts.published_without_cell = int((kinds == "missing_coordinates").sum())
    counts.check("fire_calls")

    pub = np.nonzero(published)[0]
    recv_iso = np.char.add(np.char.add(fmt_time(t[pub], "iso_t"), "."), np.char.add(zfill(ms[pub].astype(str), 3), "Z"))
    # ISO-string rows carry whole seconds only
    recv_iso = np.where(iso_recv[pub], fmt_time(t[pub], "iso_z"), recv_iso)
    truth = pd.DataFrame(
        {
            "call_id": call_id[pub],
            "received_at_utc": recv_iso,
            "district_code": np.array([d.code for d in DISTRICTS])[dist[pub]],
            "subcategory_code": ev.subcategory.to_numpy()[pub],
            "h3_cell": np.where(has_cell[pub], city.cells[ev.cell.to_numpy()[pub]], ""),
            "status": final_status[pub],
        }
    ).sort_values("call_id", kind="stable")
    linkable = pd.DataFrame(
        {
            "record_id": call_id,
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
            "source": "fire_calls",
            "record_id": call_id,
            "delivery": np.where(kinds == "", "clean", kinds),
            "t_reported": t,
        }
    )
    details = {
        "revisions": int(len(rev_rows)),
        "exact_duplicates": int(len(dup_rows)),
        "published_with_unresolvable_district_name": int((kinds == "unknown_typo_with_coordinates").sum()),
        "received_as_iso_string": int(iso_recv.sum()),
    }
    return counts, truth, linkable, record_map, details
