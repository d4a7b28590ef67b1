"""The `prod` target on the built synthetic city: every mart published to a real PostgreSQL server on
127.0.0.1 (tests/pg_server.py) holds exactly the rows of the DuckDB warehouse, list columns included."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from pg_server import pg_server  # noqa: F401  (session fixture)

from citysafe.config import load_settings
from citysafe.warehouse import build_marts

DSN_ENV = "TEST_CITY_MARTS_POSTGRES_DSN"


@pytest.mark.slow
def test_prod_publish_of_the_city_matches_the_duckdb_warehouse(built_city, pg_server, tmp_path, monkeypatch):
    settings = load_settings(environ={k: v for k, v in built_city.env.items() if k.startswith("CITYSAFE_")
                                      and k != "CITYSAFE_PII_KEY"})
    served = tmp_path / "prod" / Path(settings.warehouse_path).name  # not the city's served file
    monkeypatch.setenv(DSN_ENV, pg_server.dsn())
    result = build_marts(settings.model_copy(update={"warehouse_path": served}), "prod-city", target="prod", postgres_dsn_env=DSN_ENV, postgres_schema="city_marts")
    manifest = json.loads((Path(result["target_path"]) / "manifest.json").read_text())
    marts = sorted(n["name"] for n in manifest["nodes"].values()
                   if n["resource_type"] == "model" and n["fqn"][1] == "marts")
    assert result["published"]["tables"] == marts

    duck = duckdb.connect(str(served), read_only=True)
    with pg_server.connect() as pg:
        for mart in marts:
            d_count = duck.execute(f"select count(*) from {mart}").fetchone()[0]
            p_count = pg.execute(f"select count(*) from city_marts.{mart}").fetchone()[0]
            assert (mart, p_count) == (mart, d_count)
            d_cols = [r[0] for r in duck.execute("select column_name from information_schema.columns "
                                                 "where table_name = ? order by ordinal_position", [mart]).fetchall()]
            p_cols = [r[0] for r in pg.execute("select column_name from information_schema.columns where "
                                               "table_schema = 'city_marts' and table_name = %s order by ordinal_position",
                                               (mart,)).fetchall()]
            assert p_cols == d_cols
        # the city's incidents arrive whole: the same total per district in both databases
        query = "select district_code, sum(incident_count) from {} group by 1 order by 1"
        assert [tuple(map(str, r)) for r in pg.execute(query.format("city_marts.mart_incident_district_week")).fetchall()] \
            == [tuple(map(str, r)) for r in duck.execute(query.format("mart_incident_district_week")).fetchall()]
    duck.close()
    assert sum(result["models"][m] for m in marts) > 1000  # a real city, not empty tables
