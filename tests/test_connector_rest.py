"""REST connector against a real local HTTP server that answers Socrata queries over recorded records.

The server (127.0.0.1, a free port) implements $where / $order / $limit / $offset for the forms the
connector sends, over tests/data/rest/, and can be scripted to fail for given request numbers.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from citysafe import delta_io
from citysafe.config import load_settings
from citysafe.connectors import ConnectorError
from citysafe.connectors.rest import (
    RestApiConnector,
    build_query,
    decode_watermark,
    encode_watermark,
    page_watermark,
    records_of,
)
from citysafe.landing import list_batches
from citysafe.sources import load_source_file
from spark_jobs import bronze

DATA = Path(__file__).parent / "data" / "rest"
RECORDS = json.loads((DATA / "chicago_crimes_records.json").read_text())
NEW = json.loads((DATA / "chicago_crimes_new.json").read_text())
COLUMNS = ["id", "case_number", "date", "primary_type", "description", "updated_on", "latitude", "longitude"]


def _key(r):
    return r["updated_on"], int(r["id"])


ORDERED = sorted(RECORDS, key=_key)


def _wm(record) -> str:
    return encode_watermark(record["updated_on"], record["id"])


# --- a Socrata-like portal -------------------------------------------------------------------------

_LIT = r"'((?:[^']|'')*)'"
_GT = re.compile(rf"^(\w+) > {_LIT}$")
_TIE = re.compile(rf"^\((\w+) > {_LIT}\) OR \((\w+) = {_LIT} AND (\w+) > {_LIT}\)$")
NUMBER_COLUMNS = {"id"}  # the portal types `id` as a number: it compares and orders numerically


class Portal:
    """/resource/crimes.json over `records`; `plan(n)` scripts request n (1-based): None (answer),
    ("status", code, message) or ("sleep", seconds) before answering."""

    def __init__(self):
        self.records = list(RECORDS)
        self.requests: list[dict] = []
        self.plan = lambda n: None
        self.records_key: str | None = None
        self.lock = threading.Lock()

    # query evaluation -----------------------------------------------------------------------
    def _typed(self, column: str, value: str):
        if column not in COLUMNS:
            raise LookupError(f"No such column: {column}")
        return int(value) if column in NUMBER_COLUMNS else value

    def _value(self, record: dict, column: str):
        return self._typed(column, record[column])

    def _where(self, where: str):
        if m := _GT.match(where):
            col, lit = m.group(1), self._typed(m.group(1), m.group(2).replace("''", "'"))
            return lambda r: self._value(r, col) > lit
        if m := _TIE.match(where):
            w, v, w2, v2, tb, t = m.groups()
            if w != w2 or v != v2:
                raise ValueError(f"unsupported $where: {where}")
            v, t = self._typed(w, v.replace("''", "'")), self._typed(tb, t.replace("''", "'"))
            return lambda r: self._value(r, w) > v or (self._value(r, w) == v and self._value(r, tb) > t)
        raise ValueError(f"Could not parse SoQL query: {where}")

    def answer(self, params: dict[str, str]) -> list[dict]:
        rows = list(self.records)
        if "$where" in params:
            keep = self._where(params["$where"])
            rows = [r for r in rows if keep(r)]
        order = [c.strip() for c in params.get("$order", "").split(",") if c.strip()]
        for col in order:
            self._typed(col, "0" if col in NUMBER_COLUMNS else "")
        rows.sort(key=lambda r: tuple(self._value(r, c) for c in order))
        offset, limit = int(params.get("$offset", 0)), int(params.get("$limit", 1000))
        return rows[offset : offset + limit]


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, doc) -> None:
        body = json.dumps(doc).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def do_GET(self):
        portal: Portal = self.server.portal
        url = urllib.parse.urlsplit(self.path)
        params = dict(urllib.parse.parse_qsl(url.query))
        with portal.lock:
            portal.requests.append({"path": url.path, "params": params, "token": self.headers.get("X-App-Token")})
            action = portal.plan(len(portal.requests))
        if action and action[0] == "sleep":
            time.sleep(action[1])
        elif action and action[0] == "status":
            return self._send(action[1], {"code": "scripted", "error": True, "message": action[2]})
        if url.path != "/resource/crimes.json":
            return self._send(404, {"code": "not_found", "error": True, "message": f"Unknown dataset {url.path}"})
        try:
            rows = portal.answer(params)
        except (ValueError, LookupError) as exc:
            return self._send(400, {"code": "query.compiler.malformed", "error": True, "message": str(exc.args[0])})
        self._send(200, {portal.records_key: rows} if portal.records_key else rows)


@pytest.fixture
def portal():
    p = Portal()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.portal = p
    p.port = server.server_address[1]
    p.url = f"http://127.0.0.1:{p.port}/resource/crimes.json"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield p
    server.shutdown()
    server.server_close()


# --- helpers ---------------------------------------------------------------------------------------


def _source(tmp_path, url, fmt=None, **connector):
    doc = {
        "name": "chicago_crimes_api",
        "department": "police",
        "kind": "records",
        "description": "Chicago crimes from the city's Socrata portal (recorded pages in tests)",
        "connector": {
            "type": "rest",
            "url": url,
            "page_size": 5,
            "backoff_seconds": 0.01,
            "timeout_seconds": 0.5,
            "max_retries": 3,
            "tie_breaker": "id",
            **connector,
        },
        "format": {"type": "json", **(fmt or {})},
        "schema": [
            {"name": c, "type": "string", "sensitivity": "internal" if c in ("latitude", "longitude") else "public"}
            for c in COLUMNS
        ],
        "primary_key": ["id"],
        "watermark": "updated_on",
        "schedule": "@hourly",
        "freshness": {"warn_after_hours": 24, "error_after_hours": 72},
    }
    path = tmp_path / "chicago_crimes_api.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return load_source_file(path)


def _settings(tmp_path):
    return load_settings(environ={"CITYSAFE_LAKE_ROOT": str(tmp_path / "lake")})


def _ingest(spark, settings, source):
    return bronze.ingest(spark, settings, source)


def _bronze_ids(spark, settings, source) -> list[str]:
    return [r.id for r in delta_io.read(spark, bronze.bronze_spec(settings, source)).select("id").collect()]


def _pull(source, settings, watermark=None):
    return list(RestApiConnector().batches(source, settings, watermark, set()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- pure helpers ----------------------------------------------------------------------------------


def test_build_query_compound_watermark_and_quoting():
    assert build_query("updated_on", "id", None, 5) == {"$order": "updated_on,id", "$limit": "5", "$offset": "0"}
    q = build_query("updated_on", "id", ("2018-02-10T15:50:00.000", "10906443"), 5)
    assert q["$where"] == (
        "(updated_on > '2018-02-10T15:50:00.000') OR (updated_on = '2018-02-10T15:50:00.000' AND id > '10906443')"
    )
    # a plain start watermark (no tie value yet), no tie breaker, and a quote in a value
    assert build_query("updated_on", "id", ("2018-01-01", None), 5)["$where"] == "updated_on > '2018-01-01'"
    q = build_query("w", None, ("O'Hare", None), 100, offset=200)
    assert q == {"$where": "w > 'O''Hare'", "$order": "w", "$limit": "100", "$offset": "200"}


def test_watermark_encode_decode_and_next_from_page():
    wm = encode_watermark("2025-03-01T10:00:00.000", "12345")
    assert wm == '["2025-03-01T10:00:00.000", "12345"]'
    assert decode_watermark(wm) == ("2025-03-01T10:00:00.000", "12345")
    assert encode_watermark("2025-03-01", None) == "2025-03-01"
    assert decode_watermark("2025-03-01") == ("2025-03-01", None)  # e.g. connector.start_watermark
    assert decode_watermark("[not json") == ("[not json", None)
    assert decode_watermark(None) is None
    page = [{"updated_on": "2025-03-01T09:00:00.000", "id": "7"}, {"updated_on": "2025-03-01T10:00:00.000", "id": 12}]
    assert page_watermark(page, "updated_on", "id") == ("2025-03-01T10:00:00.000", "12")  # numbers as JSON text
    assert page_watermark(page, "updated_on", None) == ("2025-03-01T10:00:00.000", None)
    with pytest.raises(ValueError, match="no id"):
        page_watermark([{"updated_on": "x"}], "updated_on", "id")
    assert records_of(b'{"data": [{"a": 1}]}', "data") == [{"a": 1}]
    with pytest.raises(ValueError, match="under 'data'"):
        records_of(b'{"rows": []}', "data")


# --- against the local portal ----------------------------------------------------------------------


def test_full_pull_one_batch_per_page_with_watermarks(spark, tmp_path, portal):
    settings, source = _settings(tmp_path), _source(tmp_path, portal.url)
    result = _ingest(spark, settings, source)
    ids = _bronze_ids(spark, settings, source)
    assert len(ids) == 23 and set(ids) == {r["id"] for r in RECORDS}
    assert result["published"] == 23 and len(result["batches"]) == 5
    assert len(portal.requests) == 5  # the short 5th page ends the run
    manifests = list_batches(settings.landing_dir / source.name)
    assert [m["rows"] for m in manifests] == [5, 5, 5, 5, 3]
    froms, tos = [m["watermark_from"] for m in manifests], [m["watermark_to"] for m in manifests]
    assert tos == [_wm(ORDERED[i]) for i in (4, 9, 14, 19, 22)]
    assert tos[0] == '["2018-02-10T15:50:00.000", "10906443"]'  # mid-run of equal updated_on
    assert froms == [None, *tos[:-1]]
    assert result["watermark"] == tos[-1] == bronze.load_state(settings, source)["watermark"]
    for n, m in enumerate(manifests, start=1):
        (f,) = m["files"]
        assert re.fullmatch(r"page-[0-9a-f]{16}\.json", f["name"]) and f["page"] == n
        assert "$order=updated_on,id" in f["url"] and "$limit=5" in f["url"]
        landed = sorted(p.name for p in (settings.landing_dir / source.name / m["batch_id"]).iterdir())
        assert landed == sorted([f["name"], "manifest.json"])
    # page 2 asked for the rows after page 1's last row, equal updated_on included
    assert portal.requests[1]["params"]["$where"] == (
        "(updated_on > '2018-02-10T15:50:00.000') OR (updated_on = '2018-02-10T15:50:00.000' AND id > '10906443')"
    )


def test_incremental_pull_gets_equal_watermark_rows_and_newer(spark, tmp_path, portal):
    settings, source = _settings(tmp_path), _source(tmp_path, portal.url)
    _ingest(spark, settings, source)
    portal.records += NEW  # 2 with the last committed updated_on but larger ids, 2 newer
    second = _ingest(spark, settings, source)
    assert second["published"] == 4 and len(second["batches"]) == 1
    ids = _bronze_ids(spark, settings, source)
    assert len(ids) == 27 and set(ids) == {r["id"] for r in RECORDS + NEW}
    assert second["watermark"] == _wm(sorted(NEW, key=_key)[-1])


def test_nothing_new_adds_nothing_and_commits_no_version(spark, tmp_path, portal):
    settings, source = _settings(tmp_path), _source(tmp_path, portal.url)
    _ingest(spark, settings, source)
    spec = bronze.bronze_spec(settings, source)
    version, asked = delta_io.version(spec), len(portal.requests)
    again = _ingest(spark, settings, source)
    assert again["rows_read"] == 0 and again["batches"] == [] and delta_io.version(spec) == version
    assert len(portal.requests) == asked + 1  # one empty page
    assert len(list_batches(settings.landing_dir / source.name)) == 5  # an empty page lands nothing


def test_failure_mid_paging_resumes_from_last_committed_page(spark, tmp_path, portal):
    settings, source = _settings(tmp_path), _source(tmp_path, portal.url)
    portal.plan = lambda n: ("status", 500, "Internal error") if n >= 3 else None
    with pytest.raises(ConnectorError, match=r"server at 127\.0\.0\.1:\d+ kept failing \(HTTP 500\) after 4 tries"):
        _ingest(spark, settings, source)
    assert len(portal.requests) == 2 + 4
    ids = _bronze_ids(spark, settings, source)
    assert sorted(ids) == sorted(r["id"] for r in ORDERED[:10])
    assert bronze.load_state(settings, source)["watermark"] == _wm(ORDERED[9])
    portal.plan, portal.requests = (lambda n: None), []
    _ingest(spark, settings, source)
    assert portal.requests[0]["params"]["$where"].endswith(f"AND id > '{ORDERED[9]['id']}')")
    ids = _bronze_ids(spark, settings, source)
    assert len(ids) == 23 and set(ids) == {r["id"] for r in RECORDS}  # no duplicate, no gap


def test_transient_errors_and_a_timeout_are_retried(spark, tmp_path, portal):
    settings, source = _settings(tmp_path), _source(tmp_path, portal.url)
    script = {2: ("status", 500, "busy"), 3: ("status", 503, "busy"), 5: ("sleep", 1.0)}
    portal.plan = script.get
    result = _ingest(spark, settings, source)
    assert result["published"] == 23 and len(set(_bronze_ids(spark, settings, source))) == 23
    assert len(portal.requests) == 5 + 3  # five pages, three retried requests


@pytest.mark.parametrize(
    "url_path, tie_breaker, status, message",
    [
        ("/resource/nope.json", "id", 404, "Unknown dataset /resource/nope.json"),
        ("/resource/crimes.json", "row_id", 400, "No such column: row_id"),
    ],
)
def test_client_errors_fail_at_once_naming_status_and_message(
    spark, tmp_path, portal, url_path, tie_breaker, status, message
):
    settings = _settings(tmp_path)
    source = _source(tmp_path, f"http://127.0.0.1:{portal.port}{url_path}", tie_breaker=tie_breaker)
    with pytest.raises(ConnectorError, match=rf"HTTP {status} .*{re.escape(url_path)}.*: {message}"):
        _ingest(spark, settings, source)
    assert len(portal.requests) == 1  # no retry
    assert bronze.load_state(settings, source) == {"committed_batches": [], "watermark": None}
    assert delta_io.read(spark, bronze.bronze_spec(settings, source)).count() == 0


def test_unreachable_server_fails_fast_with_a_clear_error(tmp_path):
    source = _source(tmp_path, f"http://127.0.0.1:{_free_port()}/resource/crimes.json")
    started = time.monotonic()
    with pytest.raises(
        ConnectorError,
        match=r"server at 127\.0\.0\.1:\d+ unreachable .* after 4 tries; "
        r"check connector\.url in .*chicago_crimes_api\.yaml",
    ):
        _pull(source, _settings(tmp_path))
    assert time.monotonic() - started < 2


def test_token_header_env_placeholders_and_no_token_in_errors(tmp_path, portal, monkeypatch):
    settings = _settings(tmp_path)
    monkeypatch.setenv("CRIMES_PORT", str(portal.port))
    monkeypatch.setenv("CRIMES_APP_TOKEN", "s3cret-token")
    source = _source(tmp_path, "http://127.0.0.1:{env:CRIMES_PORT}/resource/crimes.json", token_env="CRIMES_APP_TOKEN")
    batches = _pull(source, settings)
    assert len(batches) == 5 and {r["token"] for r in portal.requests} == {"s3cret-token"}
    assert batches[0].items[0].meta["url"].startswith("http://127.0.0.1:{env:CRIMES_PORT}/resource/crimes.json?")
    # a token in the URL itself is never shown: messages and manifests keep the placeholder
    source = _source(
        tmp_path, "http://127.0.0.1:{env:CRIMES_PORT}/resource/nope.json?$$app_token={env:CRIMES_APP_TOKEN}"
    )
    with pytest.raises(ConnectorError, match="HTTP 404") as err:
        _pull(source, settings)
    assert "s3cret-token" not in str(err.value) and "{env:CRIMES_APP_TOKEN}" in str(err.value)
    monkeypatch.delenv("CRIMES_APP_TOKEN")
    source = _source(tmp_path, portal.url, token_env="CRIMES_APP_TOKEN")
    with pytest.raises(ConnectorError, match="set the environment variable CRIMES_APP_TOKEN"):
        _pull(source, settings)
    monkeypatch.delenv("CRIMES_PORT")
    source = _source(tmp_path, "http://127.0.0.1:{env:CRIMES_PORT}/resource/crimes.json")
    with pytest.raises(ConnectorError, match="environment variable CRIMES_PORT is not set"):
        _pull(source, settings)


def test_wrapped_records_and_offset_paging_without_tie_breaker(tmp_path, portal):
    settings = _settings(tmp_path)
    portal.records_key = "data"
    wrapped = _pull(_source(tmp_path, portal.url, fmt={"records_key": "data"}), settings)
    assert sum(len(records_of(b.items[0].content, "data")) for b in wrapped) == 23
    portal.records_key, portal.requests = None, []
    plain = _pull(_source(tmp_path, portal.url, tie_breaker=None), settings)
    assert [r["params"]["$offset"] for r in portal.requests] == ["0", "5", "10", "15", "20"]
    ids = [r["id"] for b in plain for r in json.loads(b.items[0].content)]
    assert sorted(ids) == sorted(r["id"] for r in RECORDS)
    assert plain[-1].watermark_to == "2019-07-19T16:09:00.000"


def test_a_row_updated_while_paging_pushes_no_other_row_out_of_reach(tmp_path, portal):
    # Between page 1 and page 2 the portal updates a row of page 1: it moves to the end of the order.
    # $offset paging would now skip a row for good; paging by key reads every row, the update too.
    first = ORDERED[0]

    def update_before_page_2(n):
        if n == 2:
            portal.records = [r for r in portal.records if r is not first]
            portal.records.append({**first, "updated_on": "2019-10-01T00:00:00.000"})

    portal.plan = update_before_page_2
    ids = [
        r["id"]
        for b in _pull(_source(tmp_path, portal.url), _settings(tmp_path))
        for r in json.loads(b.items[0].content)
    ]
    assert set(ids) == {r["id"] for r in RECORDS} and len(ids) == 24 and ids.count(first["id"]) == 2
