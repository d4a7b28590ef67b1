"""Great Expectations Data Docs for the quality gates, built into <lake_root>/data_docs/ and readable offline.

The site is a SiteBuilder site of the lake's GX project (<lake_root>/gx/, citysafe.quality.gx_context),
rendered by GX's own context.build_data_docs from the project's stores: the suites (their parameters shown
as $name) and every stored validation result (index.html, validations/<suite>/<run_id>/<run_time>/
citysafe-<source>.html, expectations/<suite>.html). Each gate refreshes its own result's page, its suite's
page and the index (refresh_data_docs); `build_data_docs(settings)` renders the results that have no page
yet, `rebuild=True` every page anew. A page shows the expectations as GX validated them (parameters
substituted), so nothing here needs the reference data.

GX's templates load bootstrap, bootstrap-table, jquery, popper, font-awesome, vega... from CDNs and the GX
logo from S3. Every such reference is rewritten to a relative path into static/vendor/, a copy of the
assets vendored in expectations/data_docs_assets/ (see its vendor.sh), so the pages render styled with no
network. A build fails if any script/stylesheet/font/image URL is left that is not mapped here
(a GX upgrade that adds a CDN asset shows up in tests, not as unstyled pages).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import re
import shutil
from pathlib import Path

from citysafe.config import REPO_ROOT, Settings

logger = logging.getLogger(__name__)

ASSETS_DIR = REPO_ROOT / "expectations" / "data_docs_assets"
SITE_NAME = "citysafe"
VENDOR_DIR = "static/vendor"  # inside the docs folder

# Every CDN URL in GX 1.24.1's render/view/templates (index_page.j2, page.j2, page_minimal.j2,
# js_script_imports.j2) -> the vendored file (relative to expectations/data_docs_assets/).
CDN_ASSETS = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap/bootstrap.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js": "bootstrap-table/bootstrap-table-filter-control.min.js",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css": "bootstrap-table/1.19.0/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css": "bootstrap-table/1.19.0/bootstrap-table-filter-control.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": "bootstrap-datepicker/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": "bootstrap-datepicker/bootstrap-datepicker.min.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": "bootstrap-dark/bootstrap-prefers-dark.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome/css/all.min.css",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.js/popper.min.js",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed/vega-embed.min.js",
}
# top_navbar.j2 and data_docs_default_styles.css take the GX logo from S3; the site's own static/images/
# (copied from the GX package by the SiteBuilder) has the light logo, used for the dark theme too.
GX_WEB_ASSETS = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
GX_WEB_IMAGES = {"logo-long.png": "static/images/logo-long.png", "full_logo_dark.png": "static/images/logo-long.png"}

# What loads a resource: <script src>, <link href> (stylesheets, icons), <img src>, CSS url(...) / @import.
ASSET_REF = re.compile(
    r"""<script\b[^>]*?\bsrc\s*=\s*["']([^"']+)["']"""
    r"""|<link\b[^>]*?\bhref\s*=\s*["']([^"']+)["']"""
    r"""|<img\b[^>]*?\bsrc\s*=\s*["']([^"']+)["']"""
    r"""|url\(\s*["']?([^"')\s]+)["']?\s*\)"""
    r"""|@import\s+["']([^"']+)["']""",
    re.IGNORECASE | re.DOTALL,
)
_GX_WEB_REF = re.compile(re.escape(GX_WEB_ASSETS) + r"""([\w.-]+)(\?[^"')\s]*)?""")
# GX's relative links to the site's static/ folder (favicon.j2 is one level short on validation pages).
_STATIC_REF = re.compile(r"""\b(href|src)=(["'])(?:\./|(?:\.\./)+)static/""")
_SRI = re.compile(r"""\s+(?:integrity="[^"]*"|crossorigin="anonymous")""")


class DataDocsError(RuntimeError):
    """The Data Docs could not be built (an unmapped external asset, an unreadable site...)."""


def docs_dir(settings: Settings) -> Path:
    return settings.work_root / "data_docs"


def asset_refs(html: str) -> list[str]:
    """Every resource a page loads (scripts, stylesheets, icons, images, CSS urls); not <a> links."""
    return [next(g for g in m.groups() if g) for m in ASSET_REF.finditer(html)]


def site_config() -> dict:
    """The GX project's one Data Docs site: <lake_root>/data_docs/ (relative to the project, <lake_root>/gx/)."""
    return {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": "../data_docs/"},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "site_section_builders": {"profiling": "0"},
    }


# The results whose pages wait for the end of a `deferred()` block (None: outside one, render at once).
_deferred_results: list | None = None


@contextlib.contextmanager
def deferred(settings: Settings):
    """Within the block, gates store their results as always but leave their pages to its end, where one
    build renders them all with their suites and the index: a silver stage of eight sources then opens
    the GX project and renders the index once instead of eight times (~2 of a daily stage's 30 s at
    scale 1). Pages render even when the block fails; a nested block joins the outer one."""
    global _deferred_results
    if _deferred_results is not None:
        yield
        return
    _deferred_results = []
    try:
        yield
    finally:
        results, _deferred_results = _deferred_results, None
        if results:
            _refresh(settings, results)


def refresh_data_docs(settings: Settings, result=None) -> Path | None:
    """The hook at the end of quality.validate_frame: render the page of `result` (the stored result's
    ValidationResultIdentifier; None: every result without a page), its suite's page and the index;
    inside a `deferred()` block, at the block's end.

    Never raises: the docs report on a gate, and failing to build them must not change its outcome."""
    if _deferred_results is not None and result is not None:
        _deferred_results.append(result)
        return None
    return _refresh(settings, None if result is None else [result])


def _refresh(settings: Settings, results: list | None) -> Path | None:
    try:
        return _build(settings, results=results)
    except (DataDocsError, OSError) as exc:  # expected: one line, the gate's result stands
        logger.warning("Data Docs not refreshed in %s: %s", docs_dir(settings), exc)
    except Exception:  # noqa: BLE001 - a bug: logged with its traceback, the gate's result stands
        logger.warning("Data Docs not refreshed in %s", docs_dir(settings), exc_info=True)
    return None


def build_data_docs(settings: Settings, *, rebuild: bool = False) -> Path:
    """Build (incrementally, or all anew with rebuild=True) <lake_root>/data_docs/; returns its index.html."""
    return _build(settings, rebuild=rebuild)


def _build(settings: Settings, *, results: list | None = None, rebuild: bool = False) -> Path:
    root = docs_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / ".build.lock"):
        if rebuild:
            for section in ("validations", "expectations"):
                shutil.rmtree(root / section, ignore_errors=True)
            (root / "index.html").unlink(missing_ok=True)
        rendered = _render_site(settings, root, results)
        _sync_assets(ASSETS_DIR, root / VENDOR_DIR)
        for i, page in enumerate(rendered):
            try:
                _localize_file(root, page)
            except Exception:
                # A page left with CDN links would never be rendered again (builds add missing pages only).
                for left in rendered[i:]:
                    left.unlink(missing_ok=True)
                raise
    return root / "index.html"


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive advisory lock on `path` (one build at a time per lake: gates of parallel tasks share
    the site; one writer of the GX project at a time). Not re-entrant, not even within a process."""
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- rendering -----------------------------------------------------------------------------------------


def _render_site(settings: Settings, root: Path, results: list | None) -> list[Path]:
    """Render with GX's SiteBuilder from the project's stores; returns the pages (re)written.
    `results`: the validation results to render; None: those without a page."""
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    from citysafe import quality

    context = quality.gx_context(settings)
    if results is None:
        results = [
            key for key in context.validation_results_store.list_keys() if not _validation_page(root, key).exists()
        ]
        suites = sorted(suite.name for suite in context.suites.all())
    else:
        suites = sorted({key.expectation_suite_identifier.name for key in results})
    to_render = [*results, *(ExpectationSuiteIdentifier(name=name) for name in suites)]
    context.build_data_docs(site_names=[SITE_NAME], resource_identifiers=to_render or [_nothing()])
    pages = [
        root / "index.html",
        *(_validation_page(root, key) for key in results),
        *(root.joinpath("expectations", *name.split(".")).with_suffix(".html") for name in suites),
    ]
    return [p for p in pages if p.exists()]


def _validation_page(root: Path, key) -> Path:
    """validations/<suite>/<run_name>/<run_time>/<batch_identifier>.html, as GX's SiteBuilder names it."""
    *folders, batch_identifier = key.to_tuple()
    return root.joinpath("validations", *folders, f"{batch_identifier}.html")


def _nothing():
    """A resource identifier that matches no resource (an empty list would make GX render everything)."""
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    return ExpectationSuiteIdentifier(name="__citysafe_nothing__")


# GX renders a suite parameter as its dict, {'$PARAMETER': 'name'}; the pages show it as $name.
_Q = "(?:'|&#39;|&#x27;)"  # a quote, maybe HTML-escaped
_PARAMETER = re.compile(r"\{" + _Q + r"\$PARAMETER" + _Q + r": " + _Q + r"(\w+)" + _Q + r"\}")


# --- offline assets --------------------------------------------------------------------------------------


def _sync_assets(source: Path, target: Path) -> None:
    """Copy the vendored assets (with their licences) into the site; unchanged files are left alone."""
    for path in source.rglob("*"):
        if not path.is_file() or path.suffix == ".sh":
            continue
        dest = target / path.relative_to(source)
        if (
            dest.exists()
            and dest.stat().st_size == path.stat().st_size
            and dest.stat().st_mtime >= path.stat().st_mtime
        ):
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)


def _localize_file(root: Path, page: Path) -> None:
    html = page.read_text(encoding="utf-8")
    prefix = "../" * (len(page.relative_to(root).parts) - 1)
    localized = localize_html(html, prefix)
    missing = [ref for ref in asset_refs(localized) if _is_external(ref)]
    if missing:
        raise DataDocsError(
            f"{page}: external assets with no vendored copy (add them to citysafe.data_docs."
            f"CDN_ASSETS and expectations/data_docs_assets/): {sorted(set(missing))}"
        )
    if localized != html:
        page.write_text(localized, encoding="utf-8")


def localize_html(html: str, prefix: str) -> str:
    """Point every CDN / GX web asset at the site's local copy; `prefix` leads from the page to the site root."""
    for url, local in sorted(CDN_ASSETS.items(), key=lambda item: -len(item[0])):
        for quote in ('"', "'"):
            html = html.replace(f"{quote}{url}{quote}", f"{quote}{prefix}{VENDOR_DIR}/{local}{quote}")

    def gx_image(match: re.Match) -> str:
        local = GX_WEB_IMAGES.get(match.group(1))
        return prefix + local if local else match.group(0)

    html = _GX_WEB_REF.sub(gx_image, html)
    html = _STATIC_REF.sub(lambda m: f"{m.group(1)}={m.group(2)}{prefix}static/", html)
    html = _PARAMETER.sub(r"$\1", html)
    # Subresource integrity with crossorigin makes browsers fetch file:// scripts in CORS mode, which fails.
    return _SRI.sub("", html)


def _is_external(ref: str) -> bool:
    return bool(re.match(r"(?i)(https?:)?//", ref))
