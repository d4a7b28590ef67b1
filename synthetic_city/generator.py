"""Orchestration: one call writes every department's deliveries, the reference data and the truth."""

from __future__ import annotations

import logging
import shutil
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from . import devices, enterprise, events, fire, hotline, police
from . import weather as wx
from ._util import (
    CODES_DIR,
    POLICE_CROSSWALK_CSV,
    TAXONOMY_CSV,
    Clock,
    fmt_time,
    rng_for,
    write_bytes,
    write_csv,
    write_csv_gz,
    write_json,
)
from .geo import DISTRICTS, City, alias_table, geojson_text

log = logging.getLogger(__name__)

# yearly volumes at scale 1.0
DEPT_TOTALS = {"police": 300_000, "fire": 60_000, "hotline": 385_000}
ENTERPRISES = 20_000
HAZARDS = 30_000
DEVICES = 1_000
# floors so that tiny test scales still exercise every path
MIN_CASES = {"police": 200, "fire": 100, "hotline": 200}
MIN_ENTERPRISES, MIN_HAZARDS, MIN_DEVICES = 200, 150, 10
OWNED_DIRS = ["reference", "police", "fire", "hotline", "inspections", "enterprise", "devices", "weather", "truth"]
WEATHER_STATION = "57999"


def load_taxonomy() -> pd.DataFrame:
    return pd.read_csv(TAXONOMY_CSV, dtype=str, keep_default_na=False)


def load_codebooks(taxonomy: pd.DataFrame) -> dict[str, events.CodeBook]:
    subs = set(taxonomy.subcategory_code)
    cw = pd.read_csv(POLICE_CROSSWALK_CSV, dtype=str, keep_default_na=False)
    wts = pd.read_csv(CODES_DIR / "police_offence_weights.csv", dtype={"source_code": str})
    pol = cw.merge(wts, on="source_code", how="left").fillna({"weight": 1.0})
    pol = pd.DataFrame(
        {
            "code": pol.source_code,
            "label": pol.source_label,
            "subcategory_code": pol.subcategory_code,
            "weight": pol.weight.astype(float),
        }
    )
    fc = pd.read_csv(CODES_DIR / "fire_call_types.csv", dtype={"source_code": str})
    fir = pd.DataFrame(
        {
            "code": fc.source_code,
            "label": fc.source_label,
            "subcategory_code": fc.subcategory_code,
            "weight": fc.weight.astype(float),
        }
    )
    hc = pd.read_csv(CODES_DIR / "hotline_categories.csv", dtype=str)
    hot = pd.DataFrame(
        {
            "code": hc.category_id,
            "label": hc.label_zh,
            "subcategory_code": hc.subcategory_code,
            "weight": hc.weight.astype(float),
        }
    )
    books = {}
    for dept, t in (("police", pol), ("fire", fir), ("hotline", hot)):
        missing = sorted(set(t.subcategory_code) - subs)
        if missing:
            raise ValueError(f"{dept} codes map to subcategories not in the taxonomy: {missing}")
        if t.code.duplicated().any():
            raise ValueError(f"{dept}: duplicate source codes")
        t = t.copy()
        t["domain_code"] = t.subcategory_code.str[:2]
        books[dept] = events.CodeBook(dept, t.reset_index(drop=True))
    return books


def generate(
    out_dir: Path, *, scale: float, seed: int, start_date: date, days: int, timezone: str, h3_resolution: int
) -> dict:
    """Write the synthetic city under out_dir and return the expected counts (also written to
    out_dir/truth/expected_counts.json). Same arguments => byte-identical files."""
    if not (scale > 0):
        raise ValueError("scale must be > 0")
    if int(days) < 1:
        raise ValueError("days must be >= 1")
    if int(seed) < 0:
        raise ValueError("seed must be >= 0")
    say = log.info
    started = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for d in OWNED_DIRS:
        if (out_dir / d).exists():
            shutil.rmtree(out_dir / d)
    seed, days = int(seed), int(days)
    if isinstance(start_date, str):
        start_date = date.fromisoformat(start_date)
    clock = Clock(start_date, days, timezone)

    say("reference: districts, aliases, H3 cells")
    city = City(h3_resolution)
    write_bytes(out_dir / "reference" / "districts.geojson", geojson_text(city).encode("utf-8"))
    write_csv(out_dir / "reference" / "district_aliases.csv", alias_table())

    say("weather: daily observations")
    wdf = wx.simulate(rng_for(seed, "weather"), clock.dates[:-1])
    wout = wdf.assign(station_id=WEATHER_STATION)[
        ["date", "station_id", "precip_mm", "tmax_c", "tmin_c", "wind_max_ms"]
    ]
    write_csv(out_dir / "weather" / "weather_daily.csv", wout)
    rain_h = wx.hourly_rain(rng_for(seed, "weather:hourly"), wdf.precip_mm.to_numpy(float))

    taxonomy = load_taxonomy()
    books = load_codebooks(taxonomy)
    frac = days / 365.0
    ev_scale = max([scale] + [MIN_CASES[k] / (DEPT_TOTALS[k] * frac) for k in DEPT_TOTALS])
    say(f"events: simulating the space-time intensity (event scale {ev_scale:.4g})")
    es = events.simulate(seed, clock, city, wdf, ev_scale, books, DEPT_TOTALS)
    ev = es.events

    say("police: incident records")
    p_counts, p_truth, p_link, p_map, p_pii, p_det = police.generate(
        out_dir, ev[ev.dept == "police"], clock, seed, pd.read_csv(POLICE_CROSSWALK_CSV, dtype=str), city
    )
    say("fire: fire and EMS calls")
    fb = books["fire"].table
    f_counts, f_truth, f_link, f_map, f_det = fire.generate(out_dir, ev[ev.dept == "fire"], clock, seed, fb, city)
    say("hotline: 12345 tickets (GBK)")
    hc = pd.read_csv(CODES_DIR / "hotline_categories.csv", dtype=str)
    h_counts, h_truth, links, h_map, h_pii, h_det = hotline.generate(
        out_dir, ev[ev.dept == "hotline"], clock, seed, hc, city, {"police_incidents": p_link, "fire_calls": f_link}
    )

    say("enterprise: registry")
    industries = pd.read_csv(CODES_DIR / "industries.csv", dtype={"industry_code": str})
    n_ent = max(MIN_ENTERPRISES, int(round(ENTERPRISES * scale)))
    e_counts, ent, e_truth, e_det = enterprise.generate_registry(out_dir, clock, seed, city, industries, n_ent)
    say("inspections: hazard records")
    hz_codes = pd.read_csv(CODES_DIR / "hazard_codes.csv", dtype=str).astype({"weight": float})
    n_haz = max(MIN_HAZARDS, int(round(HAZARDS * scale * frac)))
    i_counts, i_truth, i_det = enterprise.generate_inspections(
        out_dir, clock, seed, city, ent, hz_codes, industries, n_haz
    )
    say("devices: registry and readings")
    n_dev = max(MIN_DEVICES, int(round(DEVICES * scale)))
    d_reg, d_read, d_truth, d_det = devices.generate(out_dir, clock, seed, city, wdf, rain_h, n_dev)

    say("truth: oracle intensity, clean records, links")
    truth = out_dir / "truth"
    inten = es.intensity.sort_values(["h3_cell", "week_start", "domain_code"], kind="stable")
    inten = inten.assign(expected_count=[f"{v:.6f}" for v in inten.expected_count])
    write_csv_gz(truth / "intensity_cell_week.csv.gz", inten)
    evt = write_events_truth(truth / "events.csv.gz", ev, [p_map, f_map, h_map], city)
    write_csv_gz(truth / "police_incidents_clean.csv.gz", p_truth)
    write_csv_gz(truth / "fire_calls_clean.csv.gz", f_truth)
    write_csv_gz(truth / "hotline_tickets_clean.csv.gz", h_truth)
    write_csv(truth / "cross_department_links.csv", links)
    write_csv_gz(truth / "hazards_truth.csv.gz", i_truth)
    write_csv_gz(truth / "enterprises_truth.csv.gz", e_truth)
    write_csv(truth / "devices_truth.csv", d_truth)
    write_csv(truth / "pii_in_free_text.csv", pd.concat([p_pii, h_pii], ignore_index=True))

    w_counts = {
        "files": 1,
        "rows_delivered": len(wout),
        "duplicates": 0,
        "published": len(wout),
        "published_without_cell": 0,
        "quarantined": {},
    }
    expected = {
        "generator": {
            "seed": seed,
            "scale": float(scale),
            "start_date": start_date.isoformat(),
            "days": days,
            "h3_resolution": int(h3_resolution),
            "timezone": timezone,
        },
        "sources": {
            "police_incidents": p_counts.as_dict(),
            "fire_calls": f_counts.as_dict(),
            "hotline_tickets": h_counts.as_dict(),
            "hazard_inspections": i_counts.as_dict(),
            "enterprise_registry": e_counts.as_dict(),
            "device_registry": d_reg.as_dict(),
            "device_readings": d_read.as_dict(),
            "weather_daily": w_counts,
        },
        "details": {
            "event_scale": round(ev_scale, 6),
            "events_total": int(len(ev)),
            "events_by_domain": {d: int((ev.domain == d).sum()) for d in events.DOMAINS},
            "events_by_source": {s: int((evt.source == s).sum()) for s in sorted(evt.source.unique())},
            "triggered_events": int((ev.generation > 0).sum()),
            "h3_cells": int(city.n_cells),
            "weeks": int(clock.n_weeks),
            "police_incidents": p_det,
            "fire_calls": f_det,
            "hotline_tickets": h_det,
            "enterprise_registry": e_det,
            "hazard_inspections": i_det,
            "device_readings": d_det,
        },
    }
    write_json(truth / "expected_counts.json", expected)
    say(f"done in {time.monotonic() - started:.1f} s")
    return expected


def write_events_truth(path: Path, ev: pd.DataFrame, record_maps: list[pd.DataFrame], city: City) -> pd.DataFrame:
    """Write the true events with the record each department delivered for them (truth/events.csv.gz);
    return that join."""
    rec = pd.concat(record_maps, ignore_index=True)
    evt = ev.merge(rec, on="event_id", how="left", validate="one_to_one")
    assert evt.record_id.notna().all()
    code_of = np.array([d.code for d in DISTRICTS])
    write_csv_gz(
        path,
        pd.DataFrame(
            {
                "event_id": evt.event_id,
                "domain_code": evt.domain,
                "subcategory_code": evt.subcategory,
                "occurred_at_utc": fmt_time(evt.t_reported.to_numpy(np.int64), "iso_z"),
                "lon": [f"{v:.6f}" for v in evt.lon],
                "lat": [f"{v:.6f}" for v in evt.lat],
                "h3_cell": city.cells[evt.cell.to_numpy()],
                "district_code": code_of[evt.district.to_numpy()],
                "generation": evt.generation,
                "parent_event_id": evt.parent_event_id,
                "source": evt.source,
                "record_id": evt.record_id,
                "delivery": evt.delivery,
            }
        ),
    )
    return evt
