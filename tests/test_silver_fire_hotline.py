"""Fire/EMS calls and 12345 hotline tickets -> silver.incident, and cross-department links.

Fast tests: the free-text classifier (pure Python), the fire time-order rule and the hotline path on
small fixtures (real Sail engine), the link rule on a hand-made frame. The slow test runs a small
synthetic city through bronze and silver and reconciles with the generator's truth.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import random
import re
import time

import h3
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from citysafe import reference
from citysafe.config import load_settings
from citysafe.sources import SourceError, get_source, load_source_file
from spark_jobs import incident_links, silver_incident, text_classifier
from spark_jobs.bronze import bronze_spec
from spark_jobs.common import Places
from spark_jobs.silver_incident import Reference

import silver_fixtures as fx
from tests_support import lake_settings

FIRE = get_source("fire_calls")
HOTLINE = get_source("hotline_tickets")
SETTINGS = load_settings(environ={"CITYSAFE_PII_KEY": "x" * 16})
RULES = text_classifier.load_rules("hotline_keywords")


def _mac(value: str) -> str:
    return hmac.new(fx.PII_KEY, value.encode(), hashlib.sha256).hexdigest()


# --- the classifier (pure Python) ----------------------------------------------------------------------


def test_every_code_book_label_maps_to_its_subcategory():
    book = pd.read_csv(
        reference.REFERENCE_DIR.parent / "synthetic_city" / "codes" / "hotline_categories.csv",
        dtype=str,
        keep_default_na=False,
    )
    for row in book.itertuples():
        for label in (row.label_zh, row.label_en):
            result = RULES.classify(label)
            assert (result.subcategory_code, result.confidence) == (row.subcategory_code, 1.0), label


@pytest.mark.parametrize(
    "text, expected",
    [
        ("噪声扰民 — 施工噪声", "PO0101"),  # other dash, spaces
        ("ＮＯＩＳＥ－construction", "PO0101"),  # full-width letters and hyphen (NFKC)
        ("Gas smell", "UL0101"),
        ("施工噪音扰民", "PO0101"),  # keyword, not the code-book label
        ("楼道里电动车充电", "FE0504"),
        ("Burst water main on my street", "UL0201"),
        ("stray dogs near the school", "PO0404"),  # English plural
        ("消防通道被堵塞", "FE0501"),
        ("路面塌陷", "NH0202"),  # the longer keyword wins over 路面 inside it
    ],
)
def test_keywords_and_normalisation(text, expected):
    result = RULES.classify(text)
    assert result.subcategory_code == expected, result
    assert result.confidence >= 0.6


def test_catch_all_labels_are_confidently_unmapped():
    for label in ("其他", "Other", "咨询类", "投诉-其他", "投诉－其他", "建议"):
        assert RULES.classify(label) == text_classifier.Result(None, 1.0, RULES.classify(label).rule)
        assert RULES.classify(label).rule.startswith("exact:")


def test_unknown_or_ambiguous_text_has_low_confidence():
    assert RULES.classify("随便说说") == text_classifier.Result(None, 0.0, "no rule matched")
    assert RULES.classify(None).confidence == 0.0 and RULES.classify("  ").confidence == 0.0
    mixed = RULES.classify("noise from construction site at night")  # PO0101 vs PR0201 evidence
    assert mixed.subcategory_code == "PO0101" and mixed.confidence < 0.6 and "runner-up PR0201" in mixed.rule
    # English keywords match whole words only: "gas" is not in "vegas".
    assert RULES.classify("Las Vegas show").subcategory_code is None


def test_classifier_is_deterministic_and_validates_rules():
    texts = ["噪声扰民-施工噪声", "邻居噪音和纠纷", "water cut and no gas", "Other", "xyz"]
    first = [RULES.classify(t) for t in texts]
    shuffled = RULES.__class__(RULES.name, RULES.version, RULES.exact, tuple(reversed(RULES.keywords)))
    assert [shuffled.classify(t) for t in texts] == first
    base = {"language": "zh", "match": "contains", "weight": "0.9", "since": "1", "note": ""}
    with pytest.raises(text_classifier.RuleError, match="not in the taxonomy"):
        text_classifier.build(pd.DataFrame([{**base, "pattern": "x", "subcategory_code": "ZZ9999"}]), "t", {"PO0101"})
    with pytest.raises(text_classifier.RuleError, match="only an exact rule"):
        text_classifier.build(pd.DataFrame([{**base, "pattern": "x", "subcategory_code": ""}]), "t", {"PO0101"})
    with pytest.raises(text_classifier.RuleError, match="appears twice"):
        text_classifier.build(
            pd.DataFrame(
                [
                    {**base, "pattern": "施工", "subcategory_code": "PO0101"},
                    {**base, "pattern": "施 工", "subcategory_code": "PO0101"},
                ]
            ),
            "t",
        )
    assert RULES.version == "1.1"


def test_silver_section_needs_exactly_one_of_crosswalk_or_classifier(tmp_path):
    entry = yaml.safe_load(HOTLINE.file.read_text(encoding="utf-8"))
    entry["silver"]["crosswalk"] = "police_offence_codes"
    path = tmp_path / "hotline_tickets.yaml"
    path.write_text(yaml.safe_dump(entry, allow_unicode=True), encoding="utf-8")
    with pytest.raises(SourceError, match="exactly one of crosswalk"):
        load_source_file(path)
    assert HOTLINE.silver.classifier.min_confidence == 0.6 and HOTLINE.silver.crosswalk is None
    assert HOTLINE.silver.links.max_distance_m == 200 and HOTLINE.silver.links.max_minutes == 30


# --- fixtures through the transform (Sail) ---------------------------------------------------------------


def _bronze(spark, source, rows: list[dict]):
    records = []
    for i, values in enumerate(rows, start=1):
        r = {c: values.get(c) for c in source.columns}
        r.update(
            {
                "_source": source.name,
                "_parse_error": None,
                "_raw_record": None,
                "_extra_fields": None,
                "_batch_id": "b1",
                "_source_file": f"{source.name}_2025-03.x",
                "_source_row_number": i,
                "_ingested_at": fx.INGESTED,
            }
        )
        records.append(r)
    return spark.createDataFrame(pa.Table.from_pylist(records, schema=bronze_spec(SETTINGS, source).arrow_schema()))


def _reference(spark, *, crosswalk=None, classifier=None, min_confidence=1.0) -> Reference:
    tax = reference.taxonomy().rename(columns={"severity_default": "severity"})
    return Reference(
        crosswalk=spark.createDataFrame(crosswalk) if crosswalk is not None else None,
        taxonomy=spark.createDataFrame(tax[["subcategory_code", "category_code", "domain_code", "severity"]]),
        places=Places(spark.createDataFrame(fx.ALIASES), fx.DISTRICTS, 8),
        timezone="Asia/Shanghai",
        classifier=classifier,
        min_confidence=min_confidence,
    )


def _transform(spark, source, rows, ref):
    published, quarantined, duplicates = silver_incident.transform(
        _bronze(spark, source, rows), source, ref, fx.PII_KEY, fx.NOW
    )
    return (
        {r.source_record_id: r.asDict() for r in published.collect()},
        {r.source_record_id: r.asDict() for r in quarantined.collect()},
        duplicates.count(),
    )


def fire_row(
    call_id,
    received="1741065730123",
    dispatched="2025-03-04T05:23:20Z",
    on_scene="2025-03-04 13:31:00",
    code="F01",
    last_update="1741069330000",
    status="closed",
    lon="114.25",
    lat="30.55",
    phone="13800138000",
):
    return {
        "call_id": call_id,
        "received": received,
        "dispatched": dispatched,
        "on_scene": on_scene,
        "call_type": code,
        "call_type_name": None,
        "priority": "1",
        "district": "420102",
        "lon": lon,
        "lat": lat,
        "address": "解放大道1号",
        "caller_phone": phone,
        "units": '["JA-E01"]',
        "status": status,
        "last_update": last_update,
    }


FIRE_ROWS = [
    fire_row("OK1"),  # epoch ms / ISO Z / local naive
    fire_row("OK2", received="2025-03-04T13:22:10+08:00", on_scene=None, status="dispatched"),
    fire_row("OK2", received="2025-03-04T13:22:10+08:00", status="closed", last_update="1741070000000"),  # revision
    fire_row("TO1", dispatched="2025-03-04T05:20:00Z"),  # dispatched before received
    fire_row("TO2", on_scene="2025-03-04 13:23:00"),  # on scene before dispatched
    fire_row("Q0", received="0"),  # epoch zero
    fire_row("Q1", received="N/A"),
    fire_row("Q2", received="4077489730123"),  # 2099: after last_update (and dispatched)
    fire_row("Q3", on_scene="soon"),
    fire_row("U1", code="Z99"),
]
FIRE_CROSSWALK = pd.DataFrame(
    {"source_code": ["F01"], "source_label_ref": ["住宅火灾"], "subcategory_code": ["FE0101"]}
)


@pytest.fixture(scope="module")
def fire_out(spark):
    return _transform(spark, FIRE, FIRE_ROWS, _reference(spark, crosswalk=FIRE_CROSSWALK))


def test_fire_time_order_and_timestamp_rules(fire_out):
    published, quarantined, duplicates = fire_out
    assert set(published) == {"OK1", "OK2"} and duplicates == 1
    assert {k: q["reason"] for k, q in quarantined.items()} == {
        "TO1": "time_order_violation",
        "TO2": "time_order_violation",
        "Q0": "timestamp_out_of_range",
        "Q1": "invalid_timestamp",
        "Q2": "timestamp_out_of_range",
        "Q3": "invalid_timestamp",
        "U1": "unmapped_code",
    }
    assert quarantined["TO1"]["detail"] == ("dispatched_at 2025-03-04T05:20:00Z is before received_at 1741065730123")
    assert (
        quarantined["TO2"]["detail"] == "on_scene_at 2025-03-04 13:23:00 is before dispatched_at 2025-03-04T05:23:20Z"
    )
    assert quarantined["Q3"]["detail"] == "on_scene_at: cannot parse soon"


def test_fire_dispatch_chain_columns(fire_out):
    published, quarantined, _ = fire_out
    ok1 = published["OK1"]
    assert ok1["received_at_utc"] == ok1["occurred_at_utc"] == dt.datetime(2025, 3, 4, 5, 22, 10, 123000)
    assert ok1["dispatched_at_utc"] == dt.datetime(2025, 3, 4, 5, 23, 20)
    assert ok1["on_scene_at_utc"] == dt.datetime(2025, 3, 4, 5, 31, 0)  # local naive -> UTC
    assert ok1["updated_at_utc"] == dt.datetime(2025, 3, 4, 6, 22, 10)
    assert (ok1["subcategory_code"], ok1["classification_confidence"]) == ("FE0101", 1.0)
    assert ok1["source_label"] == "住宅火灾"
    ok2 = published["OK2"]
    assert ok2["received_at_utc"] == dt.datetime(2025, 3, 4, 5, 22, 10) and ok2["status"] == "closed"
    assert ok2["on_scene_at_utc"] == dt.datetime(2025, 3, 4, 5, 31, 0)  # from the revision
    assert ok1["reporter_phone_hash"] == _mac("13800138000") and ok1["reporter_name_hash"] is None
    assert "13800138000" not in repr(published) + repr(quarantined)


def hotline_row(
    ticket,
    category,
    accepted="2025年03月04日 13:22",
    content="市民反映问题",
    name="王小明",
    phone="13912345678",
    address="江岸区解放大道1号",
    lon="114.25",
    lat="30.55",
):
    return {
        "ticket_no": ticket,
        "accepted_at": accepted,
        "channel": "电话",
        "category": category,
        "content": content,
        "caller_name": name,
        "caller_phone": phone,
        "district": "江岸区",
        "address": address,
        "lon": lon,
        "lat": lat,
        "status": "已受理",
        "updated_at": "2025-03-05 09:00:00",
    }


HOTLINE_ROWS = [
    hotline_row("H1", "噪声扰民-施工噪声"),
    hotline_row("H2", "Noise - construction", accepted="2025/03/04 13:22", phone="027-86617610"),
    hotline_row("H3", "小区停水两天了", accepted="2025-03-04 13:22:00", lon="", lat=""),
    hotline_row(
        "H4", "其他", name="李四", content="请回电13912345678，联系人李四。", address="李四家楼下 电话027-86617610"
    ),
    hotline_row("H5", "随便说说"),
    hotline_row("H6", "noise from construction site at night"),
    hotline_row("H7", "违章停车", name="赵六", address="赵六家门口"),
]


@pytest.fixture(scope="module")
def hotline_out(spark):
    return _transform(spark, HOTLINE, HOTLINE_ROWS, _reference(spark, classifier=RULES, min_confidence=0.6))


def test_hotline_classified_categories(hotline_out):
    published, quarantined, _ = hotline_out
    assert set(published) == {"H1", "H2", "H3", "H7"}
    for ticket in ("H1", "H2"):
        p = published[ticket]
        assert (p["subcategory_code"], p["category_code"], p["classification_confidence"]) == ("PO0101", "PO01", 1.0)
        assert p["occurred_at_utc"] == p["received_at_utc"] == dt.datetime(2025, 3, 4, 5, 22)  # 年月日 and / forms
        assert p["dispatched_at_utc"] is None and p["on_scene_at_utc"] is None
    assert published["H1"]["source_code"] == published["H1"]["source_label"] == "噪声扰民-施工噪声"
    assert (published["H3"]["subcategory_code"], published["H3"]["classification_confidence"]) == ("UL0202", 0.9)
    assert published["H3"]["location_quality"] == "district_only"
    assert {k: q["reason"] for k, q in quarantined.items()} == {
        "H4": "unmapped_code",
        "H5": "needs_review",
        "H6": "needs_review",
    }
    assert quarantined["H4"]["detail"].startswith("category: 其他 has no taxonomy counterpart (exact:其他; rules 1.1)")
    assert quarantined["H5"]["detail"] == (
        "category: 随便说说: classifier confidence 0.00 < 0.6; best guess none (no rule matched; rules 1.1)"
    )
    assert "best guess PO0101" in quarantined["H6"]["detail"]


def test_hotline_personal_data_hashed_and_free_text_scrubbed(hotline_out):
    published, quarantined, _ = hotline_out
    assert published["H1"]["reporter_name_hash"] == _mac("王小明")
    assert published["H1"]["reporter_phone_hash"] == _mac("13912345678")
    assert published["H2"]["reporter_phone_hash"] == _mac("02786617610")  # landline digits
    assert published["H7"]["address_scrubbed"] == "[name]家门口"  # the caller's own name
    record = json.loads(quarantined["H4"]["record_json"])
    assert record["content"] == "请回电[phone]，联系人[name]。"
    assert record["address"] == "[name]家楼下 电话[phone]"
    assert record["caller_name"] == _mac("李四")
    text = repr(published) + repr(quarantined)
    for secret in ("13912345678", "027-86617610", "李四", "王小明", "赵六"):
        assert secret not in text


# --- cross-department links ------------------------------------------------------------------------------


def _offset(lon, lat, east_m, north_m):
    return lon + east_m / (111_320 * math.cos(math.radians(lat))), lat + north_m / 110_574


def test_ring_size_covers_the_distance():
    assert incident_links.ring_size(200, 8) == 1
    assert incident_links.ring_size(200, 9) >= 2
    rng = random.Random(5)
    for resolution, distance in ((8, 200), (9, 200), (8, 1000)):
        k = incident_links.ring_size(distance, resolution)
        for _ in range(2000):
            lon, lat = 114.1 + rng.random() * 0.4, 30.4 + rng.random() * 0.3
            angle, r = rng.random() * 2 * math.pi, distance * 0.999
            lon2, lat2 = _offset(lon, lat, r * math.cos(angle), r * math.sin(angle))
            a, b = h3.latlng_to_cell(lat, lon, resolution), h3.latlng_to_cell(lat2, lon2, resolution)
            assert h3.grid_distance(a, b) <= k


def test_links_within_distance_time_and_category(spark):
    base_t = dt.datetime(2025, 3, 4, 5, 0)
    lon0, lat0 = 114.30, 30.58
    rows = []

    def add(incident_id, source, sub, east_m, north_m, minutes, has_cell=True):
        lon, lat = _offset(lon0, lat0, east_m, north_m)
        rows.append(
            {
                "incident_id": incident_id,
                "source": source,
                "subcategory_code": sub,
                "category_code": sub[:4],
                "occurred_at_utc": base_t + dt.timedelta(minutes=minutes),
                "lon": lon if has_cell else None,
                "lat": lat if has_cell else None,
                "h3_cell": h3.latlng_to_cell(lat, lon, 8) if has_cell else None,
            }
        )

    add("police_incidents:P1", "police_incidents", "PS0503", 0, 0, 0)
    add("hotline_tickets:H1", "hotline_tickets", "PS0503", 120, 60, 20)  # linked, same subcategory
    add("hotline_tickets:H2", "hotline_tickets", "PS0502", -100, 0, -4)  # same category PS05
    add("hotline_tickets:H3", "hotline_tickets", "PS0503", 260, 0, 5)  # too far
    add("hotline_tickets:H4", "hotline_tickets", "PS0503", 50, 0, 31)  # too late
    add("hotline_tickets:H9", "hotline_tickets", "PS0503", 40, 0, -11)  # too early (min_minutes -10)
    add("hotline_tickets:H5", "hotline_tickets", "PO0101", 10, 0, 1)  # other category
    add("hotline_tickets:H6", "hotline_tickets", "PS0503", 10, 0, 1, has_cell=False)  # no point
    add("fire_calls:F1", "fire_calls", "UL0101", 5000, 0, 0)
    add("fire_calls:F2", "fire_calls", "UL0101", 5150, 0, 12)  # fire vs fire: never linked
    add("hotline_tickets:H7", "hotline_tickets", "UL0101", 5100, 0, 10)  # two candidates: F2 is closer
    # Across an hour boundary: 29 minutes apart in adjacent 30-minute buckets.
    add("police_incidents:P2", "police_incidents", "TR0202", -3000, 0, 29)
    add("hotline_tickets:H8", "hotline_tickets", "TR0202", -3000, 150, 58)
    frame = spark.createDataFrame(pd.DataFrame(rows))
    rule = HOTLINE.silver.links
    got = {
        r.incident_id: r.asDict() for r in incident_links.find_links(spark, frame, "hotline_tickets", rule, 8).collect()
    }
    assert {k: v["linked_incident_id"] for k, v in got.items()} == {
        "hotline_tickets:H1": "police_incidents:P1",
        "hotline_tickets:H2": "police_incidents:P1",
        "hotline_tickets:H7": "fire_calls:F2",
        "hotline_tickets:H8": "police_incidents:P2",
    }
    h1 = got["hotline_tickets:H1"]
    assert h1["event_id"] == "police_incidents:P1" and h1["minutes_apart"] == 20.0
    assert abs(h1["distance_m"] - math.hypot(120, 60)) < 1.0
    assert h1["link_rule"] == "same_subcategory<=200m/-10..30min"
    assert got["hotline_tickets:H2"]["link_rule"] == "same_category<=200m/-10..30min"
    assert got["hotline_tickets:H2"]["minutes_apart"] == -4.0


# --- the synthetic city end to end (bronze -> silver), reconciled with the truth --------------------------

CITY_SOURCES = ("police_incidents", "fire_calls", "hotline_tickets")


@pytest.fixture(scope="module")
def city(spark, tmp_path_factory):
    import synthetic_city
    from citysafe.sources import get_source as source_named
    from spark_jobs import bronze, silver

    started = time.monotonic()
    tmp = tmp_path_factory.mktemp("fire_hotline_city")
    syn = tmp / "synthetic"
    synthetic_city.generate(
        syn, scale=0.005, seed=9, start_date=dt.date(2025, 1, 1), days=60, timezone="Asia/Shanghai", h3_resolution=8
    )
    settings = lake_settings(tmp / "lake", syn)
    sources = {n: source_named(n) for n in CITY_SOURCES}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CITYSAFE_PII_KEY", "fire-hotline-test-key-0123456789")
        for source in sources.values():
            bronze.ingest(spark, settings, source)
        results = {s.name: silver.run(spark, settings, s, "first") for s in silver.ordered(list(sources.values()))}
    truth = json.loads((syn / "truth" / "expected_counts.json").read_text())["sources"]
    return {
        "settings": settings,
        "syn": syn,
        "sources": sources,
        "results": results,
        "truth": truth,
        "seconds": time.monotonic() - started,
    }


def _table(settings, name) -> pd.DataFrame:
    from deltalake import DeltaTable

    return DeltaTable(str(settings.silver_dir / name)).to_pandas()


@pytest.mark.slow
def test_city_counts_equal_the_truth(city):
    incident = _table(city["settings"], "incident")
    for name in CITY_SOURCES:
        got, expected = city["results"][name], city["truth"][name]
        quarantined = dict(got["quarantined"])
        # The truth has no needs_review kind: every category the generator writes is either a code-book
        # label or a catch-all. A review row would also be missing from `published`, so expect none.
        assert quarantined.pop("needs_review", 0) == 0, name
        assert quarantined == {k: v for k, v in expected["quarantined"].items() if v}, name
        assert (got["published"], got["duplicates"], got["rows_read"]) == (
            expected["published"],
            expected["duplicates"],
            expected["rows_delivered"],
        ), name
        rows = incident[incident.source == name]
        assert len(rows) == expected["published"] and rows.h3_cell.isna().sum() == expected["published_without_cell"]
        assert got["reconciled"] and got["validation"]["success"]


@pytest.mark.slow
def test_city_subcategories_mapped_and_correct(city):
    incident = _table(city["settings"], "incident")
    review = sum(r["quarantined"].get("needs_review", 0) for r in city["results"].values())
    mapped = incident.subcategory_code.notna().sum()
    assert mapped / (len(incident) + review) >= 0.995
    keys = {"police_incidents": "case_no", "fire_calls": "call_id", "hotline_tickets": "ticket_no"}
    agree = total = 0
    for name, key in keys.items():
        clean = pd.read_csv(city["syn"] / "truth" / f"{name}_clean.csv.gz", dtype=str)
        truth = dict(zip(clean[key], clean.subcategory_code))
        ours = incident[incident.source == name]
        agree += sum(truth.get(rid) == sub for rid, sub in zip(ours.source_record_id, ours.subcategory_code))
        total += len(clean)
    assert agree / total >= 0.995, (agree, total)
    hotline = incident[incident.source == "hotline_tickets"]
    assert hotline.classification_confidence.min() >= 0.6


def _raw_fire_latest(syn) -> dict[str, dict]:
    latest = {}
    for path in sorted((syn / "fire").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if r["call_id"] not in latest or r["last_update"] > latest[r["call_id"]]["last_update"]:
                latest[r["call_id"]] = r
    return latest


@pytest.mark.slow
def test_city_fire_response_times(city):
    incident = _table(city["settings"], "incident")
    fire = incident[incident.source == "fire_calls"].set_index("source_record_id")
    clean = pd.read_csv(city["syn"] / "truth" / "fire_calls_clean.csv.gz", dtype=str).set_index("call_id")
    assert set(fire.index) == set(clean.index)
    expected = pd.to_datetime(clean.received_at_utc, utc=True, format="ISO8601")
    assert (fire.received_at_utc.reindex(clean.index) == expected).all()
    assert (fire.occurred_at_utc == fire.received_at_utc).all()
    # The truth has no dispatch/on-scene columns: compare the response intervals with an independent
    # reading of the raw JSON (dispatched ISO Z; on_scene local Asia/Shanghai wall time, +08:00).
    raw = _raw_fire_latest(city["syn"])
    for call_id, row in fire.iterrows():
        r = raw[call_id]
        dispatched = pd.Timestamp(r["dispatched"])
        assert row.dispatched_at_utc == dispatched, call_id
        if r["on_scene"] is None:
            assert pd.isna(row.on_scene_at_utc), call_id
        else:
            on_scene = pd.Timestamp(r["on_scene"]).tz_localize("Asia/Shanghai").tz_convert("UTC")
            assert row.on_scene_at_utc == on_scene, call_id
            assert row.on_scene_at_utc - row.dispatched_at_utc == on_scene - dispatched
        assert row.dispatched_at_utc >= row.received_at_utc


@pytest.mark.slow
def test_city_no_raw_phone_or_caller_name_in_silver(city):
    syn, settings = city["syn"], city["settings"]
    phones, names = set(), set()
    police = pd.concat(
        [pd.read_csv(p, dtype=str, keep_default_na=False) for p in sorted((syn / "police").glob("*.csv"))]
    )
    hotline = pd.concat(
        [
            pd.read_csv(p, dtype=str, keep_default_na=False, encoding="gbk")
            for p in sorted((syn / "hotline").glob("*.csv"))
        ]
    )
    phones |= set(police.reporter_phone) | set(hotline.caller_phone)
    phones |= {r["caller_phone"] for r in _raw_fire_latest(syn).values()}
    for text in [*police.address, *hotline.content, *hotline.address]:  # numbers written into free text
        phones |= set(re.findall(r"1[3-9][0-9]{9}|0[0-9]{2,3}-[0-9]{7,8}", text))
    names |= set(police.reporter_name) | set(hotline.caller_name)
    phones.discard("")
    names -= {"", "匿名"}
    assert len(phones) > 500 and len(names) > 300
    silver_text = []
    for table in ("incident", "quarantine", "incident_link"):
        df = _table(settings, table)
        for column in df.columns:
            if df[column].dtype == object:
                silver_text.extend(str(v) for v in df[column].dropna())
    blob = "\n".join(silver_text)
    digits = re.sub(r"[^0-9\n]", "", blob)
    leaked_phones = [p for p in phones if p in blob or re.sub(r"[^0-9]", "", p) in digits]
    assert leaked_phones == []
    leaked_names = [n for n in names if n in blob]
    assert leaked_names == []


@pytest.mark.slow
def test_city_cross_department_links(city):
    links = _table(city["settings"], "incident_link")
    truth = pd.read_csv(city["syn"] / "truth" / "cross_department_links.csv", dtype=str)
    want = {
        (f"hotline_tickets:{r.hotline_ticket_no}", f"{r.other_source}:{r.other_record_id}") for r in truth.itertuples()
    }
    got = set(zip(links.incident_id, links.linked_incident_id))
    hits = len(got & want)
    precision = hits / len(got) if got else 1.0
    recall = hits / len(want) if want else 1.0
    print(
        f"\ncross-department links: truth {len(want)}, found {len(got)}, precision {precision:.3f}, recall {recall:.3f}"
    )
    assert recall >= 0.9 and precision >= 0.8
    assert (links.event_id == links.linked_incident_id).all()
    assert (links.distance_m <= 200).all() and (links.minutes_apart.abs() <= 30).all()
    assert links.incident_id.is_unique
    assert city["results"]["police_incidents"]["incident_link"]["rows"] == len(links)


@pytest.mark.slow
def test_city_links_are_recomputed_only_when_stale(spark, city):
    """Up to date: nothing read. A run that stopped after a publish but before the links (the stored state
    names an older silver.incident): recomputed, to the same rows, and the state caught up."""
    settings = city["settings"]
    registry = incident_links.registry_of(city["sources"]["hotline_tickets"])
    assert incident_links.refresh_if_stale(spark, settings, registry)["unchanged"] is True
    state = settings.state_dir / "silver" / "incident_link.json"
    saved = json.loads(state.read_text())
    state.write_text(json.dumps({**saved, "incident_version": saved["incident_version"] - 1}))
    again = incident_links.refresh_if_stale(spark, settings, registry)
    assert "unchanged" not in again and again["rows"] == len(_table(settings, "incident_link"))
    assert again["inserted"] == again["updated"] == again["deleted"] == 0  # the same links: nothing committed
    assert json.loads(state.read_text()) == saved


@pytest.mark.slow
def test_city_rerun_changes_no_delta_version(spark, city):
    """Runs last in this module: ingest and silver again; no table gets a new version."""
    from deltalake import DeltaTable

    from spark_jobs import bronze, silver

    settings = city["settings"]
    lake = settings.lake_root

    def versions():
        return {
            str(p.parent.relative_to(lake)): DeltaTable(str(p.parent)).version()
            for p in sorted(lake.glob("*/*/_delta_log"))
        }

    before = versions()
    assert {"silver/incident", "silver/quarantine", "silver/incident_link", "bronze/fire_calls"} <= set(before)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CITYSAFE_PII_KEY", "fire-hotline-test-key-0123456789")
        for source in city["sources"].values():
            assert bronze.ingest(spark, settings, source)["rows_read"] == 0
            assert silver.run(spark, settings, source, "second")["rows_read"] == 0
    assert versions() == before
    print(f"\nsynthetic city bronze + silver for {len(CITY_SOURCES)} sources: {city['seconds']:.1f} s")
