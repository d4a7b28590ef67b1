"""Connectors fetch raw bytes from where a department keeps its data; landing keeps them immutable.

A connector yields `FetchBatch`es: raw deliveries (files, API pages, query results) plus the
watermark range they cover. The ingest loop lands each batch, appends it to bronze, and only then
commits `watermark_to` (a crash in between re-reads the batch, never skips it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Protocol

from citysafe.config import Settings
from citysafe.errors import InputError
from citysafe.sources import Source


class ConnectorError(InputError):
    """The source cannot be reached or refuses the request; the message says which and what to do."""


@dataclasses.dataclass(frozen=True)
class Fetched:
    name: str  # file name inside the landing batch
    content: bytes  # the raw bytes, exactly as received
    meta: dict = dataclasses.field(default_factory=dict)  # original path / URL / query


@dataclasses.dataclass(frozen=True)
class FetchBatch:
    items: tuple[Fetched, ...]
    watermark_from: str | None = None
    watermark_to: str | None = None


class Connector(Protocol):
    def batches(
        self, source: Source, settings: Settings, watermark: str | None, seen_checksums: set[str]
    ) -> Iterator[FetchBatch]: ...


def connector_for(source: Source) -> Connector:
    kind = source.connector.type
    if kind == "files":
        from citysafe.connectors.files import FilesConnector

        return FilesConnector()
    if kind == "rest":
        from citysafe.connectors.rest import RestApiConnector

        return RestApiConnector()
    if kind == "postgres":
        from citysafe.connectors.postgres import PostgresTableConnector

        return PostgresTableConnector()
    raise ConnectorError(f"source {source.name}: no connector for type {kind!r}")
