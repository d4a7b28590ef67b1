"""IoT devices: registry CSV and hourly readings as JSON-lines batches, in arrival order, with the
usual telemetry mess (gaps, re-sent duplicates, late and out-of-order arrivals, device clock skew,
mixed units, sentinel values, clock resets, readings from unregistered devices). Readings are
produced day by day and written as they 'arrive', so memory stays flat at any scale."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from citysafe import logs

from ._util import Clock, SourceCounts, corruption_count, fmt_fixed, fmt_time, rng_for, write_bytes, write_csv
from .geo import DISTRICTS, district_names

log = logging.getLogger(__name__)

TYPES = ["rain_gauge", "water_level", "gas_pressure", "vibration", "smoke"]
PREFIX = {"rain_gauge": "RG", "water_level": "WL", "gas_pressure": "GP", "vibration": "VB", "smoke": "SM"}
SHARE = {"rain_gauge": 0.25, "water_level": 0.20, "gas_pressure": 0.25, "vibration": 0.15, "smoke": 0.15}
UNIT = {"rain_gauge": "mm", "water_level": "m", "gas_pressure": "kPa", "vibration": "mm/s", "smoke": "%obs/m"}
ALT_UNIT = {"rain_gauge": ("cm", 0.1), "water_level": ("cm", 100.0), "gas_pressure": ("MPa", 0.001)}
DECIMALS = {"mm": 1, "cm": 2, "m": 3, "kPa": 1, "MPa": 4, "mm/s": 2, "%obs/m": 2}
MODELS = {
    "rain_gauge": ["TB-3", "RG-200"],
    "water_level": ["WLR-60", "UL-10"],
    "gas_pressure": ["PT-300", "GPS-8"],
    "vibration": ["VBM-2", "SV-100"],
    "smoke": ["SD-9", "OPT-5"],
}
OWNER = {
    "rain_gauge": "气象局",
    "water_level": "水务局",
    "gas_pressure": "燃气集团",
    "vibration": "城建局",
    "smoke": "消防救援支队",
}
REG_COLUMNS = [
    "device_id",
    "device_type",
    "model",
    "unit",
    "district",
    "lon",
    "lat",
    "installed_date",
    "clock_skew_seconds",
    "owner",
]
READING_KINDS = ["sentinel_value", "timestamp_out_of_range", "unknown_device"]
# grid states
OK, MISSING, SENTINEL, BADTS = 0, 1, 2, 3


def _type_counts(n: int) -> dict[str, int]:
    raw = {t: max(2, int(round(SHARE[t] * n))) for t in TYPES}
    return raw


@dataclass
class DevicePlan:
    """Every random choice the window's device generation makes, drawn in one fixed order from the
    devices stream: the registry, each device's habits and the readings grid. A daily increment
    replays it to know the same devices (ids, skew, units, sequence counters, value parameters)."""

    n: int  # registered devices
    registry: pd.DataFrame  # the delivered registry rows, in file order
    reg_counts: SourceCounts
    cell: np.ndarray
    skew_known: np.ndarray
    alt_always: np.ndarray
    switch_at: np.ndarray
    n_unknown: int
    all_type: np.ndarray  # registered devices, then the unregistered ones
    all_id: np.ndarray
    known: np.ndarray
    all_skew: np.ndarray
    state: np.ndarray  # (devices, hours of the window): OK / MISSING / SENTINEL / BADTS
    dup: np.ndarray
    late: np.ndarray
    seq0: np.ndarray
    base_level: np.ndarray
    level_gain: np.ndarray
    rain_factor: np.ndarray
    gas_nominal: np.ndarray
    vib_base: np.ndarray
    gas_drop: np.ndarray


def catchment_storage(rain: np.ndarray, acc: float = 0.0) -> np.ndarray:
    """Water in the catchment after each hour (24 h time constant), starting from `acc`."""
    out = np.zeros(len(rain))
    for h in range(len(rain)):
        acc = acc * np.exp(-1 / 24) + rain[h]
        out[h] = acc
    return out


def plan(clock: Clock, seed: int, city, n_devices: int) -> DevicePlan:
    rng = rng_for(seed, "devices")
    tc = _type_counts(n_devices)
    dtype = np.array([t for t in TYPES for _ in range(tc[t])], dtype=object)
    n = len(dtype)
    dev_id = np.array([f"{PREFIX[t]}-{k + 1:04d}" for t in TYPES for k in range(tc[t])], dtype=object)
    f = city.features()
    loc_w = {
        "rain_gauge": f["urban"] ** 0.3,
        "water_level": f["river"] + f["lake"] + 0.05,
        "gas_pressure": f["urban"],
        "vibration": f["river"] * f["roads"] + 0.02,
        "smoke": f["urban"] + f["industrial"],
    }
    cell = np.zeros(n, dtype=np.int64)
    for t in TYPES:
        m = dtype == t
        w = loc_w[t] * f["area"]
        cell[m] = rng.choice(city.n_cells, int(m.sum()), p=w / w.sum())
    lon, lat, dist = city.sample_in_cells(rng, cell)
    skew = np.round(rng.normal(0, 90, n)).astype(np.int64)
    big = rng.random(n) < 0.1
    skew[big] = rng.choice([-1, 1], int(big.sum())) * rng.integers(600, 1800, int(big.sum()))
    skew_known = rng.random(n) < 0.6
    model = np.array([MODELS[t][int(i)] for t, i in zip(dtype, rng.integers(0, 2, n))], dtype=object)
    installed = (clock.t0 // 86400) - rng.integers(30, 2500, n)
    # reporting unit: most devices report in the registry unit; some in another unit, some switch
    unit_reg = np.array([UNIT[t] for t in dtype], dtype=object)
    has_alt = np.isin(dtype, list(ALT_UNIT))
    alt_always = has_alt & (rng.random(n) < 0.15)
    for t in ALT_UNIT:  # at least one device per convertible type reports in the other unit
        idx = np.nonzero(dtype == t)[0]
        if len(idx) and not alt_always[idx].any():
            alt_always[idx[-1]] = True
    n_hours = clock.days * 24
    switch_at = np.where(has_alt & ~alt_always & (rng.random(n) < 0.08), rng.integers(0, n_hours, n), -1)

    dname, _ = district_names(rng, dist, {"official_zh": 0.8, "code": 0.15, "short_zh": 0.05})
    reg = pd.DataFrame(
        {
            "device_id": dev_id,
            "device_type": dtype,
            "model": model,
            "unit": unit_reg,
            "district": dname,
            "lon": fmt_fixed(lon, 6),
            "lat": fmt_fixed(lat, 6),
            "installed_date": fmt_time(installed * 86400, "date"),
            "clock_skew_seconds": np.where(skew_known, skew.astype(str), ""),
            "owner": [OWNER[t] for t in dtype],
        }
    )
    n_test = corruption_count(n, 0.005, 2)
    test = pd.DataFrame(
        {
            "device_id": [f"TEST-{k + 1:03d}" for k in range(n_test)],
            "device_type": ["test" if k % 2 == 0 else "未知" for k in range(n_test)],
            "model": "DEMO",
            "unit": "",
            "district": [DISTRICTS[k % 10].name_zh for k in range(n_test)],
            "lon": fmt_fixed([city.polygons[k % 10].representative_point().x for k in range(n_test)], 6),
            "lat": fmt_fixed([city.polygons[k % 10].representative_point().y for k in range(n_test)], 6),
            "installed_date": fmt_time(np.full(n_test, (clock.t0 // 86400) - 10) * 86400, "date"),
            "clock_skew_seconds": "",
            "owner": "测试",
        }
    )
    n_dup = min(n, corruption_count(n, 0.005, 2))
    dups = reg.iloc[np.sort(rng.choice(n, n_dup, replace=False))]
    regrows = pd.concat([reg, test, dups], ignore_index=True)
    regrows = regrows.iloc[rng.permutation(len(regrows))]
    reg_counts = SourceCounts(
        files=1, rows_delivered=len(regrows), duplicates=n_dup, published=n, quarantined={"invalid_device_type": n_test}
    )
    reg_counts.check("device_registry")

    # ---------------------------------------------------------------- readings plan on the full grid
    n_unknown = max(2, int(round(3 * n / 1000)))
    u_type = np.array([TYPES[k % len(TYPES)] for k in range(n_unknown)], dtype=object)
    all_type = np.concatenate([dtype, u_type])
    all_id = np.concatenate(
        [dev_id, np.array([f"{PREFIX[t]}-9{k + 1:03d}" for k, t in enumerate(u_type)], dtype=object)]
    )
    N = n + n_unknown
    known = np.arange(N) < n
    all_skew = np.concatenate([skew, np.zeros(n_unknown, np.int64)])
    state = np.zeros((N, n_hours), dtype=np.int8)
    for i in range(n):  # outages: a few multi-hour gaps per device per year
        k = rng.poisson(1.5 * clock.days / 365)
        for _ in range(k):
            s0 = int(rng.integers(0, n_hours))
            state[i, s0 : s0 + int(rng.integers(6, 97))] = MISSING
    state[:n][rng.random((n, n_hours)) < 0.005] = MISSING
    for j in range(n_unknown):  # unregistered devices send for 2-4 days
        i = n + j
        state[i] = MISSING
        ln = int(min(n_hours, rng.integers(48, 97)))
        s0 = int(rng.integers(0, max(1, n_hours - ln)))
        state[i, s0 : s0 + ln] = OK
    flat_ok = np.flatnonzero((state[:n] == OK).ravel())
    for code, rate in ((SENTINEL, 0.002), (BADTS, 0.0003)):
        k = corruption_count(len(flat_ok), rate)
        pick = rng.choice(flat_ok, k, replace=False)
        state[:n].reshape(-1)[pick] = code
        flat_ok = np.setdiff1d(flat_ok, pick, assume_unique=True)
    dup = np.zeros((N, n_hours), dtype=bool)
    dup[:n] = (rng.random((n, n_hours)) < 0.01) & (state[:n] == OK)
    late = rng.random((N, n_hours)) < 0.02
    seq0 = rng.integers(1000, 50000, N)

    # ---------------------------------------------------------------- values (true time = top of hour)
    base_level = rng.uniform(1.5, 6.0, N)
    level_gain = rng.uniform(0.01, 0.04, N)
    rain_factor = rng.lognormal(0, 0.2, N)
    gas_nominal = rng.uniform(200, 380, N)
    vib_base = rng.uniform(0.1, 0.5, N)
    gas_drop = rng.random((N, n_hours)) < 1 / (24 * 90)
    return DevicePlan(
        n=n,
        registry=regrows[REG_COLUMNS],
        reg_counts=reg_counts,
        cell=cell,
        skew_known=skew_known,
        alt_always=alt_always,
        switch_at=switch_at,
        n_unknown=n_unknown,
        all_type=all_type,
        all_id=all_id,
        known=known,
        all_skew=all_skew,
        state=state,
        dup=dup,
        late=late,
        seq0=seq0,
        base_level=base_level,
        level_gain=level_gain,
        rain_factor=rain_factor,
        gas_nominal=gas_nominal,
        vib_base=vib_base,
        gas_drop=gas_drop,
    )


def batch_text(frame: pd.DataFrame) -> bytes:
    """One batch file: the readings in arrival order, one JSON object per line."""
    b = frame.sort_values(["received_at", "device_id", "seq"], kind="stable")
    text = "".join(
        f'{{"device_id":"{d}","ts":"{t}","seq":{s},"value":{v},"unit":"{u}","received_at":{r}}}\n'
        for d, t, s, v, u, r in zip(b.device_id, b.ts, b.seq, b.value, b.unit, b.received_at)
    )
    return text.encode("utf-8")


HOD = np.arange(24)
DEMAND = 1 - 0.03 * (np.exp(-((HOD - 7.5) ** 2) / 2) + np.exp(-((HOD - 18.5) ** 2) / 2))
TRAFFIC = 0.3 + np.exp(-((HOD - 8) ** 2) / 3) + np.exp(-((HOD - 18) ** 2) / 3) + 0.4 * ((HOD > 9) & (HOD < 17))


def generate(
    out_dir: Path, clock: Clock, seed: int, city, weather_df: pd.DataFrame, hourly_rain: np.ndarray, n_devices: int
):
    p = plan(clock, seed, city, n_devices)
    write_csv(out_dir / "devices" / "device_registry.csv", p.registry)
    reg_counts, n, n_unknown = p.reg_counts, p.n, p.n_unknown
    all_type, all_id, known, all_skew = p.all_type, p.all_id, p.known, p.all_skew
    alt_always, switch_at, skew_known, cell = p.alt_always, p.switch_at, p.skew_known, p.cell
    state, dup, late, gas_drop = p.state, p.dup, p.late, p.gas_drop
    N = n + n_unknown
    rain = hourly_rain.reshape(-1)
    smooth = catchment_storage(rain)

    counts = SourceCounts(quarantined={k: 0 for k in READING_KINDS})
    details = {
        "missing_readings": int((state[:n] == MISSING).sum()),
        "late_arrivals": 0,
        "readings_in_non_registry_unit": 0,
        "unknown_device_ids": int(n_unknown),
    }
    pending: dict[int, list[pd.DataFrame]] = {}
    batch_no = 0
    out = out_dir / "devices" / "readings"

    def flush(day: int):
        nonlocal batch_no
        parts = pending.pop(day, [])
        if not parts:
            return
        write_bytes(out / f"batch_{batch_no:05d}.jsonl", batch_text(pd.concat(parts, ignore_index=True)))
        batch_no += 1

    for day in logs.progress_bar(range(clock.days), desc="device readings (days)", logger=log):
        drng = rng_for(seed, f"devices:day:{day}")
        hrs = np.arange(day * 24, day * 24 + 24)
        st = state[:, hrs]
        di, hi = np.nonzero(st != MISSING)
        hh = hrs[hi]
        k_state = st[di, hi]
        frame, d_rows = _readings(
            p,
            drng,
            di,
            hi,
            hh,
            k_state,
            clock.day_start[day] + hi * 3600,
            rain[hh],
            smooth[hh],
            gas_drop[di, hh],
            late[di, hh],
            dup[di, hh],
            details,
        )
        counts.rows_delivered += len(frame)
        counts.duplicates += len(d_rows)
        unk = ~known[di]
        counts.quarantined["unknown_device"] += int(unk.sum())
        counts.quarantined["sentinel_value"] += int(((k_state == SENTINEL) & ~unk).sum())
        counts.quarantined["timestamp_out_of_range"] += int(((k_state == BADTS) & ~unk).sum())
        counts.published += int(((k_state == OK) & ~unk).sum())
        arrival = clock.day_index(frame.received_at.to_numpy() // 1000)
        arrival = np.where(
            arrival < 0, clock.days + (frame.received_at.to_numpy() // 1000 - clock.t1) // 86400, arrival
        )
        for a in np.unique(arrival):
            pending.setdefault(int(a), []).append(frame[arrival == a])
        flush(day)
    for a in sorted(pending):
        flush(a)
    counts.files = batch_no
    counts.check("device_readings")
    truth = pd.DataFrame(
        {
            "device_id": all_id,
            "device_type": all_type,
            "in_registry": known,
            "true_clock_skew_seconds": all_skew,
            "skew_in_registry": np.concatenate([skew_known, np.zeros(n_unknown, bool)]),
            "reports_in_unit": [
                ALT_UNIT[t][0] if (i < n and alt_always[i]) else (UNIT[t]) for i, t in enumerate(all_type)
            ],
            "unit_switch_at_utc": [
                fmt_time(np.array([clock.t0 + int(switch_at[i]) * 3600]), "iso_z")[0]
                if (i < n and switch_at[i] >= 0)
                else ""
                for i in range(N)
            ],
            "switch_to_unit": [ALT_UNIT[all_type[i]][0] if (i < n and switch_at[i] >= 0) else "" for i in range(N)],
            "h3_cell": np.concatenate([city.cells[cell], np.full(n_unknown, "", dtype=object)]),
        }
    )
    return reg_counts, counts, truth, details


def _readings(
    p: DevicePlan,
    drng: np.random.Generator,
    di: np.ndarray,
    hi: np.ndarray,
    hh: np.ndarray,
    k_state: np.ndarray,
    true_t: np.ndarray,
    rain_r: np.ndarray,
    smooth_r: np.ndarray,
    drop_r: np.ndarray,
    late_r: np.ndarray,
    dup_r: np.ndarray,
    details: dict,
) -> tuple[pd.DataFrame, np.ndarray]:
    """The delivered lines of one day's readings (device index di, hour of day hi, hour since the
    window's start hh, grid state, true time, and per reading the city's rain, catchment storage, gas
    drop, late and re-send flags), re-sends appended; returns them and the re-sent rows' indices."""
    n = p.n
    m = len(di)
    typ = p.all_type[di]
    v = np.zeros(m)
    noise = drng.normal(0, 1, m)
    sel = typ == "rain_gauge"
    v[sel] = np.round(np.maximum(0, rain_r[sel] * p.rain_factor[di[sel]] * (1 + 0.1 * noise[sel])), 1)
    sel = typ == "water_level"
    v[sel] = p.base_level[di[sel]] + p.level_gain[di[sel]] * smooth_r[sel] + 0.01 * noise[sel]
    sel = typ == "gas_pressure"
    v[sel] = p.gas_nominal[di[sel]] * DEMAND[hi[sel]] * (1 + 0.01 * noise[sel]) * np.where(drop_r[sel], 0.6, 1)
    sel = typ == "vibration"
    v[sel] = p.vib_base[di[sel]] * TRAFFIC[hi[sel]] * np.exp(0.3 * noise[sel])
    sel = typ == "smoke"
    v[sel] = np.abs(0.02 + 0.01 * noise[sel]) + np.where(drng.random(int(sel.sum())) < 0.0005, 8.0, 0)
    # units
    unit = np.array([UNIT[t] for t in typ], dtype=object)
    reg = np.minimum(di, n - 1)
    alt = (p.alt_always[reg] | ((p.switch_at[reg] >= 0) & (hh >= p.switch_at[reg]))) & p.known[di]
    for t, (u_alt, factor) in ALT_UNIT.items():
        s2 = alt & (typ == t)
        unit[s2] = u_alt
        v[s2] = v[s2] * factor
    details["readings_in_non_registry_unit"] += int(alt.sum())
    vs = np.empty(m, dtype=object)
    for u, dec in DECIMALS.items():
        s2 = unit == u
        if s2.any():
            vs[s2] = fmt_fixed(v[s2], dec)
    vs[k_state == SENTINEL] = "-9999"
    dev_t = true_t + p.all_skew[di]
    bad = k_state == BADTS
    dev_t[bad] = drng.integers(0, 3600, int(bad.sum()))  # clock reset to the epoch
    ts = fmt_time(dev_t, "iso_z")
    lat_ms = drng.integers(5_000, 120_000, m)
    lat_ms[late_r] += drng.integers(2 * 3600_000, 72 * 3600_000, int(late_r.sum()))
    details["late_arrivals"] += int(late_r.sum())
    recv = true_t * 1000 + lat_ms
    frame = pd.DataFrame(
        {"device_id": p.all_id[di], "ts": ts, "seq": p.seq0[di] + hh, "value": vs, "unit": unit, "received_at": recv}
    )
    d_rows = np.nonzero(dup_r)[0]
    again = frame.iloc[d_rows].copy()
    again["received_at"] = again["received_at"] + drng.integers(60_000, 6 * 3600_000, len(d_rows))
    return pd.concat([frame, again], ignore_index=True), d_rows


# ------------------------------------------------------------------------------------------ one more day
def day_readings(
    p: DevicePlan,
    seed: int,
    day_tag: str,
    hour0: int,
    day_start: int,
    rain24: np.ndarray,
    smooth24: np.ndarray,
) -> pd.DataFrame:
    """Every delivered line of the readings measured on one day after the window (hours hour0..hour0+23
    since its start), with the window's habits: short outages and single missing hours, sentinel
    values and clock resets, re-sends, late arrivals, the same units, skews and sequence counters, and
    one unregistered device sending for a few hours. `_kind` says what each line is (published, duplicate, or
    its quarantine reason); the caller delivers each on the day it arrives."""
    drng = rng_for(seed, f"devices:{day_tag}")
    n, N = p.n, len(p.all_id)
    state = np.full((N, 24), MISSING, dtype=np.int8)
    state[:n] = OK
    for i in np.nonzero(drng.random(n) < 1.5 / 365)[0]:  # outages start at the window's rate; cut at midnight
        s0 = int(drng.integers(0, 24))
        state[i, s0 : s0 + int(drng.integers(6, 97))] = MISSING
    state[:n][drng.random((n, 24)) < 0.005] = MISSING
    s0, span = int(drng.integers(0, 20)), int(drng.integers(2, 9))  # an unregistered device, a few hours
    state[n + int(drng.integers(0, p.n_unknown)), s0 : s0 + span] = OK
    flat_ok = np.flatnonzero((state[:n] == OK).ravel())
    for code, rate in ((SENTINEL, 0.002), (BADTS, 0.0003)):  # at least one of each a day (window: three)
        pick = drng.choice(flat_ok, corruption_count(len(flat_ok), rate, 1), replace=False)
        state[:n].reshape(-1)[pick] = code
        flat_ok = np.setdiff1d(flat_ok, pick, assume_unique=True)
    dup = np.zeros((N, 24), dtype=bool)
    dup[:n] = (drng.random((n, 24)) < 0.01) & (state[:n] == OK)
    late = drng.random((N, 24)) < 0.02
    drop = drng.random((N, 24)) < 1 / (24 * 90)
    di, hi = np.nonzero(state != MISSING)
    k_state = state[di, hi]
    scratch = {"readings_in_non_registry_unit": 0, "late_arrivals": 0}
    frame, d_rows = _readings(
        p,
        drng,
        di,
        hi,
        hour0 + hi,
        k_state,
        day_start + hi * 3600,
        rain24[hi],
        smooth24[hi],
        drop[di, hi],
        late[di, hi],
        dup[di, hi],
        scratch,
    )
    kind = np.select(
        [~p.known[di], k_state == SENTINEL, k_state == BADTS],
        ["unknown_device", "sentinel_value", "timestamp_out_of_range"],
        "published",
    )
    frame["_kind"] = np.concatenate([kind, np.full(len(d_rows), "duplicate")])
    frame["_measured"] = day_tag
    return frame
