"""Conformance suite for citysafe.delta_io against real Delta tables on the Sail engine."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from pyspark.sql import functions as F

from citysafe import delta_io
from citysafe.delta_io import Column, DeltaSchemaError, TableSpec


def _spec(path, **kw):
    return TableSpec(
        name="people",
        path=path,
        columns=(
            Column("id", "bigint", nullable=False),
            Column("name", "string"),
            Column("score", "double"),
            Column("updated_at", "timestamp"),
            Column("district", "string"),
        ),
        key=("id",),
        newer_by="updated_at",
        **kw,
    )


def _rows(spark, rows):
    return spark.createDataFrame(rows, "id long, name string, score double, updated_at timestamp, district string")


T0 = dt.datetime(2025, 1, 1, 8, 0)
T1 = dt.datetime(2025, 1, 2, 8, 0)


def _table(spark, spec):
    return {r.id: r.asDict() for r in delta_io.read(spark, spec).collect()}


def test_append_creates_declared_schema_even_from_literals(spark, tmp_path):
    spec = _spec(tmp_path / "t", partition_by=("district",))
    df = spark.range(3).select(
        F.col("id"),
        F.lit("x").alias("name"),
        F.lit(1.0).alias("score"),
        F.lit(T0).alias("updated_at"),
        F.lit("d1").alias("district"),
    )
    result = delta_io.append(df, spec)
    assert result.rows_written == 3 and result.version_after == result.version_before + 1
    fields = DeltaTable(str(spec.path)).schema().fields
    # lit() columns would be NOT NULL if Sail created the table; delta-rs created it from the declaration
    # (stored nullable: NOT NULL is enforced by delta_io, see TableSpec.storage_schema).
    assert [(f.name, f.nullable) for f in fields] == [
        ("id", True),
        ("name", True),
        ("score", True),
        ("updated_at", True),
        ("district", True),
    ]
    assert DeltaTable(str(spec.path)).metadata().partition_columns == ["district"]
    # Columns are written by name: the partition column did not swap places with another.
    assert _table(spark, spec)[0]["name"] == "x" and _table(spark, spec)[0]["district"] == "d1"


def test_missing_and_unexpected_columns_are_refused(spark, tmp_path):
    spec = _spec(tmp_path / "t")
    df = _rows(spark, [(1, "a", 1.0, T0, "d1")])
    with pytest.raises(DeltaSchemaError, match=r"missing columns \['score'\]"):
        delta_io.append(df.drop("score"), spec)
    with pytest.raises(DeltaSchemaError, match=r"unexpected columns \['extra'\]"):
        delta_io.append(df.withColumn("extra", F.lit(1)), spec)
    assert delta_io.version(spec) in (None, 0)  # nothing was written


def test_lossy_type_is_refused_not_coerced(spark, tmp_path):
    spec = TableSpec("counts", tmp_path / "t", (Column("id", "bigint"), Column("n", "int")))
    df = spark.createDataFrame([(1, 12.7)], "id long, n double")
    with pytest.raises(DeltaSchemaError, match="n is double, declared int"):
        delta_io.append(df, spec)
    # Widening is fine: int -> bigint.
    ok = spark.createDataFrame([(1, 12)], "id int, n int")
    assert delta_io.append(ok, spec).rows_written == 1


def test_table_with_other_schema_on_disk_is_refused(spark, tmp_path):
    path = tmp_path / "t"
    write_deltalake(str(path), pa.table({"id": pa.array([1], pa.int64()), "name": ["a"]}))
    with pytest.raises(DeltaSchemaError, match="differs from the declaration"):
        delta_io.append(_rows(spark, [(1, "a", 1.0, T0, "d1")]), _spec(path))


def test_merge_inserts_updates_only_if_newer(spark, tmp_path):
    spec = _spec(tmp_path / "t")
    first = delta_io.merge_upsert(spark, _rows(spark, [(1, "a", 1.0, T0, "d1"), (2, "b", 2.0, T1, "d1")]), spec)
    assert (first.rows_inserted, first.rows_updated) == (2, 0)
    batch = _rows(
        spark,
        [
            (1, "a-new", 1.5, T1, "d1"),  # newer: updates
            (2, "b-old", 0.0, T0, "d2"),  # older: ignored
            (3, "c", 3.0, T0, "d3"),  # new key: inserted
        ],
    )
    second = delta_io.merge_upsert(spark, batch, spec)
    assert (second.rows_inserted, second.rows_updated, second.rows_unchanged) == (1, 1, 1)
    rows = _table(spark, spec)
    assert rows[1]["name"] == "a-new" and rows[2]["name"] == "b" and rows[3]["name"] == "c"
    assert len(rows) == 3


def test_rerun_changes_nothing(spark, tmp_path):
    spec = _spec(tmp_path / "t")
    batch = _rows(spark, [(1, "a", 1.0, T0, "d1"), (2, "b", 2.0, T0, "d1")])
    delta_io.merge_upsert(spark, batch, spec)
    v = delta_io.version(spec)
    again = delta_io.merge_upsert(spark, batch, spec)
    assert again.operation == "none" and again.rows_unchanged == 2
    assert delta_io.version(spec) == v  # no empty commit


def test_merge_refuses_duplicate_or_null_keys(spark, tmp_path):
    spec = _spec(tmp_path / "t")
    with pytest.raises(ValueError, match="several rows for key"):
        delta_io.merge_upsert(spark, _rows(spark, [(1, "a", 1.0, T0, "d"), (1, "b", 1.0, T1, "d")]), spec)
    with pytest.raises(DeltaSchemaError, match=r"NOT NULL columns \{'id': 1\}"):
        delta_io.merge_upsert(spark, _rows(spark, [(None, "a", 1.0, T0, "d")]), spec)
    nullable_key = TableSpec(
        "k",
        tmp_path / "k",
        (Column("id", "bigint"), Column("updated_at", "timestamp")),
        key=("id",),
        newer_by="updated_at",
    )
    with pytest.raises(ValueError, match="NULL key"):
        delta_io.merge_upsert(spark, spark.createDataFrame([(None, T0)], "id long, updated_at timestamp"), nullable_key)


def test_time_travel_and_history(spark, tmp_path):
    spec = _spec(tmp_path / "t")
    delta_io.merge_upsert(spark, _rows(spark, [(1, "a", 1.0, T0, "d1")]), spec)
    v1 = delta_io.version(spec)
    delta_io.merge_upsert(spark, _rows(spark, [(1, "a2", 2.0, T1, "d1"), (2, "b", 1.0, T1, "d1")]), spec)
    old = delta_io.read(spark, spec, version_as_of=v1).collect()
    assert [(r.id, r.name) for r in old] == [(1, "a")]
    assert {r.id for r in delta_io.read(spark, spec).collect()} == {1, 2}
    ops = [h["operation"] for h in delta_io.history(spec.path)]
    assert ops[0] == "MERGE" and ops[-1] == "CREATE TABLE"


def test_compaction_and_vacuum_keep_the_data(spark, tmp_path):
    spec = _spec(tmp_path / "t")
    for i in range(4):
        delta_io.append(_rows(spark, [(i, f"n{i}", float(i), T0, "d1")]), spec)
    metrics = delta_io.compact(spec.path)
    assert metrics["numFilesRemoved"] >= 4 and metrics["numFilesAdded"] == 1
    removed = delta_io.vacuum(spec.path, retention_hours=0, dry_run=False)
    assert len(removed) >= 4
    assert sorted(_table(spark, spec)) == [0, 1, 2, 3]


def test_nulls_in_not_null_columns_are_refused_with_counts(spark, tmp_path):
    spec = _spec(tmp_path / "t")
    with pytest.raises(DeltaSchemaError, match=r"NOT NULL columns \{'id': 1\}"):
        delta_io.append(_rows(spark, [(None, "a", 1.0, T0, "d"), (2, "b", 1.0, T0, "d")]), spec)


def test_a_staging_write_runs_its_plan_once_is_checked_after_and_removed_when_it_fails(spark, tmp_path):
    spec = _spec(tmp_path / "staging")
    ok = delta_io.stage(_rows(spark, [(1, "a", 1.0, T0, "d"), (2, "b", 2.0, T0, "d")]), spec)
    assert ok.rows_written == 2 and sorted(_table(spark, spec)) == [1, 2]
    # a leftover of an earlier attempt is replaced, not appended to
    again = delta_io.stage(_rows(spark, [(3, "c", 1.0, T0, "d")]), spec)
    assert again.rows_written == 1 and sorted(_table(spark, spec)) == [3]
    with pytest.raises(DeltaSchemaError, match=r"NOT NULL columns \{'id': 1\}"):
        delta_io.stage(_rows(spark, [(None, "a", 1.0, T0, "d"), (4, "b", 1.0, T0, "d")]), spec)
    assert not spec.path.exists()  # nothing with a NULL key is left for anyone to publish


def test_not_null_check_respects_an_upstream_filter(spark, tmp_path):
    # Sail evaluates table NOT NULL constraints on rows an earlier filter removed; delta_io's own check
    # counts only the rows actually written.
    spec = _spec(tmp_path / "t")
    df = _rows(spark, [(None, "drop", 1.0, T0, "d"), (2, "keep", 1.0, T0, "d")]).where("name = 'keep'")
    assert delta_io.append(df, spec).rows_written == 1


def test_merge_sync_makes_the_table_equal_to_the_source(spark, tmp_path):
    spec = TableSpec(
        "ref", tmp_path / "ref", (Column("code", "string", nullable=False), Column("name", "string")), key=("code",)
    )
    first = delta_io.merge_sync(
        spark, spark.createDataFrame([("a", "A"), ("b", "B"), ("c", None)], "code string, name string"), spec
    )
    assert (first.rows_inserted, first.rows_deleted) == (3, 0)
    second = delta_io.merge_sync(
        spark, spark.createDataFrame([("a", "A"), ("b", "B2"), ("d", "D")], "code string, name string"), spec
    )
    assert (second.rows_inserted, second.rows_updated, second.rows_deleted, second.rows_unchanged) == (1, 1, 1, 1)
    assert sorted((r.code, r.name) for r in delta_io.read(spark, spec).collect()) == [
        ("a", "A"),
        ("b", "B2"),
        ("d", "D"),
    ]
    v = delta_io.version(spec)
    again = delta_io.merge_sync(
        spark, spark.createDataFrame([("a", "A"), ("b", "B2"), ("d", "D")], "code string, name string"), spec
    )
    assert again.operation == "none" and delta_io.version(spec) == v


def test_a_merge_into_a_table_without_rows_is_one_append(spark, tmp_path):
    """A cold run's first delivery: no join against the empty target, one append commit holding what the
    MERGE would have left; the checks still run first, and the next write MERGEs."""
    spec = _spec(tmp_path / "t", partition_by=("district",))
    with pytest.raises(ValueError, match="several rows for key"):
        delta_io.merge_upsert(spark, _rows(spark, [(1, "a", 1.0, T0, "d1"), (1, "b", 1.0, T1, "d1")]), spec)
    first = delta_io.merge_upsert(spark, _rows(spark, [(1, "a", 1.0, T0, "d1"), (2, "b", 2.0, T0, "d2")]), spec)
    assert (first.operation, first.rows_inserted, first.version_after) == ("append", 2, first.version_before + 1)
    second = delta_io.merge_upsert(spark, _rows(spark, [(1, "a2", 2.0, T1, "d1"), (3, "c", 3.0, T1, "d1")]), spec)
    assert (second.operation, second.rows_inserted, second.rows_updated) == ("merge", 1, 1)
    assert {i: r["name"] for i, r in _table(spark, spec).items()} == {1: "a2", 2: "b", 3: "c"}
    ops = [h["operation"] for h in delta_io.history(spec.path)]
    assert ops == ["MERGE", "WRITE", "CREATE TABLE"]
    # merge_sync likewise, and a source without rows commits nothing
    ref = TableSpec(
        "ref", tmp_path / "ref", (Column("code", "string", nullable=False), Column("n", "string")), key=("code",)
    )
    empty = delta_io.merge_sync(spark, spark.createDataFrame([], "code string, n string"), ref)
    assert empty.operation == "none" and empty.version_after == empty.version_before
    synced = delta_io.merge_sync(spark, spark.createDataFrame([("a", "A"), ("b", None)], "code string, n string"), ref)
    assert (synced.operation, synced.rows_inserted) == ("append", 2)
    assert sorted((r.code, r.n) for r in delta_io.read(spark, ref).collect()) == [("a", "A"), ("b", None)]


def test_merge_without_newer_by_is_insert_only(spark, tmp_path):
    spec = TableSpec(
        "facts", tmp_path / "f", (Column("id", "bigint", nullable=False), Column("v", "string")), key=("id",)
    )
    delta_io.merge_upsert(spark, spark.createDataFrame([(1, "first")], "id long, v string"), spec)
    again = delta_io.merge_upsert(spark, spark.createDataFrame([(1, "resent"), (2, "new")], "id long, v string"), spec)
    assert (again.rows_inserted, again.rows_updated, again.rows_unchanged) == (1, 0, 1)
    assert sorted((r.id, r.v) for r in delta_io.read(spark, spec).collect()) == [(1, "first"), (2, "new")]


def test_a_merge_whose_key_fixes_the_partition_reads_only_the_sources_partitions(spark, tmp_path):
    """key_fixes_partition: the MERGE's ON clause names the source rows' partitions (the engine prunes the
    others), and the rows come out as from a table without it."""
    pruned = _spec(tmp_path / "pruned", partition_by=("district",), key_fixes_partition=True)
    plain = _spec(tmp_path / "plain", partition_by=("district",))
    first = [(1, "a", 1.0, T0, "d1"), (2, "b", 2.0, T0, "d2"), (3, "c", 3.0, T0, "d2")]
    day = [(1, "a-new", 1.5, T1, "d1"), (4, "d", 4.0, T1, "d1"), (5, "e", 5.0, T1, "d3")]
    for spec in (pruned, plain):
        delta_io.merge_upsert(spark, _rows(spark, first), spec)
    d2_files = {f for f in DeltaTable(str(pruned.path)).file_uris() if "district=d2" in f}
    results = [delta_io.merge_upsert(spark, _rows(spark, day), spec) for spec in (pruned, plain)]
    assert [(r.rows_inserted, r.rows_updated) for r in results] == [(2, 1), (2, 1)]
    assert _table(spark, pruned) == _table(spark, plain)
    assert {f for f in DeltaTable(str(pruned.path)).file_uris() if "district=d2" in f} == d2_files
    partitions = delta_io._source_partitions(_rows(spark, day), pruned)
    assert delta_io._partition_sql(partitions, "t") == " AND t.`district` IN ('d1', 'd3')"
    # merge_sync keeping what the source lacks: the same pruning, the same rows
    fix = [(2, "b-fixed", 2.0, T1, "d2")]
    synced = [delta_io.merge_sync(spark, _rows(spark, fix), spec, delete_missing=False) for spec in (pruned, plain)]
    assert [(r.rows_updated, r.rows_deleted) for r in synced] == [(1, 0), (1, 0)]
    assert _table(spark, pruned) == _table(spark, plain) and len(_table(spark, pruned)) == 5
    # no pruning: a table without the flag, or a NULL partition value in the source
    assert delta_io._source_partitions(_rows(spark, day), plain) is None
    assert delta_io._source_partitions(_rows(spark, [(6, "f", 1.0, T1, None)]), pruned) is None
    with pytest.raises(ValueError, match="key_fixes_partition needs a key and partition columns"):
        _spec(tmp_path / "t", key_fixes_partition=True)


def test_partition_columns_must_be_declared_last(tmp_path):
    # Sail's cluster mode pushes filters into the Parquet files by table position (see TableSpec).
    with pytest.raises(ValueError, match="partition columns \\('name',\\) must be the last columns"):
        _spec(tmp_path / "t", partition_by=("name",))


def test_a_table_in_an_older_column_order_is_rewritten_once_in_the_declared_order(tmp_path):
    spec = _spec(tmp_path / "t", partition_by=("district",))
    old_order = ["district", "id", "name", "score", "updated_at"]  # the partition column first, as lakes once had it
    rows = pa.table(
        {
            "district": ["d1", "d2", "d1"],
            "id": [1, 2, 3],
            "name": ["a", "b", None],
            "score": [1.0, 2.5, None],
            "updated_at": pa.array([T0, T1, T0], pa.timestamp("us", tz="UTC")),
        }
    ).select(old_order)
    write_deltalake(str(spec.path), rows, partition_by=["district"])
    with pytest.raises(DeltaSchemaError, match="differs from the declaration"):
        delta_io.check_table_schema(spec)  # readers refuse it; only ensure_table (before a write) migrates

    table = delta_io.ensure_table(spec)
    assert [f.name for f in table.schema().fields] == spec.column_names
    assert table.metadata().partition_columns == ["district"]
    migrated = table.to_pyarrow_table().select(old_order).sort_by("id")
    assert migrated.to_pylist() == rows.sort_by("id").to_pylist()
    assert delta_io.ensure_table(spec).version() == table.version()  # once: a second call changes nothing


def _stamped_spec(path) -> TableSpec:
    """A keyed table with a changed_at stamp (as silver's device tables)."""
    return TableSpec(
        "hours",
        path,
        (Column("k", "string", nullable=False), Column("v", "double"), Column("_changed_at", "timestamp")),
        key=("k",),
        changed_at="_changed_at",
    )


def test_merge_sync_stamps_the_rows_it_changes_and_only_those(spark, tmp_path):
    """changed_at: the rows merge_sync (or merge_upsert) inserts or updates get the write's time; unchanged
    rows keep theirs, and the stamp alone never makes a row differ (a re-sync commits nothing)."""
    spec = _stamped_spec(tmp_path / "hours")
    frame = lambda rows: spark.createDataFrame(rows, "k string, v double")  # noqa: E731
    stamps = lambda: {r.k: r._changed_at for r in delta_io.read(spark, spec).collect()}  # noqa: E731
    delta_io.merge_sync(spark, frame([("a", 1.0), ("b", 2.0)]), spec, delete_missing=False)
    first = stamps()
    assert first["a"] == first["b"] is not None
    second = delta_io.merge_sync(spark, frame([("a", 1.0), ("b", 2.5), ("c", 3.0)]), spec, delete_missing=False)
    assert (second.rows_inserted, second.rows_updated, second.rows_unchanged) == (1, 1, 1)
    after = stamps()
    assert after["a"] == first["a"] and after["b"] > first["b"] and after["c"] == after["b"]
    again = delta_io.merge_sync(spark, frame([("a", 1.0), ("b", 2.5), ("c", 3.0)]), spec, delete_missing=False)
    assert again.operation == "none" and stamps() == after
    # merge_upsert (insert-only here: no newer_by) stamps the rows it inserts, and only those
    upserted = delta_io.merge_upsert(spark, frame([("c", 9.0), ("d", 4.0)]), spec)
    assert (upserted.rows_inserted, upserted.rows_unchanged) == (1, 1)
    final = stamps()
    assert final["c"] == after["c"] and final["d"] > after["c"]
    # a staged copy (delta_io.stage) holds the column as NULL: the MERGE sets it
    staged = delta_io.stage(frame([("e", 5.0)]), dataclasses.replace(spec, name="staged", path=tmp_path / "staged"))
    assert (
        staged.rows_written == 1
        and delta_io.read(spark, dataclasses.replace(spec, path=tmp_path / "staged")).first()._changed_at is None
    )
    with pytest.raises(ValueError, match="changed_at must be a nullable timestamp"):
        TableSpec("t", tmp_path / "t", (Column("k", "string"), Column("v", "double")), key=("k",), changed_at="v")


def test_a_table_written_before_its_changed_at_stamp_was_declared_gets_it_once(spark, tmp_path):
    """A lake from before the stamp was declared: ensure_table adds it (metadata only); the old rows read
    it as NULL, and the engine's MERGE writes it. Other missing columns are refused as before."""
    spec = _stamped_spec(tmp_path / "hours")
    write_deltalake(str(spec.path), pa.table({"k": ["a", "b"], "v": [1.0, 2.0]}))
    with pytest.raises(DeltaSchemaError, match="differs from the declaration"):
        delta_io.check_table_schema(spec)
    table = delta_io.ensure_table(spec)
    assert [f.name for f in table.schema().fields] == spec.column_names
    assert delta_io.ensure_table(spec).version() == table.version()  # once
    synced = delta_io.merge_sync(
        spark, spark.createDataFrame([("b", 2.5)], "k string, v double"), spec, delete_missing=False
    )
    assert (synced.rows_updated, synced.rows_unchanged) == (1, 0)
    rows = {r.k: (r.v, r._changed_at) for r in delta_io.read(spark, spec).collect()}
    assert rows["a"] == (1.0, None) and rows["b"][0] == 2.5 and rows["b"][1] is not None
    # any other missing column is refused as before (test_table_with_other_schema_on_disk_is_refused)
    plain = _spec(tmp_path / "plain")
    write_deltalake(str(plain.path), pa.table({"id": pa.array([1], pa.int64()), "name": ["a"], "score": [1.0]}))
    with pytest.raises(DeltaSchemaError, match="differs from the declaration"):
        delta_io.ensure_table(plain)


def test_an_hourly_table_of_an_older_lake_is_rewritten_once_stamped_and_partitioned_by_month(spark, tmp_path):
    """silver.device_reading_hourly as lakes held it before (unpartitioned, no _changed_at): ensure_table
    rewrites it once in the declared layout (TableSpec.upgrade): same rows, the UTC month as the
    partition, NULL stamps; the next call changes nothing."""
    from spark_jobs import tables

    spec = tables.device_reading_hourly(tmp_path / "silver")
    old_columns = [c for c in spec.column_names if c not in ("_changed_at", "hour_month")]
    hours = pa.array(
        [dt.datetime(2025, 12, 31, 23, tzinfo=dt.UTC), dt.datetime(2026, 1, 1, 0, tzinfo=dt.UTC)],
        pa.timestamp("us", tz="UTC"),
    )
    old = pa.table(
        {
            "device_id": ["RG-1", "RG-1"],
            "hour_utc": hours,
            "device_type": ["rain_gauge"] * 2,
            "unit": ["mm"] * 2,
            "reading_count": pa.array([1, 0], pa.int64()),
            "value_mean": [0.5, None],
            "value_min": [0.5, None],
            "value_max": [0.5, None],
            "is_gap": [False, True],
            "district_code": ["420102"] * 2,
            "h3_cell": ["8840a68021fffff"] * 2,
        }
    ).select(old_columns)
    write_deltalake(str(spec.path), old)
    table = delta_io.ensure_table(spec)
    assert table.metadata().partition_columns == ["hour_month"]
    assert [f.name for f in table.schema().fields] == spec.column_names
    rows = table.to_pyarrow_table().sort_by("hour_utc")
    assert rows.select(old_columns).to_pylist() == old.to_pylist()
    assert rows.column("hour_month").to_pylist() == ["2025-12", "2026-01"]  # the UTC month, not the city's
    assert rows.column("_changed_at").null_count == 2
    assert delta_io.ensure_table(spec).version() == table.version()
    # the engine reads it, and a MERGE of a day's hours touches only their month's files
    december = {f for f in DeltaTable(str(spec.path)).file_uris() if "hour_month=2025-12" in f}
    day = spark.createDataFrame(
        [
            (
                "RG-1",
                dt.datetime(2026, 1, 1, 1),
                "rain_gauge",
                "mm",
                1,
                0.7,
                0.7,
                0.7,
                False,
                "420102",
                "8840a68021fffff",
                "2026-01",
            )
        ],
        "device_id string, hour_utc timestamp, device_type string, unit string, reading_count long, value_mean double, "
        "value_min double, value_max double, is_gap boolean, district_code string, h3_cell string, hour_month string",
    )
    merged = delta_io.merge_sync(spark, day, spec, delete_missing=False)
    assert merged.rows_inserted == 1 and delta_io.read(spark, spec).count() == 3
    assert {f for f in DeltaTable(str(spec.path)).file_uris() if "hour_month=2025-12" in f} == december


def test_table_rows_reads_through_delta_rs_with_the_declared_string_types(tmp_path):
    """delta-rs's scan gives strings as string_view; `table_rows` hands the rest of the pipeline the plain types
    and the same rows as pyarrow's dataset reader, for every column or a subset, partitioned or not."""
    rows = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "name": ["a", None, "c"],
            "tags": pa.array([["x", "y"], [], None], pa.list_(pa.string())),
            "raw": pa.array([b"\x00", b"", None], pa.binary()),
            "district": ["d1", "d2", "d1"],
        }
    )
    write_deltalake(str(tmp_path / "t"), rows, partition_by=["district"])
    table = DeltaTable(str(tmp_path / "t"))

    got = delta_io.table_rows(table)
    assert got.schema == table.to_pyarrow_table().schema == rows.schema
    assert got.sort_by("id").equals(rows)
    subset = delta_io.table_rows(table, ["district", "name"])
    assert subset.column_names == ["district", "name"] and subset.schema.field("name").type == pa.string()
    assert sorted(subset["district"].to_pylist()) == ["d1", "d1", "d2"]

    empty = DeltaTable.create(str(tmp_path / "empty"), schema=rows.schema)
    assert delta_io.table_rows(empty).schema == rows.schema and delta_io.table_rows(empty).num_rows == 0
