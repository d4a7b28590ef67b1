"""Geography of Jiangcheng (江城): boundary, districts, name aliases, H3 cells, point sampling.

The geography is fixed (it does not depend on the generator seed): the same city every run, so
district codes, polygons and aliases are stable reference data. Only events and hotspots vary with
the seed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import h3
import h3.api.basic_int as h3i
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import MultiPolygon, Polygon, mapping

CENTER_LON, CENTER_LAT = 114.30, 30.58
KM_PER_DEG_LAT = 110.95
KM_PER_DEG_LON = 111.32 * math.cos(math.radians(CENTER_LAT))
GRID = 1e-6  # coordinate precision of the published polygons (degrees)


def km_to_lonlat(x, y):
    return CENTER_LON + np.asarray(x) / KM_PER_DEG_LON, CENTER_LAT + np.asarray(y) / KM_PER_DEG_LAT


def lonlat_to_km(lon, lat):
    return (np.asarray(lon) - CENTER_LON) * KM_PER_DEG_LON, (np.asarray(lat) - CENTER_LAT) * KM_PER_DEG_LAT


@dataclass(frozen=True)
class District:
    code: str
    name_zh: str
    name_en: str
    short_zh: str
    pinyin: str
    seed_km: tuple[float, float]
    known_typos: tuple[str, ...]  # in the stewards' alias table
    unknown_typos: tuple[str, ...]  # used by departments, NOT in the alias table
    abbr: str  # two-letter abbreviation used in unit ids


DISTRICTS: tuple[District, ...] = (
    District(
        "420102",
        "江岸区",
        "Jiang'an District",
        "江岸",
        "Jiangan",
        (3.0, 5.5),
        ("江按区", "Jiangan Distrct"),
        ("江岸去", "Jaingan"),
        "JA",
    ),
    District(
        "420103",
        "江汉区",
        "Jianghan District",
        "江汉",
        "Jianghan",
        (-1.8, 3.2),
        ("江汗区", "Jiang han"),
        ("江汉去", "Jinghan"),
        "JH",
    ),
    District(
        "420104",
        "临江区",
        "Linjiang District",
        "临江",
        "Linjiang",
        (-7.5, 7.5),
        ("林江区", "Lingjiang"),
        ("临江去", "Linjang"),
        "LJ",
    ),
    District(
        "420105",
        "汉阳区",
        "Hanyang District",
        "汉阳",
        "Hanyang",
        (-7.0, -2.5),
        ("汉杨区", "Hangyang"),
        ("汉阳去", "Hanyng"),
        "HY",
    ),
    District(
        "420106",
        "武昌区",
        "Wuchang District",
        "武昌",
        "Wuchang",
        (3.2, -1.8),
        ("武唱区", "Wuchan"),
        ("五昌区", "Wuchagn"),
        "WC",
    ),
    District(
        "420107",
        "青山区",
        "Qingshan District",
        "青山",
        "Qingshan",
        (11.0, 6.0),
        ("清山区", "Qinshan"),
        ("青三区", "Qingsahn"),
        "QS",
    ),
    District(
        "420111",
        "洪山区",
        "Hongshan District",
        "洪山",
        "Hongshan",
        (8.5, -6.5),
        ("红山区", "Hongsan"),
        ("洪三区", "Honshan"),
        "HS",
    ),
    District(
        "420112",
        "东湖区",
        "Donghu District",
        "东湖",
        "Donghu",
        (15.5, -1.0),
        ("冬湖区", "Dong hu"),
        ("东胡区", "Donhgu"),
        "DH",
    ),
    District(
        "420113",
        "南湖区",
        "Nanhu District",
        "南湖",
        "Nanhu",
        (0.5, -10.5),
        ("兰湖区", "Nan hu"),
        ("南糊区", "Nahnu"),
        "NH",
    ),
    District(
        "420115",
        "江夏区",
        "Jiangxia District",
        "江夏",
        "Jiangxia",
        (-11.0, -9.5),
        ("江下区", "Jiangxa"),
        ("江夏去", "Jangxia"),
        "JX",
    ),
)

# River (the "Jiang" of Jiangcheng) as a polyline in km, SW -> NE through the centre.
RIVER_KM = [(-24.0, -13.0), (-12.0, -6.5), (-4.0, -1.5), (1.0, 2.0), (7.0, 7.5), (14.0, 10.5), (24.0, 14.0)]
# Urban centres (x km, y km, sigma km, amplitude) and industrial zones (x, y, sigma)
URBAN_CENTRES = [
    (0.0, 1.0, 4.5, 1.0),
    (-6.5, -2.0, 2.5, 0.55),
    (9.5, -5.0, 2.8, 0.5),
    (9.0, 5.5, 2.2, 0.45),
    (-1.0, -9.0, 2.5, 0.35),
    (-6.0, 7.0, 2.5, 0.4),
]
INDUSTRIAL_ZONES = [(12.5, 8.0, 2.2), (-13.0, -8.0, 2.5), (15.5, -5.0, 2.0), (-10.0, 9.0, 1.8)]
LAKES = [(9.0, -1.5, 1.8), (-3.0, -6.0, 1.2)]  # low-lying lake shores (flood prone)


def _norm(s: str) -> str:
    return "".join(ch for ch in s.lower() if ch not in " '-_.")


def _city_polygon_km() -> Polygon:
    th = np.linspace(0, 2 * np.pi, 241)[:-1]
    r = 1 + 0.06 * np.sin(3 * th + 0.7) + 0.04 * np.sin(5 * th + 2.1) + 0.025 * np.sin(8 * th + 4.0)
    return Polygon(np.column_stack([20.0 * r * np.cos(th), 15.0 * r * np.sin(th)]))


class City:
    """District polygons (lon/lat, snapped to a 1e-6 degree grid) that tile the city exactly."""

    def __init__(self, h3_resolution: int):
        self.res = int(h3_resolution)
        self.districts = DISTRICTS
        self.codes = np.array([d.code for d in DISTRICTS])
        city_km = _city_polygon_km()
        seeds = shapely.MultiPoint([d.seed_km for d in DISTRICTS])
        cells = shapely.get_parts(shapely.voronoi_polygons(seeds, extend_to=city_km.buffer(10)))
        polys = []
        for d in DISTRICTS:
            cell = next(c for c in cells if c.contains(shapely.Point(d.seed_km)))
            piece = cell.intersection(city_km)
            piece = shapely.transform(piece, lambda xy: np.column_stack(km_to_lonlat(xy[:, 0], xy[:, 1])))
            polys.append(shapely.set_precision(piece, GRID))
        # make the tiling exact on the grid: each district minus the ones before it
        fixed = []
        acc = None
        for p in polys:
            q = p if acc is None else shapely.set_precision(p.difference(acc), GRID)
            q = _largest_polygonal(q)
            fixed.append(q)
            acc = q if acc is None else shapely.set_precision(acc.union(q), GRID)
        self.polygons = fixed
        self.boundary = shapely.set_precision(shapely.union_all(fixed), GRID)
        for p in self.polygons:
            shapely.prepare(p)
        shapely.prepare(self.boundary)
        self._build_cells()

    # -- lookups ---------------------------------------------------------------------------------
    def district_of(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """District index of each point, -1 outside the city (or exactly on a boundary)."""
        out = np.full(len(lon), -1, dtype=np.int64)
        hits = np.zeros(len(lon), dtype=np.int64)
        for i, p in enumerate(self.polygons):
            inside = shapely.contains_xy(p, lon, lat)
            out[inside] = i
            hits += inside
        out[hits != 1] = -1
        return out

    def h3_int(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        f = h3i.latlng_to_cell
        r = self.res
        return np.fromiter(
            (f(a, b, r) for a, b in zip(np.asarray(lat).tolist(), np.asarray(lon).tolist())),
            dtype=np.uint64,
            count=len(lon),
        )

    # -- H3 cells -------------------------------------------------------------------------------
    def _build_cells(self) -> None:
        res = self.res
        edge_deg = h3.average_hexagon_edge_length(res, unit="km") / KM_PER_DEG_LAT
        shape = self.boundary.buffer(2.5 * edge_deg)
        ring = [(y, x) for x, y in shape.exterior.coords]
        cand = sorted(h3.geo_to_cells(h3.LatLngPoly(ring), res))
        hexes = [Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(c)]) for c in cand]
        hexes = np.array(hexes, dtype=object)
        inter = shapely.intersection(hexes, self.boundary)
        frac = shapely.area(inter) / shapely.area(hexes)
        keep = frac >= 0.01
        self.cells = np.array([c for c, k in zip(cand, keep) if k])
        self.cell_ints = np.array([h3.str_to_int(c) for c in self.cells], dtype=np.uint64)
        self.cell_area_frac = frac[keep]
        self.cell_geoms = inter[keep]
        self.n_cells = len(self.cells)
        index = {c: i for i, c in enumerate(self.cells)}
        self.cell_index = index
        # ring-1 neighbours (-1 where the neighbour is not a city cell)
        nb = np.full((self.n_cells, 6), -1, dtype=np.int64)
        for i, c in enumerate(self.cells):
            ring1 = sorted(h3.grid_ring(c, 1))
            for j, n in enumerate(ring1[:6]):
                nb[i, j] = index.get(n, -1)
        self.neighbours = nb
        ctr = np.array([h3.cell_to_latlng(c) for c in self.cells])
        self.cell_lat, self.cell_lon = ctr[:, 0], ctr[:, 1]
        self.cell_x, self.cell_y = lonlat_to_km(self.cell_lon, self.cell_lat)
        # triangulation of (cell ∩ city) for exact uniform sampling
        tris = shapely.constrained_delaunay_triangles(self.cell_geoms)
        parts, owner = shapely.get_parts(tris, return_index=True)
        coords = shapely.get_coordinates(parts).reshape(len(parts), 4, 2)[:, :3, :]
        area = shapely.area(parts)
        order = np.lexsort((np.arange(len(parts)), owner))
        self.tri_owner = owner[order]
        self.tri_coords = coords[order]
        self.tri_cum = np.cumsum(area[order])
        starts = np.searchsorted(self.tri_owner, np.arange(self.n_cells), side="left")
        ends = np.searchsorted(self.tri_owner, np.arange(self.n_cells), side="right")
        cum0 = np.concatenate([[0.0], self.tri_cum])
        self.cell_cum_lo = cum0[starts]
        self.cell_cum_hi = cum0[ends]

    def sample_in_cells(self, rng: np.random.Generator, cell_idx: np.ndarray):
        """Uniform points in (cell ∩ city), rounded to 6 decimals, that H3 assigns to that cell and
        that lie strictly inside one district. Returns lon, lat, district index."""
        n = len(cell_idx)
        lon = np.zeros(n)
        lat = np.zeros(n)
        dist = np.full(n, -1, dtype=np.int64)
        todo = np.arange(n)
        for _ in range(60):
            if len(todo) == 0:
                break
            c = cell_idx[todo]
            lo, hi = self.cell_cum_lo[c], self.cell_cum_hi[c]
            target = lo + rng.random(len(todo)) * (hi - lo)
            t = np.minimum(np.searchsorted(self.tri_cum, target, side="right"), len(self.tri_cum) - 1)
            tri = self.tri_coords[t]
            r1, r2 = rng.random(len(todo)), rng.random(len(todo))
            flip = r1 + r2 > 1
            r1[flip], r2[flip] = 1 - r1[flip], 1 - r2[flip]
            p = tri[:, 0] + r1[:, None] * (tri[:, 1] - tri[:, 0]) + r2[:, None] * (tri[:, 2] - tri[:, 0])
            x, y = np.round(p[:, 0], 6), np.round(p[:, 1], 6)
            ok = self.h3_int(x, y) == self.cell_ints[c]
            d = self.district_of(x, y)
            ok &= d >= 0
            good = todo[ok]
            lon[good], lat[good], dist[good] = x[ok], y[ok], d[ok]
            todo = todo[~ok]
        if len(todo):  # pathological slivers: accept a district-valid centre-ward point
            raise RuntimeError(f"could not sample {len(todo)} points in their cells")
        return lon, lat, dist

    def jitter_inside(self, rng: np.random.Generator, lon, lat, max_m: float):
        """Move points by up to max_m metres (uniform in a disc), keeping them inside the city."""
        n = len(lon)
        r = max_m * np.sqrt(rng.random(n)) / 1000.0
        a = rng.random(n) * 2 * np.pi
        x, y = lonlat_to_km(lon, lat)
        nl, nt = km_to_lonlat(x + r * np.cos(a), y + r * np.sin(a))
        nl, nt = np.round(nl, 6), np.round(nt, 6)
        d = self.district_of(nl, nt)
        bad = d < 0
        nl[bad], nt[bad] = lon[bad], lat[bad]
        d[bad] = self.district_of(np.asarray(lon)[bad], np.asarray(lat)[bad])
        return nl, nt, d

    def far_outside(self, rng: np.random.Generator, n: int):
        """Valid lon/lat points 45-90 km from the centre: always > 20 km outside the boundary."""
        a = rng.random(n) * 2 * np.pi
        r = 45 + 45 * rng.random(n)
        lon, lat = km_to_lonlat(r * np.cos(a), r * np.sin(a))
        return np.round(lon, 6), np.round(lat, 6)

    # -- spatial features for hotspot surfaces -----------------------------------------------------
    def features(self) -> dict[str, np.ndarray]:
        x, y = self.cell_x, self.cell_y
        urban = np.full(self.n_cells, 0.08)
        for cx, cy, s, a in URBAN_CENTRES:
            urban += a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s))
        industrial = np.zeros(self.n_cells)
        for cx, cy, s in INDUSTRIAL_ZONES:
            industrial += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s))
        river = shapely.LineString(RIVER_KM)
        pts = shapely.points(x, y)
        d_river = shapely.distance(pts, river)
        lake = np.zeros(self.n_cells)
        for cx, cy, s in LAKES:
            lake += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s))
        # arterial roads: an inner ring of radius 7 km and four radials
        r = np.hypot(x, y / 0.85)
        d_ring = np.abs(r - 7.0)
        ang = np.arctan2(y, x)
        d_radial = np.min(
            [np.abs(np.hypot(x, y) * np.sin(ang - a0)) + (np.cos(ang - a0) < 0) * 99 for a0 in (0.3, 1.9, 3.4, 4.9)],
            axis=0,
        )
        roads = np.exp(-np.minimum(d_ring, d_radial) / 0.6)
        return {
            "urban": urban,
            "industrial": industrial,
            "river": np.exp(-d_river / 1.2),
            "lake": lake,
            "roads": roads,
            "area": self.cell_area_frac,
        }

    # -- reference outputs ------------------------------------------------------------------------
    def geojson(self) -> dict:
        feats = []
        for d, p in zip(self.districts, self.polygons):
            feats.append(
                {
                    "type": "Feature",
                    "properties": {"district_code": d.code, "name_zh": d.name_zh, "name_en": d.name_en},
                    "geometry": _round_geom(mapping(p)),
                }
            )
        return {"type": "FeatureCollection", "name": "jiangcheng_districts", "features": feats}


def _largest_polygonal(g):
    if isinstance(g, (Polygon, MultiPolygon)):
        return g
    polys = [p for p in shapely.get_parts(g) if isinstance(p, Polygon)]
    return MultiPolygon(polys) if len(polys) > 1 else polys[0]


def _round_geom(obj):
    if isinstance(obj, dict):
        return {k: _round_geom(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        if len(obj) == 2 and all(isinstance(v, float) for v in obj):
            return [round(obj[0], 6), round(obj[1], 6)]
        return [_round_geom(v) for v in obj]
    return obj


def geojson_text(city: City) -> str:
    return json.dumps(city.geojson(), ensure_ascii=False, separators=(",", ":")) + "\n"


# ------------------------------------------------------------------------------------------ aliases
def alias_table() -> pd.DataFrame:
    """The stewards' alias table (kinds: official_zh, short_zh, english, pinyin, code, known_typo)."""
    rows = []
    for d in DISTRICTS:
        rows += [
            (d.name_zh, d.code, "official_zh"),
            (d.short_zh, d.code, "short_zh"),
            (d.name_en, d.code, "english"),
            (d.name_en.replace(" District", ""), d.code, "english"),
            (d.pinyin, d.code, "pinyin"),
            (d.pinyin + " Qu", d.code, "pinyin"),
            (d.code, d.code, "code"),
        ]
        rows += [(t, d.code, "known_typo") for t in d.known_typos]
    df = pd.DataFrame(rows, columns=["alias", "district_code", "alias_kind"])
    df = df.drop_duplicates("alias", keep="first").reset_index(drop=True)
    # sanity: a normalised alias names one district only, and no unknown typo collides with any alias
    norm = df.alias.map(_norm)
    assert (df.groupby(norm).district_code.nunique() == 1).all()
    known = set(norm)
    for d in DISTRICTS:
        for t in d.unknown_typos:
            assert _norm(t) not in known, t
    return df


def variant_table() -> dict[str, list[list[str]]]:
    """Per district index: name strings by kind, for the departments to pick from."""
    out = {k: [] for k in ("official_zh", "short_zh", "english", "pinyin", "code", "known_typo", "unknown_typo")}
    for d in DISTRICTS:
        out["official_zh"].append([d.name_zh])
        out["short_zh"].append([d.short_zh])
        out["english"].append([d.name_en, d.name_en.replace(" District", "")])
        out["pinyin"].append([d.pinyin, d.pinyin + " Qu"])
        out["code"].append([d.code])
        out["known_typo"].append(list(d.known_typos))
        out["unknown_typo"].append(list(d.unknown_typos))
    return out


def district_names(
    rng: np.random.Generator, district_idx: np.ndarray, kind_weights: dict[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """A district name variant per row; returns (names, kinds)."""
    table = variant_table()
    kinds = list(kind_weights)
    w = np.array([kind_weights[k] for k in kinds], dtype=float)
    pick = rng.choice(len(kinds), size=len(district_idx), p=w / w.sum())
    sub = rng.integers(0, 1 << 30, size=len(district_idx))
    names = np.empty(len(district_idx), dtype=object)
    for ki, k in enumerate(kinds):
        m = pick == ki
        if not m.any():
            continue
        opts = table[k]
        names[m] = [opts[d][s % len(opts[d])] for d, s in zip(district_idx[m].tolist(), sub[m].tolist())]
    return names, np.array(kinds, dtype=object)[pick]
