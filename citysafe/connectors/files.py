"""Files in a drop folder: each new file (by sha256) is picked up once, never twice."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from citysafe.config import Settings
from citysafe.connectors import ConnectorError, FetchBatch, Fetched
from citysafe.sources import Source

# A batch is held in memory from fetch to bronze: cap it (a large delivery becomes several batches).
MAX_BATCH_BYTES = 256 << 20


class FilesConnector:
    def batches(
        self, source: Source, settings: Settings, watermark: str | None, seen_checksums: set[str]
    ) -> Iterator[FetchBatch]:
        cfg = source.connector
        folder = cfg.folder(settings)
        if not folder.is_dir():
            raise ConnectorError(
                f"source {source.name}: delivery folder {folder} does not exist "
                "(run `citysafe generate` for the synthetic city, or fix connector.path in "
                f"{source.file})"
            )
        paths = sorted(p for p in (folder.rglob if cfg.recursive else folder.glob)(cfg.pattern) if p.is_file())
        items, size, seen = [], 0, set(seen_checksums)
        for path in paths:
            content = path.read_bytes()
            digest = hashlib.sha256(content).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            if items and size + len(content) > MAX_BATCH_BYTES:
                yield FetchBatch(tuple(items))
                items, size = [], 0
            name = str(path.relative_to(folder)).replace("/", "__")
            items.append(Fetched(name, content, {"original_path": str(path)}))
            size += len(content)
        if items:
            yield FetchBatch(tuple(items))
