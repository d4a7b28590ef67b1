"""The synthetic city generator: determinism, reference data, and that its truth agrees with what it
delivers (recomputed here independently from the delivered files)."""

from __future__ import annotations

import hashlib
import itertools
import json
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import shape

import synthetic_city
from synthetic_city import people

REPO = Path(__file__).resolve().parent.parent
TAXONOMY = REPO / "reference" / "taxonomy" / "taxonomy.csv"
POLICE_XWALK = REPO / "reference" / "crosswalks" / "police_offence_codes.csv"
ARGS = dict(scale=0.005, seed=11, start_date=date(2025, 1, 1), days=60, timezone="Asia/Shanghai", h3_resolution=8)
SOURCES = [
    "police_incidents",
    "fire_calls",
    "hotline_tickets",
    "hazard_inspections",
    "enterprise_registry",
    "device_registry",
    "device_readings",
    "weather_daily",
]


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("city_a")
    counts = synthetic_city.generate(out, **ARGS)
    return out, counts


def _read_police(root: Path) -> pd.DataFrame:
    files = sorted((root / "police").glob("police_incidents_*.csv"))
    return pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False) for f in files], ignore_index=True)


# ------------------------------------------------------------------------------------------ determinism
def test_same_arguments_give_identical_files(city, tmp_path):
    root, counts = city
    again = synthetic_city.generate(tmp_path / "b", **ARGS)
    assert again == counts
    a, b = _digests(root), _digests(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) > 20
    assert a == b


def test_different_seed_gives_different_data(city, tmp_path):
    root, _ = city
    synthetic_city.generate(tmp_path / "c", **{**ARGS, "seed": ARGS["seed"] + 1})
    a, c = _digests(root), _digests(tmp_path / "c")
    for rel in ("police/police_incidents_2025-01.csv", "truth/intensity_cell_week.csv.gz", "weather/weather_daily.csv"):
        assert a[rel] != c[rel], rel
    # the city itself (reference data) is fixed
    assert a["reference/districts.geojson"] == c["reference/districts.geojson"]


# ------------------------------------------------------------------------------------------ reference data
def test_taxonomy_shape_and_codes():
    t = pd.read_csv(TAXONOMY, dtype=str, keep_default_na=False)
    assert list(t.columns) == [
        "domain_code",
        "domain_en",
        "domain_zh",
        "category_code",
        "category_en",
        "category_zh",
        "subcategory_code",
        "subcategory_en",
        "subcategory_zh",
        "severity_default",
    ]
    assert (t.domain_code.nunique(), t.category_code.nunique(), t.subcategory_code.nunique()) == (8, 42, 136)
    assert len(t) == 136 and not t.subcategory_code.duplicated().any()
    assert set(t.domain_code) == {"PS", "FE", "TR", "NH", "PR", "UL", "PH", "PO"}
    assert t.category_code.str.fullmatch(r"[A-Z]{2}\d{2}").all()
    assert (t.category_code.str[:2] == t.domain_code).all()
    assert (t.subcategory_code.str[:4] == t.category_code).all()
    assert t.subcategory_code.str.fullmatch(r"[A-Z]{2}\d{4}").all()
    assert set(t.severity_default) <= {"low", "medium", "high", "critical"}
    # one name per code at every level, no blank names
    for code, cols in (("domain_code", ["domain_en", "domain_zh"]), ("category_code", ["category_en", "category_zh"])):
        assert (t.groupby(code)[cols].nunique() == 1).all().all()
    assert (t[[c for c in t.columns if c.endswith(("_en", "_zh"))]] != "").all().all()


def test_police_crosswalk_maps_into_taxonomy():
    t = pd.read_csv(TAXONOMY, dtype=str)
    x = pd.read_csv(POLICE_XWALK, dtype=str, keep_default_na=False)
    assert list(x.columns) == ["source_code", "source_label", "subcategory_code"]
    assert 40 <= len(x) <= 60 and not x.source_code.duplicated().any()
    assert set(x.subcategory_code) <= set(t.subcategory_code)
    assert x.subcategory_code.str[:2].nunique() >= 4


def test_districts_tile_the_city(city):
    root, _ = city
    gj = json.loads((root / "reference" / "districts.geojson").read_text(encoding="utf-8"))
    feats = gj["features"]
    assert len(feats) == 10
    codes = [f["properties"]["district_code"] for f in feats]
    assert len(set(codes)) == 10 and all(len(c) == 6 and c.isdigit() for c in codes)
    assert all(f["properties"]["name_zh"].endswith("区") for f in feats)
    polys = [shape(f["geometry"]) for f in feats]
    assert all(p.is_valid and p.geom_type in ("Polygon", "MultiPolygon") for p in polys)
    for a, b in itertools.combinations(polys, 2):
        assert a.intersection(b).area < 1e-12
    union = shapely.union_all(polys)
    assert abs(union.area - sum(p.area for p in polys)) < 1e-10
    assert union.geom_type == "Polygon" and len(union.interiors) == 0  # no holes, no gaps
    minx, miny, maxx, maxy = union.bounds
    assert 35 < (maxx - minx) * 95.9 < 45 and 25 < (maxy - miny) * 111 < 35
    aliases = pd.read_csv(root / "reference" / "district_aliases.csv", dtype=str)
    assert set(aliases.alias_kind) == {"official_zh", "short_zh", "english", "pinyin", "code", "known_typo"}
    assert set(aliases.district_code) == set(codes) and not aliases.alias.duplicated().any()


# ------------------------------------------------------------------------------------------ counts
def test_expected_counts_invariants(city):
    root, counts = city
    on_disk = json.loads((root / "truth" / "expected_counts.json").read_text(encoding="utf-8"))
    assert on_disk == counts
    assert counts["generator"] == {
        "seed": 11,
        "scale": 0.005,
        "start_date": "2025-01-01",
        "days": 60,
        "h3_resolution": 8,
        "timezone": "Asia/Shanghai",
    }
    assert set(counts["sources"]) == set(SOURCES)
    for name, s in counts["sources"].items():
        assert s["rows_delivered"] == s["duplicates"] + s["published"] + sum(s["quarantined"].values()), name
        assert 0 <= s["published_without_cell"] <= s["published"]
        assert s["files"] >= 1
    for name in (
        "police_incidents",
        "fire_calls",
        "hotline_tickets",
        "hazard_inspections",
        "enterprise_registry",
        "device_readings",
    ):
        q = counts["sources"][name]["quarantined"]
        assert q and all(v >= 1 for v in q.values()), (name, q)  # every corruption kind is exercised
        assert counts["sources"][name]["duplicates"] >= 1


def _parse_report_time(s: str) -> datetime | None:
    """Independent reading of the four police time formats; local times are Asia/Shanghai (+08:00)."""
    for fmt, local in (("%Y-%m-%d %H:%M:%S", True), ("%Y/%m/%d %H:%M", True), ("%Y-%m-%dT%H:%M:%SZ", False)):
        try:
            d = datetime.strptime(s, fmt)
        except ValueError:
            continue
        return d.replace(tzinfo=UTC) - (pd.Timedelta(hours=8) if local else pd.Timedelta(0))
    try:
        if len(s) == 25 and s[10] == "T":
            return datetime.fromisoformat(s).astimezone(UTC)
    except ValueError:
        pass
    return None


def test_police_counts_recomputed_from_files(city):
    root, counts = city
    exp = counts["sources"]["police_incidents"]
    df = _read_police(root)
    assert list(df.columns) == [
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
    assert exp["files"] == len(list((root / "police").glob("*.csv")))
    assert len(df) == exp["rows_delivered"]
    assert len(df) - df.case_no.nunique() == exp["duplicates"]
    assert df.case_no.str.fullmatch(r"JQ\d{8}\d{6}").all()
    assert df.duplicated().sum() >= 1  # exact duplicate lines
    assert (df.groupby("case_no").status.nunique() > 1).sum() >= 1  # revisions with a changed status
    # keep the latest delivery per case, then classify with the documented rules
    latest = df.sort_values(["case_no", "updated_at"]).drop_duplicates("case_no", keep="last")
    codes = set(pd.read_csv(POLICE_XWALK, dtype=str).source_code)
    aliases = set(pd.read_csv(root / "reference" / "district_aliases.csv", dtype=str).alias)
    gj = json.loads((root / "reference" / "districts.geojson").read_text(encoding="utf-8"))
    boundary = shapely.union_all([shape(f["geometry"]) for f in gj["features"]])
    got = {k: 0 for k in exp["quarantined"]}
    published = without_cell = 0
    for r in latest.itertuples():
        t = _parse_report_time(r.report_time)
        upd = datetime.strptime(r.updated_at, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) - pd.Timedelta(hours=8)
        missing = (r.lon, r.lat) in (("", ""), ("0", "0"))
        if t is None:
            got["invalid_timestamp"] += 1
        elif t.year < 2000 or t > upd:
            got["timestamp_out_of_range"] += 1
        elif r.offence_code not in codes:
            got["unmapped_code"] += 1
        elif not missing and not boundary.contains(shapely.Point(float(r.lon), float(r.lat))):
            got["coordinates_outside_city"] += 1
        elif missing and r.district not in aliases:
            got["unknown_district"] += 1
        else:
            published += 1
            without_cell += missing
    assert got == exp["quarantined"]
    assert published == exp["published"] and without_cell == exp["published_without_cell"]
    truth = pd.read_csv(root / "truth" / "police_incidents_clean.csv.gz", dtype=str, keep_default_na=False)
    assert len(truth) == exp["published"] and set(truth.case_no) <= set(df.case_no)
    assert (truth.h3_cell == "").sum() == exp["published_without_cell"]
    assert truth.district_code.nunique() == 10  # every district present
    final = latest.set_index("case_no").status
    assert (truth.set_index("case_no").status == final.loc[truth.case_no]).all()


def test_police_personal_data_is_well_formed(city):
    root, _ = city
    df = _read_police(root)
    ids = df.reporter_id_no[df.reporter_id_no != ""]
    assert len(ids) > 100 and ids.str.fullmatch(r"\d{17}[\dX]").all()
    assert all(people.id_is_valid(s) for s in ids)
    births = pd.to_datetime(ids.str[6:14], format="%Y%m%d")
    age = 2025 - births.dt.year
    assert age.between(15, 87).all()
    phones = df.reporter_phone[df.reporter_phone != ""]
    assert phones.str.fullmatch(r"1[3-9]\d{9}").all()
    assert df.address.str.contains(r"1[3-9]\d{9}").sum() >= 1  # phone numbers in free text
    assert df.address.str.contains(",").any()  # RFC 4180 quoting exercised


# ------------------------------------------------------------------------------------------ other sources
def test_hotline_files_are_gbk_not_utf8(city):
    root, counts = city
    files = sorted((root / "hotline").glob("hotline_tickets_*.csv"))
    assert len(files) == counts["sources"]["hotline_tickets"]["files"]
    rows = 0
    for f in files:
        raw = f.read_bytes()
        raw.decode("gbk")
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")
        rows += len(pd.read_csv(f, encoding="gbk", dtype=str, keep_default_na=False))
    assert rows == counts["sources"]["hotline_tickets"]["rows_delivered"]


def test_cross_department_links_are_close(city):
    root, counts = city
    links = pd.read_csv(root / "truth" / "cross_department_links.csv", dtype={"time_diff_s": int})
    assert len(links) >= 1
    assert (links.distance_m <= 200).all() and (links.time_diff_s.abs() <= 30 * 60).all()
    tickets = pd.concat([pd.read_csv(f, encoding="gbk", dtype=str) for f in (root / "hotline").glob("*.csv")])
    assert set(links.hotline_ticket_no) <= set(tickets.ticket_no)


def test_fire_and_device_counts_from_files(city):
    root, counts = city
    lines = [
        json.loads(ln) for f in sorted((root / "fire").glob("*.jsonl")) for ln in f.read_text("utf-8").splitlines()
    ]
    fc = counts["sources"]["fire_calls"]
    assert len(lines) == fc["rows_delivered"]
    assert len(lines) - len({ln["call_id"] for ln in lines}) == fc["duplicates"]
    n = 0
    keys = set()
    for f in sorted((root / "devices" / "readings").glob("batch_*.jsonl")):
        for ln in f.read_text("utf-8").splitlines():
            r = json.loads(ln)
            keys.add((r["device_id"], r["seq"]))
            n += 1
    dr = counts["sources"]["device_readings"]
    assert n == dr["rows_delivered"] and n - len(keys) == dr["duplicates"]


def test_enterprise_ids_have_valid_check_characters(city):
    root, counts = city
    reg = pd.read_csv(root / "enterprise" / "enterprise_registry.csv", dtype=str, keep_default_na=False)
    valid = reg.credit_code.map(people.credit_code_is_valid)
    assert (~valid).sum() == counts["sources"]["enterprise_registry"]["quarantined"]["invalid_credit_code"]
    legacy = reg.legacy_reg_no[reg.legacy_reg_no != ""]
    assert len(legacy) and legacy.map(people.legacy_reg_is_valid).all()
    raw = next((root / "inspections").glob("hazards_*.csv")).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")


def test_oracle_intensity_matches_realised_events(city):
    root, _ = city
    it = pd.read_csv(root / "truth" / "intensity_cell_week.csv.gz", dtype={"expected_count": float})
    assert list(it.columns) == ["h3_cell", "week_start", "domain_code", "expected_count"]
    assert (pd.to_datetime(it.week_start).dt.weekday == 0).all()
    assert (it.expected_count >= 0).all()
    ev = pd.read_csv(root / "truth" / "events.csv.gz", dtype=str)
    assert set(ev.h3_cell) <= set(it.h3_cell)
    expected = it.expected_count.sum()
    assert abs(len(ev) - expected) < 5 * np.sqrt(expected) + 0.05 * expected


# ------------------------------------------------------------------------------------------ documented rules
def _city_shape(root: Path):
    gj = json.loads((root / "reference" / "districts.geojson").read_text(encoding="utf-8"))
    return shapely.union_all([shape(f["geometry"]) for f in gj["features"]])


def _inside(boundary, lon, lat) -> bool:
    return bool(boundary.contains(shapely.Point(float(lon), float(lat))))


def test_fire_quarantine_rules_reproduce_counts(city):
    root, counts = city
    exp = counts["sources"]["fire_calls"]
    codes = set(pd.read_csv(REPO / "synthetic_city" / "codes" / "fire_call_types.csv", dtype=str).source_code)
    aliases = set(pd.read_csv(root / "reference" / "district_aliases.csv", dtype=str).alias)
    boundary = _city_shape(root)
    latest: dict[str, dict] = {}
    for f in sorted((root / "fire").glob("*.jsonl")):
        for ln in f.read_text("utf-8").splitlines():
            r = json.loads(ln)
            if r["call_id"] not in latest or r["last_update"] > latest[r["call_id"]]["last_update"]:
                latest[r["call_id"]] = r
    got = {k: 0 for k in exp["quarantined"]}
    published = without = 0
    for r in latest.values():
        rv = r["received"]
        try:
            recv = rv / 1000 if isinstance(rv, int) else datetime.fromisoformat(rv).timestamp()
            assert isinstance(rv, int) or datetime.fromisoformat(rv).tzinfo is not None
        except (TypeError, ValueError, AssertionError):
            got["invalid_timestamp"] += 1
            continue
        disp = datetime.fromisoformat(r["dispatched"]).timestamp()
        missing = r["lon"] is None or (r["lon"] == 0 and r["lat"] == 0)
        if recv < 946684800 or recv > r["last_update"] / 1000:
            got["timestamp_out_of_range"] += 1
        elif disp < recv:
            got["time_order_violation"] += 1
        elif r["call_type"] not in codes:
            got["unmapped_code"] += 1
        elif not missing and not _inside(boundary, r["lon"], r["lat"]):
            got["coordinates_outside_city"] += 1
        elif missing and r["district"] not in aliases:
            got["unknown_district"] += 1
        else:
            published += 1
            without += missing
    assert got == exp["quarantined"]
    assert (published, without) == (exp["published"], exp["published_without_cell"])


def test_hotline_quarantine_rules_reproduce_counts(city):
    root, counts = city
    exp = counts["sources"]["hotline_tickets"]
    cats = pd.read_csv(REPO / "synthetic_city" / "codes" / "hotline_categories.csv", dtype=str)
    labels = set(cats.label_zh) | set(cats.label_en)
    aliases = set(pd.read_csv(root / "reference" / "district_aliases.csv", dtype=str).alias)
    boundary = _city_shape(root)
    df = pd.concat(
        [
            pd.read_csv(f, encoding="gbk", dtype=str, keep_default_na=False)
            for f in sorted((root / "hotline").glob("*.csv"))
        ],
        ignore_index=True,
    )
    assert len(df) - df.ticket_no.nunique() == exp["duplicates"]
    latest = df.sort_values(["ticket_no", "updated_at"]).drop_duplicates("ticket_no", keep="last")
    got = {k: 0 for k in exp["quarantined"]}
    published = without = 0
    for r in latest.itertuples():
        t = None
        for fmt in ("%Y-%m-%d %H:%M:%S", "%Y年%m月%d日 %H:%M", "%Y/%m/%d %H:%M"):
            try:
                t = datetime.strptime(r.accepted_at, fmt)
                break
            except ValueError:
                pass
        missing = r.lon == ""
        if t is None:
            got["invalid_timestamp"] += 1
        elif t.year < 2000 or t > datetime.strptime(r.updated_at, "%Y-%m-%d %H:%M:%S"):
            got["timestamp_out_of_range"] += 1
        elif r.category not in labels:
            got["unmapped_code"] += 1
        elif not missing and not _inside(boundary, r.lon, r.lat):
            got["coordinates_outside_city"] += 1
        elif missing and r.district not in aliases:
            got["unknown_district"] += 1
        else:
            published += 1
            without += missing
    assert got == exp["quarantined"]
    assert (published, without) == (exp["published"], exp["published_without_cell"])


def test_inspection_rules_reproduce_counts(city):
    root, counts = city
    exp = counts["sources"]["hazard_inspections"]
    boundary = _city_shape(root)
    reg = pd.read_csv(root / "enterprise" / "enterprise_registry.csv", dtype=str, keep_default_na=False)
    ok = reg.credit_code.map(people.credit_code_is_valid) & np.array(
        [_inside(boundary, a, b) for a, b in zip(reg.lon, reg.lat)]
    )
    reg_exp = counts["sources"]["enterprise_registry"]
    assert reg[ok].credit_code.nunique() == reg_exp["published"]
    assert len(reg) - reg.credit_code.nunique() == reg_exp["duplicates"]
    ids = set(reg[ok].credit_code) | set(reg[ok].legacy_reg_no[reg[ok].legacy_reg_no != ""])
    codes = set(pd.read_csv(REPO / "synthetic_city" / "codes" / "hazard_codes.csv", dtype=str).source_code)
    df = pd.concat(
        [
            pd.read_csv(f, encoding="utf-8-sig", dtype=str, keep_default_na=False)
            for f in sorted((root / "inspections").glob("*.csv"))
        ],
        ignore_index=True,
    )
    assert len(df) - df.hazard_id.nunique() == exp["duplicates"]
    latest = df.sort_values(["hazard_id", "updated_at"]).drop_duplicates("hazard_id", keep="last")

    def parse(s):
        for fmt in ("%Y-%m-%d", "%Y/%m/%d", "%Y年%m月%d日"):
            try:
                return datetime.strptime(s, fmt)
            except ValueError:
                pass
        return None

    got = {k: 0 for k in exp["quarantined"]}
    for r in latest.itertuples():
        found, rect = parse(r.found_date), parse(r.rectified_date)
        if found is None:
            got["invalid_timestamp"] += 1
        elif rect is not None and rect < found:
            got["time_order_violation"] += 1
        elif r.hazard_code not in codes:
            got["unmapped_code"] += 1
        elif r.enterprise_id not in ids:
            got["unknown_enterprise"] += 1
    assert got == exp["quarantined"]
    assert len(latest) - sum(got.values()) == exp["published"]
    assert set(latest.severity) == {"一般", "重大"}


def test_device_reading_rules_reproduce_counts(city):
    root, counts = city
    reg = pd.read_csv(root / "devices" / "device_registry.csv", dtype=str, keep_default_na=False)
    types = {"rain_gauge", "water_level", "gas_pressure", "vibration", "smoke"}
    known = set(reg.device_id[reg.device_type.isin(types)])
    assert len(known) == counts["sources"]["device_registry"]["published"]
    exp = counts["sources"]["device_readings"]
    seen: set = set()
    got = {k: 0 for k in exp["quarantined"]}
    published = 0
    units = set()
    for f in sorted((root / "devices" / "readings").glob("batch_*.jsonl")):
        for ln in f.read_text("utf-8").splitlines():
            r = json.loads(ln)
            key = (r["device_id"], r["seq"])
            if key in seen:
                continue
            seen.add(key)
            units.add(r["unit"])
            if r["device_id"] not in known:
                got["unknown_device"] += 1
            elif r["value"] == -9999:
                got["sentinel_value"] += 1
            elif r["ts"] < "2000-01-01":
                got["timestamp_out_of_range"] += 1
            else:
                published += 1
    assert got == exp["quarantined"] and published == exp["published"]
    assert {"mm", "cm", "m", "kPa", "MPa"} <= units
