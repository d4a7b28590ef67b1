"""Delivery formats: CSV dialects and encodings, JSON lines, JSON documents, Excel; nothing lost."""

from __future__ import annotations

import gzip
import io
import json

import pytest
import yaml

from citysafe.formats import FormatError, parse
from citysafe.sources import load_source_file

SCHEMA = [
    {"name": "id", "type": "string", "sensitivity": "internal", "required": True},
    {"name": "category", "type": "string", "sensitivity": "public"},
    {"name": "note", "type": "string", "sensitivity": "internal"},
]


def _source(tmp_path, **fmt):
    entry = {
        "name": "dept_records",
        "department": "test",
        "kind": "records",
        "connector": {"type": "files", "path": str(tmp_path), "pattern": "*"},
        "format": fmt,
        "schema": SCHEMA,
        "primary_key": ["id"],
        "schedule": "@daily",
        "freshness": {"warn_after_hours": 24, "error_after_hours": 48},
    }
    path = tmp_path / "dept_records.yaml"
    path.write_text(yaml.safe_dump(entry, allow_unicode=True))
    return load_source_file(path)


def test_csv_semicolons_bom_quoted_newlines_and_gbk_autodetect(tmp_path):
    text = '\ufeffid;category;note\n1;火灾;"第一行\n第二行"\n2;"a;b";\n'
    source = _source(tmp_path, type="csv", delimiter=";", encoding="auto")
    for encoding in ("utf-8", "gbk"):
        data = text.encode() if encoding == "utf-8" else text.removeprefix("\ufeff").encode("gbk")
        parsed = parse("x.csv", data, source)
        assert parsed.columns["id"] == ["1", "2"]
        assert parsed.columns["category"] == ["火灾", "a;b"]
        assert parsed.columns["note"] == ["第一行\n第二行", ""]


def test_gzip_and_renamed_headers_and_extra_columns_kept(tmp_path):
    source = _source(tmp_path, type="csv", rename={"Primary Type": "category"})
    data = gzip.compress(b"id,Primary Type,note,Beat\n7,THEFT,x,0421\n")
    parsed = parse("crimes.csv.gz", data, source)
    assert parsed.columns["category"] == ["THEFT"]
    assert json.loads(parsed.extra_fields[0]) == {"Beat": "0421"}


def test_declared_encoding_mismatch_and_missing_required_column_stop(tmp_path):
    source = _source(tmp_path, type="csv", encoding="utf-8")
    with pytest.raises(FormatError, match=r"x.csv: not valid utf-8 at byte 14 .*gb18030"):
        parse("x.csv", "id,category\n1,火灾\n".encode("gbk"), source)
    with pytest.raises(FormatError, match=r"missing required column\(s\) \['id'\]"):
        parse("x.csv", b"category,note\nfire,x\n", source)


def test_jsonl_keeps_bad_lines_and_types_as_text(tmp_path):
    source = _source(tmp_path, type="jsonl")
    lines = [
        '{"id": 1, "category": "smoke", "note": {"v": 2.5}}',
        "{not json",
        '["a list"]',
        '{"id": "3", "category": null, "unit": "kPa"}',
    ]
    parsed = parse("b.jsonl", ("\n".join(lines) + "\n").encode(), source)
    assert parsed.row_numbers == [1, 2, 3, 4]
    assert parsed.columns["id"] == ["1", None, None, "3"]
    assert parsed.columns["note"][0] == '{"v": 2.5}'
    assert parsed.parse_errors[1].startswith("invalid JSON") and parsed.raw_records[1] == "{not json"
    assert parsed.parse_errors[2] == "expected a JSON object, found list"
    assert json.loads(parsed.extra_fields[3]) == {"unit": "kPa"}


def test_json_document_with_records_key(tmp_path):
    source = _source(tmp_path, type="json", records_key="data")
    parsed = parse("p.json", json.dumps({"data": [{"id": 1}, {"id": 2, "category": "x"}]}).encode(), source)
    assert parsed.columns["id"] == ["1", "2"] and parsed.columns["category"] == [None, "x"]
    with pytest.raises(FormatError, match="expected a JSON array of records under 'data'"):
        parse("p.json", b'{"rows": []}', source)


def test_xlsx(tmp_path):
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["id", "category", "note"])
    sheet.append([101, "燃气泄漏", None])
    sheet.append([None, None, None])  # an empty row is not a record
    sheet.append(["102", "积水", "路口"])
    buffer = io.BytesIO()
    book.save(buffer)
    parsed = parse("inspections.xlsx", buffer.getvalue(), _source(tmp_path, type="xlsx"))
    assert parsed.columns["id"] == ["101", "102"] and parsed.columns["category"] == ["燃气泄漏", "积水"]
    assert parsed.row_numbers == [1, 3]
