"""Every delivery of the synthetic city has a registry entry (sources/*.yaml, tag `synthetic`) and lands in
bronze exactly as delivered: row counts equal the generator's `rows_delivered`, nothing malformed, every
delivered column declared, personal columns marked, re-runs idempotent, re-deliveries handled by checksum.

Bronze is append-only and keeps every delivered line (duplicates and revisions included); dropping
duplicates is silver's job, by each source's primary_key.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from deltalake import DeltaTable

import synthetic_city
from citysafe import delta_io
from citysafe.sources import load_registry
from spark_jobs import bronze
from synthetic_city.people import SURNAMES

from tests_support import lake_settings

SYNTHETIC = {name: s for name, s in load_registry().items() if "synthetic" in s.tags}


def _settings(root: Path, synthetic: Path):
    return lake_settings(root / "lake", synthetic)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("synthetic_sources")
    synthetic = tmp / "synthetic"
    truth = synthetic_city.generate(
        synthetic,
        scale=0.005,
        seed=7,
        start_date=dt.date(2025, 1, 1),
        days=60,
        timezone="Asia/Shanghai",
        h3_resolution=8,
    )
    return tmp, synthetic, _settings(tmp, synthetic), truth


def _bronze(settings, source):
    return DeltaTable(str(bronze.bronze_spec(settings, source).path)).to_pyarrow_table()


def _versions(settings) -> dict[str, int | None]:
    return {name: delta_io.version(bronze.bronze_spec(settings, s)) for name, s in SYNTHETIC.items()}


@pytest.fixture(scope="module")
def ingested(spark, city):
    _, _, settings, _ = city
    results = {name: bronze.ingest(spark, settings, source) for name, source in SYNTHETIC.items()}
    return results, _versions(settings)


def test_every_delivery_has_a_synthetic_registry_entry(city):
    _, _, _, truth = city
    assert set(SYNTHETIC) == set(truth["sources"])
    departments = {name: s.department for name, s in SYNTHETIC.items()}
    assert departments == {
        "police_incidents": "police",
        "fire_calls": "fire",
        "hotline_tickets": "hotline_12345",
        "hazard_inspections": "emergency_management",
        "enterprise_registry": "market_regulation",
        "device_registry": "iot_platform",
        "device_readings": "iot_platform",
        "weather_daily": "meteorology",
    }
    for name, source in SYNTHETIC.items():
        assert source.connector.type == "files" and source.connector.path.startswith("{synthetic_root}/"), name
        assert set(source.primary_key) <= set(source.required_columns), name
        assert source.freshness.warn_after_hours < source.freshness.error_after_hours, name
    assert SYNTHETIC["device_readings"].kind == "device_log"
    assert SYNTHETIC["device_readings"].primary_key == ["device_id", "seq"]
    assert SYNTHETIC["device_readings"].schedule == "@hourly"
    assert SYNTHETIC["hotline_tickets"].format.encoding in ("gbk", "gb18030")


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_bronze_holds_exactly_the_delivered_rows(city, ingested, name):
    _, _, settings, truth = city
    results, _ = ingested
    expected = truth["sources"][name]
    result = results[name]
    table = _bronze(settings, SYNTHETIC[name])
    assert table.num_rows == expected["rows_delivered"] == result["rows_read"] == result["published"]
    assert result["malformed_kept_with_parse_error"] == 0
    assert table["_parse_error"].null_count == table.num_rows  # the generator writes well-formed records
    # Every delivered column is declared: nothing spills into _extra_fields.
    assert table["_extra_fields"].null_count == table.num_rows
    assert len(set(table["_source_file"].to_pylist())) == expected["files"]
    for column in SYNTHETIC[name].primary_key:
        assert table[column].null_count == 0, column


# --- personal data: columns that hold names, phone numbers or ID numbers are declared personal ---------

_PHONE = re.compile(r"1[3-9]\d{9}|0\d{2,3}-\d{7,8}")
_ID = re.compile(r"\d{6}(19\d\d|20[0-2]\d)(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])\d{3}[\dX]")
_NAME = re.compile(r"[\u4e00-\u9fff]{2,3}")
_ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


def _is_id_number(v: str) -> bool:  # GB 11643: ISO 7064 MOD 11-2 check character
    return bool(_ID.fullmatch(v)) and "10X98765432"[sum(int(c) * w for c, w in zip(v, _ID_WEIGHTS)) % 11] == v[-1]


def _holds_personal_values(values: list[str | None]) -> bool:
    """Most non-empty values are phone numbers, ID numbers or (varied) personal names."""
    present = [v for v in values if v]
    if not present:
        return False
    share = lambda pred: sum(map(pred, present)) / len(present)  # noqa: E731
    if share(lambda v: bool(_PHONE.fullmatch(v))) > 0.5 or share(_is_id_number) > 0.5:
        return True
    surnames = set(SURNAMES)
    names = share(lambda v: bool(_NAME.fullmatch(v)) and v[0] in surnames)
    return names > 0.5 and len(set(present)) / len(present) > 0.3  # districts/statuses repeat, names vary


def test_personal_columns_are_declared(city, ingested):
    _, synthetic, settings, _ = city
    found = {}
    for name, source in SYNTHETIC.items():
        table = _bronze(settings, source)
        holding = {c for c in source.columns if _holds_personal_values(table[c].to_pylist())}
        found[name] = sorted(holding)
        assert holding == set(source.personal_columns), name
    assert found["hotline_tickets"] == ["caller_name", "caller_phone"]
    assert found["enterprise_registry"] == ["legal_representative"]
    assert found["fire_calls"] == ["caller_phone"]
    # Free text (address, complaint content) carries a phone or a name only now and then: it stays internal
    # in bronze (never public) and is scrubbed in silver; the truth lists those records.
    free_text = {
        (line.split(",")[0], line.split(",")[2])
        for line in (synthetic / "truth" / "pii_in_free_text.csv").read_text(encoding="utf-8").splitlines()[1:]
    }
    for source_name, column in free_text:
        sensitivity = {c.name: c.sensitivity for c in SYNTHETIC[source_name].schema_}[column]
        assert sensitivity != "public", (source_name, column)


# --- idempotence and re-deliveries -------------------------------------------------------------------


def test_second_ingest_adds_nothing(spark, city, ingested):
    _, _, settings, truth = city
    _, versions = ingested
    for name, source in SYNTHETIC.items():
        again = bronze.ingest(spark, settings, source)
        assert again["rows_read"] == 0 and again["batches"] == [], name
    assert _versions(settings) == versions
    for name, source in SYNTHETIC.items():
        assert _bronze(settings, source).num_rows == truth["sources"][name]["rows_delivered"]


def _reading_rows(table, source_file: str) -> list[tuple]:
    cols = SYNTHETIC["device_readings"].columns
    rows = table.filter(table["_source_file"].to_numpy(zero_copy_only=False) == source_file)
    return sorted(zip(*(rows[c].to_pylist() for c in cols)))


def test_redelivered_device_batches(spark, city):
    """A batch file delivered again under a new name with identical bytes is recognised by its sha256 and
    not landed twice. A batch with the same readings but different bytes (re-serialised with another key
    order) is a new delivery: it lands as a new batch, and bronze then holds each of those readings twice,
    each row with its own lineage (_batch_id, _source_file). Exactly-once per (device_id, seq) is not a
    bronze property: silver enforces it by the primary key [device_id, seq] (one row per key)."""
    tmp, synthetic, _, truth = city
    # A lake of its own (and a copy of the readings), so the other tests' lake keeps its exact counts.
    root = tmp / "redelivery"
    readings = root / "synthetic" / "devices" / "readings"
    shutil.copytree(synthetic / "devices" / "readings", readings)
    settings = _settings(root, root / "synthetic")
    source = SYNTHETIC["device_readings"]
    spec = bronze.bronze_spec(settings, source)
    first = bronze.ingest(spark, settings, source)
    assert first["rows_read"] == truth["sources"]["device_readings"]["rows_delivered"]
    before = _bronze(settings, source)
    keys_before = Counter(zip(before["device_id"].to_pylist(), before["seq"].to_pylist()))

    # 1. Same bytes, new name: skipped by checksum, no new Delta version.
    shutil.copyfile(readings / "batch_00005.jsonl", readings / "batch_90005.jsonl")
    version = delta_io.version(spec)
    same = bronze.ingest(spark, settings, source)
    assert same["rows_read"] == 0 and same["batches"] == []
    assert delta_io.version(spec) == version

    # 2. Same readings, different bytes (keys in reverse order): a new batch, landed and appended.
    original = (readings / "batch_00006.jsonl").read_text(encoding="utf-8").splitlines()
    reserialised = [json.dumps(dict(reversed(json.loads(line).items())), separators=(",", ":")) for line in original]
    assert reserialised != original
    (readings / "batch_90006.jsonl").write_text("\n".join(reserialised) + "\n", encoding="utf-8")
    resent = bronze.ingest(spark, settings, source)
    assert resent["rows_read"] == len(original) > 0 and len(resent["batches"]) == 1
    assert delta_io.version(spec) == version + 1

    after = _bronze(settings, source)
    assert after.num_rows == before.num_rows + len(original)
    # The re-sent readings are field-for-field the originals, visible twice with different lineage ...
    assert _reading_rows(after, "batch_90006.jsonl") == _reading_rows(after, "batch_00006.jsonl")
    lineage = {
        (f, b)
        for f, b in zip(after["_source_file"].to_pylist(), after["_batch_id"].to_pylist())
        if f in ("batch_00006.jsonl", "batch_90006.jsonl")
    }
    assert len(lineage) == 2 and len({b for _, b in lineage}) == 2
    keys_after = Counter(zip(after["device_id"].to_pylist(), after["seq"].to_pylist()))
    resent_keys = Counter((r[0], r[2]) for r in _reading_rows(after, "batch_90006.jsonl"))
    assert all(keys_after[k] == keys_before[k] + n >= 2 for k, n in resent_keys.items())
    # ... and no new (device_id, seq) key: one row per key in silver gives the same readings as before.
    assert set(keys_after) == set(keys_before)
