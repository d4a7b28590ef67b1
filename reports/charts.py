"""The report's map and charts, drawn locally with matplotlib (Agg) as PNG data URIs.

No tiles, no downloads: the map is the cells' own polygons coloured by risk level with the districts'
outlines on top. Text uses DejaVu Sans with Debian's Noto Sans CJK SC as per-glyph fallback.
"""

from __future__ import annotations

import base64
import io
import json
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection, PolyCollection  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from reports.text import Words, device_type  # noqa: E402

GRADE_COLOURS = {"red": "#d7191c", "orange": "#fdae61", "yellow": "#ffe066", "blue": "#6baed6"}
FONTS = ["DejaVu Sans", "Noto Sans CJK SC"]
DPI = 130
plt.rcParams.update({"font.family": FONTS, "font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
# stable PNG bytes: no software/date metadata in the file
_PNG_META = {"Software": None}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata=_PNG_META)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _outline_segments(wkt_text: str) -> list:
    from shapely import wkt

    geom = wkt.loads(wkt_text)
    boundary = geom.boundary
    parts = getattr(boundary, "geoms", [boundary])
    return [list(part.coords) for part in parts]


def risk_map(cells: list[dict], districts: list[dict], words: Words) -> str | None:
    if not cells:
        return None
    polys, colours = [], []
    for c in cells:
        ring = json.loads(c["boundary_geojson"])["coordinates"][0]
        polys.append(ring)
        colours.append(GRADE_COLOURS.get(c["risk_level"], "#cccccc"))
    fig, ax = plt.subplots(figsize=(7.2, 6.0))
    ax.add_collection(PolyCollection(polys, facecolors=colours, edgecolors="white", linewidths=0.2))
    segments = [seg for d in districts if d.get("geometry_wkt") for seg in _outline_segments(d["geometry_wkt"])]
    ax.add_collection(LineCollection(segments, colors="#222222", linewidths=0.9))
    xs = [x for p in polys for x, _ in p] + [x for s in segments for x, _ in s]
    ys = [y for p in polys for _, y in p] + [y for s in segments for _, y in s]
    ax.set_xlim(min(xs), max(xs))
    ax.set_ylim(min(ys), max(ys))
    ax.set_aspect(1 / max(0.2, math.cos(math.radians(sum(ys) / len(ys)))))  # degrees of longitude shrink
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    handles = [Patch(facecolor=GRADE_COLOURS[g], label=words["levels"][g]) for g in GRADE_COLOURS]
    ax.legend(handles=handles, loc="lower left", frameon=True, fontsize=8, title=words["level"])
    return _png(fig)


def trends(weekly: list[dict], band: list[dict], words: Words) -> str | None:
    if not weekly:
        return None
    domains = sorted({r["domain_code"] for r in weekly})
    cols = 2
    rows = (len(domains) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(7.4, 1.75 * rows), sharex=True, squeeze=False)
    for ax, domain in zip(axes.flat, domains, strict=False):
        hist = [r for r in weekly if r["domain_code"] == domain]
        ax.plot([r["week_start"] for r in hist], [r["incidents"] for r in hist], color="#1f4e79", linewidth=1.1)
        fc = [r for r in band if r["domain_code"] == domain]
        if fc:
            x = [r["target_week_start"] for r in fc]
            ax.fill_between(x, [r["p10"] for r in fc], [r["p90"] for r in fc], color="#f4a261", alpha=0.35, linewidth=0)
            ax.plot(x, [r["p50"] for r in fc], color="#e76f51", linewidth=1.1)
        ax.set_title(words.domain(domain), fontsize=8.5, loc="left")
        ax.tick_params(labelsize=7)
        ax.set_ylim(bottom=0)
    for ax in list(axes.flat)[len(domains) :]:
        ax.set_visible(False)
    fig.autofmt_xdate()
    fig.tight_layout()
    return _png(fig)


def hazard_rates(by_district: list[dict], target: float, words: Words) -> str | None:
    rows = [r for r in by_district if r["district_code"]]
    if not rows:
        return None
    rows = sorted(rows, key=lambda r: r["overdue_rate"])
    fig, ax = plt.subplots(figsize=(7.0, 0.28 * len(rows) + 0.9))
    colours = ["#d7191c" if r["overdue_rate"] > target else "#2a9d8f" for r in rows]
    ax.barh([words.district(r["district_code"]) for r in rows], [r["overdue_rate"] * 100 for r in rows], color=colours)
    ax.axvline(target * 100, color="#222222", linestyle="--", linewidth=1)
    ax.set_xlabel(words["overdue_rate"] + " (%)")
    ax.tick_params(labelsize=7.5)
    fig.tight_layout()
    return _png(fig)


def alerts_by_type(by_type_grade: list[dict], words: Words) -> str | None:
    if not by_type_grade:
        return None
    types = sorted({r["device_type"] for r in by_type_grade})
    fig, ax = plt.subplots(figsize=(7.0, 0.32 * len(types) + 1.0))
    left = [0] * len(types)
    for grade in ("blue", "yellow", "orange", "red"):
        values = [
            sum(r["episodes"] for r in by_type_grade if r["device_type"] == t and r["peak_grade"] == grade)
            for t in types
        ]
        ax.barh(
            [device_type(t, words.lang) for t in types],
            values,
            left=left,
            color=GRADE_COLOURS[grade],
            label=words["levels"][grade],
        )
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_xlabel(words["episodes"])
    ax.legend(fontsize=7.5, ncols=4, loc="lower right")
    fig.tight_layout()
    return _png(fig)
