"""Silver transforms on a small fixture (real Sail engine): every rule, every row accounted for."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import h3
import pytest

from spark_jobs import silver_incident

import silver_fixtures as fx


@pytest.fixture(scope="module")
def transformed(spark):
    """The transform of the fixture, run once for the module (the tests only read its rows; each of them
    ran the same deterministic transform again before, ~4 s of CPU each)."""
    published, quarantined, duplicates = silver_incident.transform(
        fx.bronze_frame(spark), fx.SOURCE, fx.reference(spark), fx.PII_KEY, fx.NOW
    )
    return (
        {r.source_record_id: r.asDict() for r in published.collect()},
        [r.asDict() for r in quarantined.collect()],
        [r.asDict() for r in duplicates.collect()],
    )


def test_every_row_is_published_quarantined_or_a_duplicate(transformed):
    published, quarantined, duplicates = transformed
    assert set(published) == fx.EXPECTED_PUBLISHED
    reasons = {}
    for q in quarantined:
        reasons[q["reason"]] = reasons.get(q["reason"], 0) + 1
    assert reasons == fx.EXPECTED_REASONS
    assert len(duplicates) == 2
    assert len(published) + len(quarantined) + len(duplicates) == len(fx.bronze_rows())


def test_times_are_utc_and_local(transformed):
    published, _, _ = transformed
    for case in ("A1", "A2", "A4"):  # local naive, Z and +08:00 forms of the same instant
        assert published[case]["occurred_at_utc"] == dt.datetime(2025, 3, 4, 5, 22, 10)
        assert published[case]["occurred_at_local"] == dt.datetime(2025, 3, 4, 13, 22, 10)
        assert published[case]["occurred_date_local"] == dt.date(2025, 3, 4)
    assert published["A3"]["occurred_at_utc"] == dt.datetime(2025, 3, 4, 5, 22)


def test_districts_cells_and_codes(transformed):
    published, _, _ = transformed
    a1 = published["A1"]
    assert (a1["district_code"], a1["location_quality"]) == ("420102", "point")
    assert a1["h3_cell"] == h3.latlng_to_cell(30.55, 114.25, 8)
    assert (a1["domain_code"], a1["category_code"], a1["subcategory_code"]) == ("PS", "PS01", "PS0101")
    assert a1["source_label"] == "盗窃"  # from the crosswalk when the department sent no label
    assert published["A2"]["district_code"] == "420103"
    # No coordinates (blank, or the 0/0 sentinel): district from the alias table, no cell.
    for case, district in (("A3", "420102"), ("A4", "420103")):
        assert published[case]["district_code"] == district
        assert published[case]["h3_cell"] is None and published[case]["location_quality"] == "district_only"


def test_latest_revision_wins(transformed):
    published, _, duplicates = transformed
    assert published["D1"]["status"] == "已结案"
    assert {d["_source_row_number"] for d in duplicates} == {5, 7}


def test_personal_data_is_hashed_and_scrubbed(transformed):
    published, quarantined, _ = transformed
    expected = hmac.new(fx.PII_KEY, b"13800138000", hashlib.sha256).hexdigest()
    assert published["A1"]["reporter_phone_hash"] == expected
    assert published["A1"]["reporter_name_hash"] == hmac.new(fx.PII_KEY, "张三".encode(), hashlib.sha256).hexdigest()
    assert published["P1"]["address_scrubbed"] == "家住解放大道 电话[phone] 身份证[id]"
    text = repr(published) + repr(quarantined)
    for secret in ("13800138000", "张三", "110101199003071234", "13912345678"):
        assert secret not in text


def test_quarantine_names_field_and_value(transformed):
    _, quarantined, _ = transformed
    by_reason = {q["reason"]: q for q in quarantined}
    assert by_reason["invalid_timestamp"]["detail"] == "occurred_at: cannot parse 2025-13-45 25:61:00"
    assert by_reason["unmapped_code"]["detail"] == "code: no crosswalk entry for 9999"
    assert "江按去" in by_reason["unknown_district"]["detail"]
    assert by_reason["malformed_record"]["detail"] == "expected 13 fields, found 9"
    assert by_reason["unmapped_code"]["_source_row_number"] == 10
    assert by_reason["unmapped_code"]["_source_file"] == "police_incidents_2025-03.csv"
    assert '"offence_code":"9999"' in by_reason["unmapped_code"]["record_json"]
