"""Parsers from delivered bytes to records of the declared columns (all text, as delivered).

Formats: CSV (any delimiter, quoted newlines, BOM), JSON lines, JSON (an array, or an object holding
the array under a key), Excel .xlsx. Encodings: declared (utf-8, gbk, gb18030 ...) or `auto`
(UTF-8, else GB18030, the superset of GBK). gzip is undone first when the name ends in .gz.

A malformed record never stops a file: it is kept with `parse_error` set and its raw text (a CSV field
over MAX_FIELD_CHARS is such a record, its raw text cut to MAX_RAW_CHARS). An empty delivery (0 bytes,
blank, a header only) is zero records and a warning naming the file. A file that cannot be read at all
(wrong encoding, missing required column, not JSON) raises FormatError naming the file and what to do.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gzip
import io
import json
import logging
import threading
from typing import Any

from citysafe.errors import InputError
from citysafe.sources import Source

log = logging.getLogger(__name__)


class FormatError(InputError):
    pass


@dataclasses.dataclass
class ParsedFile:
    """Records of one delivered file: declared columns as text, plus per-record problems."""

    name: str
    columns: dict[str, list[str | None]]
    row_numbers: list[int]
    parse_errors: list[str | None]
    raw_records: list[str | None]
    extra_fields: list[str | None]

    @property
    def rows(self) -> int:
        return len(self.row_numbers)

    @property
    def malformed(self) -> int:
        return sum(e is not None for e in self.parse_errors)


class _Builder:
    def __init__(self, name: str, columns: list[str], rename: dict[str, str] | None = None):
        self.name, self.names, self.rename = name, columns, rename or {}
        self.out = ParsedFile(name, {c: [] for c in columns}, [], [], [], [])

    def add(
        self,
        number: int,
        values: dict[str, Any] | None,
        error: str | None = None,
        raw: str | None = None,
        extra: dict | None = None,
    ) -> None:
        self.out.row_numbers.append(number)
        self.out.parse_errors.append(error)
        self.out.raw_records.append(raw)
        self.out.extra_fields.append(json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else None)
        for c in self.names:
            self.out.columns[c].append(None if values is None else _text(values.get(c)))


def _text(value: Any) -> str | None:
    """Bronze keeps text as delivered: numbers in their JSON spelling, nested values as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _decompress(name: str, data: bytes) -> bytes:
    if name.endswith(".gz") or data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except OSError as exc:
            raise FormatError(f"{name}: looks gzip-compressed but cannot be decompressed: {exc}") from None
    return data


def decode(name: str, data: bytes, encoding: str, source: Source) -> str:
    candidates = ["utf-8", "gb18030"] if encoding == "auto" else [encoding]
    for enc in candidates:
        try:
            return data.decode(enc).removeprefix("\ufeff")  # a BOM is not part of the first column name
        except UnicodeDecodeError as exc:
            error = exc
    raise FormatError(
        f"{name}: not valid {' or '.join(candidates)} at byte {error.start} (source {source.name}); "
        f"fix format.encoding in {source.file} (e.g. gb18030 for GBK files, or auto)"
    )


def _check_header(name: str, header: list[str], source: Source) -> None:
    missing = [c for c in source.required_columns if c not in header]
    if missing:
        raise FormatError(
            f"{name}: missing required column(s) {missing} declared in {source.file}; the file has {header}"
        )


# A field longer than this is not a value but a broken record (typically a stray quote that swallowed
# the lines after it): the record lands in bronze with a parse error instead of aborting the file.
MAX_FIELD_CHARS = 131_072
# How much of a malformed record's raw text bronze keeps.
MAX_RAW_CHARS = 8_192


def _raw_excerpt(raw: str) -> str:
    if len(raw) <= MAX_RAW_CHARS:
        return raw
    return raw[:MAX_RAW_CHARS] + f"... [truncated: {len(raw):,} characters]"


@contextlib.contextmanager
def _csv_field_limit(limit: int):
    """The csv module's field limit is process-wide: raise it for one file, then put it back (under a
    lock, so a parse in another thread never sees the limit put back half-way through its file)."""
    with _CSV_LIMIT_LOCK:
        previous = csv.field_size_limit()
        csv.field_size_limit(max(limit, previous))
        try:
            yield
        finally:
            csv.field_size_limit(previous)


_CSV_LIMIT_LOCK = threading.Lock()


def parse_csv(name: str, data: bytes, source: Source) -> ParsedFile:
    fmt = source.format
    text = decode(name, _decompress(name, data), fmt.encoding, source)
    # Let the reader take any field the file can hold (never "field larger than field limit" half-way
    # through a file); fields over MAX_FIELD_CHARS are then flagged per record below.
    with _csv_field_limit(len(text) + 1):
        return _parse_csv_text(name, text, source)


def _parse_csv_text(name: str, text: str, source: Source) -> ParsedFile:
    fmt = source.format
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=fmt.delimiter, quotechar=fmt.quotechar)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:  # decoded to nothing (e.g. a BOM only): parse() reports the empty delivery
        return _Builder(name, source.columns).out
    header = [fmt.rename.get(h, h) for h in header]
    _check_header(name, header, source)
    if fmt.strict_columns:
        missing = [c for c in source.columns if c not in header]
        unexpected = [h for h in header if h not in source.columns]
        if missing or unexpected:
            raise FormatError(
                f"{name}: columns differ from {source.file}: missing {missing}, unexpected "
                f"{unexpected}; update the schema (or ask the department) before ingesting"
            )
    build = _Builder(name, source.columns)
    width = len(header)
    for number, record in enumerate(reader, start=1):
        if not record:  # a blank line is not a record
            continue
        longest = max(range(len(record)), key=lambda i: len(record[i]))
        if len(record[longest]) > MAX_FIELD_CHARS:
            label = header[longest] if longest < width else f"#{longest + 1}"
            build.add(
                number,
                None,
                f"field {label} is {len(record[longest]):,} characters, over the "
                f"{MAX_FIELD_CHARS:,} limit (an unbalanced quote?)",
                _raw_excerpt(fmt.delimiter.join(record)),
            )
            continue
        if len(record) != width:
            build.add(number, None, f"expected {width} fields, found {len(record)}", fmt.delimiter.join(record))
            continue
        values = dict(zip(header, record))
        extra = {k: v for k, v in values.items() if k not in build.names} or None
        build.add(number, values, extra=extra)
    return build.out


def _record_from_json(build: _Builder, number: int, obj: Any, raw: str) -> None:
    if not isinstance(obj, dict):
        build.add(number, None, f"expected a JSON object, found {type(obj).__name__}", raw)
        return
    obj = {build.rename.get(k, k): v for k, v in obj.items()}
    extra = {k: v for k, v in obj.items() if k not in build.names} or None
    build.add(number, obj, extra=extra)


def parse_jsonl(name: str, data: bytes, source: Source) -> ParsedFile:
    text = decode(name, _decompress(name, data), source.format.encoding, source)
    build = _Builder(name, source.columns, source.format.rename)
    # Split on newlines only: str.splitlines() would also split on U+2028 / U+0085, which JSON
    # strings may hold unescaped.
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            build.add(number, None, f"invalid JSON at column {exc.colno}: {exc.msg}", line)
            continue
        _record_from_json(build, number, obj, line)
    return build.out


def parse_json(name: str, data: bytes, source: Source) -> ParsedFile:
    """A JSON document: an array of records, or an object with the array under `format.records_key`."""
    text = decode(name, _decompress(name, data), source.format.encoding, source)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(f"{name}: not a JSON document (line {exc.lineno}: {exc.msg})") from None
    key = source.format.records_key
    records = doc.get(key) if key and isinstance(doc, dict) else doc
    if not isinstance(records, list):
        raise FormatError(f"{name}: expected a JSON array of records{f' under {key!r}' if key else ''}")
    build = _Builder(name, source.columns, source.format.rename)
    for number, obj in enumerate(records, start=1):
        _record_from_json(build, number, obj, json.dumps(obj, ensure_ascii=False))
    return build.out


def parse_xlsx(name: str, data: bytes, source: Source) -> ParsedFile:
    import openpyxl

    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds for a bad file
        raise FormatError(f"{name}: not a readable .xlsx workbook: {exc}") from None
    sheet = book[source.format.sheet] if source.format.sheet else book.worksheets[0]
    rows = sheet.iter_rows(values_only=True)
    try:
        header = [source.format.rename.get(str(h).strip(), str(h).strip()) if h is not None else "" for h in next(rows)]
    except StopIteration:  # an empty sheet: parse() reports the empty delivery
        book.close()
        return _Builder(name, source.columns).out
    _check_header(name, header, source)
    build = _Builder(name, source.columns)
    for number, row in enumerate(rows, start=1):
        if row is None or all(v is None for v in row):
            continue
        values = {h: v for h, v in zip(header, row) if h}
        extra = {k: _text(v) for k, v in values.items() if k not in build.names} or None
        build.add(number, values, extra=extra)
    book.close()
    return build.out


PARSERS = {"csv": parse_csv, "jsonl": parse_jsonl, "json": parse_json, "xlsx": parse_xlsx}


def _empty_delivery(name: str, source: Source, why: str) -> ParsedFile:
    """An empty delivery is a real event (a department with nothing to report, a failed export):
    it lands with zero rows and a warning, and the other files of the batch land as usual."""
    log.warning("%s: empty delivery (%s) from source %s: landed with zero rows", name, why, source.name)
    return _Builder(name, source.columns).out


def parse(name: str, data: bytes, source: Source) -> ParsedFile:
    if not data:
        return _empty_delivery(name, source, "0 bytes")
    if len(data) < 4096 and not _decompress(name, data).strip():
        return _empty_delivery(name, source, "no content")
    parsed = PARSERS[source.format.type](name, data, source)
    if not parsed.rows:  # a header only, an empty JSON array, blank lines
        _empty_delivery(name, source, "no records")
    return parsed
