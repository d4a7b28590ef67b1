"""Data Docs: every gate refreshes <lake_root>/data_docs/, which renders offline (no CDN, no S3)."""

from __future__ import annotations

import logging
import re
import urllib.parse
from pathlib import Path

import pandas as pd
import pytest
from deltalake import write_deltalake

from citysafe import data_docs, quality
from citysafe.delta_io import TableSpec

from tests_support import lake_settings, write_city_reference

# What makes a browser fetch something: script / stylesheet / icon / image / frame sources, CSS url() and
# @import. <a href> links are navigation, not assets.
LOADS = re.compile(
    r"""<(?:script|link|img|source|iframe|embed)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)["']"""
    r"""|url\(\s*["']?([^"')\s]+)["']?\s*\)|@import\s+(?:url\()?["']?([^"')\s;]+)""",
    re.IGNORECASE | re.DOTALL,
)
CDN_HOSTS = (
    "cdn.jsdelivr.net",
    "unpkg.com",
    "cdnjs.cloudflare.com",
    "bootstrapcdn.com",
    "code.jquery.com",
    "great-expectations-web-assets",
    "fonts.googleapis.com",
    "fonts.gstatic.com",
)


def loads(text: str) -> list[str]:
    return [next(g for g in m.groups() if g) for m in LOADS.finditer(text)]


def is_external(ref: str) -> bool:
    return bool(re.match(r"(?i)(https?:)?//", ref))


def assert_local_assets_exist(page: Path) -> None:
    """Every asset the file loads is a relative path to an existing file (followed into stylesheets)."""
    for ref in loads(page.read_text(encoding="utf-8")):
        if ref.startswith(("data:", "#")):
            continue
        assert not is_external(ref), f"{page} loads {ref} from the network"
        target = (page.parent / urllib.parse.unquote(ref.split("?")[0].split("#")[0])).resolve()
        assert target.is_file(), f"{page}: {ref} does not exist"
        if target.suffix == ".css":
            assert_local_assets_exist(target)


@pytest.fixture
def lake(tmp_path):
    syn = tmp_path / "syn"
    write_city_reference(syn)
    return lake_settings(tmp_path / "lake", syn)


def stage(settings, run_id: str, df: pd.DataFrame) -> TableSpec:
    path = settings.staging_dir / "device" / run_id / "registry"
    write_deltalake(str(path), df)
    return TableSpec("staging_device_registry", path, ())


def devices(**changes) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "device_id": ["D1", "D2", "D3"],
            "device_type": ["rain_gauge", "water_level", "rain_gauge"],
            "canonical_unit": ["mm", "m", "mm"],
            "district_code": ["420102", "420103", "420102"],
            "lon": [114.25, 114.35, 114.21],
            "lat": [30.55, 30.52, 30.58],
            "clock_skew_seconds": [0.0, 12.0, -3.0],
        }
    )
    for column, values in changes.items():
        df[column] = values
    return df


def test_gates_build_offline_data_docs(spark, lake):
    bad = devices(device_id=["D1", "D1", "D3"], district_code=["420102", "999999", "420102"])
    failed = quality.validate_staging(spark, lake, "silver_device", stage(lake, "run-a", bad), "run-a", "registry")
    passed = quality.validate_staging(
        spark, lake, "silver_device", stage(lake, "run-b", devices()), "run-b", "registry"
    )
    assert failed["success"] is False and passed["success"] is True

    root = data_docs.docs_dir(lake)
    index = root / "index.html"
    assert index.is_file()
    html_pages = sorted(root.rglob("*.html"))
    # GX's own page names: validations/<suite>/<run_id>/<run_time>/<datasource>-<asset (the source)>.html
    pages = {
        run: list((root / "validations" / "silver_device" / run).glob("*/citysafe-registry.html"))
        for run in ("run-a", "run-b")
    }
    assert all(len(found) == 1 for found in pages.values()), pages
    index_html = index.read_text(encoding="utf-8")
    for (page,) in pages.values():  # the index links each validation page (and its suite page)
        assert urllib.parse.quote(page.relative_to(root).as_posix()) in index_html
    assert "expectations/silver_device.html" in index_html and (root / "expectations" / "silver_device.html").is_file()

    # The failing page shows the resolved suite ($district_codes from the city's reference) and the bad value.
    (failing,) = pages["run-a"]
    text = re.sub(r"<[^>]+>", " ", failing.read_text(encoding="utf-8"))
    assert "420102" in text and "420103" in text and "999999" in text and "Failed" in text
    # The suite page shows GX's suite parameters by name (a list-valued one in its expectation's note).
    suite_text = re.sub(r"<[^>]+>", " ", (root / "expectations" / "silver_device.html").read_text(encoding="utf-8"))
    assert "$city_min_lon" in suite_text and "suite parameter  $district_codes" in suite_text
    assert "PARAMETER'" not in suite_text and "420102" not in suite_text

    # Offline: no script, stylesheet, font or image from the network, in any page; every local one exists.
    for page in html_pages:
        html = page.read_text(encoding="utf-8")
        assert not [ref for ref in loads(html) if is_external(ref)], page
        assert not [host for host in CDN_HOSTS if host in html], page
        assert not re.search(r"\b(integrity|crossorigin)=", html), page
        assert_local_assets_exist(page)
    assert (root / data_docs.VENDOR_DIR / "fontawesome" / "LICENSE.txt").is_file()

    # Incremental: a later build leaves existing pages alone; rebuild=True renders the same site anew.
    before = {p: p.stat().st_mtime_ns for (p,) in pages.values()}
    assert data_docs.build_data_docs(lake) == index
    assert {p: p.stat().st_mtime_ns for p in before} == before
    data_docs.build_data_docs(lake, rebuild=True)
    assert sorted(root.rglob("*.html")) == html_pages


def test_every_cdn_asset_in_the_gx_templates_is_vendored():
    """A GX upgrade that loads a new CDN asset fails here, not as unstyled pages in production."""
    import great_expectations

    templates = Path(great_expectations.__file__).parent / "render" / "view"
    external = {
        ref
        for path in templates.rglob("*")
        if path.suffix in (".j2", ".css")
        for ref in loads(path.read_text(encoding="utf-8"))
        if is_external(ref)
    }
    external |= {
        m.group(0)
        for path in templates.rglob("*.j2")
        for m in re.finditer(r"https?://[^\"'\s]*amazonaws\.com/", path.read_text(encoding="utf-8"))
    }
    assert external, "no CDN reference found: the template layout changed"
    for url in external:
        if url.startswith(data_docs.GX_WEB_ASSETS) and url != data_docs.GX_WEB_ASSETS:
            assert url[len(data_docs.GX_WEB_ASSETS) :] in data_docs.GX_WEB_IMAGES, url
        else:
            assert url in data_docs.CDN_ASSETS or url == data_docs.GX_WEB_ASSETS, url
    for local in data_docs.CDN_ASSETS.values():
        assert (data_docs.ASSETS_DIR / local).is_file(), local
    for folder in {Path(local).parts[0] for local in data_docs.CDN_ASSETS.values()}:
        assert list((data_docs.ASSETS_DIR / folder).glob("LICENSE*")), f"{folder} has no licence file"
    # The rewrite itself, at the depth of a validation page.
    page = (
        '<script src="https://code.jquery.com/jquery-3.7.1.min.js" integrity="sha384-x" crossorigin="anonymous">'
        '</script><img src="https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png?d=1">'
        '<link href="../../../static/images/favicon.ico">'
    )
    assert data_docs.localize_html(page, "../../../../") == (
        '<script src="../../../../static/vendor/jquery/jquery.min.js"></script>'
        '<img src="../../../../static/images/logo-long.png"><link href="../../../../static/images/favicon.ico">'
    )


@pytest.mark.parametrize("polygons", ["missing file", "empty FeatureCollection"])
def test_data_docs_of_a_city_without_district_polygons(spark, lake, polygons, caplog, capfd):
    """The pages show what GX validated: building them needs no reference data, so a city whose
    districts_geojson is missing or empty gets its docs with no warning and no traceback."""
    bad = devices(district_code=["420102", "999999", "420102"])
    assert not quality.validate_staging(spark, lake, "silver_device", stage(lake, "run-a", bad), "run-a", "registry")[
        "success"
    ]
    geojson = lake.lake_root / "no_districts.geojson"
    if polygons == "empty FeatureCollection":
        geojson.write_text('{"type": "FeatureCollection", "features": []}')
    no_polygons = lake.model_copy(update={"districts_geojson": geojson})
    capfd.readouterr()
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        index = data_docs.build_data_docs(no_polygons, rebuild=True)
    assert not [
        r for r in caplog.records if r.exc_info or (r.levelno >= logging.WARNING and r.name.startswith("citysafe"))
    ]
    assert "Traceback" not in "".join(capfd.readouterr())
    (page,) = (index.parent / "validations" / "silver_device" / "run-a").glob("*/citysafe-registry.html")
    text = re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8"))
    assert "999999" in text and "420103" in text and "Failed" in text


def test_deferred_gates_render_their_pages_once_at_the_end_even_after_a_failure(spark, lake):
    """data_docs.deferred (the silver stage): the gates' pages wait for the block's end, which renders
    every one of them, the failing gate's too when the block ends with an error."""
    root = data_docs.docs_dir(lake)
    pages = lambda run: list((root / "validations" / "silver_device" / run).glob("*/citysafe-registry.html"))  # noqa: E731
    with pytest.raises(RuntimeError, match="gate failed"), data_docs.deferred(lake):
        passed = quality.validate_staging(
            spark, lake, "silver_device", stage(lake, "run-c", devices()), "run-c", "registry"
        )
        bad = devices(device_id=["D1", "D1", "D3"])
        failed = quality.validate_staging(spark, lake, "silver_device", stage(lake, "run-d", bad), "run-d", "registry")
        assert passed["success"] and not failed["success"]
        assert not pages("run-c") and not pages("run-d") and not (root / "index.html").exists()
        raise RuntimeError("gate failed")
    assert len(pages("run-c")) == len(pages("run-d")) == 1
    index_html = (root / "index.html").read_text(encoding="utf-8")
    for run in ("run-c", "run-d"):
        assert urllib.parse.quote(pages(run)[0].relative_to(root).as_posix()) in index_html
