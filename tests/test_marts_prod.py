"""The `prod` target on the built synthetic city: every mart published to a real PostgreSQL server on
127.0.0.1 (tests/pg_server.py) holds exactly the rows of the DuckDB warehouse, list columns included.

The city's marts are already built (session fixture `built_city`): the prod build starts from a copy of
them and rebuilds one mart (build_marts(select=...)); the publish copies every mart. A full prod build
from nothing is tested on the small lake in test_warehouse.py."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

MART = "mart_incident_district_week"


@pytest.mark.slow
def test_prod_publish_of_the_city_matches_the_duckdb_warehouse(built_city, city_marts_in_postgres, pg_server):
    result, served = city_marts_in_postgres
    assert set(result["models"]) == {MART}
    manifest = json.loads((Path(result["target_path"]) / "manifest.json").read_text())
    marts = sorted(
        n["name"]
        for n in manifest["nodes"].values()
        if n["resource_type"] == "model" and n["fqn"][1] in ("marts", "gold")
    )
    assert result["published"]["tables"] == marts and "mart_risk_map" in marts

    duck = duckdb.connect(str(served), read_only=True)
    rows = 0
    with pg_server.connect() as pg:
        for mart in marts:
            d_count = duck.execute(f"select count(*) from {mart}").fetchone()[0]
            rows += d_count
            p_count = pg.execute(f"select count(*) from city_marts.{mart}").fetchone()[0]
            assert (mart, p_count) == (mart, d_count)
            d_cols = [
                r[0]
                for r in duck.execute(
                    "select column_name from information_schema.columns where table_name = ? order by ordinal_position",
                    [mart],
                ).fetchall()
            ]
            p_cols = [
                r[0]
                for r in pg.execute(
                    "select column_name from information_schema.columns where "
                    "table_schema = 'city_marts' and table_name = %s order by ordinal_position",
                    (mart,),
                ).fetchall()
            ]
            assert p_cols == d_cols
        # the city's incidents arrive whole: the same total per district in both databases
        query = "select district_code, sum(incident_count) from {} group by 1 order by 1"
        assert [
            tuple(map(str, r)) for r in pg.execute(query.format("city_marts.mart_incident_district_week")).fetchall()
        ] == [tuple(map(str, r)) for r in duck.execute(query.format("mart_incident_district_week")).fetchall()]
    duck.close()
    assert rows > 1000  # a real city, not empty tables
    assert result["models"][MART] == _count(built_city.warehouse, MART) > 0  # rebuilt from the same silver


def _count(path: Path, relation: str) -> int:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(f"select count(*) from {relation}").fetchone()[0]
    finally:
        con.close()
