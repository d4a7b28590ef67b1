"""Landing and bronze: immutable files with a manifest, picked up once, every record kept with lineage."""

from __future__ import annotations

import json
import os

import pytest

from citysafe import delta_io
from citysafe.config import load_settings
from citysafe.connectors.files import FilesConnector
from citysafe.formats import FormatError, parse_csv
from citysafe.landing import land_batch, landed_checksums
from citysafe.sources import get_source
from spark_jobs import bronze

SOURCE = get_source("police_incidents")
HEADER = ",".join(SOURCE.columns)


def _settings(tmp_path):
    return load_settings(
        environ={"CITYSAFE_LAKE_ROOT": str(tmp_path / "lake"), "CITYSAFE_SYNTHETIC_ROOT": str(tmp_path / "syn")}
    )


def _parse(path):
    return parse_csv(path.name, path.read_bytes(), SOURCE)


def _land_new(folder, landing):
    settings = load_settings(environ={"CITYSAFE_SYNTHETIC_ROOT": str(folder.parent)})
    batches = list(FilesConnector().batches(SOURCE, settings, None, landed_checksums(landing)))
    return land_batch(SOURCE, landing, batches[0])[0] if batches else None


def _deliver(tmp_path, name, lines, encoding="utf-8"):
    folder = tmp_path / "syn" / "police"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(("\n".join([HEADER, *lines]) + "\n").encode(encoding))
    return folder


GOOD = 'JQ1,2025-03-04 13:22:10,0101,盗窃,江岸区,114.25,30.55,"解放大道1号, 3楼",张三,13800138000,110101199003071234,已受理,2025-03-05 09:00:00'
MULTILINE = 'JQ2,2025-03-04 13:22:10,0101,盗窃,江岸区,114.25,30.55,"line one\nline two",李四,13800138001,,已受理,2025-03-05 09:00:00'
SHORT = "JQ3,2025-03-04 13:22:10,0101"


def test_parse_keeps_malformed_records_with_their_row_number(tmp_path):
    folder = _deliver(tmp_path, "police_incidents_2025-03.csv", [GOOD, MULTILINE, SHORT])
    parsed = _parse(folder / "police_incidents_2025-03.csv")
    assert parsed.rows == 3 and parsed.row_numbers == [1, 2, 3]
    assert parsed.columns["address"][:2] == ["解放大道1号, 3楼", "line one\nline two"]
    assert parsed.parse_errors == [None, None, "expected 13 fields, found 3"]
    assert parsed.raw_records[2] == SHORT


def test_wrong_encoding_and_missing_column_stop_with_a_clear_error(tmp_path):
    folder = _deliver(tmp_path, "police_incidents_2025-03.csv", [GOOD], encoding="gbk")
    with pytest.raises(FormatError, match=r"police_incidents_2025-03.csv: not valid utf-8 at byte \d+.*encoding"):
        _parse(folder / "police_incidents_2025-03.csv")
    (folder / "police_incidents_2025-03.csv").write_text(HEADER.replace(",report_time", "") + "\n")
    with pytest.raises(FormatError, match=r"missing required column\(s\) \['report_time'\]"):
        _parse(folder / "police_incidents_2025-03.csv")


def test_files_land_once_immutable_with_manifest(tmp_path):
    folder = _deliver(tmp_path, "police_incidents_2025-03.csv", [GOOD, MULTILINE])
    landing = tmp_path / "lake" / "landing" / "police_incidents"
    manifest = _land_new(folder, landing)
    assert manifest["rows"] == 2 and len(manifest["files"]) == 1
    landed = landing / manifest["batch_id"] / "police_incidents_2025-03.csv"
    assert landed.read_bytes() == (folder / "police_incidents_2025-03.csv").read_bytes()
    assert not os.access(landed, os.W_OK) or os.geteuid() == 0  # read-only (root may still write)
    assert oct(landed.stat().st_mode)[-3:] == "444"
    on_disk = json.loads((landing / manifest["batch_id"] / "manifest.json").read_text())
    assert on_disk["files"][0]["sha256"] == manifest["files"][0]["sha256"]
    again = _land_new(folder, landing)
    assert again is None  # same checksum: never twice
    _deliver(tmp_path, "police_incidents_2025-04.csv", [GOOD])
    third = _land_new(folder, landing)
    assert [f["name"] for f in third["files"]] == ["police_incidents_2025-04.csv"]


def test_bronze_appends_each_batch_once_with_lineage(spark, tmp_path):
    settings = _settings(tmp_path)
    _deliver(tmp_path, "police_incidents_2025-03.csv", [GOOD, MULTILINE, SHORT])
    first = bronze.ingest(spark, settings, SOURCE)
    assert first["rows_read"] == 3 and first["published"] == 3 and first["malformed_kept_with_parse_error"] == 1
    spec = bronze.bronze_spec(settings, SOURCE)
    rows = sorted(delta_io.read(spark, spec).collect(), key=lambda r: r._source_row_number)
    assert [r._source_row_number for r in rows] == [1, 2, 3]
    assert rows[0]._source_file == "police_incidents_2025-03.csv" and rows[0]._batch_id == first["batches"][0]
    assert rows[2]._parse_error and rows[2]._raw_record == SHORT
    version = delta_io.version(spec)
    second = bronze.ingest(spark, settings, SOURCE)
    assert second["rows_read"] == 0 and delta_io.version(spec) == version


def test_crash_between_bronze_commit_and_watermark_is_not_a_duplicate(spark, tmp_path):
    settings = _settings(tmp_path)
    _deliver(tmp_path, "police_incidents_2025-03.csv", [GOOD])
    bronze.ingest(spark, settings, SOURCE)
    # Simulate the crash: the bronze commit happened, the state (watermark) write did not.
    (settings.state_dir / "bronze" / "police_incidents.json").unlink()
    again = bronze.ingest(spark, settings, SOURCE)
    assert again["rows_read"] == 0
    assert delta_io.read(spark, bronze.bronze_spec(settings, SOURCE)).count() == 1
