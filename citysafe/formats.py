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
import re
import threading
from typing import Any

import numpy as np
import pyarrow as pa

from citysafe.errors import InputError
from citysafe.sources import Source

log = logging.getLogger(__name__)


class FormatError(InputError):
    pass


# The bookkeeping columns of a parsed file, named as bronze names them.
ROW_NUMBER, PARSE_ERROR, RAW_RECORD, EXTRA_FIELDS = "_source_row_number", "_parse_error", "_raw_record", "_extra_fields"


@dataclasses.dataclass
class ParsedFile:
    """Records of one delivered file as an Arrow table: the declared columns as text, then the record's
    row number in the file, why it could not be read (null when it could), its raw text when it could
    not, and delivered fields not in the schema (JSON)."""

    name: str
    table: pa.Table

    @property
    def rows(self) -> int:
        return self.table.num_rows

    @property
    def malformed(self) -> int:
        return self.rows - self.table[PARSE_ERROR].null_count

    # List views, for callers that want Python values (tests, the code-mapping profiler).
    @property
    def columns(self) -> dict[str, list[str | None]]:
        bookkeeping = (ROW_NUMBER, PARSE_ERROR, RAW_RECORD, EXTRA_FIELDS)
        return {c: self.table[c].to_pylist() for c in self.table.column_names if c not in bookkeeping}

    @property
    def row_numbers(self) -> list[int]:
        return self.table[ROW_NUMBER].to_pylist()

    @property
    def parse_errors(self) -> list[str | None]:
        return self.table[PARSE_ERROR].to_pylist()

    @property
    def raw_records(self) -> list[str | None]:
        return self.table[RAW_RECORD].to_pylist()

    @property
    def extra_fields(self) -> list[str | None]:
        return self.table[EXTRA_FIELDS].to_pylist()


def _file_schema(columns: list[str]) -> pa.Schema:
    return pa.schema(
        [(c, pa.string()) for c in columns]
        + [(ROW_NUMBER, pa.int64()), (PARSE_ERROR, pa.string()), (RAW_RECORD, pa.string()), (EXTRA_FIELDS, pa.string())]
    )


class _Builder:
    """Collects records one at a time (the general path); `out` is the ParsedFile."""

    def __init__(self, name: str, columns: list[str], rename: dict[str, str] | None = None):
        self.name, self.names, self.rename = name, columns, rename or {}
        self.values: dict[str, list[str | None]] = {c: [] for c in columns}
        self.row_numbers: list[int] = []
        self.parse_errors: list[str | None] = []
        self.raw_records: list[str | None] = []
        self.extra_fields: list[str | None] = []

    def add(
        self,
        number: int,
        values: dict[str, Any] | None,
        error: str | None = None,
        raw: str | None = None,
        extra: dict | None = None,
    ) -> None:
        self.row_numbers.append(number)
        self.parse_errors.append(error)
        self.raw_records.append(raw)
        self.extra_fields.append(json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else None)
        for c in self.names:
            self.values[c].append(None if values is None else _text(values.get(c)))

    def table(self) -> pa.Table:
        data = [*self.values.values(), self.row_numbers, self.parse_errors, self.raw_records, self.extra_fields]
        schema = _file_schema(self.names)
        return pa.Table.from_arrays([pa.array(v, t) for v, t in zip(data, schema.types)], schema=schema)

    @property
    def out(self) -> ParsedFile:
        return ParsedFile(self.name, self.table())


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
    """JSON lines. A file parses in Arrow's C++ reader (vectorised, many times faster than a Python loop);
    when that refuses the file (a malformed line, a list, a field that changes type, an undeclared field),
    the file is cut into slices and only the slices Arrow refuses go through the per-record path below,
    which keeps each bad line with its parse error. Both paths give the same text for every value, but
    one: an integer in a column Arrow reads as decimal is spelled as a decimal (12 -> "12.0")."""
    text = _utf8(name, _decompress(name, data), source)
    names, rename = source.columns, source.format.rename
    pins = _TEXT_PINS.setdefault(source.name, set())
    fast = _arrow_jsonl(text, names, rename, first_line=1, pins=pins)
    if fast is not None:
        return ParsedFile(name, fast)
    parts, first_line = [], 1
    for piece in _slices(text, JSONL_SLICE_BYTES):
        table = _arrow_jsonl(piece, names, rename, first_line, pins=pins)
        if table is None:
            table = _python_jsonl(name, piece, names, rename, first_line)
        parts.append(table)
        first_line += piece.count(b"\n")
    if not parts:
        return _Builder(name, names).out
    return ParsedFile(name, pa.concat_tables(parts))


# A file Arrow refuses is retried in slices of about this size, so that one bad line sends only its
# slice (a few thousand records) through the per-record path.
JSONL_SLICE_BYTES = 256 * 1024


def _utf8(name: str, data: bytes, source: Source) -> bytes:
    """The delivery as UTF-8 bytes without a BOM (Arrow reads UTF-8 only); errors as decode() gives them."""
    if source.format.encoding.lower().replace("_", "-") in ("utf-8", "utf8", "auto"):
        try:
            data.decode("utf-8")  # validation only: the bytes themselves go on
            return data.removeprefix(b"\xef\xbb\xbf")
        except UnicodeDecodeError:
            pass
    return decode(name, data, source.format.encoding, source).encode("utf-8")


def _slices(text: bytes, size: int):
    """Consecutive pieces of `text`, each ending at a newline (the last one where the text ends)."""
    start = 0
    while start < len(text):
        cut = text.find(b"\n", min(start + size, len(text)) - 1)
        end = len(text) if cut < 0 else cut + 1
        yield text[start:end]
        start = end


# A line of nothing but JSON whitespace inside a text (one at its start is checked apart, one at its end
# makes the line count differ from the records Arrow read).
_BLANK_LINE = re.compile(rb"\n[ \t\r]*\n")
# How much of a file Arrow reads first to learn which columns hold timestamps-as-text.
SNIFF_BYTES = 64 * 1024


# Per source: the delivered fields Arrow would read as timestamps, learnt from its earlier files (a
# hint only: a file where such a field holds a number goes through the per-record path).
_TEXT_PINS: dict[str, set[str]] = {}


def _arrow_jsonl(
    text: bytes, names: list[str], rename: dict[str, str], first_line: int, pins: set[str] | None = None
) -> pa.Table | None:
    """Parse JSON lines with Arrow; None when the per-record path must decide (see parse_jsonl)."""
    import pyarrow.compute as pc
    import pyarrow.json as pj

    # Arrow reads ISO-8601 strings as timestamps: pin the columns it would take for timestamps as text.
    # They are learnt from the file's first lines, then from the whole file if a later line shows more.
    pins = set() if pins is None else pins
    head = text if pins else text[: text.find(b"\n", SNIFF_BYTES) + 1 or len(text)]
    pinned: dict[str, pa.DataType] = dict.fromkeys(pins, pa.string())
    for sample in (head, text, text):
        try:
            table = pj.read_json(
                io.BytesIO(sample),
                read_options=pj.ReadOptions(block_size=max(1 << 20, min(len(sample) + 1, 16 << 20))),
                parse_options=pj.ParseOptions(explicit_schema=pa.schema(pinned), unexpected_field_behavior="infer"),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        pinned.update({f.name: pa.string() for f in table.schema if pa.types.is_temporal(f.type)})
        pins.update(pinned)
        if sample is text and not any(pa.types.is_temporal(t) for t in table.schema.types):
            break
    else:
        return None
    table = table.rename_columns([rename.get(c, c) for c in table.column_names])
    if len(set(table.column_names)) != table.num_columns or not set(table.column_names) <= set(names):
        return None  # undeclared fields (kept as JSON by the per-record path) or a rename collision
    if table.num_rows == 0:
        return None
    lines = text.count(b"\n") + (not text.endswith(b"\n"))
    if not text.startswith((b"\n", b" ", b"\t", b"\r")) and _BLANK_LINE.search(text.removesuffix(b"\n")) is None:
        if table.num_rows != lines:  # e.g. two objects on one line: a broken record, not two
            return None
        row_numbers = pa.array(np.arange(first_line, first_line + lines, dtype=np.int64))
    else:
        numbers = [first_line + i for i, line in enumerate(text.split(b"\n")) if line.strip(b" \t\r")]
        if table.num_rows != len(numbers):
            return None
        row_numbers = pa.array(numbers, pa.int64())
    columns = []
    for c in names:
        if c not in table.column_names:
            columns.append(pa.nulls(table.num_rows, pa.string()))
            continue
        column = table[c]
        kind = column.type
        if pa.types.is_string(kind) or pa.types.is_null(kind):
            columns.append(column.cast(pa.string()))
        elif pa.types.is_integer(kind) or pa.types.is_boolean(kind):
            columns.append(pc.cast(column, pa.string()))
        elif pa.types.is_floating(kind):
            texts = _float_text(column)
            if texts is None:
                return None
            columns.append(texts)
        else:  # nested values: the per-record path writes them as JSON
            return None
    nulls = pa.nulls(table.num_rows, pa.string())
    return pa.Table.from_arrays([*columns, row_numbers, nulls, nulls, nulls], schema=_file_schema(names))


def _float_text(column: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """Decimals as Python's float repr spells them (the per-record path's text), vectorised: Arrow's
    shortest round-trip digits are the same, only the notation differs, so the values whose notation may
    differ (tiny, huge, exponent) are spelled by Python and the integral ones get their ".0". None when
    the column holds what JSON cannot: NaN or infinity, or an integer beyond int64 that Arrow read as a
    lossy decimal."""
    import pyarrow.compute as pc

    if pc.any(pc.invert(pc.is_finite(column))).as_py():
        return None
    size = pc.abs(column)
    if (pc.max(size).as_py() or 0) >= 2**53:
        return None
    text = pc.cast(column, pa.string())
    plain = pc.and_(
        pc.invert(pc.match_substring(text, "e")),
        pc.and_(pc.or_(pc.greater_equal(size, 1e-4), pc.equal(size, 0)), pc.less(size, 1e15)),
    )
    text = pc.if_else(
        pc.and_(plain, pc.invert(pc.match_substring(text, "."))), pc.binary_join_element_wise(text, ".0", ""), text
    )
    other = pc.and_(pc.invert(plain), pc.is_valid(column))
    if pc.any(other).as_py():
        values, texts, flags = column.to_pylist(), text.to_pylist(), other.to_pylist()
        text = pa.array([float.__repr__(v) if f else t for v, t, f in zip(values, texts, flags)], pa.string())
    return text


def _python_jsonl(name: str, text: bytes, names: list[str], rename: dict[str, str], first_line: int) -> pa.Table:
    build = _Builder(name, names, rename)
    # Split on newlines only: str.splitlines() would also split on U+2028 / U+0085, which JSON
    # strings may hold unescaped.
    for number, line in enumerate(text.decode("utf-8").split("\n"), start=first_line):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            build.add(number, None, f"invalid JSON at column {exc.colno}: {exc.msg}", line)
            continue
        _record_from_json(build, number, obj, line)
    return build.table()


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
