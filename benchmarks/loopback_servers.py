"""Loopback servers for the ingest benchmark: a Socrata-style JSON API and a throw-away PostgreSQL.

Both listen on 127.0.0.1 only and hold fixed data, so a benchmark run pulls a known, finite set of rows.

- `SocrataServer`: serves records (dicts of text) at /resource/<name>.json, answering the queries
  citysafe.connectors.rest sends: `$where` as `w > 'v'` or `(w > 'v') OR (w = 'v' AND tb > 't')`,
  `$order` `w,tb` (or `w`), `$limit`, `$offset`. Same query language as the test portal in
  tests/test_connector_rest.py, but built for volume: the rows are sorted once and encoded to JSON once,
  a page is a bisect plus a byte join, so the server's own cost stays small next to the connector's.
  Values compare as text (code point order), like PostgreSQL text columns in the C locale.
  A request budget (pages needed + 10) answers 400 beyond it, so a paging bug cannot loop forever.
- `start_postgres`: citysafe/pg_local.py's throw-away server (initdb in a temporary folder, 127.0.0.1,
  fsync off; as root it runs as `nobody`). Imported, not copied.
"""

from __future__ import annotations

import bisect
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_LIT = r"'((?:[^']|'')*)'"
_GT = re.compile(rf"^(\w+) > {_LIT}$")
_TIE = re.compile(rf"^\((\w+) > {_LIT}\) OR \((\w+) = {_LIT} AND (\w+) > {_LIT}\)$")
MAX_LIMIT = 50000  # Socrata's own cap on $limit


def _unquote(literal: str) -> str:
    return literal.replace("''", "'")


def keyset_skips(sorted_keys: list[tuple], page_size: int) -> int:
    """Rows that keyset paging by (watermark, tie_breaker) over `sorted_keys` loses: rows whose key equals
    the previous page's last key (an exact duplicate key across a page boundary). 0 for a unique key."""
    skipped, i = 0, page_size
    while i < len(sorted_keys):
        j = i
        while j < len(sorted_keys) and sorted_keys[j] == sorted_keys[i - 1]:
            j += 1
        skipped += j - i
        i = j + page_size
    return skipped


class SocrataServer:
    """`records` served in (watermark, tie_breaker) order; a context manager (thread starts/stops)."""

    def __init__(self, records: list[dict], watermark: str, tie_breaker: str, dataset: str = "dataset"):
        order = sorted(range(len(records)), key=lambda i: (records[i][watermark], records[i][tie_breaker]))
        self.watermark, self.tie_breaker = watermark, tie_breaker
        self.keys = [(records[i][watermark], records[i][tie_breaker]) for i in order]
        self.w_values = [k[0] for k in self.keys]
        self.encoded = [
            json.dumps(records[i], ensure_ascii=False, separators=(",", ":")).encode("utf-8") for i in order
        ]
        self.path = f"/resource/{dataset}.json"
        self.requests = 0
        self.bytes_sent = 0
        self.budget = 10
        self.lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def keyset_skips(self, page_size: int) -> int:
        return keyset_skips(self.keys, page_size)

    # --- query evaluation -------------------------------------------------------------------------

    def _start(self, where: str | None) -> int:
        if where is None:
            return 0
        if m := _GT.match(where):
            if m.group(1) != self.watermark:
                raise LookupError(f"$where on {m.group(1)}: only {self.watermark} is indexed here")
            return bisect.bisect_right(self.w_values, _unquote(m.group(2)))
        if m := _TIE.match(where):
            w, v, w2, v2, tb, t = m.groups()
            if (w, w2, tb) != (self.watermark, self.watermark, self.tie_breaker) or v != v2:
                raise ValueError(f"unsupported $where: {where}")
            return bisect.bisect_right(self.keys, (_unquote(v), _unquote(t)))
        raise ValueError(f"Could not parse SoQL query: {where}")

    def page(self, params: dict[str, str]) -> bytes:
        order = [c.strip() for c in params.get("$order", "").split(",") if c.strip()]
        if order not in ([self.watermark, self.tie_breaker], [self.watermark]):
            raise ValueError(
                f"unsupported $order {params.get('$order')!r}: this dataset is sorted by "
                f"{self.watermark},{self.tie_breaker}"
            )
        limit = min(int(params.get("$limit", 1000)), MAX_LIMIT)
        start = self._start(params.get("$where")) + int(params.get("$offset", 0))
        return b"[" + b",".join(self.encoded[start : start + limit]) + b"]"

    # --- serving ----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self, page_size: int) -> SocrataServer:
        self.budget = -(-len(self.keys) // page_size) + 10
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.socrata = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="socrata-loopback", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _error(self, status: int, message: str) -> None:
        self._send(status, json.dumps({"code": "benchmark", "error": True, "message": message}).encode())

    def do_GET(self):
        server: SocrataServer = self.server.socrata
        url = urllib.parse.urlsplit(self.path)
        with server.lock:
            server.requests += 1
            over = server.requests > server.budget
        if over:
            return self._error(400, f"request budget of {server.budget} exceeded: the client pages in a loop")
        if url.path != server.path:
            return self._error(404, f"Unknown dataset {url.path}")
        try:
            body = server.page(dict(urllib.parse.parse_qsl(url.query)))
        except (ValueError, LookupError) as exc:
            return self._error(400, str(exc))
        with server.lock:
            server.bytes_sent += len(body)
        self._send(200, body)


# --- PostgreSQL --------------------------------------------------------------------------------------


def start_postgres(base: Path):
    """A throw-away PostgreSQL server (citysafe/pg_local.py) under `base`; raises RuntimeError when no
    server binaries are installed. The caller stops it (`.stop()`; also registered with atexit)."""
    from citysafe import pg_local

    if pg_local.find_bin_dir() is None:
        raise RuntimeError("PostgreSQL server binaries not found (Debian's `postgresql` package, or PG_BIN_DIR)")
    return pg_local.start_server(base)
