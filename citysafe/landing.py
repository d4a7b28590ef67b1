"""Landing zone: immutable copies of what departments delivered, one folder per batch, with a manifest.

    <lake_root>/landing/<source>/<batch_id>/<file>            read-only raw bytes as received
    <lake_root>/landing/<source>/<batch_id>/manifest.json     source, files (sha256, bytes, rows), watermarks

The batch id is derived from the checksums, so the same delivery always gets the same id, and a file
whose sha256 is already in a manifest is never landed again. A batch counts only once its manifest is
there: in a folder the batch is written under a temporary name, then renamed; on object storage
(which has no rename) the files are written first and the manifest last, in one PUT each.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from pathlib import Path

from citysafe import storage
from citysafe.connectors import FetchBatch
from citysafe.formats import ParsedFile, parse
from citysafe.runs import write_json_atomic
from citysafe.sources import Source

MANIFEST = "manifest.json"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def landed_checksums(landing_dir: Path) -> set[str]:
    return {f["sha256"] for m in list_batches(landing_dir) for f in m["files"]}


def list_batches(landing_dir: Path) -> list[dict]:
    """Manifests of every landed batch, oldest first."""
    manifests = [json.loads(m.read_text(encoding="utf-8")) for m in landing_dir.glob(f"*/{MANIFEST}")]
    return sorted(manifests, key=lambda m: (m["landed_at"], m["batch_id"]))


def land_batch(source: Source, landing_dir: Path, batch: FetchBatch) -> tuple[dict, dict[str, ParsedFile]]:
    """Parse (to count rows and fail early on unreadable files), then keep the raw bytes immutable."""
    names = [f.name for f in batch.items]
    if len(set(names)) != len(names):
        raise ValueError(f"source {source.name}: two deliveries in one batch share a name: {names}")
    digests = {f.name: sha256_bytes(f.content) for f in batch.items}
    batch_id = source.name + "-" + hashlib.sha256("".join(sorted(digests.values())).encode()).hexdigest()[:16]
    parsed = {f.name: parse(f.name, f.content, source) for f in batch.items}
    final = landing_dir / batch_id
    if (final / MANIFEST).exists():  # the same bytes were landed before (e.g. a re-fetched page)
        return json.loads((final / MANIFEST).read_text(encoding="utf-8")), parsed
    remote = storage.is_remote(landing_dir)
    tmp = final if remote else landing_dir / f".incoming-{batch_id}"
    if not remote and tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    files = []
    for item in batch.items:
        target = tmp / item.name
        target.write_bytes(item.content)
        if not remote:
            os.chmod(target, 0o444)
        files.append(
            {
                "name": item.name,
                "sha256": digests[item.name],
                "bytes": len(item.content),
                "rows": parsed[item.name].rows,
                "malformed_rows": parsed[item.name].malformed,
                **item.meta,
            }
        )
    manifest = {
        "source": source.name,
        "batch_id": batch_id,
        "department": source.department,
        "connector": source.connector.type,
        "landed_at": dt.datetime.now(dt.UTC).isoformat(),
        "watermark_from": batch.watermark_from,
        "watermark_to": batch.watermark_to,
        "files": files,
        "rows": sum(f["rows"] for f in files),
        "format": source.format.model_dump(),
    }
    write_json_atomic(tmp / MANIFEST, manifest)
    if not remote:
        os.replace(tmp, final)
    return manifest, parsed


def parse_landed(source: Source, landing_dir: Path, manifest: dict) -> dict[str, ParsedFile]:
    """Re-parse a landed batch (after a crash between landing and bronze)."""
    folder = landing_dir / manifest["batch_id"]
    return {f["name"]: parse(f["name"], (folder / f["name"]).read_bytes(), source) for f in manifest["files"]}
