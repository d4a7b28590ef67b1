"""Quarterly risk reports: the figures in the PDF equal the warehouse's, both languages, fonts embedded,
pages not blank, HTML self-contained, reproducible from the frozen inputs, "no data" sections, errors."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest

from citysafe.config import load_settings
from citysafe.errors import ConfigurationError
from reports import build, figures, snapshot
from reports.quarters import Quarter, UnknownQuarter, latest_complete
from reports.text import Words, num, pct

QUARTER = "2025Q1"  # the test city covers 2025-01-01 .. 2025-03-31 (90 days): its only complete quarter


# --- units -----------------------------------------------------------------------------------------------


def test_quarters():
    q = Quarter.parse("2025Q3")
    assert (q.start, q.end) == (dt.date(2025, 7, 1), dt.date(2025, 9, 30))
    assert q.previous().label == "2025Q2" and Quarter.parse("2025-q1").previous().label == "2024Q4"
    assert q.year_before().label == "2024Q3" and Quarter.parse("2024Q4").next().label == "2025Q1"
    assert latest_complete(dt.date(2025, 1, 1), dt.date(2025, 12, 30)).label == "2025Q3"  # Q4 ends on the 31st
    assert latest_complete(dt.date(2025, 1, 1), dt.date(2025, 12, 31)).label == "2025Q4"
    with pytest.raises(UnknownQuarter, match="YYYYQn"):
        Quarter.parse("2025Q5")
    with pytest.raises(UnknownQuarter, match="no complete quarter"):
        latest_complete(dt.date(2025, 1, 10), dt.date(2025, 2, 1))


def test_sentences_follow_the_rules_in_both_languages():
    names = {
        "districts": {"D1": {"district_name_en": "North", "district_name_zh": "北区"}},
        "domains": {"TR": {"domain_name_en": "Traffic safety", "domain_name_zh": "交通安全"}},
    }
    kf = {"value": 110, "vs_previous": {"abs": 10, "pct": 0.1}, "vs_year_before": None}
    mover = {"district_code": "D1", "domain_code": "TR", "change": 7}
    en, zh = Words("en", names), Words("zh", names)
    assert en.incidents_sentence(kf, mover) == (
        "Incidents rose 10.0% (+10) on the previous quarter; the largest change came from Traffic safety in North (+7)."
    )
    assert zh.incidents_sentence(kf, mover) == "事件数较上季度上升10.0%（+10）；变化最大的是北区交通安全（+7）。"
    rate = {"value": 0.04}
    days = {"value": 8.0}
    targets = {"hazard_overdue_rate_max": 0.05, "hazard_days_to_rectify_max": 7}
    said = en.hazard_sentences(rate, days, [], targets)
    assert "target met" in said[0] and "target not met" in said[1]
    assert zh.hazard_sentences({"value": None}, days, [], targets) == [zh["no_data"]]


def test_recommended_actions_come_from_the_rules_table():
    rules = figures.load_actions()
    assert figures.driver_of("open_hazard_count", "FE", rules)["domain_code"] == "FE"  # domain rule first
    assert figures.driver_of("open_hazard_count", "TR", rules)["domain_code"] == "*"
    assert "junction" in figures.driver_of("TR_kde_52w", "TR", rules)["action_en"]
    assert figures.driver_of(None, "TR", rules) is None
    for rule in rules:  # every rule speaks both languages
        assert rule["action_en"] and rule["action_zh"] and re.compile(rule["feature_pattern"])


# --- the report `citysafe run` wrote for the test city -------------------------------------------------------


@pytest.fixture(scope="module")
def report(built_city):
    entry = built_city.summary["tables"]["report"]
    assert entry["quarter"] == QUARTER
    files = {Path(f).name: Path(f) for f in entry["files"]}
    assert set(files) == {"report_en.html", "report_en.pdf", "report_zh.html", "report_zh.pdf"}
    return files


def _pdf_text(path: Path) -> str:
    proc = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True)
    return proc.stdout


def _warehouse_figures(warehouse: Path, q: Quarter) -> dict:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        incidents = con.execute(
            "select count(*) from fct_incident where occurred_date_local between ? and ?", [q.start, q.end]
        ).fetchone()[0]
        overdue_rate = con.execute(
            "select avg(case when is_overdue then 1.0 else 0.0 end) from fct_hazard where found_date between ? and ?",
            [q.start, q.end],
        ).fetchone()[0]
        alerts = con.execute(
            "select count(*) from fct_device_alert where start_date_local between ? and ?", [q.start, q.end]
        ).fetchone()[0]
        response = con.execute(
            "select median(epoch_ms(on_scene_at_utc) - epoch_ms(received_at_utc)) / 60000.0 from fct_incident\n"
            "where on_scene_at_utc is not null and received_at_utc is not null and occurred_date_local between ? and ?",
            [q.start, q.end],
        ).fetchone()[0]
    finally:
        con.close()
    return {"incidents": incidents, "overdue_rate": overdue_rate, "alerts": alerts, "response": response}


def test_the_pdf_states_the_warehouse_figures_in_both_languages(built_city, report):
    expected = _warehouse_figures(built_city.warehouse, Quarter.parse(QUARTER))
    assert expected["incidents"] > 0 and expected["response"] is not None
    for lang in ("en", "zh"):
        text = _pdf_text(report[f"report_{lang}.pdf"])
        compact = re.sub(r"\s+", " ", text)
        for shown in (
            num(expected["incidents"]),
            pct(expected["overdue_rate"]),
            num(expected["alerts"]),
            num(expected["response"], 1),
        ):
            assert shown in compact, (lang, shown)
    zh = _pdf_text(report["report_zh.pdf"])
    assert "城市安全风险季度报告" in zh and "隐患逾期率" in zh and "无数据" in zh  # 2024Q4: before the data
    assert "Quarterly city safety risk report" in _pdf_text(report["report_en.pdf"])


def test_fonts_are_embedded_and_subset_and_the_pdfs_are_small(report):
    for lang in ("en", "zh"):
        pdf = report[f"report_{lang}.pdf"]
        assert pdf.stat().st_size < 5 * 1024 * 1024
        out = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True, check=True).stdout
        rows = [line.split() for line in out.splitlines()[2:] if line.strip()]
        assert rows
        for row in rows:  # name type... emb sub uni object id
            assert row[-5:-2] == ["yes", "yes", "yes"], row
        if lang == "zh":
            assert any("CJK" in row[0] for row in rows)


def test_pages_are_not_blank(report, tmp_path):
    from PIL import Image

    for lang in ("en", "zh"):
        subprocess.run(
            ["pdftoppm", "-r", "25", "-png", str(report[f"report_{lang}.pdf"]), str(tmp_path / lang)], check=True
        )
        pages = sorted(tmp_path.glob(f"{lang}-*.png"))
        assert len(pages) >= 5
        for page in pages:
            gray = Image.open(page).convert("L")
            inked = sum(1 for v in gray.getdata() if v < 200)
            assert inked / (gray.width * gray.height) > 0.01, page.name


def test_the_html_references_nothing_outside_itself(report):
    for lang in ("en", "zh"):
        html = report[f"report_{lang}.html"].read_text(encoding="utf-8")
        assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", html)
        assert "@import" not in html and not re.search(r"url\((?!data:)", html)
        assert "<script" not in html
        assert html.count('src="data:image/png;base64,') >= 3


def _copy_city(built_city, root: Path, quarter_files: bool = True):
    """A private copy of the test city's warehouse (and the quarter's frozen report inputs) to change."""
    wh = root / "wh" / "marts.duckdb"
    wh.parent.mkdir(parents=True)
    shutil.copy(built_city.warehouse, wh)
    lake = root / "lake"
    if quarter_files:
        shutil.copytree(built_city.lake / "reports" / QUARTER, lake / "reports" / QUARTER)
    env = {"CITYSAFE_LAKE_ROOT": str(lake), "CITYSAFE_WAREHOUSE_PATH": str(wh)}
    return load_settings(environ={**built_city.env, **env}), wh


def test_regenerating_a_quarter_after_later_data_gives_the_same_figures(built_city, tmp_path):
    settings, wh = _copy_city(built_city, tmp_path)
    before = (built_city.lake / "reports" / QUARTER / "figures.json").read_bytes()
    q = Quarter.parse(QUARTER)
    # later data changes the warehouse: a late batch of incidents in the quarter, a hazard rectified
    con = duckdb.connect(str(wh))
    con.execute(
        "insert into fct_incident select * replace (event_id || '-late' as event_id) from fct_incident "
        "where occurred_date_local between ? and ? limit 25",
        [q.start, q.end],
    )
    con.execute("update fct_hazard set is_overdue = false")
    con.close()
    result = build.generate(settings, QUARTER, langs=("en",), pdf=False)  # the figures are the point here
    assert result["quarter"] == QUARTER
    assert (settings.reports_dir / QUARTER / "figures.json").read_bytes() == before
    # the provenance names what the figures came from: the warehouse build and every Delta version read
    prov = snapshot.read_provenance(settings, QUARTER)
    assert prov["warehouse"]["full_build_run_id"] == "first"
    assert prov["delta_versions"]["silver"]["incident"] >= 1 and "risk_cell_week" in prov["delta_versions"]["gold"]
    assert prov["rows"]["incident_daily"] > 0 and prov["missing"] == []
    # --refresh freezes the new warehouse: the late incidents count now
    build.generate(settings, QUARTER, langs=("en",), refresh=True, pdf=False)
    after = json.loads((settings.reports_dir / QUARTER / "figures.json").read_text())
    incidents = {k["key"]: k["value"] for k in after["key_figures"]}["incidents"]
    assert incidents == json.loads(before)["key_figures"][0]["value"] + 25
    assert {k["key"]: k["value"] for k in after["key_figures"]}["hazard_overdue_rate"] == 0


def test_a_section_without_data_says_so(built_city, tmp_path):
    settings, _ = _copy_city(built_city, tmp_path)
    inputs = settings.reports_dir / QUARTER / snapshot.INPUTS
    con = duckdb.connect(str(inputs))
    for table in ("device_alert", "risk_map", "forecast", "hazard"):
        con.execute(f"drop table {table}")
    con.close()
    (settings.reports_dir / QUARTER / "report_en.html").unlink()
    result = build.generate(settings, QUARTER, langs=("en", "zh"), pdf=False)  # `--html-only`
    assert all(f.suffix == ".html" for f in result["files"]) and len(result["written"]) == 2
    html = (settings.reports_dir / QUARTER / "report_en.html").read_text(encoding="utf-8")
    for section in ("risk", "hazards", "alerts"):
        body = html.split(f'<section id="{section}">')[1].split("</section>")[0]
        assert "No data for this section in this quarter." in body, section
    zh = (settings.reports_dir / QUARTER / "report_zh.html").read_text(encoding="utf-8")
    assert "本季度此部分无数据。" in zh


def test_a_district_report(built_city, tmp_path):
    settings, _ = _copy_city(built_city, tmp_path)
    f = json.loads((settings.reports_dir / QUARTER / "figures.json").read_text())
    code = sorted(f["names"]["districts"])[0]
    result = build.generate(settings, QUARTER, langs=("en",), district=code)
    pdf = settings.reports_dir / QUARTER / f"report_en_{code}.pdf"
    assert pdf in result["files"] and pdf.is_file()
    district = json.loads((settings.reports_dir / QUARTER / f"figures_{code}.json").read_text())
    assert {r["district_code"] for r in district["hazards"]["by_district"]} <= {code}
    assert {r["district_code"] for r in district["risk"]["top"]} <= {code}
    city_total = {k["key"]: k["value"] for k in f["key_figures"]}["incidents"]
    assert 0 < {k["key"]: k["value"] for k in district["key_figures"]}["incidents"] < city_total
    assert f["names"]["districts"][code]["district_name_en"] in _pdf_text(pdf)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--quarter", "2031Q1"], "no data"),
        (["--quarter", "2025Q9"], "YYYYQn"),
        (["--lang", "fr"], "use en, zh or all"),
        (["--district", "NOPE"], "not in the report's data"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(built_city, cli, args, message):
    env = {k: v for k, v in built_city.env.items() if k.startswith("CITYSAFE_")}
    code, _, err = cli("report", *args, env=env)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_a_chinese_report_without_a_cjk_font_stops_with_the_package_to_install(built_city, tmp_path, monkeypatch):
    settings, _ = _copy_city(built_city, tmp_path)
    monkeypatch.setattr(build, "cjk_font_available", lambda: False)
    with pytest.raises(ConfigurationError, match="apt-get install fonts-noto-cjk"):
        build.generate(settings, QUARTER, langs=("zh",), pdf=False)
    assert build.generate(settings, QUARTER, langs=("en",), pdf=False)["quarter"] == QUARTER


def test_the_report_stage_follows_its_quarter_not_every_marts_build(built_city, tmp_path):
    """The report stage's fingerprint (what lets a run skip it): the latest complete quarter and its frozen
    inputs, not the served warehouse's build. A daily marts build leaves it the same; a missing snapshot
    (or a new quarter) does not."""
    import types

    from citysafe import warehouse
    from pipeline import stages

    settings = load_settings(environ=built_city.env)
    inputs = stages._report_inputs(types.SimpleNamespace(settings=settings))
    assert inputs["quarter"] == built_city.summary["tables"]["report"]["quarter"] and inputs["inputs"]

    # another build of the same marts (a new build marker, e.g. the next day's): the same fingerprint
    served = tmp_path / "warehouse" / Path(settings.warehouse_path).name
    served.parent.mkdir()
    shutil.copyfile(settings.warehouse_path, served)
    marker = json.loads(warehouse.build_marker_path(Path(settings.warehouse_path)).read_text())
    warehouse.build_marker_path(served).write_text(json.dumps({**marker, "full_build_run_id": "the-next-day"}))
    rebuilt = settings.model_copy(update={"warehouse_path": served})
    assert stages._report_inputs(types.SimpleNamespace(settings=rebuilt)) == inputs

    # the quarter's inputs not frozen yet: a different fingerprint, so the stage runs
    elsewhere = rebuilt.model_copy(update={"lake_root": tmp_path / "other_lake"})
    assert stages._report_inputs(types.SimpleNamespace(settings=elsewhere))["inputs"] is None
