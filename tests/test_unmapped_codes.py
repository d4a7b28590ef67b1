"""silver.unmapped_codes from a small silver.quarantine built here with delta_io (real Sail engine)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from deltalake import DeltaTable

from citysafe import delta_io
from citysafe.config import load_settings
from citysafe.sources import load_registry
from spark_jobs import tables, unmapped_codes

T0 = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)
T1 = dt.datetime(2026, 1, 6, 9, 30, tzinfo=dt.UTC)
T2 = dt.datetime(2026, 1, 7, 10, 0, tzinfo=dt.UTC)
CHI = "real_chicago_crimes"

QUARANTINE_SCHEMA = (
    "source string, source_record_id string, reason string, detail string, record_json string, "
    "run_id string, _batch_id string, _source_file string, _source_row_number bigint, "
    "_ingested_at timestamp"
)


def _row(source, record_id, reason, detail, record, batch, row_number, ingested):
    return (
        source,
        record_id,
        reason,
        detail,
        json.dumps(record, ensure_ascii=False) if record else None,
        "run-test",
        batch,
        "f.csv",
        row_number,
        ingested,
    )


ROWS_FIRST = [
    # Chicago: IUCR 820 three times over two batches, 1310 once; code read from the detail.
    _row(CHI, "c1", "unmapped_code", "code: no crosswalk entry for 820", {"iucr": "820"}, "b1", 2, T0),
    _row(CHI, "c2", "unmapped_code", "code: no crosswalk entry for 820", {"iucr": "820"}, "b1", 1, T0),
    _row(CHI, "c3", "unmapped_code", "code: no crosswalk entry for 820", {"iucr": "820"}, "b2", 1, T1),
    _row(CHI, "c4", "unmapped_code", "code: no crosswalk entry for 1310", {"iucr": "1310"}, "b2", 2, T1),
    # NYC complaints: no detail, so the composite code comes from the record (type|descriptor).
    _row(
        "real_nyc_constituent_complaints",
        "k1",
        "unmapped_code",
        None,
        {"complaint_type": "Aging", "descriptor": "Senior Centers"},
        "b3",
        1,
        T0,
    ),
    _row(
        "real_nyc_constituent_complaints",
        "k2",
        "unmapped_code",
        None,
        {"complaint_type": " Aging ", "descriptor": "Senior Centers"},
        "b3",
        2,
        T0,
    ),
    # FARS: float-formatted code in the record, normalised like the mapping does.
    _row("real_fars_crashes", "f1", "unmapped_code", None, {"harm_ev": "12.0"}, "b4", 1, T0),
    # Synthetic police source: code field from its YAML; 1101 has since been added to the crosswalk.
    _row(
        "police_incidents",
        "p1",
        "unmapped_code",
        "code: no crosswalk entry for 9999",
        {"offence_code": "9999"},
        "b5",
        1,
        T0,
    ),
    _row(
        "police_incidents",
        "p2",
        "unmapped_code",
        "code: no crosswalk entry for 1101",
        {"offence_code": "1101"},
        "b5",
        2,
        T0,
    ),
    _row("police_incidents", "p3", "unmapped_code", "code: no crosswalk entry for (empty)", {}, "b5", 3, T0),
    # Free-text classifier: below the threshold (needs_review) and a known catch-all (unmapped_code).
    _row(
        "hotline_tickets",
        "h1",
        "needs_review",
        "category: 路灯不亮: classifier confidence 0.40 < 0.6; best guess UL0401 (contains 灯; rules 1.0)",
        {"category": "路灯不亮"},
        "b6",
        1,
        T0,
    ),
    _row(
        "hotline_tickets",
        "h2",
        "unmapped_code",
        "category: 其他 has no taxonomy counterpart (exact 其他; rules 1.0)",
        {"category": "其他"},
        "b6",
        2,
        T0,
    ),
    # Other reasons are not the stewards' code queue.
    _row(CHI, "c5", "invalid_timestamp", "occurred_at: cannot parse x", {"iucr": "820"}, "b2", 3, T1),
]
ROWS_LATER = [
    _row(CHI, "c6", "unmapped_code", "code: no crosswalk entry for 820", {"iucr": "820"}, "b7", 1, T2),
]


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    lake = tmp_path_factory.mktemp("unmapped-codes") / "lake"
    return load_settings(environ={"CITYSAFE_LAKE_ROOT": str(lake)})


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def _add_quarantine(spark, settings, rows):
    df = spark.createDataFrame(rows, schema=QUARANTINE_SCHEMA)
    delta_io.merge_upsert(spark, df, tables.quarantine(settings.silver_dir))


def _table(settings) -> dict[tuple[str, str, str], dict]:
    rows = DeltaTable(str(unmapped_codes.spec(settings.silver_dir).path)).to_pyarrow_table().to_pylist()
    return {(r["source"], r["reason"], r["code"]): r for r in rows}


def test_refresh_before_any_quarantine_creates_an_empty_table(spark, tmp_path):
    empty = load_settings(environ={"CITYSAFE_LAKE_ROOT": str(tmp_path / "lake")})
    out = unmapped_codes.refresh(spark, empty, registry={})
    assert out["operation"] == "none" and out["codes"] == 0
    assert DeltaTable(str(unmapped_codes.spec(empty.silver_dir).path)).to_pyarrow_table().num_rows == 0


def test_refresh_groups_counts_and_is_idempotent(spark, settings, registry):
    _add_quarantine(spark, settings, ROWS_FIRST)
    first = unmapped_codes.refresh(spark, settings, registry)
    got = _table(settings)
    assert set(got) == {
        ("real_chicago_crimes", "unmapped_code", "820"),
        ("real_chicago_crimes", "unmapped_code", "1310"),
        ("real_nyc_constituent_complaints", "unmapped_code", "Aging|Senior Centers"),
        ("real_fars_crashes", "unmapped_code", "12"),
        ("police_incidents", "unmapped_code", "9999"),
        ("police_incidents", "unmapped_code", "1101"),
        ("police_incidents", "unmapped_code", "(empty)"),
        ("hotline_tickets", "needs_review", "路灯不亮"),
        ("hotline_tickets", "unmapped_code", "其他"),
    }
    theft = got[("real_chicago_crimes", "unmapped_code", "820")]
    assert theft["count"] == 3
    assert theft["first_seen"] == T0 and theft["last_seen"] == T1
    assert theft["example_source_record_id"] == "c2"  # earliest by (ingested, batch, file, row)
    assert json.loads(theft["example_record_json"]) == {"iucr": "820"}
    # 820 was quarantined before taxonomy v1.1 added PS0107 Other theft: the queue shows a re-run maps it.
    assert theft["lookup"] == "real_chicago_iucr" and theft["mapped_now"] == "PS0107"
    assert theft["review_note"] is None
    assert got[("real_chicago_crimes", "unmapped_code", "1310")]["count"] == 1
    aging = got[("real_nyc_constituent_complaints", "unmapped_code", "Aging|Senior Centers")]
    assert aging["count"] == 2 and aging["review_note"].startswith("out_of_scope: ")
    assert got[("real_fars_crashes", "unmapped_code", "12")]["mapped_now"] == "TR0103"
    assert got[("police_incidents", "unmapped_code", "1101")]["mapped_now"] == "PS0101"
    assert got[("police_incidents", "unmapped_code", "9999")]["mapped_now"] is None
    assert got[("hotline_tickets", "needs_review", "路灯不亮")]["lookup"].startswith("classifier:")
    assert first["codes"] == 9 and first["quarantine_rows"] == 12  # the invalid_timestamp row is not counted
    assert first["by_source"]["real_chicago_crimes"] == {"codes": 2, "rows": 4}

    # Unchanged quarantine: the second refresh commits nothing.
    second = unmapped_codes.refresh(spark, settings, registry)
    assert second["operation"] == "none"
    assert second["version_after"] == second["version_before"] == first["version_after"]
    assert _table(settings) == got

    # A later row of a known code: one commit, that group's count and last_seen move.
    _add_quarantine(spark, settings, ROWS_LATER)
    third = unmapped_codes.refresh(spark, settings, registry)
    assert third["operation"] == "merge" and third["updated"] == 1 and third["inserted"] == 0
    assert third["version_after"] == first["version_after"] + 1
    theft = _table(settings)[("real_chicago_crimes", "unmapped_code", "820")]
    assert theft["count"] == 4 and theft["first_seen"] == T0 and theft["last_seen"] == T2
    assert theft["example_source_record_id"] == "c2"
