"""A paged JSON API with an incremental watermark, Socrata style (Chicago, NYC, SF open-data portals).

    GET <url>?$where=<w> > 'v'&$order=<w>,<tb>&$limit=<page_size>&$offset=<n>

One FetchBatch per page, carrying the watermark before and after that page: the ingest loop commits
after every page, so a failure in the middle of paging resumes from the last committed page.

With a `tie_breaker` (a unique column) the watermark is compound, `["<w value>", "<tb value>"]`, the
`$where` is `(w > 'v') OR (w = 'v' AND tb > 'id')`, and paging is by key: every page asks for the rows
after the previous page's last row ($offset stays 0). Rows sharing a watermark value across a page
boundary are neither skipped nor read twice, and a row updated while we page (it moves to the end of
the order) cannot shift an unread row out of reach the way $offset paging would.

Without a tie breaker the watermark is the plain value and paging is by $offset from the run's
starting watermark; rows sharing the last value of a page can then be missed if a run fails right
after that page. Set tie_breaker for exactly-once.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

from citysafe.config import Settings
from citysafe.connectors import ConnectorError, FetchBatch, Fetched
from citysafe.sources import Source

MAX_BACKOFF_SECONDS = 60.0
_ENV = re.compile(r"\{env:([A-Za-z_][A-Za-z0-9_]*)\}")

Watermark = tuple[str, str | None]  # (watermark value, tie-breaker value or None)


# --- pure helpers ----------------------------------------------------------------------------------


def encode_watermark(value: str, tie: str | None) -> str:
    """The watermark as stored in the ingest state: the plain value, or JSON [value, tie]."""
    return value if tie is None else json.dumps([value, tie])


def decode_watermark(text: str | None) -> Watermark | None:
    if text is None:
        return None
    if text.startswith("["):
        try:
            pair = json.loads(text)
        except ValueError:
            pair = None
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair):
            return pair[0], pair[1]
    return text, None  # a plain value (e.g. start_watermark)


def soql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def build_query(
    column: str, tie_breaker: str | None, after: Watermark | None, page_size: int, offset: int = 0
) -> dict[str, str]:
    """The Socrata query parameters for the page after `after` (None: from the beginning)."""
    query = {}
    if after is not None:
        value, tie = after
        where = f"{column} > {soql_literal(value)}"
        if tie_breaker and tie is not None:
            where = f"({where}) OR ({column} = {soql_literal(value)} AND {tie_breaker} > {soql_literal(tie)})"
        query["$where"] = where
    query["$order"] = f"{column},{tie_breaker}" if tie_breaker else column
    query["$limit"] = str(page_size)
    query["$offset"] = str(offset)
    return query


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def page_watermark(records: list[dict], column: str, tie_breaker: str | None) -> Watermark:
    """The watermark after a page: its last row's value (and tie breaker), in the server's order."""
    last = records[-1]
    if not isinstance(last, dict):
        raise ValueError(f"expected JSON objects as records, found {type(last).__name__}")
    missing = [c for c in (column, tie_breaker) if c and last.get(c) is None]
    if missing:
        raise ValueError(f"the page's last record has no {' / '.join(missing)}: {json.dumps(last)[:200]}")
    return _text(last[column]), (_text(last[tie_breaker]) if tie_breaker else None)


def records_of(content: bytes, records_key: str | None) -> list:
    doc = json.loads(content)
    records = doc.get(records_key) if records_key and isinstance(doc, dict) else doc
    if not isinstance(records, list):
        raise ValueError(f"expected a JSON array of records{f' under {records_key!r}' if records_key else ''}")
    return records


def resolve_env(text: str, what: str) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConnectorError(f"{what}: environment variable {name} is not set (used as {{env:{name}}})")
        return os.environ[name]

    return _ENV.sub(value, text)


# --- the connector ---------------------------------------------------------------------------------


class RestApiConnector:
    def batches(
        self, source: Source, settings: Settings, watermark: str | None, seen_checksums: set[str]
    ) -> Iterator[FetchBatch]:
        """Pages after `watermark`, one batch each. (Checksums are not needed: the watermark moves on.)"""
        cfg, what = source.connector, f"source {source.name}"
        api_name = {declared: delivered for delivered, declared in source.format.rename.items()}
        column = api_name.get(source.watermark, source.watermark) if source.watermark else None
        if column is None:
            raise ConnectorError(f"{what}: a rest connector needs `watermark` (a column) in {source.file}")
        tie_breaker = api_name.get(cfg.tie_breaker, cfg.tie_breaker)
        url = resolve_env(cfg.url, what)
        headers = {"Accept": "application/json", "User-Agent": "citysafe-lake"}
        if cfg.token_env:
            if not os.environ.get(cfg.token_env):
                raise ConnectorError(
                    f"{what}: app token missing: set the environment variable {cfg.token_env} "
                    f"(connector.token_env in {source.file})"
                )
            headers["X-App-Token"] = os.environ[cfg.token_env]

        start, current, offset, page = decode_watermark(watermark), watermark, 0, 0
        while True:
            after = decode_watermark(current) if tie_breaker else start  # keyset paging, else $offset
            query = build_query(column, tie_breaker, after, cfg.page_size, offset)
            encoded = urllib.parse.urlencode(query, quote_via=urllib.parse.quote, safe="$,'()")
            sep = "&" if "?" in cfg.url else "?"
            shown = f"{cfg.url}{sep}{encoded}"  # placeholders unresolved: never shows a token
            content = self._get(f"{url}{sep}{encoded}", shown, headers, source)
            try:
                records = records_of(content, source.format.records_key)
                new = page_watermark(records, column, tie_breaker) if records else None
            except ValueError as exc:
                raise ConnectorError(f"{what}: unexpected answer from {shown}: {exc}") from None
            if not records:
                return
            page += 1
            name = "page-" + hashlib.sha256(f"{current}|{offset}".encode()).hexdigest()[:16] + ".json"
            batch = FetchBatch(
                (Fetched(name, content, {"url": shown, "page": page, "offset": offset}),),
                watermark_from=current,
                watermark_to=encode_watermark(*new),
            )
            yield batch
            if len(records) < cfg.page_size:
                return
            current = batch.watermark_to
            if not tie_breaker:
                offset += cfg.page_size

    @staticmethod
    def _get(url: str, shown: str, headers: dict, source: Source) -> bytes:
        """GET with retries (exponential backoff) on 5xx / 429, refused connections and timeouts."""
        cfg = source.connector
        parts = urllib.parse.urlsplit(url)
        host = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname  # no user:password@
        tries = cfg.max_retries + 1
        for attempt in range(tries):
            if attempt:
                time.sleep(min(cfg.backoff_seconds * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS))
            try:
                request = urllib.request.Request(url, headers=headers)
                with urllib.request.urlopen(request, timeout=cfg.timeout_seconds) as response:
                    return response.read()
            except urllib.error.HTTPError as exc:
                with exc:
                    if exc.code < 500 and exc.code != 429:
                        raise ConnectorError(
                            f"source {source.name}: HTTP {exc.code} {exc.reason} from {shown}: {_message(exc)} "
                            f"(check connector.url, the schema and token in {source.file})"
                        ) from None
                problem = f"kept failing (HTTP {exc.code})"
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, TimeoutError):
                    problem = f"timed out (no answer within {cfg.timeout_seconds:g}s)"
                else:
                    problem = f"unreachable ({reason})"
        raise ConnectorError(
            f"source {source.name}: server at {host} {problem} after {tries} tries; "
            f"check connector.url in {source.file} or retry later"
        )


def _message(exc: urllib.error.HTTPError) -> str:
    """The server's own words: Socrata answers {"message": ...}; otherwise the start of the body."""
    try:
        body = exc.read().decode("utf-8", "replace")
    except OSError:
        return "(no message)"
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and doc.get("message"):
            return str(doc["message"])
    except ValueError:
        pass
    return " ".join(body.split())[:300] or "(no message)"
