"""Real incident sources (other cities) -> silver.incident, on the samples in tests/data/real.

Each real incident source is ingested into bronze and run through the silver incident job in one shared
lake: every bronze row must be published, quarantined or counted as a duplicate; the job's mapping rate
must be code_mapping's figure on the same bronze rows; one known row per source checks the local ->
UTC conversion (its city's time zone, DST included); districts come from the source's own crosswalk and
points outside the city's bounds are quarantined. The synthetic city's behaviour is covered, unchanged,
by tests/test_silver_incident.py and tests/test_silver_fire_hotline.py.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from citysafe import code_mapping, quality, reference
from citysafe.config import load_settings
from citysafe.sources import get_source
from spark_jobs import bronze, silver, silver_incident
from spark_jobs.bronze import bronze_spec

SAMPLES = Path(__file__).resolve().parent / "data" / "real"
SOURCES = [
    "real_chicago_crimes",
    "real_houston_crime",
    "real_nyc_vehicle_thefts",
    "real_nypd_collisions",
    "real_sf_fire_calls",
    "real_nyc_constituent_complaints",
]
PII_KEY = "real-silver-test-key-0123456789abcdef"

# source -> (source_record_id, delivered local time, expected occurred_at_utc, expected district_code)
KNOWN = {
    # 3/17/2017 4:30 Chicago daylight time (UTC-5)
    "real_chicago_crimes": ("10880845.0", "2017-03-17 04:30", dt.datetime(2017, 3, 17, 9, 30), "CHI-024"),
    # date 1/1/2010 + hour 0, Houston standard time (UTC-6); the delivered UTC `time` says 06:00 too
    "real_houston_crime": (
        "2010-01-01 06:00:00|burglary|070|7C20|4400-4499|liberty|rd|-|1",
        "2010-01-01 00:00",
        dt.datetime(2010, 1, 1, 6, 0),
        "HOU-07",
    ),
    # 2014-01-01 01:25 New York standard time (UTC-5); census block 36005... = the Bronx
    "real_nyc_vehicle_thefts": ("12386093", "2014-01-01 01:25", dt.datetime(2014, 1, 1, 6, 25), "NYC-BX"),
    # 01/01/2013 + 1:40
    "real_nypd_collisions": ("27823", "2013-01-01 01:40", dt.datetime(2013, 1, 1, 6, 40), "NYC-MN"),
    # 12/31/2016 11:14:57 PM Pacific standard time (UTC-8)
    "real_sf_fire_calls": ("163663866", "2016-12-31 23:14:57", dt.datetime(2017, 1, 1, 7, 14, 57), "SF-B06"),
    # 2024-03-05 (a date: local midnight, UTC-5); borough Staten Island
    "real_nyc_constituent_complaints": ("NYCC51506215", "2024-03-05 00:00", dt.datetime(2024, 3, 5, 5, 0), "NYC-SI"),
}


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    settings = load_settings(
        environ={
            "CITYSAFE_LAKE_ROOT": str(tmp_path_factory.mktemp("real-silver") / "lake"),
            "CITYSAFE_REAL_DATA_ROOT": str(SAMPLES),
        }
    )
    results = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CITYSAFE_PII_KEY", PII_KEY)
        for name in SOURCES:
            source = get_source(name)
            bronze.ingest(spark, settings, source)
            results[name] = silver.run(spark, settings, source, "real-1")
    incident = DeltaTable(str(settings.silver_dir / "incident")).to_pandas()
    quarantine = DeltaTable(str(settings.silver_dir / "quarantine")).to_pandas()
    return settings, results, incident, quarantine


@pytest.mark.parametrize("name", SOURCES)
def test_every_bronze_row_is_accounted_for(lake, name):
    settings, results, incident, quarantine = lake
    r = results[name]
    rows = DeltaTable(str(settings.bronze_dir / name)).to_pyarrow_table(columns=["_batch_id"]).num_rows
    assert rows == r["rows_read"] > 0
    assert r["reconciled"]
    assert r["published"] + sum(r["quarantined"].values()) + r["duplicates"] == rows
    assert (incident["source"] == name).sum() == r["published"]
    assert (quarantine["source"] == name).sum() == sum(r["quarantined"].values())
    assert r["validation"]["success"]


@pytest.mark.parametrize("name", SOURCES)
def test_mapping_rate_is_code_mappings_figure(lake, name):
    settings, results, incident, quarantine = lake
    stats = code_mapping.mapping_stats(name, code_mapping.read_bronze(settings, get_source(name)))
    m = results[name]["mapping"]
    assert (m["rows"], m["rows_mapped"]) == (stats.rows, stats.rows_mapped)
    assert m["rate"] == pytest.approx(stats.mapping_rate)
    # Published codes are crosswalked codes; unmapped ones are quarantined with code_mapping's code text.
    target = set(reference.crosswalk(m["crosswalk"])["source_code"])
    assert set(incident.loc[incident["source"] == name, "source_code"]) <= target
    unmapped = {c for c, _ in stats.unmapped}
    details = quarantine.loc[(quarantine["source"] == name) & (quarantine["reason"] == "unmapped_code"), "detail"]
    assert {d.removeprefix("code: no crosswalk entry for ") for d in details} <= unmapped


@pytest.mark.parametrize("name", SOURCES)
def test_steward_decisions_route_codes_to_their_own_reasons(lake, name):
    """Codes decided out of scope / unclassifiable (reference/crosswalks/decisions) are quarantined under
    those reasons, with the decision in the detail; only undecided codes and gaps stay unmapped_code.
    Row counts per reason equal code_mapping's (pandas) count of the same decisions on bronze."""
    settings, results, incident, quarantine = lake
    stats = code_mapping.mapping_stats(name, code_mapping.read_bronze(settings, get_source(name)))
    mine = quarantine[quarantine["source"] == name]
    crosswalk = results[name]["mapping"]["crosswalk"]
    for reason, decision in (("out_of_scope", "out_of_scope"), ("unclassifiable_code", "unclassifiable")):
        rows = mine[mine["reason"] == reason]
        expected = stats.rows_by_decision.get(decision, 0)
        # rows quarantined earlier for another reason (e.g. a bad timestamp) are not counted twice
        assert len(rows) <= expected, (reason, len(rows), expected)
        for detail in rows["detail"]:
            code = detail.removeprefix("code: ").split(" is out of scope by")[0].split(" does not tell")[0]
            found = code_mapping.decision_for(crosswalk, code)
            assert found is not None and found.decision == decision, detail
            assert found.note in detail
    unmapped = mine.loc[mine["reason"] == "unmapped_code", "detail"].str.removeprefix("code: no crosswalk entry for ")
    for code in unmapped:
        found = code_mapping.decision_for(crosswalk, None if code == "(empty)" else code)
        assert found is None or found.decision == "taxonomy_gap", (code, found)
    if name == "real_nyc_constituent_complaints":  # the sample has casework: the reason is really used
        assert (mine["reason"] == "out_of_scope").sum() > 0


@pytest.mark.parametrize("name", SOURCES)
def test_local_time_of_a_known_row_becomes_utc(lake, name):
    _, _, incident, _ = lake
    record_id, local, utc, district = KNOWN[name]
    row = incident[(incident["source"] == name) & (incident["source_record_id"] == record_id)]
    assert len(row) == 1, f"{name}: {record_id} not published"
    row = row.iloc[0]
    assert row["occurred_at_utc"].tz_convert("UTC").tz_localize(None).to_pydatetime() == utc
    assert (
        pd.Timestamp(row["occurred_at_local"]).strftime("%Y-%m-%d %H:%M" + (":%S" if len(local) > 16 else "")) == local
    )
    assert row["district_code"] == district


@pytest.mark.parametrize("name", SOURCES)
def test_places_come_from_the_sources_own_geography(lake, name):
    _, _, incident, quarantine = lake
    geo = get_source(name).silver.geography
    mine = incident[incident["source"] == name]
    assert set(mine["district_code"]) <= set(geo.district.district_codes())
    min_lon, min_lat, max_lon, max_lat = geo.bounds
    points = mine[mine["location_quality"] == "point"]
    assert points["lon"].between(min_lon, max_lon).all() and points["lat"].between(min_lat, max_lat).all()
    assert points["h3_cell"].notna().all()
    rest = mine[mine["location_quality"] == "district_only"]
    assert rest["lon"].isna().all() and rest["h3_cell"].isna().all()
    if name == "real_nyc_constituent_complaints":  # no coordinates delivered
        assert len(rest) == len(mine) > 0
    elif name != "real_nypd_collisions":
        assert len(points) > 0
    unknown = quarantine[(quarantine["source"] == name) & (quarantine["reason"] == "unknown_district")]
    assert all(f"reference/districts/{geo.district.crosswalk}.csv" in d for d in unknown["detail"])


def test_suite_variables_follow_the_sources_geography(lake):
    settings = lake[0]
    source = get_source("real_chicago_crimes")
    v = quality.suite_variables(settings, dt.datetime.now(dt.UTC), source)
    assert v["district_codes"] == source.silver.geography.district.district_codes()
    assert "CHI-011" in v["district_codes"]
    assert (
        v["city_min_lon"],
        v["city_min_lat"],
        v["city_max_lon"],
        v["city_max_lat"],
    ) == source.silver.geography.bounds


def test_outside_unknown_and_missing_places(spark, lake):
    """Edits of real Houston rows: a geocode in another state, an unknown beat, no point, a bad hour."""
    settings = lake[0]
    source = get_source("real_houston_crime")
    table = DeltaTable(str(settings.bronze_dir / source.name)).to_pyarrow_table()
    df = table.to_pandas()
    df = df[df["offense"] == "burglary"].head(4).reset_index(drop=True)
    df.loc[0, ["lon", "lat"]] = ["-95.4", "37.3"]  # outside Houston
    df.loc[1, ["beat"]] = ["UNK"]  # not in the district crosswalk
    df.loc[2, ["lon", "lat"]] = ["", ""]  # no point: district only
    df.loc[3, ["hour"]] = ["99"]  # unreadable time
    frame = spark.createDataFrame(
        pa.Table.from_pandas(df, schema=bronze_spec(settings, source).arrow_schema(), preserve_index=False)
    )
    ref = silver_incident.load_reference(spark, settings, source)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    published, quarantined, duplicates = silver_incident.transform(frame, source, ref, b"k" * 32, now)
    rows = df["_source_row_number"].tolist()
    reasons = {r["_source_row_number"]: (r["reason"], r["detail"]) for r in quarantined.collect()}
    pub = {r["_source_row_number"]: r for r in published.collect()}
    assert set(reasons) | set(pub) == set(rows)
    assert reasons[rows[0]][0] == "coordinates_outside_city"
    assert reasons[rows[1]] == (
        "unknown_district",
        "district: beat UNK not in reference/districts/houston_police_districts.csv",
    )
    assert reasons[rows[3]][0] == "invalid_timestamp"
    third = pub[rows[2]]
    assert (third["location_quality"], third["lon"], third["h3_cell"]) == ("district_only", None, None)
    assert third["district_code"].startswith("HOU-")
    assert duplicates.count() == 0
