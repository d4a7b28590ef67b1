"""Enterprise and hazard silver (real Sail engine): registry rules, identifier lookup, enterprise
resolution (credit code, legacy number, name), hazard lifecycle flags, PII, and an end-to-end run on a
small synthetic city reconciled exactly against its truth."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import pyarrow as pa
import pytest

from citysafe import reference
from citysafe.config import load_settings
from citysafe.identifiers import _USCC_WEIGHTS, USCC_CHARS
from citysafe.sources import get_source
from spark_jobs import silver_enterprise as se
from spark_jobs import silver_hazard as sh
from spark_jobs.bronze import bronze_spec
from spark_jobs.common import Places

import silver_fixtures as fx
from tests_support import lake_settings

SETTINGS = load_settings(environ={})
INGESTED = dt.datetime(2025, 4, 1, tzinfo=dt.UTC)
TZ = "Asia/Shanghai"
ENT_SOURCE = get_source("enterprise_registry")
HAZ_SOURCE = get_source("hazard_inspections")


def uscc(body17: str) -> str:
    total = sum(USCC_CHARS.index(c) * w for c, w in zip(body17, _USCC_WEIGHTS))
    return body17 + USCC_CHARS[(31 - total % 31) % 31]


def legacy(body14: str) -> str:
    p = 10
    for digit in body14:
        p = (((p + int(digit)) % 10 or 10) * 2) % 11
    return body14 + str((11 - p) % 10)


def bad_check(code: str) -> str:
    return code[:17] + USCC_CHARS[(USCC_CHARS.index(code[17]) + 1) % 31]


A, B, C, D = (uscc(f"9142010{i}1234567{i}0") for i in range(1, 5))
L1 = legacy("42010210000001")
UNKNOWN_CODE, UNKNOWN_LEGACY = uscc("91420100999999990"), legacy("42010099999999")
REP = "王小明"


def _bronze(spark, source, rows: list[dict], batch="b1"):
    records = []
    for i, values in enumerate(rows, start=1):
        r = {c: values.get(c) for c in source.columns}
        r.update(
            {
                "_source": source.name,
                "_parse_error": values.get("_parse_error"),
                "_raw_record": None,
                "_extra_fields": None,
                "_batch_id": batch,
                "_source_file": f"{batch}.csv",
                "_source_row_number": i,
                "_ingested_at": INGESTED,
            }
        )
        records.append(r)
    return spark.createDataFrame(pa.Table.from_pylist(records, schema=bronze_spec(SETTINGS, source).arrow_schema()))


def ent(code, name, updated="2024-06-01 10:00:00", **kw):
    row = {
        "credit_code": code,
        "legacy_reg_no": "",
        "enterprise_name": name,
        "industry_code": "C26",
        "industry_name": "化学原料",
        "district": "江岸区",
        "address": "解放大道1号",
        "lon": "114.25",
        "lat": "30.55",
        "established_date": "2010-03-05",
        "registered_capital_wan": "500.00",
        "legal_representative": REP,
        "reg_status": "存续",
        "updated_at": updated,
    }
    row.update(kw)
    return row


ENT_ROWS = [
    ent(A, "江城市华信化工有限公司", legacy_reg_no=L1, updated="2024-06-01 10:00:00"),
    ent(A, "江城市华信化工有限责任公司", legacy_reg_no=L1, updated="2023-01-01 10:00:00"),  # stale: duplicate
    ent(A, "江城市华信化工有限公司", legacy_reg_no=L1, updated="2024-06-01 10:00:00"),  # exact duplicate
    ent(
        B.lower(),
        " 江城市ＡＢ机械有限公司",
        lon="",
        lat="",
        district="江汉区",
        established_date="2010年3月5日",
        registered_capital_wan="abc",
        reg_status="注销",
    ),  # lower case, no point
    ent(C, "江城市同名商贸有限公司"),
    ent(D, "江城市同名商贸有限公司（江岸分公司）", lon="114.35"),  # same normalised name
    ent(bad_check(A), "江城市错码有限公司"),  # invalid_credit_code
    ent(A[:17], "江城市短码有限公司"),  # invalid_credit_code
    ent(uscc("91420109111111110"), "江城市远方有限公司", lon="116.40", lat="39.90"),  # coordinates_outside_city
    ent("", "江城市无码有限公司"),  # missing_key
    ent(None, None, legal_representative=None, _parse_error="expected 14 fields, found 3"),  # malformed_record
    ent(uscc("91420109222222220"), "江城市坏时有限公司", updated="昨天"),  # invalid_timestamp
    ent(uscc("91420109333333330"), "江城市未来有限公司", updated="2099-01-01 00:00:00"),  # timestamp_out_of_range
    ent(uscc("91420109444444440"), "（）"),  # invalid_value: no name
]


@pytest.fixture(scope="module")
def places(spark):
    return Places(spark.createDataFrame(fx.ALIASES), fx.DISTRICTS, 8)


@pytest.fixture(scope="module")
def enterprises(spark, places):
    out = se.transform(_bronze(spark, ENT_SOURCE, ENT_ROWS), ENT_SOURCE, places, fx.PII_KEY, TZ, fx.NOW)
    return (
        out,
        {r.enterprise_id: r.asDict() for r in out.published.collect()},
        [r.asDict() for r in out.quarantined.collect()],
    )


def test_pure_helpers(spark):
    assert [
        se._identifier_kind(v)
        for v in (
            A,
            A.lower(),
            bad_check(A),
            A[:17],
            L1,
            f"{L1[:7]} {L1[7:]}",
            L1[:14] + str((int(L1[14]) + 1) % 10),
            "待补录",
            None,
        )
    ] == ["uscc", "uscc", "uscc_bad_check", None, "legacy_reg_no", "legacy_reg_no", "legacy_bad_check", None, None]
    values = [
        "2025-01-05",
        "2025/1/5",
        "2025年01月05日",
        " 2025-01-05 09:30 ",
        "20250105",
        "2025-02-30",
        "0000-00-00",
        "2O25-01-01",
        "待定",
        "",
        None,
    ]
    df = spark.createDataFrame([(v,) for v in values], "s string").select(se.parse_local_date("s").alias("d"))
    got = [r.d for r in df.collect()]
    assert got == [dt.date(2025, 1, 5)] * 5 + [None] * 6


def test_enterprise_rules(enterprises):
    out, published, quarantined = enterprises
    assert set(published) == {A, B, C, D}
    reasons = sorted(q["reason"] for q in quarantined)
    assert reasons == [
        "coordinates_outside_city",
        "invalid_credit_code",
        "invalid_credit_code",
        "invalid_timestamp",
        "invalid_value",
        "malformed_record",
        "missing_key",
        "timestamp_out_of_range",
    ]
    assert out.duplicates.count() == 2
    assert len(published) + len(quarantined) + 2 == len(ENT_ROWS)
    detail = {q["source_record_id"]: q["detail"] for q in quarantined}
    assert "wrong check character" in detail[bad_check(A)]


def test_enterprise_values(enterprises):
    _, published, _ = enterprises
    a, b = published[A], published[B]
    assert a["name"] == "江城市华信化工有限公司" and a["name_normalized"] == "江城市华信化工"  # latest row wins
    assert a["legacy_reg_no"] == L1 and (a["district_code"], a["location_quality"]) == ("420102", "point")
    assert a["h3_cell"] and a["status"] == "active" and a["registered_capital_wan"] == 500.0
    assert a["updated_at_utc"] == dt.datetime(2024, 6, 1, 2, 0)  # local 10:00 in UTC
    # lower-case code normalised; no point -> district from the name; unreadable capital -> NULL
    assert (b["district_code"], b["location_quality"], b["h3_cell"]) == ("420103", "district_only", None)
    assert b["name"] == "江城市ＡＢ机械有限公司" and b["name_normalized"] == "江城市ab机械"
    assert b["established_date"] == dt.date(2010, 3, 5) and b["registered_capital_wan"] is None
    assert b["status"] == "deregistered" and b["status_raw"] == "注销" and b["legacy_reg_no"] is None
    assert published[D]["district_code"] == "420103"


def test_legal_representative_never_in_clear(enterprises):
    _, published, quarantined = enterprises
    expected = hmac.new(fx.PII_KEY, REP.encode(), hashlib.sha256).hexdigest()
    assert {p["legal_representative_hash"] for p in published.values()} == {expected}
    assert REP not in repr(published) + repr(quarantined)
    assert any(expected in (q["record_json"] or "") for q in quarantined)


def test_identifier_lookup(spark, enterprises):
    out, _, _ = enterprises
    rows = {(r.identifier_type, r.identifier): r.enterprise_id for r in se.identifiers(out.published).collect()}
    assert {k: v for k, v in rows.items() if k[0] == "uscc"} == {("uscc", x): x for x in (A, B, C, D)}
    assert rows[("legacy_reg_no", L1)] == A
    assert rows[("name_normalized", "江城市华信化工")] == A and rows[("name_normalized", "江城市ab机械")] == B
    assert ("name_normalized", "江城市同名商贸") not in rows  # two enterprises share it: never guessed
    assert len(rows) == 7


# --- hazards -----------------------------------------------------------------------------------------------


def haz(
    hid,
    eid,
    name="江城市华信化工有限公司",
    code="XF-01",
    found="2025-01-06",
    deadline="2025-01-21",
    rectified="",
    accepted="",
    status="待整改",
    updated="2025-01-06 10:00:00",
    severity="一般",
    district="江岸区",
):
    return {
        "hazard_id": hid,
        "enterprise_id": eid,
        "enterprise_name": name,
        "hazard_code": code,
        "hazard_desc": "",
        "severity": severity,
        "found_date": found,
        "rectify_deadline": deadline,
        "rectified_date": rectified,
        "accepted_date": accepted,
        "status": status,
        "inspector_id": "AJ0001",
        "district": district,
        "updated_at": updated,
    }


HAZ_ROWS = [
    haz("YH2025010600001", A, district=""),  # H1 found
    haz("YH2025010600001", A, rectified="2025/01/25", status="已整改", updated="2025-02-03 09:00:00", district=""),
    haz(
        "YH2025010600001",
        A,
        rectified="2025/01/25",
        accepted="2025年02月05日",
        status="已验收",
        updated="2025-02-05 15:00:00",
        district="",
    ),  # H1 latest: late
    haz(
        "YH2025021000001",
        f"{L1[:7]} {L1[7:]}",
        code="WH-01",
        severity="重大",
        found="2025-02-10",
        deadline="2025-03-12",
        updated="2025-02-10 11:00:00",
    ),  # H2 legacy, overdue
    haz(
        "YH2025030100001",
        "",
        name="江城市华信化工有限责任公司 ",
        code="JZ-01",
        found="2025-03-01",
        deadline="2025-03-31",
        rectified="2025-03-10",
        status="已整改",
        updated="2025-03-10 16:00:00",
    ),  # H3 by name
    haz(
        "YH2025031800001",
        "待补录",
        name="江城市AB机械有限公司",
        code="RQ-02",
        found="2025-03-18",
        deadline="2025-04-01",
        updated="2025-03-20 09:00:00",
        district="jianghan",
    ),  # H4 by name
    haz("YH2025020100001", A, found="2025-02-30"),  # invalid_timestamp
    haz(
        "YH2025020100002", A, found="2025-02-10", rectified="2025-02-01", status="已整改", updated="2025-02-10 10:00:00"
    ),  # time_order_violation
    haz("YH2025020100003", A, code="QT-99"),  # unmapped_code
    haz("YH2025020100004", bad_check(A)),  # unknown_enterprise (bad check char; the name is A's)
    haz("YH2025020100005", UNKNOWN_CODE),  # unknown_enterprise
    haz("YH2025020100006", UNKNOWN_LEGACY),  # unknown_enterprise
    haz("YH2025020100007", "", name="江城市同名商贸有限公司"),  # unknown_enterprise: ambiguous name
    haz("YH2025020100008", A, severity="特大"),  # invalid_value
    haz("", A),  # missing_key
    haz("YH2025020100009", A, updated="2099-02-01 10:00:00"),  # timestamp_out_of_range
    haz("YH2025020100010", A, deadline="下月"),  # invalid_timestamp
]


def _hazard_reference(spark, enterprise_out):
    xw = reference.crosswalk("hazard_codes").rename(columns={"source_label": "source_label_ref"})
    tax = reference.taxonomy()[["subcategory_code", "category_code", "domain_code"]]
    return sh.Reference(
        crosswalk=spark.createDataFrame(xw),
        taxonomy=spark.createDataFrame(tax),
        identifiers=se.identifiers(enterprise_out.published),
        enterprises=enterprise_out.published,
        aliases=spark.createDataFrame(fx.ALIASES),
        timezone=TZ,
    )


@pytest.fixture(scope="module")
def hazards(spark, enterprises):
    ref = _hazard_reference(spark, enterprises[0])
    out = sh.transform(_bronze(spark, HAZ_SOURCE, HAZ_ROWS), HAZ_SOURCE, ref, None, now=fx.NOW)
    return (
        ref,
        out,
        {r.hazard_id: r.asDict() for r in out.published.collect()},
        [r.asDict() for r in out.quarantined.collect()],
    )


def test_hazard_rules(hazards):
    _, out, published, quarantined = hazards
    assert set(published) == {"YH2025010600001", "YH2025021000001", "YH2025030100001", "YH2025031800001"}
    reasons = sorted(q["reason"] for q in quarantined)
    assert reasons == [
        "invalid_timestamp",
        "invalid_timestamp",
        "invalid_value",
        "missing_key",
        "time_order_violation",
        "timestamp_out_of_range",
        "unknown_enterprise",
        "unknown_enterprise",
        "unknown_enterprise",
        "unknown_enterprise",
        "unmapped_code",
    ]
    assert out.duplicates.count() == 2
    assert len(published) + len(quarantined) + 2 == len(HAZ_ROWS)
    detail = {q["source_record_id"]: q["detail"] for q in quarantined}
    assert "wrong check character" in detail["YH2025020100004"]
    assert "not a published enterprise" in detail["YH2025020100005"]
    assert "matches no single enterprise" in detail["YH2025020100007"]


def test_enterprise_resolution(hazards):
    _, _, published, _ = hazards
    got = {h: (p["enterprise_id"], p["enterprise_match"]) for h, p in published.items()}
    assert got == {
        "YH2025010600001": (A, "uscc"),
        "YH2025021000001": (A, "legacy_reg_no"),
        "YH2025030100001": (A, "name_normalized"),
        "YH2025031800001": (B, "name_normalized"),
    }
    assert published["YH2025021000001"]["enterprise_ref"] == L1
    # district: the delivered name when it resolves, else the enterprise's
    assert published["YH2025010600001"]["district_code"] == "420102"
    assert published["YH2025031800001"]["district_code"] == "420103"


def test_hazard_codes_and_lifecycle(hazards):
    _, _, published, _ = hazards
    h1, h2, h3, h4 = (
        published[k] for k in ("YH2025010600001", "YH2025021000001", "YH2025030100001", "YH2025031800001")
    )
    assert (h1["source_code"], h1["subcategory_code"], h1["category_code"], h1["domain_code"]) == (
        "XF-01",
        "FE0501",
        "FE05",
        "FE",
    )
    assert h1["source_label"] == "疏散通道安全出口堵塞" and h2["severity"] == "major" and h1["severity"] == "general"
    # as_of_date: the latest update date in the data (H4, 2025-03-20 local), the same for every row
    assert {p["as_of_date"] for p in published.values()} == {dt.date(2025, 3, 20)}
    assert (h1["status"], h1["status_raw"], h1["is_closed"], h1["closed_late"], h1["is_overdue_open"]) == (
        "accepted",
        "已验收",
        True,
        True,
        False,
    )
    assert (h1["rectified_date"], h1["accepted_date"]) == (dt.date(2025, 1, 25), dt.date(2025, 2, 5))
    assert (h1["days_to_rectify"], h1["days_to_accept"]) == (19, 30)
    assert (h2["status"], h2["is_closed"], h2["is_overdue_open"], h2["closed_late"]) == ("open", False, True, False)
    assert (h2["days_to_rectify"], h2["days_to_accept"]) == (None, None)
    assert (h3["status"], h3["closed_late"], h3["days_to_rectify"], h3["is_overdue_open"]) == (
        "rectified",
        False,
        9,
        False,
    )
    assert (h4["is_overdue_open"], h4["closed_late"]) == (False, False)  # deadline 04-01 is after as_of


def test_lifecycle_moves_forward_with_the_data(spark, hazards, tmp_path):
    """A later delivery moves as_of_date; the rows already published are refreshed, once."""
    from citysafe import delta_io

    ref, out, _, _ = hazards
    spec = sh.hazard(tmp_path)
    staged = lambda df: spark.createDataFrame(df.toArrow())  # noqa: E731  (as run_job stages before MERGE)
    delta_io.merge_upsert(spark, staged(out.published), spec)
    later = [haz("YH2025040800001", A, found="2025-04-08", deadline="2025-04-15", updated="2025-04-10 09:00:00")]
    second = sh.transform(
        _bronze(spark, HAZ_SOURCE, later, batch="b2"), HAZ_SOURCE, ref, None, previous_as_of=dt.date(2025, 3, 20)
    )
    delta_io.merge_upsert(spark, staged(second.published), spec)
    result = sh.refresh_lifecycle(spark, spec, TZ)
    assert result == {"as_of_date": "2025-04-10", "lifecycle_rows_refreshed": 4}
    rows = {r.hazard_id: r for r in delta_io.read(spark, spec).collect()}
    assert {r.as_of_date for r in rows.values()} == {dt.date(2025, 4, 10)}
    assert rows["YH2025031800001"].is_overdue_open is True  # deadline 04-01 has now passed
    assert rows["YH2025040800001"].is_overdue_open is False
    version = delta_io.version(spec)
    assert sh.refresh_lifecycle(spark, spec, TZ)["lifecycle_rows_refreshed"] == 0
    assert delta_io.version(spec) == version


# --- end to end on a small synthetic city --------------------------------------------------------------------


@pytest.mark.slow
def test_synthetic_city_reconciles_with_truth(spark, tmp_path, monkeypatch):
    import json

    import pandas as pd
    from deltalake import DeltaTable

    from citysafe import delta_io, reconcile
    from spark_jobs import bronze, silver, tables
    from synthetic_city import generate

    syn = tmp_path / "syn"
    start, days = dt.date(2025, 1, 1), 120
    generate(syn, scale=0.005, seed=5, start_date=start, days=days, timezone=TZ, h3_resolution=8)
    settings = lake_settings(tmp_path / "lake", syn)
    key = "enterprise-hazard-test-key-0123456789"
    monkeypatch.setenv("CITYSAFE_PII_KEY", key)
    sources = (ENT_SOURCE, HAZ_SOURCE)
    for source in sources:
        bronze.ingest(spark, settings, source)
    entries = {s.name: silver.run(spark, settings, s, "first") for s in sources}

    truth = json.loads((syn / "truth" / "expected_counts.json").read_text(encoding="utf-8"))["sources"]
    for source in sources:
        got, want = entries[source.name], truth[source.name]
        assert (got["published"], got["duplicates"], got["quarantined"]) == (
            want["published"],
            want["duplicates"],
            {k: v for k, v in want["quarantined"].items() if v},
        ), source.name
        assert got["reconciled"]
    report = reconcile.against_truth(settings, {"enterprise_registry": "enterprise", "hazard_inspections": "hazard"})
    assert report["ok"], report

    silver_dir = settings.silver_dir
    hz = DeltaTable(str(silver_dir / "hazard")).to_pandas()
    ents = DeltaTable(str(silver_dir / "enterprise")).to_pandas()
    # link rate: every published hazard names a published enterprise, and the right one
    assert entries["hazard_inspections"]["enterprise_link_rate"] >= 0.99
    assert hz.enterprise_id.isin(set(ents.enterprise_id)).mean() >= 0.99
    ht = pd.read_csv(syn / "truth" / "hazards_truth.csv.gz", dtype=str, keep_default_na=False)
    m = hz.merge(ht, on="hazard_id", how="inner", suffixes=("", "_truth"))
    assert len(m) == len(hz) == (ht.delivery == "clean").sum()
    assert (m.enterprise_id == m.credit_code).all()
    assert set(hz.enterprise_match) == {"uscc", "legacy_reg_no"}
    assert (m.subcategory_code == m.subcategory_code_truth).all() and (m.severity == m.severity_truth).all()
    assert set(hz.domain_code) <= {"PR", "FE", "UL", "PH"}

    # as_of_date = the latest local update date among the published hazards' delivered rows
    raw = pd.concat(
        [
            pd.read_csv(f, encoding="utf-8-sig", dtype=str, keep_default_na=False)
            for f in sorted((syn / "inspections").glob("hazards_*.csv"))
        ]
    )
    as_of = pd.to_datetime(raw[raw.hazard_id.isin(set(hz.hazard_id))].updated_at).max().date()
    assert set(hz.as_of_date) == {as_of}

    def date(col):
        return pd.to_datetime(m[col].replace("", None))

    found, deadline, rectified, accepted = (
        date(f"{c}_truth") for c in ("found_date", "rectify_deadline", "rectified_date", "accepted_date")
    )
    for col, truth_dates in (
        ("found_date", found),
        ("rectify_deadline", deadline),
        ("rectified_date", rectified),
        ("accepted_date", accepted),
    ):
        assert (pd.to_datetime(m[col]).fillna(pd.Timestamp(0)) == truth_dates.fillna(pd.Timestamp(0))).all(), col
    overdue = rectified.isna() & (deadline < pd.Timestamp(as_of))
    assert (m.is_overdue_open == overdue).all()
    assert (m.closed_late == (rectified.notna() & (rectified > deadline))).all()
    assert (m.days_to_rectify.astype("Int64") == (rectified - found).dt.days.astype("Int64")).fillna(True).all()
    assert (m.days_to_rectify.isna() == rectified.isna()).all()
    assert (m.days_to_accept.astype("Int64") == (accepted - found).dt.days.astype("Int64")).fillna(True).all()
    assert (m.days_to_accept.isna() == accepted.isna()).all()
    if as_of == start + dt.timedelta(days=days - 1):  # as of the window's last day the truth's own flags agree
        assert (m.is_overdue_open == (m.overdue_open == "True")).all()
        assert (m.closed_late == (m.closed_late_truth == "True")).all()
    assert m.is_overdue_open.sum() > 0 and m.closed_late.sum() > 0

    # personal data: the legal representative only as the keyed hash
    reg = pd.read_csv(syn / "enterprise" / "enterprise_registry.csv", dtype=str, keep_default_na=False)
    latest = reg.sort_values("updated_at").drop_duplicates("credit_code", keep="last").set_index("credit_code")
    expected = latest.loc[ents.enterprise_id, "legal_representative"].map(
        lambda v: hmac.new(key.encode(), v.encode(), hashlib.sha256).hexdigest()
    )
    assert list(ents.legal_representative_hash) == list(expected)
    quarantine = DeltaTable(str(silver_dir / "quarantine")).to_pandas()
    for record in quarantine[quarantine.source == ENT_SOURCE.name].record_json:
        assert len(json.loads(record)["legal_representative"]) == 64

    # a re-run changes no Delta version
    specs = [
        se.enterprise(silver_dir),
        se.enterprise_identifier(silver_dir),
        sh.hazard(silver_dir),
        tables.quarantine(silver_dir),
    ]
    versions = [delta_io.version(s) for s in specs]
    again = [silver.run(spark, settings, s, "second") for s in sources]
    assert [e["published"] for e in again] == [0, 0]
    assert [delta_io.version(s) for s in specs] == versions


def test_the_jobs_barriers_give_the_rows_of_one_plan(spark, enterprises, hazards, places, tmp_path):
    """The enterprise job's barriers (located, masked) and the hazard job's (classified) write scratch
    Parquet and read it back, as run_job passes them: the same published, quarantined and duplicate rows
    as the plans without them."""
    from citysafe import delta_io

    def barrier(folder):
        return lambda df, name: delta_io.materialize(df, tmp_path / folder / name)

    def rows(out):
        return [
            sorted((tuple(r) for r in df.collect()), key=repr)
            for df in (out.published, out.quarantined, out.duplicates)
        ]

    bronze = _bronze(spark, ENT_SOURCE, ENT_ROWS)
    with_barriers = se.transform(bronze, ENT_SOURCE, places, fx.PII_KEY, TZ, fx.NOW, barrier("enterprise"))
    assert rows(with_barriers) == rows(enterprises[0])
    assert {p.name for p in (tmp_path / "enterprise").iterdir()} == {"located", "masked"}

    ref, plain = hazards[0], hazards[1]
    bronze = _bronze(spark, HAZ_SOURCE, HAZ_ROWS)
    with_barrier = sh.transform(bronze, HAZ_SOURCE, ref, None, now=fx.NOW, materialize=barrier("hazard"))
    assert rows(with_barrier) == rows(plain)
    assert {p.name for p in (tmp_path / "hazard").iterdir()} == {"classified"}
