"""The analysts' dashboards on the built city's warehouse: a real Superset (its own venv, gunicorn on a
free loopback port) brought up the way `citysafe serve` does it, its chart-data API, row-level security
per district (also across the data cache), idempotent asset imports, and a real headless browser
(Debian's chromium driven by Playwright; nothing is downloaded) that opens every dashboard."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import duckdb
import pytest

from citysafe.config import REPO_ROOT, load_settings
from dashboards.assets import CHARTS, DASHBOARDS
from dashboards.serve import environment as superset_env
from pipeline import serve

from pg_server import CITY_MARTS_SCHEMA

CHROMIUM = Path("/usr/bin/chromium")
ADMIN_PASSWORD = "superset-test-admin-0123456789"
USER_PASSWORD = "superset-test-user-0123456789"

pytestmark = pytest.mark.skipif(
    not (serve.SUPERSET_VENV / "bin" / "python").is_file(), reason="Superset venv missing: run `make setup`"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    """A logged-in REST client: JWT for the API, the session cookie and CSRF token for POSTs that need them."""

    def __init__(self, base: str, username: str, password: str):
        import http.cookiejar

        self.base = base
        self.token = None
        self.csrf = None
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        status, body = self.call(
            "POST", "/api/v1/security/login", {"username": username, "password": password, "provider": "db"}
        )
        assert status == 200, body
        self.token = body["access_token"]
        status, body = self.call("GET", "/api/v1/security/csrf_token/")
        assert status == 200, body
        self.csrf = body["result"]

    def call(self, method: str, path: str, body: dict | None = None):
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.csrf:
            headers["X-CSRFToken"] = self.csrf
            headers["Referer"] = self.base
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with self.opener.open(req, timeout=120) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            text = err.read().decode(errors="replace")
            try:
                return err.code, json.loads(text)
            except ValueError:
                return err.code, text

    def charts(self) -> dict[str, int]:
        status, body = self.call("GET", "/api/v1/chart/?q=(page_size:100)")
        assert status == 200, body
        return {c["slice_name"]: c["id"] for c in body["result"]}

    def chart_rows(self, chart_id: int) -> list[dict]:
        status, body = self.call("GET", f"/api/v1/chart/{chart_id}/data/")
        assert status == 200, body
        result = body["result"][0]
        assert not result.get("error"), result["error"]
        return result["data"]


@pytest.fixture(scope="module")
def superset(built_city, tmp_path_factory):
    home = tmp_path_factory.mktemp("superset")
    port = _free_port()
    # a copy of the built city's warehouse: the swap test replaces it under the running server
    warehouse = home / "warehouse" / "citysafe_marts.duckdb"
    warehouse.parent.mkdir()
    shutil.copyfile(built_city.warehouse, warehouse)
    env = {
        **built_city.env,
        "CITYSAFE_WAREHOUSE_PATH": str(warehouse),
        "CITYSAFE_SUPERSET__HOME": str(home),
        "CITYSAFE_SUPERSET__PORT": str(port),
        "CITYSAFE_SUPERSET__WORKERS": "2",
        "SUPERSET_SECRET_KEY": "superset-test-secret-key-0123456789abcdef",
        serve.ADMIN_PASSWORD_ENV: ADMIN_PASSWORD,
    }
    settings = load_settings(environ=env)
    started = time.monotonic()
    log = (home / "serve.log").open("w")
    server = subprocess.Popen(
        [str(REPO_ROOT / ".venv" / "pipeline" / "bin" / "citysafe"), "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() - started > 240:
                raise AssertionError(f"Superset did not come up:\n{(home / 'serve.log').read_text()[-4000:]}")
            time.sleep(1)
        bring_up = time.monotonic() - started
        sup_env = superset_env(home, serve.environment(settings, env))
        yield {"base": base, "env": env, "sup_env": sup_env, "settings": settings, "home": home, "seconds": bring_up}
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
        log.close()


def _superset_python(sup: dict, *args: str, env: dict | None = None) -> str:
    proc = subprocess.run(
        [str(serve.SUPERSET_VENV / "bin" / "python"), *args],
        env={**sup["sup_env"], **(env or {})},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def _districts(sup) -> list[str]:
    con = duckdb.connect(str(sup["settings"].warehouse_path), read_only=True)
    try:
        return [r[0] for r in con.execute("select district_code from dim_district order by 1").fetchall()]
    finally:
        con.close()


@pytest.fixture(scope="module")
def users(superset):
    a, b = _districts(superset)[:2]
    specs = [
        {"username": "district_a", "password": USER_PASSWORD, "roles": [f"CitySafe District Analyst {a}"]},
        {"username": "district_b", "password": USER_PASSWORD, "roles": [f"CitySafe District Analyst {b}"]},
        {"copy_role": {"name": "Test analyst without district", "from": f"CitySafe District Analyst {a}"}},
        {"username": "no_district", "password": USER_PASSWORD, "roles": ["Test analyst without district"]},
        {"username": "viewer", "password": USER_PASSWORD, "roles": ["CitySafe Policy Viewer"]},
    ]
    _superset_python(superset, str(REPO_ROOT / "tests" / "superset_users.py"), json.dumps(specs))
    return {"a": a, "b": b}


def test_bring_up_and_every_chart_returns_data(superset):
    api = Api(superset["base"], "admin", ADMIN_PASSWORD)
    charts = api.charts()
    assert sorted(charts) == sorted(c.title for c in CHARTS)
    for title, chart_id in charts.items():
        rows = api.chart_rows(chart_id)
        assert rows, f"chart {title!r} returned no rows"
    assert superset["seconds"] < 240


def test_no_default_password_and_wrong_password_is_refused(superset):
    req = urllib.request.Request(
        superset["base"] + "/api/v1/security/login",
        data=json.dumps({"username": "admin", "password": "admin", "provider": "db"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 401


def test_district_analysts_see_only_their_district_also_from_the_cache(superset, users):
    admin = Api(superset["base"], "admin", ADMIN_PASSWORD)
    charts = admin.charts()
    top, cells = charts["Top 20 cells and why"], charts["Risk map: next week, all incidents"]
    everyone = {r["district_code"] for r in admin.chart_rows(top)}
    assert len(everyone) >= 1
    # A first fills the cache, then B asks for the same charts: each sees only its own district
    for who, code in (("district_a", users["a"]), ("district_b", users["b"]), ("district_a", users["a"])):
        api = Api(superset["base"], who, USER_PASSWORD)
        rows = api.chart_rows(top)
        assert rows and {r["district_code"] for r in rows} == {code}, (who, {r["district_code"] for r in rows})
        con = duckdb.connect(str(superset["settings"].warehouse_path), read_only=True)
        try:
            own = {
                r[0]
                for r in con.execute(
                    "select h3_cell from mart_risk_map where scope = 'ALL' and district_code = ?", [code]
                ).fetchall()
            }
        finally:
            con.close()
        assert {r["h3_cell"] for r in api.chart_rows(cells)} == own


def test_a_user_matched_by_no_rule_sees_nothing_and_district_roles_have_no_sql_lab(superset, users):
    # the same permissions as a district analyst, but no district rule: the Base filter leaves no row
    nobody = Api(superset["base"], "no_district", USER_PASSWORD)
    charts = nobody.charts()
    district_charts = ["Top 20 cells and why", "Risk map: next week, all incidents", "Cells by risk level"]
    for title in district_charts:
        assert nobody.chart_rows(charts[title]) == [], title
    analyst = Api(superset["base"], "district_a", USER_PASSWORD)
    status, body = analyst.call(
        "POST",
        "/api/v1/sqllab/execute/",
        {"database_id": 1, "sql": "select 1", "schema": "main", "runAsync": False, "client_id": "t1", "tab": "t"},
    )
    assert status in (401, 403), (status, body)


def test_reimport_is_idempotent_and_removed_charts_are_deleted(superset):
    admin = Api(superset["base"], "admin", ADMIN_PASSWORD)
    before = admin.charts()
    wh = str(superset["settings"].warehouse_path)
    drop = (
        "import sys; from dashboards import assets, provision; "
        "assets.CHARTS = [c for c in assets.CHARTS if c.key != 'risk_levels']; "
        "assets.DASHBOARDS[0].rows[1].remove('risk_levels'); "
        f"sys.exit(provision.main(['--warehouse', {wh!r}]))"
    )
    _superset_python(superset, "-c", drop)
    after_drop = admin.charts()
    assert set(after_drop) == set(before) - {"Cells by risk level"}
    _superset_python(superset, "-m", "dashboards.provision", "--warehouse", wh)
    restored = admin.charts()
    assert set(restored) == set(before)
    # every chart that stayed declared kept its id through both imports (updated in place by UUID)
    assert {t: restored[t] for t in after_drop} == after_drop


class Browser:
    """Debian's chromium driven by Playwright: log in, open dashboards, keep what the page fetched."""

    def __init__(self, playwright, base: str, server_log: Path | None = None):
        self.base = base
        self.server_log = server_log
        self.browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--enable-unsafe-swiftshader"],
        )
        self.external_responses, self.external_failures = [], []
        self.chart_data: list[dict] = []  # bodies of /api/v1/chart/data the page loaded

    def login(self, username: str, password: str):
        page = self.browser.new_context(viewport={"width": 1400, "height": 1300}).new_page()
        external = lambda url: not url.startswith((self.base, "data:", "blob:"))  # noqa: E731
        page.on("response", self._on_response)
        page.on(
            "requestfailed", lambda r: self.external_failures.append((r.url, r.failure)) if external(r.url) else None
        )
        page.goto(self.base + "/login/")
        page.wait_for_selector("#username")
        page.fill("#username", username)
        page.fill("#password", password)
        page.keyboard.press("Enter")
        page.wait_for_url("**/superset/welcome/**", timeout=60000)
        return page

    @staticmethod
    def _charts_not_drawn(page, dash) -> list[str]:
        """What the charts without a .chart-container show after 90 s ([]: all drawn). Every chart has a holder;
        in it a .chart-container while it loads and once drawn, or Superset's error message instead."""
        expected = sum(len(row) for row in dash.rows)
        # locators only: the page's CSP forbids eval, so no wait_for_function
        holders = page.locator(".dashboard-component-chart-holder")
        holders.nth(expected - 1).wait_for(state="attached", timeout=90000)
        drawn = page.locator(".dashboard-component-chart-holder:has(.chart-container)")
        deadline = time.monotonic() + 90
        while drawn.count() < expected and time.monotonic() < deadline:
            time.sleep(0.5)
        return [h.inner_text().strip()[:300] for h in holders.all() if not h.locator(".chart-container").count()]

    def _on_response(self, response):
        if not response.url.startswith((self.base, "data:", "blob:")):
            self.external_responses.append(response.url)
        elif "/api/v1/chart/data" in response.url and response.status == 200:
            self.chart_data.append(response.json())

    def open(self, page, dash) -> None:
        """Open a dashboard and wait until every chart has drawn. A chart that shows an error instead gets one
        reload of the page (what its reader would do; printed in the test's output), then fails the test with
        what the chart shows and the server's log."""
        for attempt in (1, 2):
            page.goto(f"{self.base}/superset/dashboard/{dash.slug}/")
            not_drawn = self._charts_not_drawn(page, dash)
            if not not_drawn:
                break
            print(f"{dash.slug}, attempt {attempt}: charts not drawn after 90 s: {not_drawn}")
        else:
            log = self.server_log.read_text()[-3000:] if self.server_log else ""
            raise AssertionError(f"{dash.slug}: charts not drawn after a reload: {not_drawn}\nserver log:\n{log}")
        page.wait_for_load_state("networkidle", timeout=90000)
        # Superset virtualizes dashboards (charts render when in view): bring each chart into view once
        for chart in page.locator(".chart-container").all():
            chart.scroll_into_view_if_needed()
        page.wait_for_load_state("networkidle", timeout=90000)
        deadline = time.monotonic() + 90
        while page.locator(".loading").count() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert page.locator(".loading").count() == 0, f"{dash.slug}: charts still loading after 90 s"
        errors = page.locator(".chart-container .alert-danger, .chart-container [role=alert]").all_inner_texts()
        assert not errors, (dash.slug, errors)


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium not installed")
def test_every_dashboard_renders_in_a_real_browser(superset, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = Browser(p, superset["base"], superset["home"] / "serve.log")
        page = browser.login("admin", ADMIN_PASSWORD)
        for dash in DASHBOARDS:
            browser.open(page, dash)
            if any("risk_map" in row for row in dash.rows):
                assert page.locator(".chart-container canvas").count() >= 1  # the deck.gl layer drew
            # every chart drew something: a canvas (ECharts, deck.gl), an SVG, a table, or text (big numbers)
            charts = page.locator(".chart-container").all()
            blank = [
                i
                for i, c in enumerate(charts)
                if not c.locator("canvas, svg, table").count() and not c.inner_text().strip()
            ]
            assert len(charts) == sum(len(row) for row in dash.rows) and not blank, (dash.slug, blank)
            shot = tmp_path / f"{dash.slug}.png"
            page.screenshot(path=str(shot), full_page=True)
            # a blank page compresses to a few KB; the sparsest dashboard (data health: tables) is ~25 KB
            assert shot.stat().st_size > 15_000, "screenshot looks blank"
        browser.browser.close()
    # nothing left the machine: no tile server; the frontend's telemetry pixel is blocked by the CSP
    assert browser.external_responses == []
    assert all(failure == "csp" for _, failure in browser.external_failures), browser.external_failures


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium not installed")
def test_a_district_analysts_pages_show_only_their_district(superset, users):
    """On the rendered page (what the browser fetched and what the tables show), after the other district's
    analyst opened the same dashboard (so its results are in the cache)."""
    from playwright.sync_api import sync_playwright

    # the hazard dashboard: seven charts, most of them rows per district (the risk map's charts are
    # checked across users through the API above)
    dashboards = [d for d in DASHBOARDS if d.slug == "citysafe-hazards"]
    with sync_playwright() as p:
        browser = Browser(p, superset["base"], superset["home"] / "serve.log")
        other = browser.login("district_a", USER_PASSWORD)
        for dash in dashboards:
            browser.open(other, dash)
        browser.chart_data.clear()
        page = browser.login("district_b", USER_PASSWORD)
        for dash in dashboards:
            browser.open(page, dash)
        shown = set(page.locator(".chart-container td").all_inner_texts())
        browser.browser.close()
    rows = [row for body in browser.chart_data for result in body["result"] for row in result["data"]]
    districts = {row["district_code"] for row in rows if "district_code" in row}
    assert districts == {users["b"]}, districts
    assert users["b"] in shown and users["a"] not in shown


def test_serving_goes_on_across_the_atomic_warehouse_swap(superset):
    """The pipeline builds a new warehouse file and os.replace()s it over the served one: queries after
    the swap see the new build, without restarting Superset."""
    admin = Api(superset["base"], "admin", ADMIN_PASSWORD)
    chart = admin.charts()["Backtest: the model against its baselines"]
    weeks = {r["weeks"] for r in admin.chart_rows(chart)}
    served = superset["settings"].warehouse_path
    new = served.with_name("next.duckdb")
    shutil.copyfile(served, new)
    con = duckdb.connect(str(new))
    con.execute("update mart_risk_backtest set weeks = weeks + 1000")
    con.close()
    os.replace(new, served)
    status, body = admin.call("GET", f"/api/v1/chart/{chart}/data/?force=true")
    assert status == 200, body
    assert {r["weeks"] for r in body["result"][0]["data"]} == {w + 1000 for w in weeks}


def test_a_broken_warehouse_gives_a_clear_message_not_a_stack_trace(superset, built_city):
    """A warehouse file that is not a DuckDB database (a failed copy): the chart-data API answers with an
    error message naming the cause, no traceback; the next good build serves again."""
    admin = Api(superset["base"], "admin", ADMIN_PASSWORD)
    chart = admin.charts()["Top 20 cells and why"]
    served = superset["settings"].warehouse_path
    broken = served.with_name("broken.duckdb")
    broken.write_bytes(b"this is not a DuckDB database file" * 100)
    os.replace(broken, served)
    status, body = admin.call("GET", f"/api/v1/chart/{chart}/data/?force=true")
    text = json.dumps(body)
    assert status >= 400 and "Traceback" not in text and 'File "' not in text
    assert "duckdb" in text.lower() or "database" in text.lower(), text[:500]
    shutil.copyfile(built_city.warehouse, served.with_name("good.duckdb"))
    os.replace(served.with_name("good.duckdb"), served)
    assert admin.chart_rows(chart)


def test_policy_viewers_read_dashboards_only(superset, users):
    viewer = Api(superset["base"], "viewer", USER_PASSWORD)
    charts = viewer.charts()
    assert viewer.chart_rows(charts["Top 20 cells and why"])  # every district, like the city analyst
    status, body = viewer.call("GET", "/api/v1/dashboard/?q=(page_size:100)")
    assert status == 200 and body["count"] == len(DASHBOARDS)
    some_dataset = 1
    status, _ = viewer.call(
        "POST",
        "/api/v1/chart/",
        {"slice_name": "mine", "viz_type": "table", "datasource_id": some_dataset, "datasource_type": "table"},
    )
    assert status in (401, 403)
    status, _ = viewer.call(
        "POST",
        "/api/v1/sqllab/execute/",
        {"database_id": 1, "sql": "select 1", "schema": "main", "runAsync": False, "client_id": "v1", "tab": "t"},
    )
    assert status in (401, 403)


@pytest.mark.slow
def test_in_production_the_charts_query_the_postgresql_marts(superset, city_marts_in_postgres, pg_server):
    """superset.warehouse_uri: the same datasets and charts on the marts the prod target published to
    PostgreSQL (password from the environment, never in the URI); every chart returns the rows it returns
    on DuckDB. The module's last test: the server is not switched back (it stops after the module)."""
    admin = Api(superset["base"], "admin", ADMIN_PASSWORD)
    charts = admin.charts()
    on_duckdb = {title: admin.chart_rows(chart_id) for title, chart_id in charts.items()}
    wh = str(superset["settings"].warehouse_path)
    postgres = {
        "CITYSAFE_SUPERSET_WAREHOUSE_URI": f"postgresql+psycopg2://{pg_server.superuser}@127.0.0.1:{pg_server.port}/postgres",
        "CITYSAFE_SUPERSET_WAREHOUSE_SCHEMA": CITY_MARTS_SCHEMA,
        "CITYSAFE_SUPERSET_WAREHOUSE_PASSWORD": pg_server.password,
    }
    _superset_python(superset, "-m", "dashboards.provision", "--warehouse", wh, env=postgres)
    status, body = admin.call("GET", "/api/v1/database/?q=(columns:!(backend,database_name))")
    assert status == 200 and {d["backend"] for d in body["result"]} == {"postgresql"}, body
    assert admin.charts() == charts  # the same charts, updated in place
    for title, chart_id in charts.items():
        status, body = admin.call("GET", f"/api/v1/chart/{chart_id}/data/?force=true")
        assert status == 200, (title, body)
        rows = body["result"][0]["data"]
        assert len(rows) == len(on_duckdb[title]) and rows, title
