"""Configuration and source-registry validation: clear errors that name the key or the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from citysafe.config import REPO_ROOT, ConfigError, load_settings
from citysafe.sources import SOURCES_DIR, SourceError, get_source, load_registry, load_source_file


def test_defaults_resolve_paths_against_the_repo():
    s = load_settings(environ={})
    assert s.engine == "sail" and s.lake_root == REPO_ROOT / "var" / "lake"
    assert s.timezone == "Asia/Shanghai" and 0 <= s.h3_resolution <= 15


def test_environment_overrides_nested_keys_and_types():
    s = load_settings(
        environ={
            "CITYSAFE_SCALE": "0.5",
            "CITYSAFE_CITY__DAYS": "30",
            "CITYSAFE_ENGINE": "sc://spark.internal:15002",
            "CITYSAFE_LAKE_ROOT": "/data/lake",
        }
    )
    assert s.scale == 0.5 and s.city.days == 30 and s.engine == "sc://spark.internal:15002"
    assert s.lake_root == Path("/data/lake")


@pytest.mark.parametrize(
    "env, message",
    [
        ({"CITYSAFE_ENGINE": "spark://x"}, "engine: must be 'sail', 'sail-local-cluster' or a Spark Connect URL"),
        ({"CITYSAFE_TIMEZONE": "Mars/Olympus"}, "timezone: unknown IANA time zone"),
        ({"CITYSAFE_H3_RESOLUTION": "16"}, "h3_resolution"),
        ({"CITYSAFE_SCALEE": "1"}, "CITYSAFE_SCALEE: unknown config key 'scalee'"),
        ({"CITYSAFE_CITY__WEEKS": "3"}, "city.weeks: unknown key"),
        ({"CITYSAFE_PII_KEY_ENV": "my-secret-literal"}, "pii_key_env: must be the NAME of an environment variable"),
        ({"CITYSAFE_WAREHOUSE_MEMORY_LIMIT": "80%"}, "warehouse_memory_limit: give an amount with a unit DuckDB"),
    ],
)
def test_bad_values_name_the_key(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(environ=env)


def test_unknown_key_in_file(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "lake_root: a\nwarehouse_path: b\nsynthetic_root: c\ndistricts_geojson: d\ndistrict_aliases: e\nlake_rot: x\n"
    )
    with pytest.raises(ConfigError, match="lake_rot: unknown key"):
        load_settings(tmp_path / "c.yaml", environ={})


def test_pii_key_comes_only_from_the_environment(monkeypatch):
    s = load_settings(environ={})
    monkeypatch.delenv("CITYSAFE_PII_KEY", raising=False)
    with pytest.raises(ConfigError, match="set the environment variable CITYSAFE_PII_KEY"):
        s.pii_key()
    monkeypatch.setenv("CITYSAFE_PII_KEY", "k" * 32)
    assert s.pii_key() == b"k" * 32


def test_registry_loads_and_unknown_source_is_explained():
    assert "police_incidents" in load_registry()
    with pytest.raises(SourceError, match="unknown source 'polise'.*police_incidents"):
        get_source("polise")


def test_bad_source_entry_names_file_and_key(tmp_path):
    text = (SOURCES_DIR / "police_incidents.yaml").read_text()
    bad = tmp_path / "police_incidents.yaml"
    bad.write_text(text.replace("primary_key: [case_no]", "primary_key: [case_number]"))
    with pytest.raises(
        SourceError, match=r"police_incidents.yaml: invalid source entry: .*'case_number' is not a column"
    ):
        load_source_file(bad)
    bad.write_text(text.replace("kind: records", "kind: recordz"))
    with pytest.raises(SourceError, match="kind"):
        load_source_file(bad)
    bad.write_text(text.replace("reporter_id: reporter_id_no", ""))
    with pytest.raises(SourceError, match=r"personal column\(s\) \['reporter_id_no'\] have no hashing role"):
        load_source_file(bad)


def test_link_window_may_be_asymmetric_but_not_wider_than_the_buckets():
    from pydantic import ValidationError

    from citysafe.sources import SilverTarget

    assert SilverTarget.Links(sources=["police_incidents"]).earliest_minutes == -30
    assert SilverTarget.Links(sources=["police_incidents"], min_minutes=-10).earliest_minutes == -10
    with pytest.raises(ValidationError, match="min_minutes -40 reaches further back than max_minutes 30"):
        SilverTarget.Links(sources=["police_incidents"], min_minutes=-40)
    with pytest.raises(ValidationError):
        SilverTarget.Links(sources=["police_incidents"], min_minutes=5)  # a window must include 0


def test_dbt_vars_are_derived_from_the_registry(tmp_path):
    """incident_sources / response_time_sources come from sources/*.yaml, not a second list in dbt."""
    import yaml

    from citysafe.warehouse import DBT_PROJECT_DIR, dbt_vars

    settings = load_settings(environ={})
    derived = dbt_vars(settings)
    assert derived["city_timezone"] == settings.timezone
    assert derived["incident_sources"] == [
        "fire_calls",
        "hotline_tickets",
        "police_incidents",
        "real_chicago_crimes",
        "real_houston_crime",
        "real_nyc_constituent_complaints",
        "real_nyc_vehicle_thefts",
        "real_nypd_collisions",
        "real_sf_fire_calls",
    ]
    assert derived["response_time_sources"] == ["fire_calls", "real_sf_fire_calls"]
    project_vars = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())["vars"]
    assert project_vars["incident_sources"] == [] and project_vars["response_time_sources"] == []

    # a new department with dispatch times is one YAML file: it joins both lists, no dbt edit
    folder = tmp_path / "sources"
    shutil.copytree(SOURCES_DIR, folder)
    text = (folder / "fire_calls.yaml").read_text(encoding="utf-8").replace("name: fire_calls", "name: ems_calls", 1)
    (folder / "ems_calls.yaml").write_text(text, encoding="utf-8")
    again = dbt_vars(settings, load_registry(folder))
    assert "ems_calls" in again["incident_sources"] and "ems_calls" in again["response_time_sources"]
