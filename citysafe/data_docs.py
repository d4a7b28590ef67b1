"""Great Expectations Data Docs for the quality gates, built into <lake_root>/data_docs/ and readable offline.

Source of truth: the gate results quality.validate_staging writes to runs/<run_id>/validation/<suite>-<source>.json.
Each is turned back into a GX ExpectationSuiteValidationResult (the expectation kwargs come from the suite's
YAML, its $variables resolved as at validation time) and rendered by GX 1.24.1's own SiteBuilder into a
filesystem site: index.html, validations/<suite>/<run_id>/<run_time>/<source>.html and
expectations/<suite>.html (the declarative suite, $variables shown as parameters).

A build is incremental: it renders the validation pages that do not exist yet and re-renders the suite
pages and the index, which lists every stored result. `build_data_docs(settings, rebuild=True)` re-renders
everything (pages of old runs then show the suite as it is now, with reference data as it is now).

GX's templates load bootstrap, bootstrap-table, jquery, popper, font-awesome, vega... from CDNs and the GX
logo from S3. Every such reference is rewritten to a relative path into static/vendor/, a copy of the
assets vendored in expectations/data_docs_assets/ (see its vendor.sh), so the pages render styled with no
network. A build fails if any script/stylesheet/font/image URL is left that is not mapped here
(a GX upgrade that adds a CDN asset shows up in tests, not as unstyled pages).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
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
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table/bootstrap-table-filter-control.min.js",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table/1.19.0/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table/1.19.0/bootstrap-table-filter-control.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "bootstrap-datepicker/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "bootstrap-datepicker/bootstrap-datepicker.min.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "bootstrap-dark/bootstrap-prefers-dark.min.css",
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
GX_WEB_IMAGES = {"logo-long.png": "static/images/logo-long.png",
                 "full_logo_dark.png": "static/images/logo-long.png"}

# What loads a resource: <script src>, <link href> (stylesheets, icons), <img src>, CSS url(...) / @import.
ASSET_REF = re.compile(
    r"""<script\b[^>]*?\bsrc\s*=\s*["']([^"']+)["']"""
    r"""|<link\b[^>]*?\bhref\s*=\s*["']([^"']+)["']"""
    r"""|<img\b[^>]*?\bsrc\s*=\s*["']([^"']+)["']"""
    r"""|url\(\s*["']?([^"')\s]+)["']?\s*\)"""
    r"""|@import\s+["']([^"']+)["']""",
    re.IGNORECASE | re.DOTALL)
_GX_WEB_REF = re.compile(re.escape(GX_WEB_ASSETS) + r"""([\w.-]+)(\?[^"')\s]*)?""")
# GX's relative links to the site's static/ folder (favicon.j2 is one level short on validation pages).
_STATIC_REF = re.compile(r"""\b(href|src)=(["'])(?:\./|(?:\.\./)+)static/""")
_SRI = re.compile(r"""\s+(?:integrity="[^"]*"|crossorigin="anonymous")""")


class DataDocsError(RuntimeError):
    """The Data Docs could not be built (an unmapped external asset, an unreadable site...)."""


def docs_dir(settings: Settings) -> Path:
    return settings.lake_root / "data_docs"


def asset_refs(html: str) -> list[str]:
    """Every resource a page loads (scripts, stylesheets, icons, images, CSS urls); not <a> links."""
    return [next(g for g in m.groups() if g) for m in ASSET_REF.finditer(html)]


def refresh_data_docs(settings: Settings) -> Path | None:
    """The hook at the end of quality.validate_staging: render the new result's page and the index.

    Never raises: the docs report on a gate, and failing to build them must not change its outcome."""
    try:
        return build_data_docs(settings)
    except Exception:  # noqa: BLE001 - logged with its traceback, the gate's result stands
        logger.warning("Data Docs not refreshed in %s", docs_dir(settings), exc_info=True)
        return None


def build_data_docs(settings: Settings, *, rebuild: bool = False) -> Path:
    """Build (incrementally, or all anew with rebuild=True) <lake_root>/data_docs/; returns its index.html."""
    root = docs_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".build.lock"):
        if rebuild:
            for section in ("validations", "expectations"):
                shutil.rmtree(root / section, ignore_errors=True)
            (root / "index.html").unlink(missing_ok=True)
        rendered = _render_site(settings, root)
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
def _locked(path: Path):
    """One build at a time per lake (gates of parallel tasks share the site)."""
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- rendering -----------------------------------------------------------------------------------------

def _render_site(settings: Settings, root: Path) -> list[Path]:
    """Render with GX's SiteBuilder from the stored result JSONs; returns the pages (re)written."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    from citysafe import quality

    suites = _suites(quality.EXPECTATIONS_DIR)
    records = _load_results(settings.runs_dir)
    variables = _base_variables(settings) if records else None

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)
    # The ephemeral context's default site points at a random temporary folder: replace it with ours.
    for name in list(context.list_data_docs_sites()):
        context.delete_data_docs_site(name)
    context.add_data_docs_site(SITE_NAME, {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(root)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "site_section_builders": {"profiling": "0"},
    })

    to_render: list = []
    pages: list[Path] = [root / "index.html"]
    for name, suite in suites.items():
        gx_suite = gx.ExpectationSuite(name=name, meta={"citysafe_table": suite.get("table")})
        for expectation_type, kwargs in _expectations(suite):
            config = _expectation_config(expectation_type, _parameterized(kwargs))
            try:
                gx_suite.add_expectation_configuration(config)
            except Exception:  # noqa: BLE001 - a suite page without one expectation beats no site
                logger.warning("Data Docs: suite %s: %s not shown", name, expectation_type, exc_info=True)
        context.suites.add(gx_suite)
        to_render.append(ExpectationSuiteIdentifier(name=name))
        pages.append(root.joinpath("expectations", *name.split(".")).with_suffix(".html"))

    for path, record in records:
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=record["suite"]),
            run_id=RunIdentifier(run_name=record["run_id"], run_time=_validated_at(record)),
            batch_identifier=_batch_identifier(record))
        page = root.joinpath("validations", *record["suite"].split("."), *key.run_id.to_tuple(),
                             key.batch_identifier + ".html")
        full = not page.exists()
        result = _validation_result(record, suites.get(record["suite"]), variables, path, full=full)
        context.validation_results_store.set(key, result)
        if full:
            to_render.append(key)
            pages.append(page)

    context.build_data_docs(site_names=[SITE_NAME], resource_identifiers=to_render or [_nothing()])
    return [p for p in pages if p.exists()]


def _nothing():
    """A resource identifier that matches no resource (an empty list would make GX render everything)."""
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    return ExpectationSuiteIdentifier(name="__citysafe_nothing__")


def _suites(directory: Path) -> dict[str, dict]:
    """The declarative suites by their `suite:` name."""
    import yaml

    suites = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            suite = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            logger.warning("Data Docs: cannot read suite %s", path, exc_info=True)
            continue
        if isinstance(suite, dict) and isinstance(suite.get("expectations"), list) and suite.get("suite"):
            suites[str(suite["suite"])] = suite
    return suites


def _expectations(suite: dict) -> list[tuple[str, dict]]:
    out = []
    for item in suite.get("expectations") or []:
        if isinstance(item, dict) and len(item) == 1:
            (name, kwargs), = item.items()
            out.append((str(name), dict(kwargs or {})))
    return out


def _load_results(runs_dir: Path) -> list[tuple[Path, dict]]:
    records = []
    for path in sorted(runs_dir.glob("*/validation/*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            _validated_at(record)
            if not all(isinstance(record.get(k), str) for k in ("suite", "run_id", "source")):
                raise ValueError("suite, run_id and source must be strings")
            if not isinstance(record.get("results"), list):
                raise ValueError("no results list")
        except (OSError, ValueError, TypeError, KeyError):
            logger.warning("Data Docs: skipping unreadable validation result %s", path, exc_info=True)
            continue
        records.append((path, record))
    return records


def _validated_at(record: dict) -> dt.datetime:
    when = dt.datetime.fromisoformat(record["validated_at"])
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _batch_identifier(record: dict) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", record["source"]).strip("._") or "source"


def _base_variables(settings: Settings) -> dict | None:
    """The suite variables (reference codes, city bounds...) as quality resolves them; None if they cannot
    be had (reference data gone): the pages then show the $variables as parameters."""
    from citysafe import quality

    try:
        return quality.suite_variables(settings, dt.datetime.now(dt.UTC))
    except Exception:  # noqa: BLE001
        logger.warning("Data Docs: suite variables unavailable; showing them as parameters", exc_info=True)
        return None


def _jsonable(value):
    """Resolved suite variables hold pandas Timestamps and numpy scalars: plain JSON values for GX's stores."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _resolved(kwargs: dict, variables: dict | None) -> dict:
    """Suite kwargs with their $variables resolved; one with no value (the suite pages, or reference data
    gone) is shown by name: a list kwarg as ["$name"], any other as a GX suite parameter (see _PARAMETER)."""
    def known(value) -> bool:
        return variables is not None and value[1:] in variables

    def one(key, value):
        if isinstance(value, str) and value.startswith("$"):
            if known(value):
                return _jsonable(variables[value[1:]])
            return [value] if key in _LIST_KWARGS else {"$PARAMETER": value[1:]}
        if isinstance(value, list):  # elements may be variables too; an unknown one stays "$name"
            return [_jsonable(variables[v[1:]]) if isinstance(v, str) and v.startswith("$") and known(v)
                    else _jsonable(v) for v in value]
        return _jsonable(value)

    return {k: one(k, v) for k, v in kwargs.items()}


_LIST_KWARGS = {"value_set", "column_list", "type_list"}
# GX renders a suite parameter as its dict, {'$PARAMETER': 'name'}; the pages show it as $name.
_Q = "(?:'|&#39;|&#x27;)"  # a quote, maybe HTML-escaped
_PARAMETER = re.compile(r"\{" + _Q + r"\$PARAMETER" + _Q + r": " + _Q + r"(\w+)" + _Q + r"\}")


def _parameterized(kwargs: dict) -> dict:
    return _resolved(kwargs, None)


def _expectation_config(expectation_type: str, kwargs: dict):
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    return ExpectationConfiguration(type=expectation_type, kwargs=kwargs)


def _match_kwargs(rows: list[dict], suite: dict | None) -> list[dict]:
    """The suite's kwargs for each stored result row: same expectation type and column, in suite order.
    A row the current suite no longer has gets only its column."""
    pool = _expectations(suite) if suite else []
    used: set[int] = set()
    out = []
    for row in rows:
        for i, (name, kwargs) in enumerate(pool):
            column = kwargs.get("column") or kwargs.get("column_A")
            if i not in used and name == row.get("expectation") and column == row.get("column"):
                used.add(i)
                out.append(kwargs)
                break
        else:
            out.append({"column": row["column"]} if row.get("column") else {})
    return out


def _validation_result(record: dict, suite: dict | None, variables: dict | None, path: Path, *, full: bool):
    """A GX ExpectationSuiteValidationResult from a stored gate result. Without `full` only what the index
    shows (success, run, asset) is filled in."""
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )

    validated_at = _validated_at(record)
    rows = [r for r in record["results"] if isinstance(r, dict) and r.get("expectation")]
    results = []
    if full:
        import pandas as pd

        now_vars = None if variables is None else {**variables, "now": pd.Timestamp(validated_at)}
        for row, kwargs in zip(rows, _match_kwargs(rows, suite), strict=True):
            result = {k: row.get(k) for k in ("observed_value", "element_count", "unexpected_count")
                      if row.get(k) is not None}
            if row.get("partial_unexpected_list"):
                result["partial_unexpected_list"] = row["partial_unexpected_list"]
            if row.get("element_count") and row.get("unexpected_count") is not None:
                result["unexpected_percent"] = min(100.0, 100.0 * row["unexpected_count"] / row["element_count"])
            results.append(ExpectationValidationResult(
                success=bool(row.get("success")),
                expectation_config=_expectation_config(row["expectation"], _resolved(kwargs, now_vars)),
                result=result,
                exception_info={"raised_exception": False, "exception_traceback": None,
                                "exception_message": None}))
    successful = sum(1 for r in rows if r.get("success"))
    table = record.get("table") or record["suite"]
    return ExpectationSuiteValidationResult(
        success=bool(record.get("success")),
        results=results,
        suite_name=record["suite"],
        statistics={"evaluated_expectations": len(rows), "successful_expectations": successful,
                    "unsuccessful_expectations": len(rows) - successful,
                    "success_percent": 100.0 * successful / len(rows) if rows else None},
        meta={
            "great_expectations_version": _gx_version(),
            "run_id": {"run_name": record["run_id"], "run_time": validated_at.isoformat()},
            "validation_time": validated_at.isoformat(),
            "batch_spec": {"data_asset_name": table, "source": record["source"], "rows": record.get("rows")},
            "active_batch_definition": {"datasource_name": "citysafe", "data_connector_name": "fluent",
                                        "data_asset_name": table,
                                        "batch_identifiers": {"source": record["source"]}},
            "citysafe_result": str(path),
        })


def _gx_version() -> str:
    import great_expectations as gx

    return gx.__version__


# --- offline assets --------------------------------------------------------------------------------------

def _sync_assets(source: Path, target: Path) -> None:
    """Copy the vendored assets (with their licences) into the site; unchanged files are left alone."""
    for path in source.rglob("*"):
        if not path.is_file() or path.suffix == ".sh":
            continue
        dest = target / path.relative_to(source)
        if dest.exists() and dest.stat().st_size == path.stat().st_size \
                and dest.stat().st_mtime >= path.stat().st_mtime:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)


def _localize_file(root: Path, page: Path) -> None:
    html = page.read_text(encoding="utf-8")
    prefix = "../" * (len(page.relative_to(root).parts) - 1)
    localized = localize_html(html, prefix)
    missing = [ref for ref in asset_refs(localized) if _is_external(ref)]
    if missing:
        raise DataDocsError(f"{page}: external assets with no vendored copy (add them to citysafe.data_docs."
                            f"CDN_ASSETS and expectations/data_docs_assets/): {sorted(set(missing))}")
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
