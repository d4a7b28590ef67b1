"""`citysafe report`: a quarter's risk report as HTML and PDF, in English and Chinese, city-wide or per district.

    reports/<quarter>/inputs.duckdb, provenance.json   what the report read (snapshot.py)
    reports/<quarter>/figures[_<district>].json         every number it shows
    reports/<quarter>/report_<lang>[_<district>].html   self-contained: styles inline, images as data URIs
    reports/<quarter>/report_<lang>[_<district>].pdf    WeasyPrint; fonts embedded and subset

A report whose HTML would come out the same is not written again (same inputs, same files).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from citysafe import warehouse
from citysafe.config import Settings
from citysafe.errors import ConfigurationError
from reports import charts, figures, snapshot
from reports.quarters import Quarter, UnknownQuarter, latest_complete
from reports.text import LANGS, Words, device_type, num, pct, signed

log = logging.getLogger("citysafe.report")
TEMPLATES = Path(__file__).resolve().parent / "templates"
MAX_PDF_BYTES = 5 * 1024 * 1024


def parse_langs(lang: str) -> tuple[str, ...]:
    if lang == "all":
        return LANGS
    if lang not in LANGS:
        raise ConfigurationError(f"language {lang!r}: use en, zh or all")
    return (lang,)


def cjk_font_available() -> bool:
    """Whether a CJK font is installed (Debian's fonts-noto-cjk); without one Chinese renders as boxes."""
    from matplotlib import font_manager

    if any("CJK" in f.name for f in font_manager.fontManager.ttflist):
        return True
    # matplotlib caches the font list: a font installed after its first use (apt-get install fonts-noto-cjk
    # on a machine that already ran matplotlib) is only seen once the cache is rebuilt
    font_manager.fontManager = font_manager._load_fontmanager(try_read_cache=False)
    font_manager.findfont = font_manager.fontManager.findfont
    return any("CJK" in f.name for f in font_manager.fontManager.ttflist)


def targets(settings: Settings) -> dict:
    return {
        "hazard_overdue_rate_max": settings.superset.hazard_overdue_rate_max,
        "hazard_days_to_rectify_max": settings.superset.hazard_days_to_rectify_max,
    }


def data_range(settings: Settings) -> tuple[dt.date, dt.date]:
    df = warehouse.query(
        settings, "select min(occurred_date_local) as lo, max(occurred_date_local) as hi from fct_incident"
    )
    lo, hi = df["lo"].iloc[0], df["hi"].iloc[0]
    if lo is None or lo != lo:  # None or NaT
        raise UnknownQuarter("the warehouse holds no incidents yet: no quarter to report on")
    return _date(lo), _date(hi)


def _date(value) -> dt.date:
    return value.date() if hasattr(value, "date") and callable(value.date) else value


def choose_quarter(settings: Settings, quarter: str | None) -> Quarter:
    """The quarter asked for (checked against the data), or the latest complete one."""
    if quarter is not None:
        q = Quarter.parse(quarter)
        if snapshot.exists(settings, q.label):
            return q  # frozen earlier: it is reported from its own inputs
    lo, hi = data_range(settings)
    if quarter is None:
        return latest_complete(lo, hi)
    if q.end < lo or q.start > hi:
        raise UnknownQuarter(f"quarter {q.label}: no data (the warehouse covers {lo} to {hi})")
    if q.end > hi:
        raise UnknownQuarter(f"quarter {q.label} is not complete yet (data up to {hi})")
    return q


def _suffix(district: str | None) -> str:
    return f"_{district}" if district else ""


def generate(
    settings: Settings,
    quarter: str | None = None,
    *,
    langs: tuple[str, ...] = LANGS,
    district: str | None = None,
    refresh: bool = False,
    pdf: bool = True,
    run_id: str | None = None,
    on_step: Callable[[str], None] = log.info,
) -> dict:
    """Write the report files (the PDF too unless `pdf` is False); returns {quarter, files, written, seconds}."""
    seconds: dict[str, float] = {}
    t = time.monotonic()
    if "zh" in langs and not cjk_font_available():
        raise ConfigurationError(
            "the Chinese report needs a CJK font: apt-get install fonts-noto-cjk (or use --lang en)"
        )
    q = choose_quarter(settings, quarter)
    out_dir = snapshot.quarter_dir(settings, q.label)
    if refresh or not snapshot.exists(settings, q.label):
        snapshot.take(settings, q.label, run_id)
        on_step(f"report {q.label}: inputs frozen from the served warehouse")
    provenance = snapshot.read_provenance(settings, q.label)
    seconds["snapshot"] = time.monotonic() - t

    t = time.monotonic()
    con = snapshot.connect(settings, q.label)
    try:
        name_map = figures.names(con)
        if district is not None and district not in name_map["districts"]:
            raise ConfigurationError(
                f"district {district!r} is not in the report's data (districts: {', '.join(sorted(name_map['districts']))})"
            )
        f = figures.compute(con, q, targets(settings), district)
        districts = figures.districts(con)
    finally:
        con.close()
    data_json = figures.to_json(f)
    _write_if_changed(out_dir / f"figures{_suffix(district)}.json", data_json.encode("utf-8"))
    seconds["figures"] = time.monotonic() - t

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    template = env.get_template("report.html.j2")
    css = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    files, written = [], []
    if district:
        districts = [d for d in districts if d["district_code"] == district]
    for lang in langs:
        w = Words(lang, f["names"])
        t = time.monotonic()
        images = {
            "map": charts.risk_map(f["risk"]["cells"], districts, w),
            "trends": charts.trends(f["trends"]["weekly"], f["trends"]["band"], w),
            "hazards": charts.hazard_rates(f["hazards"]["by_district"], f["targets"]["hazard_overdue_rate_max"], w),
            "alerts": charts.alerts_by_type(f["alerts"]["by_type_grade"], w),
        }
        seconds[f"charts_{lang}"] = time.monotonic() - t
        t = time.monotonic()
        html = _render(template, css, f, w, images, provenance, district)
        stem = out_dir / f"report_{lang}{_suffix(district)}"
        html_path, pdf_path = stem.with_suffix(".html"), stem.with_suffix(".pdf")
        changed = _write_if_changed(html_path, html.encode("utf-8"))
        seconds[f"html_{lang}"] = time.monotonic() - t
        if changed:
            written.append(html_path)
        files.append(html_path)
        if pdf:
            t = time.monotonic()
            if changed or not pdf_path.is_file():
                _write_pdf(html, pdf_path)
                written.append(pdf_path)
            seconds[f"pdf_{lang}"] = time.monotonic() - t
            files.append(pdf_path)
        on_step(f"report {q.label} {lang}{' ' + district if district else ''}: {files[-1]}")
    seconds["total"] = sum(seconds.values())
    return {"quarter": q.label, "files": files, "written": written, "seconds": seconds, "provenance": provenance}


def _render(template, css: str, f: dict, w: Words, images: dict, provenance: dict, district: str | None) -> str:
    by_key = {k["key"]: k for k in f["key_figures"]}
    sentences = [
        w.incidents_sentence(by_key["incidents"], f["incidents"]["top_mover"]),
        *w.hazard_sentences(
            by_key["hazard_overdue_rate"], by_key["hazard_cycle_days"], f["hazards"]["by_district"], f["targets"]
        ),
        w.alert_sentence(by_key["device_alerts"], f["alerts"]["by_type_grade"]),
        w.response_sentence(by_key["response_minutes"], f["response"]),
    ]
    methods = sorted({r["method"] for r in f["trends"]["band"]})
    title = w["district_title"].format(name=w.district(district)) if district else w["title"]
    return template.render(
        f=f,
        w=_Bound(w),
        title=title,
        scope_name=w.district(district) if district else w["city_wide"],
        sentences=sentences,
        img=images,
        css=css,
        prov=provenance,
        freshness={r["source"]: r for r in f["appendix"]["freshness"]},
        forecast_methods=", ".join(methods),
        num=num,
        pct=pct,
        fmt_value=lambda k, v: _fmt(k["unit"], v, w),
        fmt_change=lambda k, ch: _fmt_change(k["unit"], ch, w),
        device_type=lambda t: device_type(t, w.lang),
    )


class _Bound:
    """Words for the template: `w.key` for a text, `w.district(code)` for a name."""

    def __init__(self, words: Words):
        self._w = words
        self.lang = words.lang

    def __getattr__(self, key):
        if key in ("district_name", "domain_name", "scope_name"):
            return getattr(self._w, key.removesuffix("_name"))
        return self._w[key]

    def __getitem__(self, key):
        return self._w[key]


def _fmt(unit: str, value, w: Words) -> str:
    if value is None:
        return w["no_data_short"]
    if unit == "share":
        return pct(value)
    if unit in ("days", "minutes"):
        return num(value, 1)
    return num(value)


def _fmt_change(unit: str, change, w: Words) -> str:
    if change is None:
        return w["no_data_short"]
    if unit == "share":
        return (
            f"{signed(change['abs'] * 100, 1)} pp" if w.lang == "en" else f"{signed(change['abs'] * 100, 1)} 个百分点"
        )
    digits = 1 if unit in ("days", "minutes") else 0
    rel = f" ({signed(change['pct'] * 100, 1)}%)" if change["pct"] is not None else ""
    return signed(change["abs"], digits) + rel


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True


def _write_pdf(html: str, path: Path) -> None:
    import weasyprint

    tmp = path.with_name(f".{path.name}.tmp")
    # no base_url: the HTML references nothing outside itself, so nothing can be fetched
    weasyprint.HTML(string=html).write_pdf(str(tmp))
    size = tmp.stat().st_size
    if size > MAX_PDF_BYTES:
        log.warning("%s is %.1f MB (over 5 MB)", path.name, size / 1e6)
    tmp.replace(path)
