"""Silver benchmark: bronze -> silver per source (write-audit-publish on Sail), timed and split, with DuckDB
running the same cleaning SQL on the same bronze Delta tables as a yardstick and as an equivalence check.

    python benchmarks/silver_benchmark.py [--scales 0.05 0.25] [--days 365] [--seed 20260101]
                                          [--out var/benchmark_silver] [--engine sail]
                                          [--sources ...] [--duckdb-sources police_incidents device_readings]

For each scale: generate the synthetic city (reused when the same city is already in --out), ingest every
synthetic source into bronze once (incremental: a lake already holding them is reused; not timed), then for
each source with a silver path: delete <lake>/silver, <lake>/staging, <lake>/_state/silver (and the run
folders / Data Docs those feed), run the source's prerequisites untimed (device registry before readings,
enterprise registry before hazards, the linked departments before the hotline) and time
`spark_jobs.silver.run` for it, split into transform + stage / GX gate / publish by wrapping functions.
For `police_incidents` and `device_readings` DuckDB then runs (in a fresh Python process) the same cleaning
logic as SQL over delta_scan('<lake>/bronze/<source>') and writes the published and quarantined rows to Parquet; its counts
(published, quarantined by reason, duplicates) must equal the Spark job's (else MISMATCH and exit code 1),
and the rows themselves are compared with what the Spark job put into silver. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent  # the packages come from the venv (editable install)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("RUST_LOG", "error")

import duckdb  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402

from citysafe import data_docs, delta_io, quality, reference  # noqa: E402
from citysafe.engine import spark_session  # noqa: E402
from citysafe.sources import Source, load_registry  # noqa: E402
from citysafe.warehouse import delta_extension_path  # noqa: E402
from spark_jobs import bronze, silver, udfs  # noqa: E402

DUCKDB_SOURCES = ("police_incidents", "device_readings")  # the sources with an equivalent SQL here
# Used only when the environment has no key: the data is synthetic, the key is not a secret here.
BENCH_PII_KEY = "citysafe-silver-benchmark-key-not-a-secret"
SPARK_INCLUDES = (
    "load reference, bronze read + count, transform, staging Delta write, duplicate and "
    "quarantine-reason counts; GX gate (suite on the staged table, result JSON, validation_result "
    "append, Data Docs refresh); publish (MERGE into silver, MERGE quarantine, "
    "incident_link / hourly refresh, state)"
)
DUCKDB_INCLUDES = (
    "the cleaning query only: delta_scan of bronze, parse, dedupe, joins, UDFs, quarantine "
    "reasons, Parquet files of published and quarantined rows, duplicate count"
)


# --- city, settings, bronze ------------------------------------------------------------------------


# The city and its settings are made exactly as the ingest benchmark makes them.
from ingest_benchmark import generate, settings_for  # noqa: E402


def fresh_silver(settings) -> None:
    """A lake with bronze only: no silver tables, staging, published-batch state, run folders, GX results or docs."""
    for path in (
        settings.silver_dir,
        settings.staging_dir,
        settings.state_dir / "silver",
        settings.runs_dir,
        settings.lake_root / "data_docs",
        settings.lake_root / "gx",
    ):
        shutil.rmtree(path, ignore_errors=True)


def prerequisites(source: Source, sources: dict[str, Source]) -> list[str]:
    """Sources whose silver job must run (untimed) before `source`'s, on a fresh silver."""
    table = source.silver.table
    if table == "device_reading":
        return [source.silver.registry]
    if table == "hazard":
        return [n for n, s in sources.items() if s.silver.table == "enterprise"]
    links = getattr(source.silver, "links", None)
    return [n for n in links.sources if n in sources] if links else []


# --- timing the Spark job, split by wrapping the functions run_job calls ----------------------------


class Probe:
    """Wraps, for the duration of one timed job: delta_io.stage and delta_io.materialize (the staging
    write and the plan's barriers), quality.validate_staging (the GX gate), data_docs.refresh_data_docs, delta_io.merge_upsert (MERGE into the silver table), delta_io.merge_sync
    outside the after-publish hook (MERGE of the quarantine rows) and each job module's run_job, to time
    its after_publish hook (hourly / identifier / lifecycle refresh, which may call merge_sync itself; an
    incident source's incident_link refresh follows the job and counts in its publish time)."""

    def __init__(self):
        self.marks: dict[str, float] = {}
        self.spent: dict[str, float] = defaultdict(float)
        self.in_hook = 0

    def _timed(self, key, fn, *, hook: bool = False, outside_hook_only: bool = False):
        def wrapper(*a, **kw):
            counted = not (outside_hook_only and self.in_hook)
            self.in_hook += hook
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                if counted:
                    self.spent[key] += time.perf_counter() - t0
                self.in_hook -= hook

        return wrapper

    @contextlib.contextmanager
    def installed(self):
        import importlib

        patches = []

        def patch(obj, name, new):
            patches.append((obj, name, getattr(obj, name)))
            setattr(obj, name, new)

        validate = quality.validate_staging

        def gate(*a, **kw):
            self.marks["gate_start"] = time.perf_counter()
            try:
                return validate(*a, **kw)
            finally:
                self.marks["gate_end"] = time.perf_counter()

        patch(quality, "validate_staging", gate)
        # The staging tables (delta_io.stage) and the plan's barriers (delta_io.materialize) are written
        # before the gate: each runs the plan up to it, so their time is the transform's execution.
        patch(delta_io, "stage", self._timed("staging_write", delta_io.stage))
        patch(delta_io, "materialize", self._timed("staging_write", delta_io.materialize))
        patch(data_docs, "refresh_data_docs", self._timed("docs", data_docs.refresh_data_docs))
        patch(delta_io, "merge_upsert", self._timed("merge_silver", delta_io.merge_upsert, outside_hook_only=True))
        patch(delta_io, "merge_sync", self._timed("merge_quarantine", delta_io.merge_sync, outside_hook_only=True))
        for module_name in {m for m, _ in silver.JOBS.values()}:
            module = importlib.import_module(f"spark_jobs.{module_name}")
            if hasattr(module, "run_job"):
                original = module.run_job

                def run_job(*a, _original=original, **kw):
                    if kw.get("after_publish") is not None:
                        kw["after_publish"] = self._timed("after_publish", kw["after_publish"], hook=True)
                    return _original(*a, **kw)

                patch(module, "run_job", run_job)
        try:
            yield self
        finally:
            for obj, name, old in reversed(patches):
                setattr(obj, name, old)


def time_silver(spark, settings, source: Source, run_id: str) -> dict:
    probe = Probe()
    with probe.installed():
        t0 = time.perf_counter()
        entry = silver.run(spark, settings, source, run_id)
        t1 = time.perf_counter()
    gate_start = probe.marks.get("gate_start", t1)
    gate_end = probe.marks.get("gate_end", t1)
    return {
        "entry": entry,
        "seconds": t1 - t0,
        "stage_s": gate_start - t0,
        "gate_s": gate_end - gate_start,
        "publish_s": t1 - gate_end,
        "staging_write_s": probe.spent["staging_write"],
        "docs_s": probe.spent["docs"],
        "merge_silver_s": probe.spent["merge_silver"],
        "merge_quarantine_s": probe.spent["merge_quarantine"],
        "after_publish_s": probe.spent["after_publish"],
    }


# --- DuckDB: the same cleaning logic as SQL ---------------------------------------------------------


def duckdb_connect(settings, spark_udfs: dict) -> duckdb.DuckDBPyConnection:
    """A connection with the Delta extension (from the wheel, offline), UTC session time, the parsing macros
    and the Python UDFs (the very functions the Spark job's pandas UDFs wrap)."""
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"LOAD '{str(delta_extension_path()).replace(chr(39), chr(39) * 2)}'")
    tz = settings.timezone.replace("'", "''")
    # common.parse_timestamp: local 'yyyy-MM-dd HH:mm:ss' / 'yyyy/MM/dd HH:mm:ss' / 'yyyy/MM/dd HH:mm' /
    # 'yyyy-MM-dd HH:mm' (city wall clock -> UTC), ISO with Z, ISO with an offset, epoch ms (13 digits) or s (10),
    # first match wins. Every result is a naive TIMESTAMP meaning UTC (the Spark session runs in UTC). Each form
    # is only tried on values that can match it (a space; a 'T'; 13 / 10 characters): a failing try_strptime
    # costs DuckDB about 0.6 us a value, and the guards make the parse ~10x faster with the same result.
    con.execute(f"""
        CREATE OR REPLACE MACRO cs_parse_ts(c) AS coalesce(
            CASE WHEN contains(trim(c, ' '), ' ') THEN timezone('UTC', timezone('{tz}', try_strptime(trim(c, ' '),
                ['%Y-%m-%d %H:%M:%S', '%Y/%m/%d %H:%M:%S', '%Y/%m/%d %H:%M', '%Y-%m-%d %H:%M']))) END,
            CASE WHEN contains(trim(c, ' '), 'T') THEN coalesce(
                try_strptime(trim(c, ' '), '%Y-%m-%dT%H:%M:%SZ'),
                timezone('UTC', try_strptime(trim(c, ' '), '%Y-%m-%dT%H:%M:%S%z'))) END,
            CASE WHEN length(trim(c, ' ')) = 13 AND regexp_full_match(trim(c, ' '), '[0-9]{{13}}')
                 THEN make_timestamp(TRY_CAST(trim(c, ' ') AS BIGINT) * 1000) END,
            CASE WHEN length(trim(c, ' ')) = 10 AND regexp_full_match(trim(c, ' '), '[0-9]{{10}}')
                 THEN make_timestamp(TRY_CAST(trim(c, ' ') AS BIGINT) * 1000000) END);
    """)
    # silver_incident.parse_time: the hotline's 年月日 form and a bare "0" (the epoch) on top.
    con.execute("""
        CREATE OR REPLACE MACRO cs_parse_time(c) AS coalesce(
            cs_parse_ts(replace(replace(replace(trim(c, ' '), '年', '-'), '月', '-'), '日', '')),
            CASE WHEN trim(c, ' ') = '0' THEN TIMESTAMP '1970-01-01 00:00:00' END);
        CREATE OR REPLACE MACRO cs_blank(c) AS nullif(trim(c, ' '), '');
    """)

    def arrow_udf(fn, arity):  # DuckDB reads the arity from the signature: no *args
        def out(series):
            return pa.array(series.tolist(), type=pa.string())

        if arity == 1:
            return lambda a: out(fn(a.to_pandas()))
        return lambda a, b: out(fn(a.to_pandas(), b.to_pandas()))

    for name, (fn, params) in spark_udfs.items():
        con.create_function(
            name,
            arrow_udf(fn, len(params)),
            params,
            "VARCHAR",
            type="arrow",
            null_handling="special",
            side_effects=False,
        )
    return con


def spark_udf_functions(settings, places_districts: list[dict]) -> dict:
    """The Python functions inside the Spark job's pandas UDFs (spark_jobs.udfs), unwrapped for DuckDB:
    `pandas_udf` is swapped for a decorator that keeps the function, so no Spark session is needed."""
    original = udfs.pandas_udf
    udfs.pandas_udf = lambda *_a, **_kw: (lambda fn: fn)
    try:
        return {
            "cs_hmac": (udfs.hmac_udf(settings.pii_key()), ["VARCHAR"]),
            "cs_normalize_name": (udfs.normalize_name_udf(), ["VARCHAR"]),
            "cs_district_of_point": (udfs.district_of_point_udf(places_districts), ["DOUBLE", "DOUBLE"]),
            "cs_h3_cell": (udfs.h3_cell_udf(settings.h3_resolution), ["DOUBLE", "DOUBLE"]),
        }
    finally:
        udfs.pandas_udf = original


def _sql_str(value) -> str:
    return "'" + str(value).replace("'", "''") + "'"


# Quarantine reasons in silver_incident.REASONS order (the time-order and dispatch-chain rules are left out:
# the police source declares no received/dispatched/on-scene fields, so in Spark they are constant false).
POLICE_SQL = r"""
CREATE OR REPLACE TEMP TABLE police_parsed AS
SELECT b.*,
    cs_blank(lon) AS w_lon_raw, cs_blank(lat) AS w_lat_raw,
    TRY_CAST(w_lon_raw AS DOUBLE) AS w_lon, TRY_CAST(w_lat_raw AS DOUBLE) AS w_lat,
    cs_blank(district) AS w_district_raw,
    cs_blank(case_no) AS w_record_id,
    cs_blank(report_time) AS w_occurred_raw, cs_blank(updated_at) AS w_updated_raw,
    cs_parse_time(report_time) AS w_occurred_at, cs_parse_time(updated_at) AS w_updated_at,
    cs_blank(offence_code) AS w_code, cs_blank(offence_desc) AS w_label,
    cs_blank(address) AS w_address, cs_blank(status) AS w_status,
    (_parse_error IS NULL AND w_record_id IS NOT NULL) AS w_keyed
FROM delta_scan({bronze}) b;

-- common.dedupe: rank on a narrow projection (row id + partition and order columns), joined back below.
CREATE OR REPLACE TEMP TABLE police_ranked AS
SELECT rowid AS w_row,
    CASE WHEN w_keyed THEN row_number() OVER (
        PARTITION BY w_keyed, w_record_id
        ORDER BY w_updated_at DESC NULLS LAST,
                 sha256(concat_ws(chr(31), {hash_columns})) DESC,
                 _source_file ASC, _source_row_number ASC) ELSE 1 END AS w_rank
FROM police_parsed;

CREATE OR REPLACE TEMP TABLE police_classified AS
WITH kept AS (
    SELECT p.* EXCLUDE (w_keyed) FROM police_parsed p JOIN police_ranked r ON p.rowid = r.w_row WHERE r.w_rank = 1
), coded AS (
    SELECT k.*, xw.source_label_ref, xw.subcategory_code, tx.category_code, tx.domain_code, tx.severity,
        'code: no crosswalk entry for ' || coalesce(k.w_code, '(empty)') AS w_unmapped_detail
    FROM kept k
    LEFT JOIN ref_crosswalk xw ON k.w_code = xw.source_code
    LEFT JOIN ref_taxonomy tx ON xw.subcategory_code = tx.subcategory_code
), pointed AS (
    SELECT *,
        ((w_lon_raw IS NULL AND w_lat_raw IS NULL) OR (w_lon = 0 AND w_lat = 0)) AS w_missing_point,
        (NOT w_missing_point AND w_lon IS NOT NULL AND w_lat IS NOT NULL) AS w_point_ok,
        cs_district_of_point(CASE WHEN w_point_ok THEN w_lon END, CASE WHEN w_point_ok THEN w_lat END)
            AS w_point_district,
        cs_normalize_name(w_district_raw) AS alias_key
    FROM coded
), named AS (
    SELECT p.* EXCLUDE (alias_key), al.district_code AS w_name_district
    FROM pointed p LEFT JOIN ref_aliases al ON p.alias_key = al.alias_key
), located AS (
    SELECT * REPLACE (
            CASE WHEN w_point_district IS NOT NULL THEN w_lon END AS lon,
            CASE WHEN w_point_district IS NOT NULL THEN w_lat END AS lat),
        CASE WHEN w_point_district IS NOT NULL THEN w_point_district
             WHEN w_missing_point THEN w_name_district END AS district_code,
        CASE WHEN w_point_district IS NOT NULL THEN 'point' ELSE 'district_only' END AS location_quality
    FROM named
), classified AS (
    SELECT *, cs_h3_cell(lon, lat) AS h3_cell,
        CASE
            WHEN _parse_error IS NOT NULL THEN 'malformed_record'
            WHEN w_record_id IS NULL THEN 'missing_key'
            WHEN w_occurred_at IS NULL THEN 'invalid_timestamp'
            WHEN w_updated_at IS NULL THEN 'invalid_timestamp'
            WHEN w_occurred_at < TIMESTAMP '2000-01-01' OR w_occurred_at > {now}
                 OR w_occurred_at > w_updated_at + INTERVAL 1 HOUR THEN 'timestamp_out_of_range'
            WHEN subcategory_code IS NULL THEN 'unmapped_code'
            WHEN NOT w_missing_point AND NOT w_point_ok THEN 'invalid_coordinates'
            WHEN w_point_ok AND w_point_district IS NULL THEN 'coordinates_outside_city'
            WHEN district_code IS NULL THEN 'unknown_district'
        END AS reason,
        CASE
            WHEN _parse_error IS NOT NULL THEN _parse_error
            WHEN w_record_id IS NULL THEN 'record id is empty'
            WHEN w_occurred_at IS NULL THEN 'occurred_at: cannot parse ' || coalesce(w_occurred_raw, '(empty)')
            WHEN w_updated_at IS NULL THEN 'updated_at: cannot parse ' || coalesce(w_updated_raw, '(empty)')
            WHEN w_occurred_at < TIMESTAMP '2000-01-01' OR w_occurred_at > {now}
                 OR w_occurred_at > w_updated_at + INTERVAL 1 HOUR
                THEN 'occurred_at: impossible date ' || w_occurred_raw
            WHEN subcategory_code IS NULL THEN w_unmapped_detail
            WHEN NOT w_missing_point AND NOT w_point_ok
                THEN 'lon/lat: not numbers: ' || coalesce(w_lon_raw, '') || ',' || coalesce(w_lat_raw, '')
            WHEN w_point_ok AND w_point_district IS NULL
                THEN 'lon/lat outside every district: ' || w_lon_raw || ',' || w_lat_raw
            WHEN district_code IS NULL
                THEN 'district: no coordinates and unknown name ' || coalesce(w_district_raw, '(empty)')
        END AS detail
    FROM located
), named_out AS (
    -- mask_personal: the record's own reporter name out of the address (before it is hashed) ...
    SELECT * REPLACE (
            CASE WHEN length(trim(reporter_name, ' ')) >= 2 AND address IS NOT NULL
                 THEN replace(address, trim(reporter_name, ' '), '[name]') ELSE address END AS address,
            CASE WHEN length(trim(reporter_name, ' ')) >= 2 AND w_address IS NOT NULL
                 THEN replace(w_address, trim(reporter_name, ' '), '[name]') ELSE w_address END AS w_address)
    FROM classified
), hashed AS (
    -- ... phone to digits (86 prefix dropped), ID upper-cased, then every personal column keyed-hashed ...
    SELECT * REPLACE (
            cs_hmac(cs_blank(reporter_name)) AS reporter_name,
            cs_hmac(cs_blank(regexp_replace(regexp_replace(reporter_phone, '[^0-9]', '', 'g'),
                                            '^86(1[0-9]{{10}})$', '\1'))) AS reporter_phone,
            cs_hmac(cs_blank(upper(reporter_id_no))) AS reporter_id_no)
    FROM named_out
)
-- ... and ID numbers, mobiles, landlines scrubbed from the free text.
SELECT * REPLACE ({scrub_address} AS address, {scrub_w_address} AS w_address) FROM hashed;

COPY (
    SELECT {source_prefix} || w_record_id AS incident_id, {source} AS source, w_record_id AS source_record_id,
        w_code AS source_code, coalesce(w_label, source_label_ref) AS source_label,
        domain_code, category_code, subcategory_code, severity,
        w_occurred_at AS occurred_at_utc,
        timezone({tz}, timezone('UTC', w_occurred_at)) AS occurred_at_local,
        CAST(timezone({tz}, timezone('UTC', w_occurred_at)) AS DATE) AS occurred_date_local,
        CAST(NULL AS TIMESTAMP) AS received_at_utc, CAST(NULL AS TIMESTAMP) AS dispatched_at_utc,
        CAST(NULL AS TIMESTAMP) AS on_scene_at_utc,
        district_code, lon, lat, h3_cell, location_quality, w_status AS status, w_address AS address_scrubbed,
        reporter_name AS reporter_name_hash, reporter_phone AS reporter_phone_hash,
        reporter_id_no AS reporter_id_hash, CAST(1.0 AS DOUBLE) AS classification_confidence,
        w_updated_at AS updated_at_utc, _batch_id, _source_file, _source_row_number, _ingested_at
    FROM police_classified WHERE reason IS NULL
) TO {published_file} (FORMAT parquet);

COPY (
    SELECT {source} AS source, w_record_id AS source_record_id, reason, detail,
        CASE WHEN _parse_error IS NULL THEN to_json({{{record_struct}}}) END AS record_json,
        {run_id} AS run_id, _batch_id, _source_file, _source_row_number, _ingested_at
    FROM police_classified WHERE reason IS NOT NULL
) TO {quarantine_file} (FORMAT parquet);
"""

READINGS_SQL = r"""
CREATE OR REPLACE TEMP TABLE readings_parsed AS
SELECT b.*,
    cs_blank(device_id) AS w_device,
    cs_blank(seq) AS w_seq_raw, TRY_CAST(w_seq_raw AS BIGINT) AS w_seq,
    cs_blank(ts) AS w_ts_raw, cs_parse_ts(ts) AS w_ts,
    cs_parse_ts(received_at) AS w_received,
    cs_blank(value) AS w_value_raw, TRY_CAST(w_value_raw AS DOUBLE) AS w_value,
    cs_blank(unit) AS w_unit,
    concat_ws('/', w_device, w_seq_raw) AS w_record_id,
    (_parse_error IS NULL AND w_device IS NOT NULL AND w_seq IS NOT NULL) AS w_keyed
FROM delta_scan({bronze}) b;

-- common.dedupe: rank on a narrow projection (row id + partition and order columns), joined back below.
CREATE OR REPLACE TEMP TABLE readings_ranked AS
SELECT rowid AS w_row,
    CASE WHEN w_keyed THEN row_number() OVER (
        PARTITION BY w_keyed, w_device, w_seq
        ORDER BY w_received ASC NULLS LAST,
                 sha256(concat_ws(chr(31), {hash_columns})) DESC,
                 _source_file ASC, _source_row_number ASC) ELSE 1 END AS w_rank
FROM readings_parsed;

CREATE OR REPLACE TEMP TABLE readings_classified AS
WITH kept AS (
    SELECT p.* EXCLUDE (w_keyed) FROM readings_parsed p JOIN readings_ranked r ON p.rowid = r.w_row WHERE r.w_rank = 1
), joined AS (
    SELECT k.*, d.w_type, d.w_skew, d.district_code, d.h3_cell, d.w_known_device,
        u.canonical_unit, u.factor, u.min_valid, u.max_valid
    FROM kept k
    LEFT JOIN (SELECT device_id AS w_device, device_type AS w_type, clock_skew_seconds AS w_skew, district_code,
                      h3_cell, TRUE AS w_known_device FROM delta_scan({devices})) d ON k.w_device = d.w_device
    LEFT JOIN ref_units u ON d.w_type = u.device_type AND k.w_unit = u.unit
), enriched AS (
    SELECT *,
        coalesce(CASE WHEN w_skew IS NOT NULL THEN make_timestamp(epoch_us(w_ts) - w_skew * 1000000) END, w_ts)
            AS w_ts_utc,
        date_trunc('hour', w_ts_utc + INTERVAL 30 MINUTE) AS w_hour,
        w_value * factor AS w_canonical
    FROM joined
)
SELECT *,
    CASE
        WHEN _parse_error IS NOT NULL THEN 'malformed_record'
        WHEN w_device IS NULL OR w_seq IS NULL THEN 'missing_key'
        WHEN w_ts IS NULL THEN 'invalid_timestamp'
        WHEN w_ts < TIMESTAMP '2000-01-01' OR w_ts > {now} OR w_ts > w_received + INTERVAL 1 DAY
            THEN 'timestamp_out_of_range'
        WHEN w_known_device IS NULL THEN 'unknown_device'
        WHEN w_value IS NULL THEN 'invalid_value'
        WHEN w_value IN ({sentinels}) THEN 'sentinel_value'
        WHEN factor IS NULL THEN 'unknown_unit'
        WHEN w_canonical < min_valid OR w_canonical > max_valid THEN 'value_out_of_range'
    END AS reason,
    CASE
        WHEN _parse_error IS NOT NULL THEN _parse_error
        WHEN w_device IS NULL OR w_seq IS NULL
            THEN 'device_id/seq missing or not an integer: ' || coalesce(w_record_id, '(empty)')
        WHEN w_ts IS NULL THEN 'reading time: cannot parse ' || coalesce(w_ts_raw, '(empty)')
        WHEN w_ts < TIMESTAMP '2000-01-01' OR w_ts > {now} OR w_ts > w_received + INTERVAL 1 DAY
            THEN 'reading time: impossible ' || coalesce(w_ts_raw, '(empty)')
        WHEN w_known_device IS NULL THEN 'device_id: not in the device registry: ' || coalesce(w_device, '(empty)')
        WHEN w_value IS NULL THEN 'value: not a number: ' || coalesce(w_value_raw, '(empty)')
        WHEN w_value IN ({sentinels}) THEN 'value: sentinel ' || coalesce(w_value_raw, '(empty)')
        WHEN factor IS NULL THEN 'unit: not listed for this device type: ' || coalesce(w_unit, '(empty)')
        WHEN w_canonical < min_valid OR w_canonical > max_valid
            THEN 'value: outside physical limits: ' || coalesce(w_value_raw, '(empty)') || ' '
                 || coalesce(w_unit, '(empty)')
    END AS detail
FROM enriched;

COPY (
    SELECT w_device AS device_id, w_seq AS seq, {source} AS source, w_type AS device_type,
        w_ts AS reading_ts_device, w_ts_utc AS reading_ts_utc, w_hour AS reading_hour_utc,
        w_skew IS NOT NULL AS clock_corrected, w_canonical AS value, canonical_unit AS unit,
        w_value AS value_reported, w_unit AS unit_reported, w_received AS received_at_utc,
        district_code, h3_cell, _batch_id, _source_file, _source_row_number, _ingested_at
    FROM readings_classified WHERE reason IS NULL
) TO {published_file} (FORMAT parquet);

COPY (
    SELECT {source} AS source, w_record_id AS source_record_id, reason, detail,
        CASE WHEN _parse_error IS NULL THEN to_json({{{record_struct}}}) END AS record_json,
        {run_id} AS run_id, _batch_id, _source_file, _source_row_number, _ingested_at
    FROM readings_classified WHERE reason IS NOT NULL
) TO {quarantine_file} (FORMAT parquet);
"""

# Row-level comparison with what the Spark job put into silver: (DuckDB output, silver table, filter, columns).
POLICE_COMPARE = (
    "incident",
    "source = 'police_incidents'",
    [
        "incident_id",
        "source_code",
        "source_label",
        "subcategory_code",
        "severity",
        "occurred_at_utc",
        "occurred_at_local",
        "occurred_date_local",
        "district_code",
        "lon",
        "lat",
        "h3_cell",
        "location_quality",
        "status",
        "address_scrubbed",
        "reporter_name_hash",
        "reporter_phone_hash",
        "reporter_id_hash",
        "updated_at_utc",
        "_source_file",
        "_source_row_number",
    ],
)
READINGS_COMPARE = (
    "device_reading",
    "source = 'device_readings'",
    [
        "device_id",
        "seq",
        "device_type",
        "reading_ts_device",
        "reading_ts_utc",
        "reading_hour_utc",
        "clock_corrected",
        "value",
        "unit",
        "value_reported",
        "unit_reported",
        "received_at_utc",
        "district_code",
        "h3_cell",
        "_source_file",
        "_source_row_number",
    ],
)
QUARANTINE_COMPARE_COLUMNS = ["source_record_id", "reason", "detail", "_source_file", "_source_row_number"]


def _scrub_sql(column: str) -> str:
    """common.scrub_text in DuckDB regex syntax (RE2, like Sail's: no look-around either)."""
    from spark_jobs import common

    out = column
    for pattern, token in (
        (common._ID_PATTERN, "[id]"),
        (common._MOBILE_PATTERN, "[phone]"),
        (common._LANDLINE_PATTERN, "[phone]"),
    ):
        out = f"regexp_replace({out}, {_sql_str(pattern)}, {_sql_str(chr(92) + '1' + token + chr(92) + '2')}, 'g')"
    return out


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def register_reference(con, settings, source: Source) -> None:
    """Reference data through the project's own loaders (as the Spark job reads it), before the timing."""
    crosswalk = getattr(source.silver, "crosswalk", None)
    frames = {
        "crosswalk": reference.crosswalk(crosswalk).rename(columns={"source_label": "source_label_ref"})
        if crosswalk
        else pd.DataFrame({"source_code": [], "source_label_ref": [], "subcategory_code": []}, dtype=str),
        "taxonomy": reference.taxonomy().rename(columns={"severity_default": "severity"})[
            ["subcategory_code", "category_code", "domain_code", "severity"]
        ],
        "aliases": reference.district_aliases(settings.district_aliases),
        "units": reference.device_units(),
    }
    for name, frame in frames.items():
        con.register(f"ref_{name}_df", frame)
        con.execute(f"CREATE OR REPLACE TEMP TABLE ref_{name} AS SELECT * FROM ref_{name}_df")
        con.unregister(f"ref_{name}_df")


def duckdb_job(con, settings, source: Source, work: Path, now: dt.datetime) -> dict:
    """Run the source's cleaning SQL; returns seconds, counts and the output files."""
    from spark_jobs import silver_device

    work.mkdir(parents=True, exist_ok=True)
    published_file = work / f"{source.name}_published.parquet"
    quarantine_file = work / f"{source.name}_quarantine.parquet"
    common_params = {
        "bronze": _sql_str(settings.bronze_dir / source.name),
        "source": _sql_str(source.name),
        "source_prefix": _sql_str(source.name + ":"),
        "now": f"TIMESTAMP {_sql_str(now.isoformat(sep=' '))}",
        "published_file": _sql_str(published_file),
        "quarantine_file": _sql_str(quarantine_file),
        "run_id": _sql_str("duckdb"),
        "tz": _sql_str(settings.timezone),
        "record_struct": ", ".join(f"{_sql_str(c)}: {_quote(c)}" for c in source.columns),
    }
    if source.name == "police_incidents":
        sql, prefix = POLICE_SQL, "police"
        hash_cols = source.columns
        params = {**common_params, "scrub_address": _scrub_sql("address"), "scrub_w_address": _scrub_sql("w_address")}
    elif source.name == "device_readings":
        sql, prefix = READINGS_SQL, "readings"
        hash_cols = [c for c in source.columns if c != source.silver.fields.received_at]
        params = {
            **common_params,
            "devices": _sql_str(settings.silver_dir / "device"),
            "sentinels": ", ".join(f"{v!r}" for v in silver_device.SENTINELS),
        }
    else:
        raise ValueError(f"no DuckDB SQL for {source.name}")
    params["hash_columns"] = ", ".join(f"coalesce({_quote(c)}, chr(0))" for c in hash_cols)
    statements = sql.format(**params)
    t0 = time.perf_counter()
    con.execute(statements)
    duplicates = con.execute(f"SELECT count(*) FROM {prefix}_ranked WHERE w_rank > 1").fetchone()[0]
    seconds = time.perf_counter() - t0
    rows = con.execute(f"SELECT count(*) FROM {prefix}_ranked").fetchone()[0]
    published = con.execute(f"SELECT count(*) FROM read_parquet({_sql_str(published_file)})").fetchone()[0]
    reasons = dict(
        con.execute(
            f"SELECT reason, count(*) FROM read_parquet({_sql_str(quarantine_file)}) GROUP BY reason ORDER BY reason"
        ).fetchall()
    )
    return {
        "seconds": seconds,
        "rows": rows,
        "published": published,
        "quarantined": reasons,
        "duplicates": duplicates,
        "published_file": published_file,
        "quarantine_file": quarantine_file,
    }


def compare_rows(con, settings, source: Source, result: dict) -> str:
    """Rows only in DuckDB's output / only in silver (multisets over the listed columns)."""
    table, where, columns = POLICE_COMPARE if source.name == "police_incidents" else READINGS_COMPARE
    notes = []
    for label, ours_sql, file, cols in (
        (
            table,
            f"SELECT * FROM delta_scan({_sql_str(settings.silver_dir / table)}) WHERE {where}",
            result["published_file"],
            columns,
        ),
        (
            "quarantine",
            f"SELECT * FROM delta_scan({_sql_str(settings.silver_dir / 'quarantine')}) "
            f"WHERE source = {_sql_str(source.name)}",
            result["quarantine_file"],
            QUARANTINE_COMPARE_COLUMNS,
        ),
    ):
        # Timestamps as naive UTC on both sides (silver's are TIMESTAMPTZ through delta_scan), then text.
        def norm(rel, cols=cols):
            types = dict((r[0], r[1]) for r in con.execute(f"DESCRIBE {rel}").fetchall())
            cast = [
                f"CAST(CAST({_quote(c)} AS TIMESTAMP) AS VARCHAR)"
                if "TIME ZONE" in types[c]
                else f"CAST({_quote(c)} AS VARCHAR)"
                for c in cols
            ]
            return f"SELECT {', '.join(f'{e} AS {_quote(c)}' for e, c in zip(cast, cols))} FROM ({rel})"

        duck = f"SELECT * FROM read_parquet({_sql_str(file)})"
        only_duck = con.execute(f"SELECT count(*) FROM ({norm(duck)} EXCEPT ALL {norm(ours_sql)})").fetchone()[0]
        only_spark = con.execute(f"SELECT count(*) FROM ({norm(ours_sql)} EXCEPT ALL {norm(duck)})").fetchone()[0]
        if only_duck or only_spark:
            notes.append(f"{label} rows differ: {only_duck} only in DuckDB, {only_spark} only in silver")
    return "; ".join(notes)


def counts_mismatch(spark_entry: dict, duck: dict) -> str:
    diffs = []
    if spark_entry["published"] != duck["published"]:
        diffs.append(f"published {spark_entry['published']} vs DuckDB {duck['published']}")
    if dict(spark_entry["quarantined"]) != duck["quarantined"]:
        diffs.append(f"quarantined {dict(spark_entry['quarantined'])} vs DuckDB {duck['quarantined']}")
    if spark_entry["duplicates"] != duck["duplicates"]:
        diffs.append(f"duplicates {spark_entry['duplicates']} vs DuckDB {duck['duplicates']}")
    if spark_entry["rows_read"] != duck["rows"]:
        diffs.append(f"rows {spark_entry['rows_read']} vs DuckDB {duck['rows']}")
    return "; ".join(diffs)


def duckdb_in_subprocess(root: Path, engine: str, source_name: str) -> dict:
    """The DuckDB side in a fresh Python process (nothing of the Spark session's threads, memory or GIL in
    it): set-up untimed, then the timed cleaning SQL, then the comparison with silver. Returns its JSON."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--duckdb-worker",
        json.dumps({"root": str(root), "engine": engine, "source": source_name}),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode or not lines:
        tail = " ".join((done.stderr or done.stdout).split())[-300:]
        return {"error": f"worker exit {done.returncode}: {tail}".replace("|", "/")}
    return json.loads(lines[-1])


def duckdb_worker(spec: dict) -> dict:
    root = Path(spec["root"])
    settings = settings_for(root, root / "synthetic", spec["engine"])
    source = load_registry()[spec["source"]]
    con = duckdb_connect(settings, spark_udf_functions(settings, reference.districts(settings.districts_geojson)))
    try:
        register_reference(con, settings, source)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        duck = duckdb_job(con, settings, source, root / "duckdb", now)
        duck["rows_note"] = compare_rows(con, settings, source, duck)
        duck["threads"] = con.execute("SELECT current_setting('threads')").fetchone()[0]
    finally:
        con.close()
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in duck.items()}


# --- one scale ------------------------------------------------------------------------------------------


def run_scale(spark, args, scale: float) -> list[dict]:
    root = Path(args.out) / f"scale_{scale:g}_days_{args.days}"
    synthetic = root / "synthetic"
    truth, gen_seconds = generate(synthetic, scale, args.days, args.seed)
    settings = settings_for(root, synthetic, args.engine)
    if gen_seconds is not None:
        shutil.rmtree(settings.lake_root, ignore_errors=True)  # a new city: its bronze is not this one
    gen = f"generated in {gen_seconds:.1f}s" if gen_seconds is not None else "reused"
    print(f"# scale {scale:g}, {args.days} days: city at {synthetic} ({gen})", file=sys.stderr)

    registry = load_registry()
    synthetic_sources = {n: s for n, s in registry.items() if "synthetic" in s.tags}
    t0 = time.perf_counter()
    for source in synthetic_sources.values():  # incremental: a lake that has them already adds nothing
        bronze.ingest(spark, settings, source)
    print(f"# scale {scale:g}: bronze ready in {time.perf_counter() - t0:.1f}s (not timed)", file=sys.stderr)

    silver_sources = {n: s for n, s in synthetic_sources.items() if s.silver}
    selected = [s for s in silver.ordered(list(silver_sources.values())) if s.name in args.sources]
    results = []
    for source in selected:
        fresh_silver(settings)
        for pre in prerequisites(source, silver_sources):
            silver.run(spark, settings, silver_sources[pre], f"bench-pre-{pre}")
        run_id = f"bench-{scale:g}-{source.name}"
        row = {
            "scale": scale,
            "source": source.name,
            "table": source.silver.table,
            "prerequisites": prerequisites(source, silver_sources),
            "failed": None,
            "duckdb": None,
            "check": "",
        }
        try:
            timing = time_silver(spark, settings, source, run_id)
        except Exception as exc:  # noqa: BLE001 - a failing source is a result too; the others still run
            row["failed"] = " ".join(f"{type(exc).__name__}: {exc}".split())[:200].replace("|", "/")
            print(f"  {source.name}: FAILED {row['failed']}", file=sys.stderr)
            results.append(row)
            continue
        entry = timing.pop("entry")
        row.update(
            timing,
            rows=entry["rows_read"],
            published=entry["published"],
            quarantined=entry["quarantined"],
            duplicates=entry["duplicates"],
            reconciled=entry.get("reconciled"),
        )
        print(f"  {source.name}: {row['rows']:,} rows in {row['seconds']:.2f}s", file=sys.stderr)
        if source.name in args.duckdb_sources and source.name in DUCKDB_SOURCES:
            duck = duckdb_in_subprocess(root, args.engine, source.name)
            if "error" in duck:
                row["check"] = f"MISMATCH: DuckDB failed: {duck['error']}"
            else:
                mismatch = counts_mismatch(entry, duck)
                row["duckdb"] = duck
                row["check"] = f"MISMATCH: {mismatch}" if mismatch else "counts equal"
                if duck["rows_note"]:
                    row["check"] += f"; {duck['rows_note']}"
                elif not mismatch:
                    row["check"] += ", rows equal"
            d_s = f"{row['duckdb']['seconds']:.2f}s" if row["duckdb"] else "-"
            print(f"  {source.name}: DuckDB {d_s}, {row['check']}", file=sys.stderr)
        results.append(row)
    return results


# --- output ---------------------------------------------------------------------------------------------


def _rate(rows, seconds):
    return f"{rows / seconds:,.0f}" if seconds else "-"


def table(results: list[dict]) -> str:
    lines = [
        "| scale | source | rows | silver s | transform+stage s | GX gate s | publish s | rows/s | DuckDB s | "
        "DuckDB rows/s | ours/DuckDB | stage/DuckDB | published | quarantined | duplicates | check |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if r["failed"]:
            lines.append(
                f"| {r['scale']:g} | {r['source']} | - | - | - | - | - | - | - | - | - | - | - | - | - | "
                f"FAILED: {r['failed']} |"
            )
            continue
        d = r["duckdb"]
        d_s = f"{d['seconds']:.3f}" if d else "-"
        ratio = f"{r['seconds'] / d['seconds']:.1f}x" if d else "-"
        stage_ratio = f"{r['stage_s'] / d['seconds']:.1f}x" if d else "-"
        q = sum(r["quarantined"].values())
        lines.append(
            f"| {r['scale']:g} | {r['source']} | {r['rows']:,} | {r['seconds']:.2f} | {r['stage_s']:.2f} | "
            f"{r['gate_s']:.2f} | {r['publish_s']:.2f} | {_rate(r['rows'], r['seconds'])} | {d_s} | "
            f"{_rate(d['rows'], d['seconds']) if d else '-'} | {ratio} | {stage_ratio} | {r['published']:,} | {q:,} | "
            f"{r['duplicates']:,} | {r['check'] or '-'} |"
        )
    return "\n".join(lines)


def detail_table(results: list[dict]) -> str:
    lines = [
        "Inside the split (seconds). transform+stage = load reference + bronze count + the staging Delta writes "
        "of the candidates and of the quarantine rows (each a full run of the transform) + the duplicate count "
        "(re-runs the lazy transform). publish = MERGE of the staged rows into the silver table + MERGE "
        "(merge_sync) of the staged quarantine rows + the after-publish hook (incident_link "
        "recompute for linked incident sources, hourly aggregates for device readings, identifier lookup for "
        "enterprises, lifecycle for hazards) + state. Prerequisites ran untimed on the fresh silver first.",
        "",
        "| scale | source | transform+stage s | of which staging write s | GX gate s | of which Data Docs s | "
        "publish s | MERGE silver s | MERGE quarantine s | after-publish s | prerequisites (untimed) | "
        "quarantined by reason |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        if r["failed"]:
            continue
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(r["quarantined"].items())) or "-"
        lines.append(
            f"| {r['scale']:g} | {r['source']} | {r['stage_s']:.2f} | {r['staging_write_s']:.2f} | "
            f"{r['gate_s']:.2f} | {r['docs_s']:.2f} | {r['publish_s']:.2f} | {r['merge_silver_s']:.2f} | "
            f"{r['merge_quarantine_s']:.2f} | {r['after_publish_s']:.2f} | "
            f"{', '.join(r['prerequisites']) or '-'} | {reasons} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--duckdb-worker"]:
        print(json.dumps(duckdb_worker(json.loads(argv[1]))))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scales", type=float, nargs="+", default=[0.05, 0.25], help="city scales (default 0.05 0.25)")
    parser.add_argument("--days", type=int, default=365, help="days of deliveries (default 365)")
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument(
        "--out",
        default=str(REPO_ROOT / "var" / "benchmark_silver"),
        help="work folder: cities, lakes, DuckDB outputs, results (default var/benchmark_silver)",
    )
    parser.add_argument("--engine", default="sail", help="'sail' (in process) or sc://host:port")
    all_silver = [
        s.name for s in silver.ordered([s for s in load_registry().values() if s.silver and "synthetic" in s.tags])
    ]
    parser.add_argument(
        "--sources",
        nargs="+",
        choices=all_silver,
        default=all_silver,
        help="silver sources to time (default: every synthetic source with a silver path)",
    )
    parser.add_argument(
        "--duckdb-sources",
        nargs="*",
        choices=DUCKDB_SOURCES,
        default=list(DUCKDB_SOURCES),
        help="sources DuckDB also cleans, as yardstick and equivalence check (default: both)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key_note = "CITYSAFE_PII_KEY from the environment"
    if len(os.environ.get("CITYSAFE_PII_KEY", "")) < 16:
        os.environ["CITYSAFE_PII_KEY"] = BENCH_PII_KEY
        key_note = "CITYSAFE_PII_KEY set to the benchmark's fixed key"

    load_start = os.getloadavg()
    t0 = time.perf_counter()
    import great_expectations  # noqa: F401 - a one-off import cost of the process, kept out of the first timing
    import h3  # noqa: F401
    import shapely  # noqa: F401

    warm = time.perf_counter() - t0
    results = []
    t0 = time.perf_counter()
    with spark_session(args.engine, app_name="citysafe-silver-benchmark") as spark:
        started = time.perf_counter() - t0
        print(f"# engine {args.engine} session started in {started:.1f}s", file=sys.stderr)
        for scale in args.scales:
            results += run_scale(spark, args, scale)

    header = (
        f"CitySafe silver benchmark: {dt.datetime.now().isoformat(timespec='seconds')}, {platform.node()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, DuckDB {duckdb.__version__}, "
        f"engine {args.engine} (session start {started:.1f}s; GX/h3/shapely imports {warm:.1f}s; both not in "
        f"the table), days={args.days}, seed={args.seed}, {key_note}, load average (1/5/15 min) "
        f"{'/'.join(f'{x:.1f}' for x in load_start)} at start, "
        f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())} at end"
    )
    notes = (
        f"ours = `spark_jobs.silver.run` on a fresh silver: {SPARK_INCLUDES}.\n"
        f"DuckDB = {DUCKDB_INCLUDES}; Python UDFs (the same functions as the Spark job's pandas UDFs) for "
        "HMAC, district-name normalisation, point-in-polygon (shapely; DuckDB spatial is not installed) and H3; "
        "DuckDB runs in a fresh Python process of its own; connection, extension load, UDF registration and "
        "reference tables come before its timing.\n"
        "check: published / quarantined-by-reason / duplicate counts of DuckDB = the Spark job's, then the rows "
        "of its Parquet output = silver's (published: key + cleaned columns; quarantine: record id, reason, "
        "detail, lineage)."
    )
    text = "\n\n".join([header, table(results), detail_table(results), notes])
    print(text)
    (out / "results.md").write_text(text + "\n", encoding="utf-8")
    (out / "results.json").write_text(
        json.dumps({"header": header, "results": results}, indent=2, default=str), encoding="utf-8"
    )
    failed = any(
        r["failed"] or r["check"].startswith("MISMATCH") or "differ" in r["check"] or r.get("reconciled") is False
        for r in results
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
