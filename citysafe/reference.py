"""Reference data: the unified taxonomy, per-code-system crosswalks, districts and their name aliases.

All loaders validate and fail with the file, row and field at fault.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from pathlib import Path

import pandas as pd

from citysafe.config import REPO_ROOT
from citysafe.errors import ConfigurationError

REFERENCE_DIR = REPO_ROOT / "reference"
TAXONOMY_FILE = REFERENCE_DIR / "taxonomy" / "taxonomy.csv"
CROSSWALK_DIR = REFERENCE_DIR / "crosswalks"

TAXONOMY_COLUMNS = [
    "domain_code",
    "domain_en",
    "domain_zh",
    "category_code",
    "category_en",
    "category_zh",
    "subcategory_code",
    "subcategory_en",
    "subcategory_zh",
    "severity_default",
]
CROSSWALK_COLUMNS = ["source_code", "source_label", "subcategory_code"]
DECISIONS_DIR = CROSSWALK_DIR / "decisions"
DECISION_COLUMNS = ["source_code", "decision", "note"]
# Steward decisions for codes a crosswalk deliberately does not map (reference/crosswalks/README.md):
#   out_of_scope    not a safety incident (casework, permits, tobacco rules ...): quarantined as out_of_scope
#   unclassifiable  a safety matter whose code does not say which subcategory: quarantined as unclassifiable_code
#   taxonomy_gap    the taxonomy has no subcategory yet: stays unmapped_code, waiting in silver.unmapped_codes
DECISIONS = ("out_of_scope", "unclassifiable", "taxonomy_gap")


class ReferenceError(ConfigurationError):
    pass


def _read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise ReferenceError(f"reference file not found: {path}")
    df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ReferenceError(f"{path}: missing column(s) {missing}")
    for col in columns:
        blank = df.index[df[col].str.strip() == ""]
        if len(blank):
            raise ReferenceError(f"{path}: row {blank[0] + 2}: empty {col}")
    return df


@functools.cache
def taxonomy(path: Path = TAXONOMY_FILE) -> pd.DataFrame:
    df = _read_csv(path, TAXONOMY_COLUMNS)
    dup = df["subcategory_code"][df["subcategory_code"].duplicated()]
    if len(dup):
        raise ReferenceError(f"{path}: duplicate subcategory_code {dup.iloc[0]}")
    for _, row in df.iterrows():
        if not (row.subcategory_code.startswith(row.category_code) and row.category_code.startswith(row.domain_code)):
            raise ReferenceError(
                f"{path}: subcategory {row.subcategory_code} is not under {row.category_code} / {row.domain_code}"
            )
    return df[TAXONOMY_COLUMNS]


def crosswalk(name: str, directory: Path = CROSSWALK_DIR) -> pd.DataFrame:
    """One reviewed file per department code system: source_code -> subcategory_code."""
    path = directory / f"{name}.csv"
    df = _read_csv(path, CROSSWALK_COLUMNS)
    df["source_code"] = df["source_code"].str.strip()
    dup = df["source_code"][df["source_code"].duplicated()]
    if len(dup):
        raise ReferenceError(f"{path}: source_code {dup.iloc[0]!r} appears twice")
    known = set(taxonomy()["subcategory_code"])
    for i, code in enumerate(df["subcategory_code"]):
        if code not in known:
            raise ReferenceError(f"{path}: row {i + 2}: subcategory_code {code!r} is not in the taxonomy")
    return df[CROSSWALK_COLUMNS]


def crosswalk_decisions(name: str, directory: Path = DECISIONS_DIR) -> pd.DataFrame:
    """Steward decisions for codes left out of crosswalk `name` (empty when it has none).

    `source_code` is an exact code or an fnmatch pattern (`*`, `?`, `[...]`), e.g. `Aging|*` for every
    descriptor of one complaint type; the first matching row wins, and a crosswalk entry wins over any
    decision."""
    path = directory / f"{name}.csv"
    if not path.exists():
        return pd.DataFrame(columns=DECISION_COLUMNS)
    df = _read_csv(path, DECISION_COLUMNS)
    df["source_code"] = df["source_code"].str.strip()
    dup = df["source_code"][df["source_code"].duplicated()]
    if len(dup):
        raise ReferenceError(f"{path}: source_code {dup.iloc[0]!r} appears twice")
    for i, decision in enumerate(df["decision"]):
        if decision not in DECISIONS:
            raise ReferenceError(f"{path}: row {i + 2}: decision {decision!r} is not one of {', '.join(DECISIONS)}")
    return df[DECISION_COLUMNS]


def normalize_name(value: str | None) -> str | None:
    """Canonical form for matching place names: NFKC (full-width -> half-width), lower case, no spaces,
    apostrophes, hyphens or dots. 'Jiang’an District' and 'jiangan district' match."""
    if value is None:
        return None
    text = unicodedata.normalize("NFKC", value).lower()
    text = re.sub(r"[\s'’`\-_.·]", "", text)
    return text or None


def district_aliases(path: Path) -> pd.DataFrame:
    df = _read_csv(path, ["alias", "district_code"])
    df["alias_key"] = df["alias"].map(normalize_name)
    clash = df.groupby("alias_key")["district_code"].nunique()
    clash = clash[clash > 1]
    if len(clash):
        raise ReferenceError(f"{path}: alias {clash.index[0]!r} points at more than one district")
    return df.drop_duplicates("alias_key")[["alias_key", "district_code"]]


def districts(path: Path) -> list[dict]:
    """District polygons: [{district_code, name_zh, name_en, wkb}] from a GeoJSON FeatureCollection."""
    import shapely

    if not path.is_file():
        raise ReferenceError(f"district polygons not found: {path}")
    data = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for i, feature in enumerate(data.get("features", [])):
        props = feature.get("properties") or {}
        if not props.get("district_code"):
            raise ReferenceError(f"{path}: feature {i}: properties.district_code missing")
        geom = shapely.geometry.shape(feature["geometry"])
        if not geom.is_valid:
            raise ReferenceError(f"{path}: feature {i} ({props['district_code']}): invalid polygon")
        out.append(
            {
                "district_code": str(props["district_code"]),
                "name_zh": props.get("name_zh"),
                "name_en": props.get("name_en"),
                "wkb": shapely.to_wkb(geom),
            }
        )
    if not out:
        raise ReferenceError(f"{path}: no district features")
    return out


def city_bounds(path: Path) -> tuple[float, float, float, float]:
    """(min_lon, min_lat, max_lon, max_lat) of all districts."""
    import shapely

    union = shapely.union_all([shapely.from_wkb(d["wkb"]) for d in districts(path)])
    return tuple(union.bounds)


UNITS_FILE = REFERENCE_DIR / "units" / "device_units.csv"


@functools.cache
def device_units(path: Path = UNITS_FILE) -> pd.DataFrame:
    """device_type, unit -> canonical_unit, factor, physical limits."""
    df = _read_csv(path, ["device_type", "unit", "canonical_unit", "factor", "min_valid", "max_valid"])
    for col in ("factor", "min_valid", "max_valid"):
        df[col] = df[col].astype(float)
    dup = df[df.duplicated(["device_type", "unit"])]
    if len(dup):
        raise ReferenceError(f"{path}: ({dup.iloc[0].device_type}, {dup.iloc[0].unit}) listed twice")
    if (df.groupby("device_type")["canonical_unit"].nunique() > 1).any():
        raise ReferenceError(f"{path}: a device type has more than one canonical unit")
    return df[["device_type", "unit", "canonical_unit", "factor", "min_valid", "max_valid"]]
