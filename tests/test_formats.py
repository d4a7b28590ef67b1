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


def _jsonl_source(tmp_path, **fmt):
    return _source(tmp_path, type="jsonl", **fmt)


JSONL_CASES = {
    "numbers, timestamps, booleans, nulls": [
        '{"id": 1, "category": "2025-01-01T00:00:00Z", "note": 0.0}',
        '{"id": 2, "category": "2025-01-02T00:00:00.5Z", "note": 179.97}',
        '{"id": 3, "category": null, "note": 1e-05}',
        '{"id": 4, "note": -3.25e-07}',
        '{"id": 5, "category": true, "note": 1e300}',
    ],
    "blank and whitespace lines, CRLF": ['{"id": "a"}\r', "", "   ", '{"id": "b", "note": "x"}\r', "\t"],
    "escapes and line separators": ['{"id": "\\u00e9\\n", "note": "a\u2028b"}', '{"id": "火灾", "note": "\\"q\\""}'],
    "a malformed line": ['{"id": 1}', "{not json", '{"id": 3}'],
    "a list, not an object": ['{"id": 1}', '["a list"]'],
    "two objects on one line": ['{"id": 1}{"id": 2}', "", '{"id": 3}'],
    "a field changing type": ['{"id": 1}', '{"id": "x"}'],
    "an undeclared field": ['{"id": 1, "unit": "kPa"}', '{"id": 2}'],
    "a nested value": ['{"id": 1, "note": {"v": 2.5}}'],
    "NaN and an integer beyond int64": ['{"id": 1, "note": NaN}', '{"id": 12345678901234567890}'],
    "a repeated key": ['{"id": 1, "id": 2}'],
}


@pytest.mark.parametrize("case", sorted(JSONL_CASES))
def test_jsonl_arrow_path_gives_what_the_per_record_path_gives(tmp_path, case):
    """The vectorised reader and the per-record reader agree value for value on every kind of line
    (where Arrow refuses a file, the per-record path decides, slice by slice)."""
    from citysafe.formats import _python_jsonl

    source = _jsonl_source(tmp_path)
    data = ("\n".join(JSONL_CASES[case]) + "\n").encode()
    parsed = parse("c.jsonl", data, source)
    expected = _python_jsonl("c.jsonl", data, source.columns, {}, 1)
    assert parsed.table.to_pylist() == expected.to_pylist()


def test_jsonl_clean_file_never_takes_the_per_record_path(tmp_path, monkeypatch):
    from citysafe import formats

    def refuse(*args):
        raise AssertionError("per-record path used for a clean file")

    monkeypatch.setattr(formats, "_python_jsonl", refuse)
    monkeypatch.setattr(formats, "_TEXT_PINS", {})  # no hints from other tests' files
    lines = [json.dumps({"id": i, "category": f"2025-01-01T00:{i % 60:02d}:00Z", "note": i / 7}) for i in range(5000)]
    parsed = parse("d.jsonl", ("\n".join(lines) + "\n").encode(), _jsonl_source(tmp_path))
    assert parsed.rows == 5000 and parsed.malformed == 0
    assert parsed.columns["note"][:2] == ["0.0", repr(1 / 7)] and parsed.row_numbers[-1] == 5000


def test_jsonl_one_bad_line_sends_only_its_slice_through_the_per_record_path(tmp_path, monkeypatch):
    from citysafe import formats

    monkeypatch.setattr(formats, "JSONL_SLICE_BYTES", 4096)
    seen = []
    slow = formats._python_jsonl
    monkeypatch.setattr(formats, "_python_jsonl", lambda *a: seen.append(a[-1]) or slow(*a))
    lines = [json.dumps({"id": i, "note": i * 0.5}) for i in range(3000)]
    lines[1700] = '{"id": 1700, "note": '  # cut off mid-record
    data = ("\n".join(lines) + "\n").encode()
    parsed = parse("e.jsonl", data, _jsonl_source(tmp_path))
    assert parsed.rows == 3000 and parsed.malformed == 1
    assert parsed.row_numbers == list(range(1, 3001))
    assert parsed.parse_errors[1700].startswith("invalid JSON") and parsed.raw_records[1700] == lines[1700]
    assert parsed.columns["id"][1699:1702] == ["1699", None, "1701"]
    assert len(seen) == 1 and seen[0] <= 1701  # one slice, the one holding line 1701


def test_jsonl_renames_gbk_and_bom(tmp_path):
    source = _jsonl_source(tmp_path, encoding="auto", rename={"编号": "id"})
    text = '\ufeff{"编号": 7, "category": "积水"}\n{"编号": 8, "note": 2.5}\n'
    for data in (text.encode("utf-8"), text.removeprefix("\ufeff").encode("gb18030")):
        parsed = parse("f.jsonl", data, source)
        assert parsed.columns == {"id": ["7", "8"], "category": ["积水", None], "note": [None, "2.5"]}


def test_decimals_are_spelled_as_python_spells_them():
    """The vectorised decimal text equals float repr (the per-record path's JSON spelling) over many
    magnitudes, signs, integral values and zeros."""
    import numpy as np
    import pyarrow as pa

    from citysafe.formats import _float_text

    rng = np.random.default_rng(7)
    values = np.concatenate(
        [
            rng.standard_normal(20_000) * 10.0 ** rng.integers(-12, 16, 20_000),
            np.concatenate([np.round(rng.standard_normal(1_000) * 1000, d) for d in range(5)]),
            rng.integers(-(10**6), 10**6, 5_000).astype(float),
            [0.0, -0.0, 1e-4, 9.999e-5, 1e15, 999999999999999.9, 9e15, 0.1, 1 / 3, 2.0**52],
        ]
    )
    column = pa.chunked_array([pa.array(values), pa.array([None, 1.5])])
    expected = [float.__repr__(v) for v in values] + [None, "1.5"]
    assert _float_text(column).to_pylist() == expected
    assert _float_text(pa.chunked_array([pa.array([1.0, float("nan")])])) is None
    assert _float_text(pa.chunked_array([pa.array([1.2345678901234567e19])])) is None
