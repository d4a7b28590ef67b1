"""One more day of the synthetic city: every department's deliveries for the day after what has been
generated, written as new files beside the window's (no earlier file is touched), plus that day's truth.

    synthetic_city.generate_day(out_dir)                    # the next day
    synthetic_city.generate_day(out_dir, date(2026, 1, 1))  # that day: the next one, or already there

The window (`generate`) ends the day before start_date + days; day N+1 is that date, N+2 the one
after, and so on: days are added in order. Each day is a function of the seed, the scale and the day
(and of the days before it, themselves deterministic): generating it again gives the same bytes, and
asking for a day already generated changes nothing. Its truth goes to truth/increments/<day>/, the
day's expected counts last: a day counts as generated once that file is there.

What a day delivers (the window's code paths, formats and habits, on a one-day clock):
* police, fire/EMS, 12345 hotline: the day's real events (the same Hawkes process continued: background
  of the day with its weather, plus the offspring of the events before it) as one daily extract each,
  with the same corruption kinds and exact duplicate lines, cross-department hotline tickets, and the
  revisions of the day before's records that moved on today (police 12 % of open cases, fire 90 % of
  open calls, hotline 30 % of open tickets, as between monthly files);
* hazard inspections: hazards found that day (working days, office hours) and every earlier hazard
  rectified or accepted that day, delivered again with its new state (a revision);
* enterprise registry: a delta of the day: new registrations (about 10 % of the registry a year) and
  deregistrations (2 % a year: the latest row again with reg_status 注销, a revision);
* device readings: the lines that arrive that day (measured that day, or still in flight at the end of
  the day before), same devices, units, skews and sequence counters, an unregistered device sending;
* weather: the day's row, continuing the window's wet-day chain and temperature anomaly;
* device registry: nothing (no device is installed or moved in a day; the registry stays as it is).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from . import devices, enterprise, events, fire, hotline, police
from . import weather as wx
from ._delivery import DayDelivery, pick_revisions
from ._util import (
    CODES_DIR,
    POLICE_CROSSWALK_CSV,
    Clock,
    DayClock,
    SourceCounts,
    fmt_time,
    rng_for,
    write_bytes,
    write_csv,
    write_csv_gz,
    write_json,
)
from .generator import (
    DEPT_TOTALS,
    DEVICES,
    ENTERPRISES,
    HAZARDS,
    MIN_CASES,
    MIN_DEVICES,
    MIN_ENTERPRISES,
    MIN_HAZARDS,
    WEATHER_STATION,
    load_codebooks,
    load_taxonomy,
    write_events_truth,
)
from .geo import DISTRICTS, City

log = logging.getLogger(__name__)

INCREMENTS = Path("truth") / "increments"  # truth/increments/<YYYY-MM-DD>/
DONE = "expected_counts.json"  # written last: the day is complete once it is there
# Every daily file carries a publishable row: the silver gates take no new batch without one. With at
# most a quarter of a file corrupted (below), one event per department and day is enough.
MIN_RECORDS_PER_DEPT = 1
# Each corruption kind gets its monthly rate (at least one row, at most 5 %), but a day's file is small:
# at most a quarter of it is corrupted, the kinds taking turns on small days.
MAX_CORRUPT_SHARE = 0.25
REVISION_SHARE = {"police_incidents": 0.12, "fire_calls": 0.9, "hotline_tickets": 0.3}  # as between monthly files
SOURCES = (
    "police_incidents",
    "fire_calls",
    "hotline_tickets",
    "hazard_inspections",
    "enterprise_registry",
    "device_registry",
    "device_readings",
    "weather_daily",
)
EPOCH = date(1970, 1, 1)


class IncrementError(ValueError):
    """A day that cannot be generated: no window yet, not the next day, or not over yet."""


@dataclass(frozen=True)
class Window:
    """The generated window a day is added to, as its truth records it."""

    out_dir: Path
    params: dict
    seed: int
    scale: float
    start: date
    days: int
    timezone: str
    h3_resolution: int

    @property
    def first_after(self) -> date:
        return self.start + timedelta(days=self.days)

    @property
    def last(self) -> date:
        return self.first_after - timedelta(days=1)


def window(out_dir: Path) -> Window:
    path = Path(out_dir) / "truth" / "expected_counts.json"
    if not path.is_file():
        raise IncrementError(
            f"no synthetic city at {out_dir} (no truth/expected_counts.json): generate its window first"
        )
    g = json.loads(path.read_text(encoding="utf-8"))["generator"]
    return Window(
        Path(out_dir),
        g,
        int(g["seed"]),
        float(g["scale"]),
        date.fromisoformat(g["start_date"]),
        int(g["days"]),
        g["timezone"],
        int(g["h3_resolution"]),
    )


def generated_days(out_dir: Path) -> list[date]:
    """The days added to the window so far, in order."""
    root = Path(out_dir) / INCREMENTS
    if not root.is_dir():
        return []
    return sorted(date.fromisoformat(p.parent.name) for p in root.glob(f"*/{DONE}"))


def next_day(out_dir: Path) -> date:
    w = window(out_dir)
    done = generated_days(out_dir)
    return w.first_after + timedelta(days=len(done))


def day_truth(out_dir: Path, day: date) -> dict:
    return json.loads((Path(out_dir) / INCREMENTS / day.isoformat() / DONE).read_text(encoding="utf-8"))


def generate_day(out_dir: Path, day: date | None = None, *, today: date | None = None) -> dict:
    """Write the deliveries of `day` (default: the next day) and its truth. A day already generated is
    left as it is (`generated` False). `today` (the city's local date) refuses a day not over yet.
    Returns {day, generated, files (delivered, relative to out_dir), sources (expected counts), seconds}."""
    out_dir = Path(out_dir)
    w = window(out_dir)
    done = generated_days(out_dir)
    if done != [w.first_after + timedelta(days=i) for i in range(len(done))]:
        raise IncrementError(f"{out_dir / INCREMENTS} does not hold consecutive days after {w.last}: {done}")
    expected = w.first_after + timedelta(days=len(done))
    day = expected if day is None else day
    if day in done:
        truth = day_truth(out_dir, day)
        return {"day": day.isoformat(), "generated": False, "files": truth["files"], "sources": truth["sources"]}
    if day < w.first_after:
        raise IncrementError(
            f"{day} is inside the generated window {w.start}..{w.last}: the next day to add is {expected}"
        )
    if day != expected:
        raise IncrementError(f"{day} is not the next day to generate: that is {expected} (days are added in order)")
    if today is not None and day >= today:
        raise IncrementError(f"{day} is not over yet (today is {today} in {w.timezone}): a day is delivered after it")
    started = time.monotonic()
    # Outside every drop folder: no connector sees a half-written day. Per process: two processes adding
    # the same day write the same bytes, each from its own folder.
    staging = out_dir / f".incoming-{day.isoformat()}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    counts, details, files = _write_day(w, day, staging)
    truth = {
        "day": day.isoformat(),
        "generator": w.params,
        "files": files,
        "sources": counts,
        "details": details,
    }
    write_json(staging / INCREMENTS / day.isoformat() / DONE, truth)
    _publish(staging, out_dir, marker=INCREMENTS / day.isoformat() / DONE)
    seconds = time.monotonic() - started
    log.info("day %s done in %.1f s", day, seconds)
    return {"day": day.isoformat(), "generated": True, "files": files, "sources": counts, "seconds": seconds}


def _publish(staging: Path, out_dir: Path, marker: Path) -> None:
    """Move every staged file into place (one rename each), the day's marker last."""
    staged = sorted(p for p in staging.rglob("*") if p.is_file())
    last = staging / marker
    for path in [p for p in staged if p != last] + [last]:
        target = out_dir / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    shutil.rmtree(staging)


# --------------------------------------------------------------------------------------------- the day


def _write_day(w: Window, day: date, out: Path) -> tuple[dict, dict, list[str]]:
    say = log.info
    seed = w.seed
    clock = Clock(w.start, w.days, w.timezone)
    dclock = DayClock(day, w.timezone)
    city = City(w.h3_resolution)
    books = load_codebooks(load_taxonomy())
    frac = w.days / 365.0
    ev_scale = max([w.scale] + [MIN_CASES[k] / (DEPT_TOTALS[k] * frac) for k in DEPT_TOTALS])
    truth_dir = out / INCREMENTS / day.isoformat()
    tag = day.isoformat()

    say("weather: %s, continuing the window's chain", tag)
    chain = _weather_chain(w, clock, day)
    weather_row = chain[day][0]
    write_csv(
        out / "weather" / f"weather_daily_{tag}.csv",
        weather_row.assign(station_id=WEATHER_STATION)[
            ["date", "station_id", "precip_mm", "tmax_c", "tmin_c", "wind_max_ms"]
        ],
    )
    w_counts = SourceCounts(files=1, rows_delivered=1, published=1)

    say("events: the day's background and the offspring of the events before it")
    history = _event_history(w, city, dclock.t0)
    es = events.simulate_day(
        seed, dclock, city, weather_row, ev_scale, books, DEPT_TOTALS, history, min_per_dept=MIN_RECORDS_PER_DEPT
    )
    ev = es.events

    prev = day - timedelta(days=1)
    if prev <= w.last:  # the day before is the window's last: its records are in the last monthly file
        prev_label, prev_truth = clock.month_label(len(clock.months) - 1), w.out_dir / "truth"
    else:
        prev_label, prev_truth = prev.isoformat(), w.out_dir / INCREMENTS / prev.isoformat()
    rrng = rng_for(seed, f"revisions:{tag}")

    say("police, fire, hotline: the day's extracts")
    p_rev, p_rev_truth = _police_revisions(rrng, w.out_dir, prev_label, prev_truth, prev, dclock)
    p_counts, p_truth, p_link, p_map, p_pii, p_det = police.generate(
        out,
        ev[ev.dept == "police"],
        dclock,
        seed,
        pd.read_csv(POLICE_CROSSWALK_CSV, dtype=str),
        city,
        daily=DayDelivery(f"police:{tag}", p_rev, MAX_CORRUPT_SHARE),
    )
    f_rev, f_rev_truth = _fire_revisions(rrng, w.out_dir, prev_label, prev_truth, prev, dclock)
    f_counts, f_truth, f_link, f_map, f_det = fire.generate(
        out,
        ev[ev.dept == "fire"],
        dclock,
        seed,
        books["fire"].table,
        city,
        daily=DayDelivery(f"fire:{tag}", f_rev, MAX_CORRUPT_SHARE),
    )
    h_rev, h_rev_truth = _hotline_revisions(rrng, w.out_dir, prev_label, prev_truth, prev, dclock)
    h_counts, h_truth, links, h_map, h_pii, h_det = hotline.generate(
        out,
        ev[ev.dept == "hotline"],
        dclock,
        seed,
        pd.read_csv(CODES_DIR / "hotline_categories.csv", dtype=str),
        city,
        {"police_incidents": p_link, "fire_calls": f_link},
        daily=DayDelivery(f"hotline:{tag}", h_rev, MAX_CORRUPT_SHARE),
    )
    for d, n in (
        (p_det, len(p_rev)),
        (f_det, len(f_rev)),
        (h_det, len(h_rev)),
    ):
        d["revisions_of_the_day_before"] = n

    say("enterprise registry and hazard inspections")
    industries = pd.read_csv(CODES_DIR / "industries.csv", dtype={"industry_code": str})
    latest, ent_truth = _enterprises(w, clock)
    active = latest[latest.reg_status != "注销"]
    n_ent = max(MIN_ENTERPRISES, int(round(ENTERPRISES * w.scale)))
    e_counts, e_day_truth, e_det = enterprise.registry_day(
        out,
        dclock,
        seed,
        city,
        industries,
        n_ent,
        active[enterprise.ENT_COLUMNS].reset_index(drop=True),
        set(ent_truth.credit_code),
        MAX_CORRUPT_SHARE,
    )
    pool = _inspection_pool(ent_truth, active, industries, city)
    n_haz = max(MIN_HAZARDS, int(round(HAZARDS * w.scale * frac)))
    dw = np.where(clock.dow < 5, 1.0, np.where(clock.dow == 5, 0.15, 0.05))  # the window's weekday profile
    today_w = 1.0 if day.weekday() < 5 else (0.15 if day.weekday() == 5 else 0.05)
    hz_codes = pd.read_csv(CODES_DIR / "hazard_codes.csv", dtype=str).astype({"weight": float})
    i_counts, i_truth, i_det = enterprise.inspections_day(
        out,
        dclock,
        seed,
        pool,
        hz_codes,
        industries,
        n_haz * today_w / dw.sum(),
        _open_hazards(w, clock),
        MAX_CORRUPT_SHARE,
    )

    say("devices: the readings arriving today")
    n_dev = max(MIN_DEVICES, int(round(DEVICES * w.scale)))
    d_counts, d_det = _device_readings(w, clock, city, day, chain, n_dev, out)

    say("truth of the day")
    evt = write_events_truth(truth_dir / "events.csv.gz", ev, [p_map, f_map, h_map], city)
    week_start = dclock.week_start_dates[0].isoformat()
    inten = es.intensity.sort_values(["h3_cell", "domain_code"], kind="stable")
    write_csv_gz(
        truth_dir / "intensity_cell_day.csv.gz",
        pd.DataFrame(
            {
                "h3_cell": inten.h3_cell,
                "date": tag,
                "week_start": week_start,
                "domain_code": inten.domain_code,
                "expected_count": [f"{v:.6f}" for v in inten.expected_count],
            }
        ),
    )
    for name, new, revised, key in (
        ("police_incidents", p_truth, p_rev_truth, "case_no"),
        ("fire_calls", f_truth, f_rev_truth, "call_id"),
        ("hotline_tickets", h_truth, h_rev_truth, "ticket_no"),
    ):
        both = pd.concat([new, revised[new.columns]], ignore_index=True).sort_values(key, kind="stable")
        write_csv_gz(truth_dir / f"{name}_clean.csv.gz", both)
    write_csv(truth_dir / "cross_department_links.csv", links)
    write_csv_gz(truth_dir / "hazards_truth.csv.gz", i_truth)
    write_csv_gz(truth_dir / "enterprises_truth.csv.gz", e_day_truth)
    write_csv(truth_dir / "pii_in_free_text.csv", pd.concat([p_pii, h_pii], ignore_index=True))

    counts = {
        "police_incidents": p_counts.as_dict(),
        "fire_calls": f_counts.as_dict(),
        "hotline_tickets": h_counts.as_dict(),
        "hazard_inspections": i_counts.as_dict(),
        "enterprise_registry": e_counts.as_dict(),
        "device_registry": SourceCounts().as_dict(),
        "device_readings": d_counts.as_dict(),
        "weather_daily": w_counts.as_dict(),
    }
    details = {
        "event_scale": round(ev_scale, 6),
        "events_total": int(len(ev)),
        "events_by_domain": {d: int((ev.domain == d).sum()) for d in events.DOMAINS},
        "events_by_source": {s: int((evt.source == s).sum()) for s in sorted(evt.source.unique())},
        "triggered_events": int((ev.generation > 0).sum()),
        "weather": {k: (v if isinstance(v, str) else float(v)) for k, v in weather_row.iloc[0].items()},
        "police_incidents": p_det,
        "fire_calls": f_det,
        "hotline_tickets": h_det,
        "enterprise_registry": e_det,
        "hazard_inspections": i_det,
        "device_readings": d_det,
    }
    files = sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not p.is_relative_to(out / "truth")
    )
    return counts, details, files


def _read_text_csv(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A (gzipped) truth CSV with every column as text, read by Arrow (the window's files are large)."""
    names = columns or pacsv.open_csv(path).schema.names
    table = pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in names}, include_columns=names, strings_can_be_null=False
        ),
    )
    return table.to_pandas()


# --------------------------------------------------------------------------------------------- weather


def _weather_chain(w: Window, clock: Clock, day: date) -> dict[date, tuple[pd.DataFrame, np.ndarray, np.ndarray]]:
    """Per day after the window up to `day`: its weather row, its hourly rain and the catchment storage
    (what the water-level gauges see), each day continuing from the one before."""
    wdf, wet, anom = wx.simulate_with_state(rng_for(w.seed, "weather"), clock.dates[:-1])
    rain = wx.hourly_rain(rng_for(w.seed, "weather:hourly"), wdf.precip_mm.to_numpy(float)).reshape(-1)
    acc = float(devices.catchment_storage(rain)[-1])
    chain = {}
    d = w.first_after
    while d <= day:
        row, wet, anom = wx.next_day(rng_for(w.seed, f"weather:{d.isoformat()}"), d, wet, anom)
        rain24 = wx.hourly_rain(rng_for(w.seed, f"weather:hourly:{d.isoformat()}"), row.precip_mm.to_numpy(float))[0]
        smooth24 = devices.catchment_storage(rain24, acc)
        acc = float(smooth24[-1])
        chain[d] = (row, rain24, smooth24)
        d += timedelta(days=1)
    return chain


# --------------------------------------------------------------------------------------------- events

DEPT_OF_SOURCE = {"police_incidents": "police", "fire_calls": "fire", "hotline_tickets": "hotline"}


def _event_history(w: Window, city: City, t0: int) -> pd.DataFrame:
    """The real events (window and days added) recent enough to still trigger offspring after t0."""
    horizon = events.TRIGGER_HORIZON_TAUS * max(p.tau_days for p in events.PARAMS.values()) * 86400
    since = pd.Timestamp(t0 - horizon, unit="s", tz="UTC")
    paths = [w.out_dir / "truth" / "events.csv.gz"]
    paths += [w.out_dir / INCREMENTS / d.isoformat() / "events.csv.gz" for d in generated_days(w.out_dir)]
    cols = ["event_id", "domain_code", "subcategory_code", "occurred_at_utc", "h3_cell", "generation", "source"]
    parts = []
    for path in paths:
        df = _read_text_csv(path, cols)
        when = pd.to_datetime(df.occurred_at_utc, format="%Y-%m-%dT%H:%M:%SZ", utc=True)
        parts.append(df[when >= since].assign(t=(when[when >= since].astype("int64") // 10**9).to_numpy()))
    h = pd.concat(parts, ignore_index=True)
    return pd.DataFrame(
        {
            "t": h.t.to_numpy(np.int64),
            "domain": h.domain_code.to_numpy(),
            "cell": h.h3_cell.map(city.cell_index).to_numpy(np.int64),
            "dept": h.source.map(DEPT_OF_SOURCE).to_numpy(),
            "subcategory": h.subcategory_code.to_numpy(),
            "generation": h.generation.astype(np.int64).to_numpy(),
            "event_id": h.event_id.to_numpy(),
        }
    )


# --------------------------------------------------------------------------------------------- revisions


def _published_ids(truth_dir: Path, name: str, key: str, prefix: str) -> pd.DataFrame:
    """The clean truth rows of `name` (records published by that delivery) whose id starts with prefix."""
    t = _read_text_csv(truth_dir / f"{name}_clean.csv.gz")
    return t[t[key].str.startswith(prefix)].set_index(key)


def _update_times(rng: np.random.Generator, clock: Clock, n: int) -> np.ndarray:
    """When today's revisions happen: from ten past midnight (after yesterday's export) to midnight."""
    return clock.t0 + rng.integers(600, 86400, n)


def _police_revisions(rng, out_dir: Path, prev_label: str, prev_truth: Path, prev: date, clock: Clock):
    prefix = "JQ" + prev.strftime("%Y%m%d")
    rows = pd.read_csv(out_dir / "police" / f"police_incidents_{prev_label}.csv", dtype=str, keep_default_na=False)
    rows = rows[rows.case_no.str.startswith(prefix)].drop_duplicates("case_no", keep="last")
    pub = _published_ids(prev_truth, "police_incidents", "case_no", prefix)
    cand = rows[rows.case_no.isin(pub.index) & rows.status.isin(police.STATUSES[:2])].reset_index(drop=True)
    rev = cand.iloc[pick_revisions(rng, len(cand), REVISION_SHARE["police_incidents"])].copy()
    onward = rng.random(len(rev)) < 0.3  # 已受理 -> 处理中 sometimes, else straight to 已结案
    rev["status"] = np.where((rev.status == police.STATUSES[0]) & onward, police.STATUSES[1], police.STATUSES[2])
    upd = _update_times(rng, clock, len(rev))
    rev["updated_at"] = fmt_time(clock.local_seconds(upd), "iso_space").astype(object)
    rev["_key"] = upd
    truth = pub.loc[rev.case_no].reset_index().assign(status=rev.status.to_numpy())
    return rev[police.COLUMNS + ["_key"]].reset_index(drop=True), truth


def _fire_revisions(rng, out_dir: Path, prev_label: str, prev_truth: Path, prev: date, clock: Clock):
    prefix = "HJ" + prev.strftime("%Y%m%d")
    latest: dict[str, dict] = {}
    text = (out_dir / "fire" / f"fire_calls_{prev_label}.jsonl").read_text(encoding="utf-8")
    for line in text.splitlines():
        rec = json.loads(line)
        if rec["call_id"].startswith(prefix):
            latest[rec["call_id"]] = rec
    pub = _published_ids(prev_truth, "fire_calls", "call_id", prefix)
    cand = [r for cid, r in sorted(latest.items()) if cid in pub.index and r["status"] in ("on_scene", "dispatched")]
    picked = [cand[i] for i in pick_revisions(rng, len(cand), REVISION_SHARE["fire_calls"])]
    upd = _update_times(rng, clock, len(picked))
    travel = rng.lognormal(np.log(480), 0.45, len(picked)).astype(np.int64)
    lines, keys = [], []
    for rec, u, tr in zip(picked, upd, travel):
        if rec["on_scene"] is None:  # the unit got there after the export: before it closed the call
            disp = int(pd.Timestamp(rec["dispatched"]).timestamp())
            scene = min(disp + int(tr), int(u) - 60)
            rec["on_scene"] = fmt_time(clock.local_seconds(np.array([scene])), "iso_space")[0]
        rec["status"] = "closed"
        rec["last_update"] = int(u) * 1000
        lines.append(json.dumps(rec, ensure_ascii=False, separators=(",", ":")))
        keys.append(int(u))
    ids = [r["call_id"] for r in picked]
    truth = pub.loc[ids].reset_index().assign(status="closed")
    return pd.DataFrame({"line": lines, "_key": np.array(keys, dtype=np.int64)}), truth


def _hotline_revisions(rng, out_dir: Path, prev_label: str, prev_truth: Path, prev: date, clock: Clock):
    prefix = "GD" + prev.strftime("%Y%m%d")
    path = out_dir / "hotline" / f"hotline_tickets_{prev_label}.csv"
    rows = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="gbk")
    rows = rows[rows.ticket_no.str.startswith(prefix)].drop_duplicates("ticket_no", keep="last")
    pub = _published_ids(prev_truth, "hotline_tickets", "ticket_no", prefix)
    cand = rows[rows.ticket_no.isin(pub.index) & rows.status.isin(hotline.STATUSES[:2])].reset_index(drop=True)
    rev = cand.iloc[pick_revisions(rng, len(cand), REVISION_SHARE["hotline_tickets"])].copy()
    rev["status"] = hotline.STATUSES[2]
    upd = _update_times(rng, clock, len(rev))
    rev["updated_at"] = fmt_time(clock.local_seconds(upd), "iso_space").astype(object)
    rev["_key"] = upd
    truth = pub.loc[rev.ticket_no].reset_index().assign(status=hotline.STATUSES[2])
    return rev[hotline.COLUMNS + ["_key"]].reset_index(drop=True), truth


# --------------------------------------------------------------------------------------------- registry


def _enterprises(w: Window, clock: Clock) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(latest delivered registry row of every published enterprise, truth of every enterprise ever
    registered: the window's plus the days')."""
    days = generated_days(w.out_dir)
    truths = [pd.read_csv(w.out_dir / "truth" / "enterprises_truth.csv.gz", dtype=str, keep_default_na=False)]
    truths += [
        pd.read_csv(
            w.out_dir / INCREMENTS / d.isoformat() / "enterprises_truth.csv.gz", dtype=str, keep_default_na=False
        )
        for d in days
    ]
    truth = pd.concat(truths, ignore_index=True)
    truth = truth[
        truth.get("change", pd.Series("registered", index=truth.index)).fillna("registered") != "deregistered"
    ]
    files = [w.out_dir / "enterprise" / "enterprise_registry.csv"]
    files += [w.out_dir / "enterprise" / f"enterprise_registry_{d.isoformat()}.csv" for d in days]
    rows = pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False) for f in files], ignore_index=True)
    published = set(truth.credit_code[truth.delivery == "clean"])
    rows = rows[rows.credit_code.isin(published)]
    # the newest update wins, as in silver (exact duplicates are equal anyway)
    latest = rows.sort_values(["credit_code", "updated_at"], kind="stable").drop_duplicates("credit_code", keep="last")
    return latest.reset_index(drop=True), truth.reset_index(drop=True)


def _inspection_pool(truth: pd.DataFrame, active: pd.DataFrame, industries: pd.DataFrame, city: City) -> pd.DataFrame:
    """The enterprises inspectors visit: published and still registered (those registered on the day
    itself wait for the next one)."""
    t = truth[(truth.delivery == "clean") & truth.credit_code.isin(set(active.credit_code))]
    t = t.drop_duplicates("credit_code").sort_values("credit_code", kind="stable")
    ind_of = {c: i for i, c in enumerate(industries.industry_code)}
    district_of = {d.code: i for i, d in enumerate(DISTRICTS)}
    return pd.DataFrame(
        {
            "credit_code": t.credit_code.to_numpy(),
            "legacy_reg_no": t.legacy_reg_no.to_numpy(),
            "name": t.enterprise_name.to_numpy(),
            "ind": t.industry_code.map(ind_of).to_numpy(np.int64),
            "district": t.district_code.map(district_of).to_numpy(np.int64),
            "h3_cell": t.h3_cell.to_numpy(),
        }
    )


def _open_hazards(w: Window, clock: Clock) -> pd.DataFrame:
    """Every clean hazard not yet accepted: its latest delivered row, its state in day numbers (-1: not
    yet) and its truth columns."""
    days = generated_days(w.out_dir)
    states = [pd.read_csv(w.out_dir / "truth" / "hazards_truth.csv.gz", dtype=str, keep_default_na=False)]
    states += [
        pd.read_csv(w.out_dir / INCREMENTS / d.isoformat() / "hazards_truth.csv.gz", dtype=str, keep_default_na=False)
        for d in days
    ]
    state = pd.concat(states, ignore_index=True).drop_duplicates("hazard_id", keep="last")
    state = state[(state.delivery == "clean") & (state.accepted_date == "")]
    labels = [clock.month_label(k) for k in range(len(clock.months))] + [d.isoformat() for d in days]
    rows = pd.concat(
        [
            pd.read_csv(
                w.out_dir / "inspections" / f"hazards_{label}.csv",
                dtype=str,
                keep_default_na=False,
                encoding="utf-8-sig",
            )
            for label in labels
        ],
        ignore_index=True,
    ).drop_duplicates("hazard_id", keep="last")  # files in delivery order: the last row is the latest
    merged = rows[enterprise.HAZ_COLUMNS].merge(
        state[["hazard_id", "credit_code", "subcategory_code", "h3_cell", "severity"]].rename(
            columns={"severity": "truth_severity"}
        ),
        on="hazard_id",
        how="inner",
        validate="one_to_one",
    )
    day_no = lambda col: np.array(  # noqa: E731
        [(date.fromisoformat(v) - EPOCH).days if v else -1 for v in col], dtype=np.int64
    )
    s = state.set_index("hazard_id").loc[merged.hazard_id]
    merged["found"] = day_no(s.found_date)
    merged["deadline"] = day_no(s.rectify_deadline)
    merged["rectified"] = day_no(s.rectified_date)
    merged["accepted"] = day_no(s.accepted_date)
    merged["major"] = (merged.pop("truth_severity") == "major").to_numpy()
    return merged.sort_values("hazard_id", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------- devices


IN_FLIGHT = "device_readings_in_flight.csv.gz"  # lines measured by a day's end that arrive later
READING_COLUMNS = ["device_id", "ts", "seq", "value", "unit", "received_at", "_kind", "_measured"]


def _device_readings(w: Window, clock: Clock, city: City, day: date, chain: dict, n_dev: int, out: Path):
    """The readings batch of the day: every line arriving that day, measured that day or still in
    flight at the end of the day before (late lines and re-sends; the window's own were delivered with
    it). What arrives later is left in flight in the day's truth folder for the next day: a day reads
    the state the day before left and never simulates it again."""
    plan = devices.plan(clock, w.seed, city, n_dev)
    _, rain24, smooth24 = chain[day]
    today = devices.day_readings(
        plan, w.seed, day.isoformat(), (day - w.start).days * 24, clock.local_midnight(day), rain24, smooth24
    )
    parts = [today[READING_COLUMNS]]
    before = w.out_dir / INCREMENTS / (day - timedelta(days=1)).isoformat() / IN_FLIGHT
    if before.is_file():
        carried = pd.read_csv(before, dtype=str, keep_default_na=False)
        parts.insert(0, carried.astype({"seq": np.int64, "received_at": np.int64}))
    lines = pd.concat(parts, ignore_index=True)
    arrival = clock.local_seconds(lines.received_at.to_numpy() // 1000) // 86400
    now = arrival == (day - EPOCH).days
    write_csv_gz(out / INCREMENTS / day.isoformat() / IN_FLIGHT, lines[~now][READING_COLUMNS])
    lines = lines[now]
    write_bytes(out / "devices" / "readings" / f"batch_{day.isoformat()}.jsonl", devices.batch_text(lines))
    kind = lines._kind.to_numpy()
    counts = SourceCounts(
        files=1,
        rows_delivered=len(lines),
        duplicates=int((kind == "duplicate").sum()),
        published=int((kind == "published").sum()),
        quarantined={k: int((kind == k).sum()) for k in devices.READING_KINDS},
    )
    counts.check("device_readings")
    details = {
        "measured_today": int((lines._measured == day.isoformat()).sum()),
        "late_from_days_before": int((lines._measured != day.isoformat()).sum()),
        "in_flight_at_the_end_of_the_day": int((~now).sum()),
        "unregistered_device_ids": sorted(set(lines.device_id[kind == "unknown_device"])),
    }
    return counts, details
