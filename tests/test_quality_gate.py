"""Write-audit-publish: a failing Great Expectations suite publishes nothing and keeps the evidence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deltalake import DeltaTable

from citysafe import delta_io, quality
from citysafe.errors import ConfigurationError
from spark_jobs import bronze, silver_incident, tables

import silver_fixtures as fx
from tests_support import captured_log, lake_settings, write_city_reference

HEADER = ",".join(fx.SOURCE.columns)
LINES = [
    "JQ1,2025-03-04 13:22:10,1101,入室盗窃,江岸区,114.25,30.55,解放大道1号,张三,13800138000,110101199003071234,已受理,2025-03-05 09:00:00",
    "JQ2,2025-03-04 14:00:00,1101,入室盗窃,江汉区,114.35,30.55,中山大道2号,李四,13800138001,,已受理,2025-03-05 09:00:00",
    "JQ3,2025-03-04 14:00:00,0000,未知,江汉区,114.35,30.55,中山大道3号,王五,13800138002,,已受理,2025-03-05 09:00:00",
]


@pytest.fixture
def lake(tmp_path, monkeypatch):
    syn = tmp_path / "syn"
    (syn / "police").mkdir(parents=True)
    (syn / "police" / "police_incidents_2025-03.csv").write_text("\n".join([HEADER, *LINES]) + "\n")
    write_city_reference(syn)
    monkeypatch.setenv("CITYSAFE_PII_KEY", "gate-test-key-0123456789")
    settings = lake_settings(tmp_path / "lake", syn)
    return settings


def test_failed_suite_publishes_nothing_and_keeps_staging(spark, lake, monkeypatch):
    bronze.ingest(spark, lake, fx.SOURCE)
    real_suite = quality.load_suite("silver_incident")
    strict = {
        **real_suite,
        "expectations": [*real_suite["expectations"], {"expect_table_row_count_to_be_between": {"max_value": 1}}],
    }
    monkeypatch.setattr(quality, "load_suite", lambda name: strict)
    with pytest.raises(
        silver_incident.QualityGateFailed,
        match=r"expectations: expect_table_row_count_to_be_between\); nothing published",
    ) as failure:
        silver_incident.run(spark, lake, fx.SOURCE, "run-a")
    assert not (tables.incident(lake.silver_dir).path / "_delta_log").exists()
    assert (
        DeltaTable(str(lake.staging_dir / "incident" / "run-a" / "police_incidents")).to_pyarrow_table().num_rows == 2
    )
    # The transform's scratch (rows before masking) is not kept with the staging tables.
    assert not (lake.staging_dir / "incident" / "run-a" / "police_incidents__scratch").exists()
    # The result is GX's, in the lake's GX project: uncommitted/validations/<suite>/<run>/<time>/<batch>.json
    project = quality.gx_project_dir(lake)
    result_path = Path(failure.value.result_path)
    assert str(result_path) in str(failure.value)
    assert result_path.relative_to(project / "uncommitted" / "validations").parts[:2] == ("silver_incident", "run-a")
    assert result_path.name == "citysafe-police_incidents.json"
    result = json.loads(result_path.read_text())
    assert result["success"] is False and result["meta"]["run_id"]["run_name"] == "run-a"
    assert [r["expectation_config"]["type"] for r in result["results"] if not r["success"]] == [
        "expect_table_row_count_to_be_between"
    ]
    # The suite parameters are GX's: stored as {"$PARAMETER": name}, substituted by GX in the result.
    stored = json.loads((project / "expectations" / "silver_incident.json").read_text())
    in_set = {"column": "subcategory_code", "value_set": {"$PARAMETER": "subcategory_codes"}}
    assert in_set in [e["kwargs"] for e in stored["expectations"]]
    (validated,) = [
        r["expectation_config"]["kwargs"]
        for r in result["results"]
        if r["expectation_config"]["kwargs"].get("column") == "subcategory_code"
        and r["expectation_config"]["type"] == "expect_column_values_to_be_in_set"
    ]
    assert "PS0101" in validated["value_set"] and len(validated["value_set"]) > 100
    recorded = DeltaTable(str(quality.validation_result_spec(lake).path)).to_pyarrow_table().to_pylist()
    assert any(not r["success"] for r in recorded)

    # Fixed suite: the same bronze batch now publishes; a re-run publishes nothing more.
    monkeypatch.setattr(quality, "load_suite", lambda name: real_suite)
    entry = silver_incident.run(spark, lake, fx.SOURCE, "run-b")
    assert entry["published"] == 2 and entry["quarantined"] == {"unmapped_code": 1} and entry["reconciled"]
    assert not (lake.staging_dir / "incident" / "run-b").exists()  # published: staging copy removed
    assert (lake.staging_dir / "incident" / "run-a").exists()  # failed run's evidence kept
    again = silver_incident.run(spark, lake, fx.SOURCE, "run-c")
    assert again["rows_read"] == 0


def test_suite_catches_bad_rows():
    import pandas as pd

    suite = {
        "suite": "t",
        "table": "t",
        "expectations": [
            {"expect_column_values_to_be_unique": {"column": "incident_id"}},
            {"expect_column_values_to_be_in_set": {"column": "subcategory_code", "value_set": "$codes"}},
        ],
    }
    df = pd.DataFrame({"incident_id": ["a", "a", "b"], "subcategory_code": ["PS0101", "XX9999", "PS0101"]})
    success, rows = quality.run_suite(df, suite, {"codes": ["PS0101"]})
    assert success is False
    assert {r["expectation"]: r["unexpected_count"] for r in rows} == {
        "expect_column_values_to_be_unique": 2,
        "expect_column_values_to_be_in_set": 1,
    }
    with pytest.raises(ConfigurationError, match=r"suite t: parameter\(s\) \$codes not defined"):
        quality.run_suite(df, suite, {"other": 1})


def test_fixing_reference_data_releases_quarantined_rows(spark, lake, monkeypatch):
    """Adding the missing alias and re-running publishes the rows quarantined for it; nothing else moves."""
    from spark_jobs import tables

    typo = "JQ4,2025-03-04 15:00:00,1101,入室盗窃,江按区,,,解放大道9号,赵六,13800138004,,已受理,2025-03-05 09:00:00"
    police = lake.synthetic_root / "police" / "police_incidents_2025-03.csv"
    police.write_text(police.read_text() + typo + "\n")
    bronze.ingest(spark, lake, fx.SOURCE)
    first = silver_incident.run(spark, lake, fx.SOURCE, "run-1")
    assert first["quarantined"] == {"unknown_district": 1, "unmapped_code": 1}
    q_spec, i_spec = tables.quarantine(lake.silver_dir), tables.incident(lake.silver_dir)
    versions = (delta_io.version(q_spec), delta_io.version(i_spec))

    again = silver_incident.run(spark, lake, fx.SOURCE, "run-2")  # nothing changed
    assert again["rows_read"] == 0 and (delta_io.version(q_spec), delta_io.version(i_spec)) == versions

    with open(lake.district_aliases, "a") as fh:  # the steward adds the typo to the alias table
        fh.write("江按区,420102\n")
    fixed = silver_incident.run(spark, lake, fx.SOURCE, "run-3")
    assert fixed["retried_from_quarantine"] == 2 and fixed["released_from_quarantine"] == 1
    assert fixed["published"] == 1 and fixed["quarantined"] == {"unmapped_code": 1} and fixed["reconciled"]
    published = {r.source_record_id: r for r in delta_io.read(spark, i_spec).collect()}
    assert published["JQ4"].district_code == "420102"
    left = [(r.source_record_id, r.reason, r.run_id) for r in delta_io.read(spark, q_spec).collect()]
    assert left == [("JQ3", "unmapped_code", "run-1")]  # still waiting, still dated from its first run

    settled = silver_incident.run(spark, lake, fx.SOURCE, "run-4")
    assert settled["rows_read"] == 0


def test_reference_change_that_releases_nothing_passes_without_a_gate(spark, lake):
    """A reference change re-evaluates the quarantined rows; when every one of them stays quarantined
    there are no candidates: the run succeeds without running a suite (its row-count floor is for new
    batches) and commits nothing, and the row keeps the run that first quarantined it."""
    bronze.ingest(spark, lake, fx.SOURCE)
    first = silver_incident.run(spark, lake, fx.SOURCE, "run-1")
    assert first["quarantined"] == {"unmapped_code": 1}  # JQ3: code 0000
    q_spec, i_spec = tables.quarantine(lake.silver_dir), tables.incident(lake.silver_dir)
    versions = (delta_io.version(q_spec), delta_io.version(i_spec))

    with open(lake.district_aliases, "a") as fh:  # a reference change that does not help JQ3
        fh.write("汉口火车站片区,420103\n")
    with captured_log("spark_jobs.publish") as lines:
        retry = silver_incident.run(spark, lake, fx.SOURCE, "run-2")
    assert retry["retried_from_quarantine"] == 1 and retry["released_from_quarantine"] == 0
    assert retry["published"] == 0 and retry["quarantined"] == {"unmapped_code": 1} and retry["reconciled"]
    assert retry["validation"]["evaluated"] == 0 and retry["validation"]["success"]
    assert any("suite" in line and "not run" in line for line in lines)
    assert (delta_io.version(q_spec), delta_io.version(i_spec)) == versions
    left = [(r.source_record_id, r.reason, r.run_id) for r in delta_io.read(spark, q_spec).collect()]
    assert left == [("JQ3", "unmapped_code", "run-1")]
    assert silver_incident.run(spark, lake, fx.SOURCE, "run-3")["rows_read"] == 0
