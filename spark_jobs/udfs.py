"""Vectorised Python UDFs the silver jobs need (they run inside the engine's Python: with Sail that is
this process; on a Spark cluster the workers need this package and h3/shapely installed)."""

from __future__ import annotations

import hashlib
import hmac

import pandas as pd
from pyspark.sql.functions import pandas_udf


def hmac_udf(key: bytes):
    """Keyed HMAC-SHA256 (hex) of a normalised value; NULL/blank stays NULL."""

    @pandas_udf("string")
    def keyed_hash(values: pd.Series) -> pd.Series:
        return values.map(
            lambda v: None
            if v is None or v != v or str(v).strip() == ""
            else hmac.new(key, str(v).strip().encode("utf-8"), hashlib.sha256).hexdigest()
        )

    return keyed_hash


def normalize_name_udf():
    @pandas_udf("string")
    def normalize(values: pd.Series) -> pd.Series:
        from citysafe.reference import normalize_name

        return values.map(lambda v: None if v is None or v != v else normalize_name(str(v)))

    return normalize


def district_of_point_udf(districts: list[dict]):
    """District code of the polygon containing (lon, lat); NULL outside every district.
    A point on a shared border goes to the smallest code, so every engine agrees."""
    codes = [d["district_code"] for d in districts]
    wkbs = [d["wkb"] for d in districts]

    @pandas_udf("string")
    def district_of_point(lon: pd.Series, lat: pd.Series) -> pd.Series:
        import numpy as np
        import shapely

        polygons = shapely.from_wkb(wkbs)
        tree = shapely.STRtree(polygons)
        out = np.full(len(lon), None, dtype=object)
        valid = (lon.notna() & lat.notna()).to_numpy()
        if valid.any():
            idx = np.flatnonzero(valid)
            points = shapely.points(lon.to_numpy()[idx].astype(float), lat.to_numpy()[idx].astype(float))
            hits = tree.query(points, predicate="intersects")
            for point_i, poly_i in zip(hits[0], hits[1]):
                row = idx[point_i]
                code = codes[poly_i]
                if out[row] is None or code < out[row]:
                    out[row] = code
        return pd.Series(out, index=lon.index, dtype=object)

    return district_of_point


def h3_cell_udf(resolution: int):
    @pandas_udf("string")
    def h3_cell(lon: pd.Series, lat: pd.Series) -> pd.Series:
        import h3

        return pd.Series(
            [
                None
                if (x is None or y is None or x != x or y != y)
                else h3.latlng_to_cell(float(y), float(x), resolution)
                for x, y in zip(lon.tolist(), lat.tolist())
            ],
            index=lon.index,
            dtype=object,
        )

    return h3_cell
