"""Landing zone: immutable copies of what departments delivered, one folder per batch, with a manifest.

    <lake_root>/landing/<source>/<batch_id>/<file>            read-only copies
    <lake_root>/landing/<source>/<batch_id>/manifest.json     source, files, sha256, bytes, rows

A file is picked up once, by checksum: a file whose sha256 is already in a manifest is never landed
again. A batch folder appears only complete (written under a temporary name, then renamed).
The batch id is derived from the checksums, so the same delivery always gets the same id.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

from citysafe.runs import write_json_atomic
from citysafe.sources import Source

MANIFEST = "manifest.json"


class LandingError(Exception):
    pass


@dataclasses.dataclass
class ParsedFile:
    """Records of one delivered file: declared columns as text, plus per-record parse errors."""

    name: str
    columns: dict[str, list[str | None]]
    row_numbers: list[int]
    parse_errors: list[str | None]
    raw_records: list[str | None]

    @property
    def rows(self) -> int:
        return len(self.row_numbers)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _decode(path: Path, source: Source) -> str:
    data = path.read_bytes()
    encoding = source.format.encoding
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise LandingError(
            f"{path}: not valid {encoding} at byte {exc.start} (source {source.name}); "
            f"fix format.encoding in {source.file} (e.g. gb18030 for GBK files)"
        ) from None
    return text.removeprefix("\ufeff")  # a BOM is not part of the first column name


def parse_csv(path: Path, source: Source) -> ParsedFile:
    """Parse a delivered CSV into the declared columns. Malformed records are kept, flagged, never dropped."""
    reader = csv.reader(io.StringIO(_decode(path, source), newline=""), delimiter=source.format.delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise LandingError(f"{path}: empty file, no header row (source {source.name})") from None
    missing = [c for c in source.columns if c not in header]
    if missing:
        raise LandingError(f"{path}: missing column(s) {missing} declared in {source.file}; "
                           f"the file has {header}")
    unexpected = [h for h in header if h not in source.columns]
    if unexpected:
        raise LandingError(f"{path}: unexpected column(s) {unexpected} not declared in {source.file}; "
                           "add them to the schema (or ask the department) before ingesting")
    index = [header.index(c) for c in source.columns]
    columns: dict[str, list[str | None]] = {c: [] for c in source.columns}
    row_numbers, errors, raws = [], [], []
    width = len(header)
    for number, record in enumerate(reader, start=1):
        if not record:  # csv yields [] for a blank line; a blank line is not a record
            continue
        row_numbers.append(number)
        if len(record) != width:
            errors.append(f"expected {width} fields, found {len(record)}")
            raws.append(source.format.delimiter.join(record))
            for c in source.columns:
                columns[c].append(None)
            continue
        errors.append(None)
        raws.append(None)
        for c, i in zip(source.columns, index):
            columns[c].append(record[i])
    return ParsedFile(path.name, columns, row_numbers, errors, raws)


def landed_checksums(landing_dir: Path) -> dict[str, str]:
    """sha256 -> batch id for every file already landed for this source."""
    seen = {}
    for manifest in sorted(landing_dir.glob(f"*/{MANIFEST}")):
        data = json.loads(manifest.read_text(encoding="utf-8"))
        for f in data["files"]:
            seen[f["sha256"]] = data["batch_id"]
    return seen


def list_batches(landing_dir: Path) -> list[dict]:
    return [json.loads(m.read_text(encoding="utf-8")) for m in sorted(landing_dir.glob(f"*/{MANIFEST}"))]


def land_new_files(source: Source, folder: Path, landing_dir: Path) -> tuple[dict | None, dict[str, ParsedFile]]:
    """Copy files not seen before into a new batch. Returns (manifest or None, parsed files by name)."""
    if not folder.is_dir():
        raise LandingError(f"source {source.name}: delivery folder {folder} does not exist "
                           "(run `citysafe generate` for the synthetic city, or fix connector.path)")
    seen = landed_checksums(landing_dir)
    candidates = sorted(p for p in folder.glob(source.connector.pattern) if p.is_file())
    new = []
    for path in candidates:
        digest = sha256_file(path)
        if digest not in seen:
            new.append((path, digest))
            seen[digest] = "(this batch)"
    if not new:
        return None, {}
    names = [p.name for p, _ in new]
    if len(set(names)) != len(names):
        raise LandingError(f"source {source.name}: two new files share a name: {names}")
    batch_id = source.name + "-" + hashlib.sha256("".join(sorted(d for _, d in new)).encode()).hexdigest()[:16]
    parsed = {p.name: parse_csv(p, source) for p, _ in new}
    tmp = landing_dir / f".incoming-{batch_id}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    files = []
    for path, digest in new:
        target = tmp / path.name
        shutil.copyfile(path, target)
        if sha256_file(target) != digest:
            raise LandingError(f"{path}: changed while it was being copied; try again")
        os.chmod(target, 0o444)
        files.append({"name": path.name, "original_path": str(path), "sha256": digest,
                      "bytes": path.stat().st_size, "rows": parsed[path.name].rows,
                      "malformed_rows": sum(e is not None for e in parsed[path.name].parse_errors)})
    manifest = {
        "source": source.name, "batch_id": batch_id, "department": source.department,
        "landed_at": dt.datetime.now(dt.UTC).isoformat(), "files": files,
        "rows": sum(f["rows"] for f in files), "format": source.format.model_dump(),
    }
    write_json_atomic(tmp / MANIFEST, manifest)
    os.replace(tmp, landing_dir / batch_id)
    return manifest, parsed


def parse_batch(source: Source, landing_dir: Path, manifest: dict) -> dict[str, ParsedFile]:
    """Re-parse a landed batch (after a crash between landing and bronze)."""
    folder = landing_dir / manifest["batch_id"]
    return {f["name"]: parse_csv(folder / f["name"], source) for f in manifest["files"]}
