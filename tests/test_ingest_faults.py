"""Faults found by fault tests, each reproduced here: an oversize CSV field and an empty delivery must
not stop a batch; the record or file is accounted for and the rest lands."""

from __future__ import annotations

import csv
import gzip
import json
import logging

from citysafe import delta_io
from citysafe.formats import MAX_FIELD_CHARS, parse, parse_csv
from citysafe.landing import list_batches
from citysafe.sources import get_source
from spark_jobs import bronze, tables

from tests_support import captured_log, lake_settings, write_city_reference

SOURCE = get_source("police_incidents")
HEADER = ",".join(SOURCE.columns)
GOOD = (
    "JQ{n},2025-03-04 13:22:10,0101,盗窃,江岸区,114.25,30.55,解放大道1号,张三,13800138000,,已受理,2025-03-05 09:00:00"
)


def _settings(tmp_path):
    # The fixture's two districts, so a gate's city bounds never fall back to the repo's var/ (absent in CI).
    write_city_reference(tmp_path / "syn")
    return lake_settings(tmp_path / "lake", tmp_path / "syn")


def _folder(tmp_path):
    folder = tmp_path / "syn" / "police"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _bronze_rows(spark, settings):
    rows = delta_io.read(spark, bronze.bronze_spec(settings, SOURCE)).collect()
    return sorted(rows, key=lambda r: (r._source_file, r._source_row_number))


def test_a_field_over_the_limit_is_one_malformed_record_and_the_rest_parses():
    huge = "x" * (MAX_FIELD_CHARS + 10)
    text = "\n".join([HEADER, GOOD.format(n=1), GOOD.format(n=2).replace("解放大道1号", huge), GOOD.format(n=3)])
    parsed = parse_csv("big.csv", text.encode(), SOURCE)
    assert parsed.rows == 3 and parsed.columns["case_no"] == ["JQ1", None, "JQ3"]
    assert parsed.parse_errors[0] is None and parsed.parse_errors[2] is None
    assert parsed.parse_errors[1] == (
        f"field address is {MAX_FIELD_CHARS + 10:,} characters, over the "
        f"{MAX_FIELD_CHARS:,} limit (an unbalanced quote?)"
    )
    assert parsed.raw_records[1].startswith("JQ2,") and "[truncated: " in parsed.raw_records[1]
    assert len(parsed.raw_records[1]) < 10_000
    assert csv.field_size_limit() == 131_072  # the process-wide limit is put back after the file


def test_an_unbalanced_quote_swallowing_the_file_does_not_abort_it():
    lines = [GOOD.format(n=1), GOOD.format(n=2).replace("解放大道1号", '"unclosed')]
    lines += [GOOD.format(n=i) for i in range(3, 3 + MAX_FIELD_CHARS // 40)]  # > the limit in one field
    parsed = parse_csv("quote.csv", "\n".join([HEADER, *lines]).encode(), SOURCE)
    assert parsed.columns["case_no"][0] == "JQ1" and parsed.malformed == 1
    assert "over the 131,072 limit" in parsed.parse_errors[1]


def test_ingest_lands_an_oversize_record_in_bronze_and_the_other_files_too(spark, tmp_path):
    settings = _settings(tmp_path)
    folder = _folder(tmp_path)
    huge = "y" * (MAX_FIELD_CHARS * 2)
    (folder / "police_incidents_2025-03.csv").write_text(
        "\n".join([HEADER, GOOD.format(n=1), GOOD.format(n=2).replace("张三", huge), GOOD.format(n=3)]) + "\n"
    )
    (folder / "police_incidents_2025-04.csv").write_text("\n".join([HEADER, GOOD.format(n=4)]) + "\n")
    result = bronze.ingest(spark, settings, SOURCE)
    assert result["rows_read"] == result["published"] == 4 and result["malformed_kept_with_parse_error"] == 1
    rows = _bronze_rows(spark, settings)
    assert [(r._source_file[-11:-4], r._source_row_number, r.case_no) for r in rows] == [
        ("2025-03", 1, "JQ1"),
        ("2025-03", 2, None),
        ("2025-03", 3, "JQ3"),
        ("2025-04", 1, "JQ4"),
    ]
    assert "over the 131,072 limit" in rows[1]._parse_error and rows[1]._raw_record.startswith("JQ2,")


def test_an_empty_file_lands_as_zero_rows_with_a_warning_and_the_rest_lands(spark, tmp_path):
    settings = _settings(tmp_path)
    folder = _folder(tmp_path)
    (folder / "police_incidents_2025-03.csv").write_bytes(b"")
    (folder / "police_incidents_2025-04.csv").write_bytes(gzip.compress(b""))
    (folder / "police_incidents_2025-05.csv").write_text(HEADER + "\n")  # header only
    (folder / "police_incidents_2025-06.csv").write_text("\n".join([HEADER, GOOD.format(n=1)]) + "\n")
    with captured_log("citysafe.formats", logging.WARNING) as warnings:
        result = bronze.ingest(spark, settings, SOURCE)
    assert result["rows_read"] == result["published"] == 1
    assert sorted(w.split(":")[0] for w in warnings) == [
        "police_incidents_2025-03.csv",
        "police_incidents_2025-04.csv",
        "police_incidents_2025-05.csv",
    ]
    assert all("empty delivery" in w and "landed with zero rows" in w for w in warnings)
    (batch_id,) = result["batches"]
    manifest = json.loads((settings.landing_dir / "police_incidents" / batch_id / "manifest.json").read_text())
    assert manifest["rows"] == 1
    files = {f["name"]: f["rows"] for f in manifest["files"]}
    assert files == {
        "police_incidents_2025-03.csv": 0,
        "police_incidents_2025-04.csv": 0,
        "police_incidents_2025-05.csv": 0,
        "police_incidents_2025-06.csv": 1,
    }
    assert [r.case_no for r in _bronze_rows(spark, settings)] == ["JQ1"]
    # picked up once: the empty files are not delivered again on the next run
    again = bronze.ingest(spark, settings, SOURCE)
    assert again["rows_read"] == 0 and again["batches"] == []


def test_a_batch_of_only_an_empty_file_commits_zero_rows_once(spark, tmp_path):
    settings = _settings(tmp_path)
    folder = _folder(tmp_path)
    (folder / "police_incidents_2025-03.csv").write_bytes(b"")
    first = bronze.ingest(spark, settings, SOURCE)
    assert first["rows_read"] == first["published"] == 0 and len(first["batches"]) == 1
    assert bronze.committed_batches(settings, SOURCE) == first["batches"]
    recorded = delta_io.read(spark, tables.ingest_batch(settings.silver_dir)).collect()
    assert [(r.batch_id, r.file_count, r.row_count, r.byte_count) for r in recorded] == [(first["batches"][0], 1, 0, 0)]
    assert bronze.ingest(spark, settings, SOURCE)["batches"] == []  # not landed again
    (folder / "police_incidents_2025-04.csv").write_text("\n".join([HEADER, GOOD.format(n=7)]) + "\n")
    later = bronze.ingest(spark, settings, SOURCE)
    assert later["rows_read"] == later["published"] == 1
    landed = sum(m["rows"] for m in list_batches(settings.landing_dir / "police_incidents"))
    assert landed == delta_io.read(spark, bronze.bronze_spec(settings, SOURCE)).count() == 1


def test_a_day_with_an_empty_delivery_publishes_nothing_and_the_next_day_goes_on(spark, tmp_path):
    """A department with nothing to report that day (a daily increment's empty file) is not a failed
    quality gate: silver marks the batch done, publishes nothing, and the next delivery publishes."""
    from spark_jobs import silver_weather

    weather = get_source("weather_daily")
    settings = _settings(tmp_path)
    folder = tmp_path / "syn" / "weather"
    folder.mkdir(parents=True)
    header = ",".join(weather.columns)
    (folder / "weather_daily_2025-03-01.csv").write_text(header + "\n")
    bronze.ingest(spark, settings, weather)
    empty = silver_weather.run(spark, settings, weather, "day-1")
    assert empty["rows_read"] == empty["published"] == 0 and len(empty["batches"]) == 1
    assert silver_weather.run(spark, settings, weather, "day-1-again")["batches"] == []  # done, not pending
    (folder / "weather_daily_2025-03-02.csv").write_text(header + "\n2025-03-02,57494,0.0,7.9,0.6,6.8\n")
    bronze.ingest(spark, settings, weather)
    later = silver_weather.run(spark, settings, weather, "day-2")
    assert later["rows_read"] == later["published"] == 1 and later["validation"]["success"]


def test_empty_excel_sheets_and_json_arrays_are_empty_deliveries_too(tmp_path):
    import io

    import openpyxl
    from test_formats import _source

    book, buffer = openpyxl.Workbook(), io.BytesIO()
    book.save(buffer)  # one sheet, no header row
    with captured_log("citysafe.formats", logging.WARNING) as warnings:
        sheet = parse("empty.xlsx", buffer.getvalue(), _source(tmp_path, type="xlsx"))
        array = parse("empty.json", b"[]", _source(tmp_path, type="json"))
        blank = parse("blank.jsonl", b"\n  \n", _source(tmp_path, type="jsonl"))
    assert (sheet.rows, array.rows, blank.rows) == (0, 0, 0)
    assert [w.split(": ")[:2] for w in warnings] == [
        ["empty.xlsx", "empty delivery (no records) from source dept_records"],
        ["empty.json", "empty delivery (no records) from source dept_records"],
        ["blank.jsonl", "empty delivery (no content) from source dept_records"],
    ]
