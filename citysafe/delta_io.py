"""All Delta Lake I/O goes through this module.

It enforces the guardrails from STACK_NOTES (Sail loses data silently otherwise):
- every table has a declared schema (`TableSpec`); a table is created by delta-rs from that schema,
  so column order and partitioning come from the declaration, never from `lit()` or partition moves;
  declared NOT NULL columns are enforced here before every write (an exact count, refusing NULLs),
  while the stored Delta columns stay nullable (Sail's MERGE slows down exponentially with NOT NULL
  target columns and checks constraints on rows a filter removed);
- before every write the DataFrame must have exactly the declared columns (missing or unexpected
  columns are refused with an error naming them), values are cast explicitly to the declared types,
  and columns are selected by name in declared order;
- before every write the table's own schema (read with delta-rs) must equal the declaration;
- writes are `append` or `MERGE` only: no overwrite, no dynamic partition overwrite, no replaceWhere
  (write-audit-publish staging tables use `stage`: written once, then checked, removed if they fail;
  the one exception is `ensure_table`'s one-time rewrite of a table in an older column order or layout);
- MERGE is an upsert by key with an "only if newer" rule, and a batch that changes nothing commits
  nothing (so a re-run leaves the table version where it was); reference tables use `merge_sync`
  (the table becomes exactly the source rows, in one atomic MERGE);
- history, compaction and vacuum use delta-rs (Sail does not support them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import uuid
from collections.abc import Callable, Sequence

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from citysafe import storage
from citysafe.errors import InputError, LakeBusyError
from citysafe.storage import LakePath

# Declared type (Spark DDL name) -> (arrow type for creating the table, Delta primitive type name).
_TYPES: dict[str, tuple[pa.DataType, str]] = {
    "string": (pa.string(), "string"),
    "bigint": (pa.int64(), "long"),
    "int": (pa.int32(), "integer"),
    "double": (pa.float64(), "double"),
    "boolean": (pa.bool_(), "boolean"),
    "date": (pa.date32(), "date"),
    "timestamp": (pa.timestamp("us", tz="UTC"), "timestamp"),
    "timestamp_ntz": (pa.timestamp("us"), "timestamp_ntz"),
}


# Conversions `conform` may apply silently: widening only. Anything else (double -> int, string ->
# timestamp ...) must be done, and checked, by the job, or Sail would coerce values on append.
_SAFE_CASTS: dict[str, tuple[str, ...]] = {
    "bigint": ("void", "tinyint", "smallint", "int"),
    "int": ("void", "tinyint", "smallint"),
    "double": ("void", "tinyint", "smallint", "int", "bigint", "float"),
    "string": ("void",),
    "boolean": ("void",),
    "date": ("void",),
    "timestamp": ("void",),
    "timestamp_ntz": ("void",),
}


log = logging.getLogger(__name__)


class DeltaSchemaError(InputError):
    """A DataFrame or an existing table does not match the table's declared schema."""


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True
    description: str = ""

    def __post_init__(self):
        if self.type not in _TYPES:
            raise ValueError(f"column {self.name}: unsupported type {self.type!r} (use one of {sorted(_TYPES)})")


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """A Delta table's declared contract: where it lives, its columns, its key and its version column."""

    name: str
    path: LakePath
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    # Column compared by MERGE's "only if newer" rule (e.g. the source's updated_at).
    newer_by: str | None = None
    partition_by: tuple[str, ...] = ()
    # The key determines the partition values (e.g. an incident_id embeds its source): a key never moves
    # between partitions, so a MERGE may read and rewrite only the partitions its source rows fall in.
    key_fixes_partition: bool = False
    # A nullable timestamp column that merge_sync and merge_upsert set, on the rows they insert or update,
    # to the time of the write (merge_sync leaves it out of its comparison): "when did this row last
    # change", by which a reader (the incremental marts, the marts' tests) finds what changed since it
    # last read, without comparing every row. Writes hold the lake lock, so a reader that also holds it
    # sees every row stamped before it started and none stamped after.
    changed_at: str | None = None
    # How the rows of a table written before the declaration's last layout change (a derived column, a
    # new partitioning) become the declared ones: ensure_table rewrites such a table once with it.
    upgrade: Callable[[pa.Table], pa.Table] | None = None

    def __post_init__(self):
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.name}: duplicate column names")
        optional = [c for c in (self.newer_by, self.changed_at) if c]
        for col in (*self.key, *self.partition_by, *optional):
            if col not in names:
                raise ValueError(f"table {self.name}: {col!r} is not a declared column")
        # Partition columns come last, the order Spark itself gives a partitioned table. Sail's cluster
        # mode pushes a filter into the Parquet scan by the column's position in the table schema; the
        # files do not hold partition columns, so a partition column in the middle shifts every later
        # column by one (measured on pysail 0.7.2: `district_code IN (4+ values)` read `lon`, a double).
        if self.partition_by and tuple(names[-len(self.partition_by) :]) != self.partition_by:
            raise ValueError(f"table {self.name}: partition columns {self.partition_by} must be the last columns")
        if self.key_fixes_partition and not (self.key and self.partition_by):
            raise ValueError(f"table {self.name}: key_fixes_partition needs a key and partition columns")
        if self.changed_at:
            stamp = next(c for c in self.columns if c.name == self.changed_at)
            if stamp.type != "timestamp" or not stamp.nullable or stamp.name in self.key:
                raise ValueError(f"table {self.name}: changed_at must be a nullable timestamp column outside the key")

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def arrow_schema(self) -> pa.Schema:
        """The declared schema, nullability included (for readers, fixtures and documentation)."""
        return pa.schema([pa.field(c.name, _TYPES[c.type][0], nullable=c.nullable) for c in self.columns])

    def storage_schema(self) -> pa.Schema:
        """The schema the Delta table is created with: every column nullable. NOT NULL is enforced by
        this module before each write (check_not_null), not by the table: Sail's MERGE cost grows
        about 2x per NOT NULL target column (18 columns: ~2 min for 138 rows), and Sail checks table
        constraints on rows a preceding filter removed."""
        return pa.schema([pa.field(c.name, _TYPES[c.type][0], nullable=True) for c in self.columns])


@dataclasses.dataclass
class WriteResult:
    table: str
    operation: str  # append | merge | none
    rows_written: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0  # source rows that were not newer than the table's
    rows_deleted: int = 0  # merge_sync only: keys no longer in the source
    version_before: int | None = None
    version_after: int | None = None


# --- schema checks ----------------------------------------------------------------------------------


def conform(df: DataFrame, spec: TableSpec) -> DataFrame:
    """Return `df` cast to the declared types, in declared order; refuse missing or unexpected columns."""
    have = list(df.columns)
    want = spec.column_names
    if spec.changed_at and spec.changed_at not in have:
        # this module's own column: merge_upsert and merge_sync set it; a staged copy leaves it NULL
        df = df.withColumn(spec.changed_at, F.lit(None).cast("timestamp"))
        have.append(spec.changed_at)
    missing = [c for c in want if c not in have]
    extra = [c for c in have if c not in want]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if extra:
            parts.append(f"unexpected columns {extra}")
        raise DeltaSchemaError(f"table {spec.name}: refusing to write: {'; '.join(parts)}")
    lossy = []
    for field in df.schema.fields:
        declared = next(c.type for c in spec.columns if c.name == field.name)
        given = field.dataType.simpleString()
        if given != declared and given not in _SAFE_CASTS.get(declared, ()):
            lossy.append(f"{field.name} is {given}, declared {declared}")
    if lossy:
        raise DeltaSchemaError(
            f"table {spec.name}: refusing to write: types need an explicit, checked conversion first: {lossy}"
        )
    return df.select(*[F.col(c.name).cast(c.type).alias(c.name) for c in spec.columns])


def check_not_null(data: DataFrame, spec: TableSpec) -> tuple[DataFrame, int]:
    """Refuse NULLs in the declared NOT NULL columns with a clear error; return (frame, row count).
    One aggregate pass counts the rows and the NULLs of every NOT NULL column."""
    required = [c for c in spec.columns if not c.nullable]
    aggregates = [F.count(F.lit(1)).alias("__rows")] + [
        F.sum(F.when(F.col(c.name).isNull(), 1).otherwise(0)).alias(c.name) for c in required
    ]
    stats = data.agg(*aggregates).collect()[0].asDict()
    nulls = {c.name: stats[c.name] for c in required if stats[c.name]}
    if nulls:
        raise DeltaSchemaError(f"table {spec.name}: refusing to write NULLs into NOT NULL columns {nulls}")
    return data, stats["__rows"]


def open_table(path: LakePath) -> DeltaTable:
    """The Delta table at `path` (a folder or an s3:// prefix), read with delta-rs."""
    return DeltaTable(str(path), storage_options=storage.delta_options(path))


def table_rows(table: DeltaTable, columns: Sequence[str] | None = None) -> pa.Table:
    """The current rows of a delta-rs table as a pyarrow Table (in no particular order).

    Read by delta-rs's own scan, in Rust. `DeltaTable.to_pyarrow_table` reads through a pyarrow dataset over
    delta-rs's Python file handler instead, and its read-ahead can still hold Python buffers in pyarrow's I/O
    threads when the process exits: the interpreter then aborts after the command's work is done ("terminate
    called without an active exception", exit -6: 9 of 30 `citysafe reconcile` runs on an S3 lake; 0 of 60 now).
    The scan gives strings as string_view; they are cast back to the string types the declarations use.
    """
    reader = table.scan(columns=list(columns) if columns is not None else None)  # arro3; pyarrow reads its stream
    data = pa.RecordBatchReader.from_stream(reader).read_all()
    plain = pa.schema([field.with_type(_without_views(field.type)) for field in data.schema])
    return data if plain == data.schema else data.cast(plain)


def _without_views(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_string_view(kind):
        return pa.string()
    if pa.types.is_binary_view(kind):
        return pa.binary()
    if pa.types.is_list(kind):  # the scan's lists are plain lists; only their values are views
        return pa.list_(kind.value_field.with_type(_without_views(kind.value_type)))
    if pa.types.is_struct(kind):
        return pa.struct([f.with_type(_without_views(f.type)) for f in kind])
    return kind


def _table_or_none(path: LakePath) -> DeltaTable | None:
    try:
        return open_table(path)
    except TableNotFoundError:
        return None


def _columns_on_disk(table: DeltaTable) -> list[tuple[str, str]]:
    return [(f.name, getattr(f.type, "type", str(f.type))) for f in table.schema().fields]


def _declared_columns(spec: TableSpec) -> list[tuple[str, str]]:
    return [(c.name, _TYPES[c.type][1]) for c in spec.columns]


def check_table_schema(spec: TableSpec) -> DeltaTable | None:
    """Compare the table on disk with the declaration; raise DeltaSchemaError on any difference."""
    table = _table_or_none(spec.path)
    if table is None:
        return None
    actual, declared = _columns_on_disk(table), _declared_columns(spec)
    if actual != declared:
        raise DeltaSchemaError(
            f"table {spec.name} at {spec.path}: schema on disk {actual} differs from the declaration {declared}"
        )
    partitions = tuple(table.metadata().partition_columns)
    if partitions != spec.partition_by:
        raise DeltaSchemaError(f"table {spec.name}: partitioned by {partitions}, declared {spec.partition_by}")
    return table


def _column_order_only(spec: TableSpec) -> DeltaTable | None:
    """The table when it differs from the declaration in column order only (a lake written before the
    partition columns moved last), else None."""
    table = _table_or_none(spec.path)
    if table is None or tuple(table.metadata().partition_columns) != spec.partition_by:
        return None
    actual, declared = _columns_on_disk(table), _declared_columns(spec)
    return table if actual != declared and sorted(actual) == sorted(declared) else None


def _reorder_columns(table: DeltaTable, spec: TableSpec) -> DeltaTable:
    """Rewrite the table in the declared column order: a new schema version, then its rows (history
    kept). delta-rs ignores column order when it compares schemas, so an overwrite alone would keep
    the old order. Runs under the lake lock, like every write."""
    return _rewrite(table_rows(table), spec, "column order migration")


def _outdated_layout(spec: TableSpec) -> DeltaTable | None:
    """The table when its spec knows how to upgrade it and its columns or partitioning differ from the
    declaration (a lake written before the last layout change), else None."""
    table = _table_or_none(spec.path) if spec.upgrade else None
    if table is None:
        return None
    same = _columns_on_disk(table) == _declared_columns(spec)
    return None if same and tuple(table.metadata().partition_columns) == spec.partition_by else table


def _rewrite(rows: pa.Table, spec: TableSpec, operation: str) -> DeltaTable:
    """Replace the table by `rows` in the declared columns, order and partitioning: a new schema version,
    then the rows (history kept)."""
    from deltalake import write_deltalake

    rows = rows.select(spec.column_names).cast(spec.storage_schema())
    partitions = list(spec.partition_by) or None
    with _committing(spec, operation):
        options = storage.delta_options(spec.path)
        DeltaTable.create(
            str(spec.path),
            schema=spec.storage_schema(),
            partition_by=partitions,
            mode="overwrite",
            storage_options=options,
        )
        write_deltalake(str(spec.path), rows, mode="append", partition_by=partitions, storage_options=options)
    return open_table(spec.path)


def _lacks_changed_at(spec: TableSpec) -> DeltaTable | None:
    """The table when it holds every declared column but its `changed_at` stamp, declared last (a lake
    written before the stamp existed); else None. Any other difference is refused as before."""
    table = _table_or_none(spec.path) if spec.changed_at else None
    if table is None or spec.column_names[-1] != spec.changed_at:
        return None
    actual, declared = _columns_on_disk(table), _declared_columns(spec)
    return table if actual == declared[:-1] else None


def _add_columns(table: DeltaTable, spec: TableSpec, columns: list[Column]) -> None:
    """Add nullable columns at the end (a metadata-only commit: existing rows read them as NULL)."""
    from deltalake.schema import Field, PrimitiveType

    fields = [Field(c.name, PrimitiveType(_TYPES[c.type][1]), nullable=True) for c in columns]
    with _committing(spec, "add columns"):
        table.alter.add_columns(fields)


def ensure_table(spec: TableSpec) -> DeltaTable:
    """Create the table from its declaration (delta-rs) if absent; verify it if present. One-time
    migrations of a table written before its declaration changed: one that differs in column order
    only is rewritten in the declared order; one whose spec has an `upgrade` is rewritten with it in the
    declared layout; one that lacks only its changed_at stamp gets it (NULL in the rows it holds)."""
    outdated = _column_order_only(spec)
    if outdated is not None:
        log.warning("table %s: rewriting it in the declared column order (one-time migration)", spec.name)
        _reorder_columns(outdated, spec)
    older = _outdated_layout(spec)
    if older is not None:
        log.warning("table %s: rewriting it in the declared layout (one-time migration)", spec.name)
        _rewrite(spec.upgrade(table_rows(older)), spec, "layout migration")
    unstamped = _lacks_changed_at(spec)
    if unstamped is not None:
        log.warning("table %s: adding the column %s (one-time migration)", spec.name, spec.changed_at)
        _add_columns(unstamped, spec, [spec.columns[-1]])
    table = check_table_schema(spec)
    if table is None:
        spec.path.parent.mkdir(parents=True, exist_ok=True)
        table = DeltaTable.create(
            str(spec.path),
            schema=spec.storage_schema(),
            partition_by=list(spec.partition_by) or None,
            name=spec.name,
            storage_options=storage.delta_options(spec.path),
        )
    return table


def version(spec: TableSpec) -> int | None:
    table = _table_or_none(spec.path)
    return None if table is None else table.version()


# --- writes -----------------------------------------------------------------------------------------

# What Sail (and delta-rs) say when another writer committed the version this write was based on.
_CONFLICT_MARKERS = (
    "Failed to commit transaction",
    "CommitFailed",
    "ConcurrentAppend",
    "ConcurrentDelete",
    "ConcurrentTransaction",
    "version already exists",
)


@contextlib.contextmanager
def _committing(spec: TableSpec, operation: str):
    """Turn a lost commit race into one line with a retry hint: nothing of this write was committed
    (Delta commits are atomic), so running the same command again is safe."""
    try:
        yield
    except Exception as exc:
        text = str(exc)
        if not any(marker in text for marker in _CONFLICT_MARKERS):
            raise
        first = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
        raise LakeBusyError(
            f"table {spec.name} ({spec.path}): another writer committed first, so this {operation} was not "
            f"committed ({first}); nothing is lost: run the command again (one run at a time per lake)"
        ) from None


def append(df: DataFrame, spec: TableSpec, *, expected_rows: int | None = None) -> WriteResult:
    """Append rows by column name. Empty input commits nothing."""
    before = ensure_table(spec).version()
    data, rows = check_not_null(conform(df, spec), spec)
    if expected_rows is not None and rows != expected_rows:
        raise RuntimeError(f"table {spec.name}: expected {expected_rows} rows to append, the frame has {rows}")
    return _commit_append(data, spec, rows, before)


def _commit_append(data: DataFrame, spec: TableSpec, rows: int, before: int) -> WriteResult:
    """Append `rows` checked rows in one commit (none when there are none)."""
    if rows == 0:
        return WriteResult(spec.name, "none", version_before=before, version_after=before)
    with _committing(spec, "append"):
        data.write.format("delta").mode("append").save(str(spec.path))
    after = open_table(spec.path).version()
    return WriteResult(
        spec.name, "append", rows_written=rows, rows_inserted=rows, version_before=before, version_after=after
    )


def stage(df: DataFrame, spec: TableSpec) -> WriteResult:
    """Write a staging table: write-audit-publish candidates no reader sees until they are audited and
    merged. The (often expensive) plan runs once: the rows are written first, and the NOT NULL check and
    the row count then read the written table; on NULLs the staged table is removed and the same error
    as `append`'s is raised, so nothing with a NULL in a NOT NULL column goes further. A staging table
    is scratch for one write: whatever an earlier attempt left at the path is removed first."""
    storage.remove_tree(spec.path)
    before = ensure_table(spec).version()
    data = conform(df, spec)
    with _committing(spec, "staging write"):
        data.write.format("delta").mode("append").save(str(spec.path))
    try:
        _, rows = check_not_null(df.sparkSession.read.format("delta").load(str(spec.path)), spec)
    except DeltaSchemaError:
        storage.remove_tree(spec.path)
        raise
    after = open_table(spec.path).version()
    return WriteResult(
        spec.name, "append", rows_written=rows, rows_inserted=rows, version_before=before, version_after=after
    )


def materialize(df: DataFrame, path: LakePath) -> DataFrame:
    """Write an intermediate result of a job to scratch Parquet at `path` and return it read back: a
    barrier in the plan. The engine inlines computed columns into every expression that uses them, so a
    column used by many rules (a parsed timestamp, a UDF's result) would be computed once per use;
    read back from files it is computed once. Scratch, not a lake table: the caller removes it."""
    storage.remove_tree(path)
    df.write.mode("overwrite").parquet(str(path))
    return df.sparkSession.read.parquet(str(path))


def held(df: DataFrame) -> DataFrame:
    """A SMALL result computed once and held by the client (e.g. an aggregate to sync into a table):
    merge_sync reads its source three times, and each read would run the whole plan behind it."""
    return df.sparkSession.createDataFrame(df.toArrow(), schema=df.schema)


def _source_partitions(source: DataFrame, spec: TableSpec) -> dict[str, list[str]] | None:
    """The partition values of `source`'s rows, when a MERGE may be limited to them (the key fixes the
    partition, and every value is a non-NULL string); else None: the MERGE reads the whole table."""
    if not spec.key_fixes_partition:
        return None
    types = {c.name: c.type for c in spec.columns}
    if any(types[p] != "string" for p in spec.partition_by):
        return None
    rows = source.select(*spec.partition_by).distinct().collect()
    values = {p: sorted({r[p] for r in rows}) for p in spec.partition_by}
    if any(v is None for vs in values.values() for v in vs):
        return None
    return values


def _target(spark: SparkSession, spec: TableSpec, partitions: dict[str, list[str]] | None) -> DataFrame:
    """The table as a MERGE's pre-classification reads it: only `partitions` when given."""
    target = spark.read.format("delta").load(str(spec.path))
    for column, values in (partitions or {}).items():
        target = target.where(F.col(column).isin(values))
    return target


def _partition_sql(partitions: dict[str, list[str]] | None, alias: str) -> str:
    """' AND t.p IN (...)' for the ON clause: the engine prunes the other partitions (Sail: a MERGE of
    1k rows into the 1.1M-row incident table, 2.4-3.4 s -> 1.0 s)."""
    if not partitions:
        return ""
    quoted = {p: ", ".join("'" + v.replace("'", "''") + "'" for v in vs) for p, vs in partitions.items()}
    return "".join(f" AND {alias}.`{p}` IN ({vs})" for p, vs in quoted.items())


def _stamped(df: DataFrame, spec: TableSpec) -> DataFrame:
    """`df` with the table's changed_at column set to the time of this write: a MERGE sets every column
    of the rows it inserts or updates, so those rows, and only those, carry it."""
    if not spec.changed_at:
        return df
    return df.withColumn(spec.changed_at, F.lit(dt.datetime.now(dt.UTC)).cast("timestamp"))


def _key_condition(key: Sequence[str], left: str, right: str) -> str:
    # <=> so that a NULL key part matches NULL (keys are validated not-null upstream anyway).
    return " AND ".join(f"{left}.`{k}` <=> {right}.`{k}`" for k in key)


def merge_upsert(spark: SparkSession, df: DataFrame, spec: TableSpec) -> WriteResult:
    """Upsert by `spec.key`: insert new keys, update a row only if the incoming `newer_by` is greater
    (a table without `newer_by` holds immutable facts: insert-only, an existing key is never changed).

    The source must hold at most one row per key (dedupe first; a MERGE with several matches is an
    error in Delta). Only rows that would change the table are merged; if none would, nothing is
    committed and the version stays the same.
    """
    if not spec.key:
        raise ValueError(f"table {spec.name}: merge_upsert needs a key")
    table = ensure_table(spec)
    before = table.version()
    source, rows = check_not_null(conform(_stamped(df, spec), spec), spec)
    null_key = source.where(" OR ".join(f"`{k}` IS NULL" for k in spec.key)).limit(1).collect()
    if null_key:
        raise ValueError(f"table {spec.name}: MERGE source has a row with a NULL key part {list(spec.key)}")
    dup_keys = source.groupBy(*spec.key).count().where("count > 1").limit(1).collect()
    if dup_keys:
        raise ValueError(f"table {spec.name}: MERGE source has several rows for key {dup_keys[0].asDict()}")
    # A table without rows (a cold run's first delivery): the MERGE would insert every row, so one append
    # commit gives the same table without the join against the empty target (2.2M readings at scale 0.25:
    # publish with the hourly table 3.7 -> 2.7 s). Appends do not conflict with each other as MERGEs
    # do: one writer per lake (the lake lock).
    if not table.file_uris():
        return _commit_append(source, spec, rows, before)

    newer = F.col(spec.newer_by) if spec.newer_by else F.lit(None)
    partitions = _source_partitions(source, spec)
    target = _target(spark, spec, partitions).select(
        *[F.col(k) for k in spec.key], newer.alias("__target_newer"), F.lit(True).alias("__in_target")
    )
    joined = source.alias("s").join(target.alias("t"), on=list(spec.key), how="left")
    is_newer = (F.col(f"s.{spec.newer_by}") > F.col("__target_newer")) if spec.newer_by else F.lit(False)
    classified = joined.withColumn(
        "__action",
        F.when(F.col("__in_target").isNull(), F.lit("insert"))
        .when(is_newer, F.lit("update"))
        .otherwise(F.lit("unchanged")),
    )
    counts = {r["__action"]: r["count"] for r in classified.groupBy("__action").count().collect()}
    inserted, updated = counts.get("insert", 0), counts.get("update", 0)
    unchanged = counts.get("unchanged", 0)
    if inserted + updated == 0:
        return WriteResult(spec.name, "none", rows_unchanged=unchanged, version_before=before, version_after=before)

    changes = classified.where(F.col("__action") != "unchanged").select(*spec.column_names)
    view = f"citysafe_merge_{uuid.uuid4().hex}"
    changes.createOrReplaceTempView(view)
    cols = spec.column_names
    set_clause = ", ".join(f"t.`{c}` = s.`{c}`" for c in cols)
    insert_cols = ", ".join(f"`{c}`" for c in cols)
    insert_vals = ", ".join(f"s.`{c}`" for c in cols)
    # Without updates, leave the matched clause out: Sail's MERGE is much cheaper without it.
    update = (
        f"WHEN MATCHED AND s.`{spec.newer_by}` > t.`{spec.newer_by}` THEN UPDATE SET {set_clause} "
        if spec.newer_by and updated
        else ""
    )
    with _committing(spec, "MERGE"):
        spark.sql(
            f"MERGE INTO delta.`{spec.path}` AS t USING {view} AS s "
            f"ON {_key_condition(spec.key, 't', 's')}{_partition_sql(partitions, 't')} "
            f"{update}WHEN NOT MATCHED THEN INSERT ({insert_cols}) VALUES ({insert_vals})"
        ).collect()
    spark.catalog.dropTempView(view)
    after = open_table(spec.path).version()
    return WriteResult(
        spec.name,
        "merge",
        rows_written=inserted + updated,
        rows_inserted=inserted,
        rows_updated=updated,
        rows_unchanged=unchanged,
        version_before=before,
        version_after=after,
    )


def merge_sync(spark: SparkSession, df: DataFrame, spec: TableSpec, *, delete_missing: bool = True) -> WriteResult:
    """Make the table hold exactly the rows of `df`, by key (reference tables, recomputed aggregates):
    insert new keys, update rows whose values differ and, with `delete_missing`, delete keys no longer
    present. One atomic MERGE; nothing is committed when nothing differs."""
    if not spec.key:
        raise ValueError(f"table {spec.name}: merge_sync needs a key")
    table = ensure_table(spec)
    before = table.version()
    source, rows = check_not_null(conform(_stamped(df, spec), spec), spec)
    dup_keys = source.groupBy(*spec.key).count().where("count > 1").limit(1).collect()
    if dup_keys:
        raise ValueError(f"table {spec.name}: source has several rows for key {dup_keys[0].asDict()}")
    if not table.file_uris():  # a table without rows: one append (see merge_upsert)
        return _commit_append(source, spec, rows, before)
    values = [c for c in spec.column_names if c not in spec.key and c != spec.changed_at]
    # Deleting the keys the source lacks needs the whole table; otherwise only the source's partitions.
    partitions = None if delete_missing else _source_partitions(source, spec)
    # The values are compared after the join, column by column with <=> (the MERGE's own condition
    # below), so only rows sharing a key are compared: hashing every target row first cost 2 of the
    # 4 s of a day's hourly refresh at scale 1 (8.8M stored hours, ~25k recomputed).
    src = source.select(*spec.key, *[F.col(c).alias(f"__s_{c}") for c in values], F.lit(True).alias("__in_s"))
    tgt = _target(spark, spec, partitions).select(
        *spec.key, *[F.col(c).alias(f"__t_{c}") for c in values], F.lit(True).alias("__in_t")
    )
    joined = src.join(tgt, on=list(spec.key), how="full_outer" if delete_missing else "left")
    same = [F.col(f"__s_{c}").eqNullSafe(F.col(f"__t_{c}")) for c in values]
    action = (
        F.when(F.col("__in_t").isNull(), "insert")
        .when(F.col("__in_s").isNull(), "delete")
        .when(~functools.reduce(lambda a, b: a & b, same, F.lit(True)), "update")
        .otherwise("unchanged")
    )
    counts = {r["a"]: r["count"] for r in joined.select(action.alias("a")).groupBy("a").count().collect()}
    inserted, updated, deleted = counts.get("insert", 0), counts.get("update", 0), counts.get("delete", 0)
    if inserted + updated + deleted == 0:
        return WriteResult(
            spec.name, "none", rows_unchanged=counts.get("unchanged", 0), version_before=before, version_after=before
        )
    view = f"citysafe_sync_{uuid.uuid4().hex}"
    source.createOrReplaceTempView(view)
    differs = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in values) or "FALSE"
    cols = spec.column_names
    with _committing(spec, "MERGE"):
        spark.sql(
            f"MERGE INTO delta.`{spec.path}` AS t USING {view} AS s "
            f"ON {_key_condition(spec.key, 't', 's')}{_partition_sql(partitions, 't')} "
            f"WHEN MATCHED AND ({differs}) THEN UPDATE SET {', '.join(f't.`{c}` = s.`{c}`' for c in cols)} "
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(f'`{c}`' for c in cols)}) "
            f"VALUES ({', '.join(f's.`{c}`' for c in cols)})"
            + (" WHEN NOT MATCHED BY SOURCE THEN DELETE" if delete_missing else "")
        ).collect()
    spark.catalog.dropTempView(view)
    after = open_table(spec.path).version()
    return WriteResult(
        spec.name,
        "merge",
        rows_written=inserted + updated,
        rows_inserted=inserted,
        rows_updated=updated,
        rows_unchanged=counts.get("unchanged", 0),
        rows_deleted=deleted,
        version_before=before,
        version_after=after,
    )


def delete_keys(spark: SparkSession, keys: DataFrame, spec: TableSpec) -> int:
    """Delete the rows whose key is in `keys` (one MERGE ... DELETE); commits nothing when none match."""
    table = _table_or_none(spec.path)
    if table is None:
        return 0
    present = (
        spark.read.format("delta")
        .load(str(spec.path))
        .select(*spec.key)
        .join(keys.select(*spec.key).distinct(), on=list(spec.key), how="inner")
    )
    n = present.count()
    if n:
        view = f"citysafe_delete_{uuid.uuid4().hex}"
        present.createOrReplaceTempView(view)
        with _committing(spec, "MERGE"):
            spark.sql(
                f"MERGE INTO delta.`{spec.path}` AS t USING {view} AS s "
                f"ON {_key_condition(spec.key, 't', 's')} WHEN MATCHED THEN DELETE"
            ).collect()
        spark.catalog.dropTempView(view)
    return n


def arrow_rows(rows, spec: TableSpec) -> pa.Table:
    """A pandas frame (or Arrow table) as an Arrow table of exactly the declared columns and types;
    missing or extra columns, and values that do not convert safely, are refused naming the column."""
    names = spec.column_names
    have = list(rows.column_names if isinstance(rows, pa.Table) else rows.columns)
    missing, extra = [c for c in names if c not in have], [c for c in have if c not in names]
    if missing or extra:
        raise DeltaSchemaError(f"table {spec.name}: missing columns {missing}, unexpected columns {extra}")
    arrays = []
    for col in spec.columns:
        values = rows[col.name] if isinstance(rows, pa.Table) else pa.array(rows[col.name], from_pandas=True)
        target = _TYPES[col.type][0]
        try:
            arrays.append(values.cast(target) if values.type != target else values)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DeltaSchemaError(
                f"table {spec.name}: column {col.name} does not convert to {col.type}: {exc}"
            ) from None
    return pa.Table.from_arrays(arrays, schema=spec.arrow_schema().with_metadata(None))


def _same_rows(existing: pa.Table, new: pa.Table, spec: TableSpec, delete_missing: bool) -> bool:
    """True when the table already holds exactly the new rows (and, with delete_missing, nothing else)."""
    if delete_missing and existing.num_rows != new.num_rows:
        return False
    old = existing.select(spec.column_names).to_pandas()
    fresh = new.to_pandas()
    key = list(spec.key)
    merged = fresh.merge(old, on=key, how="left", suffixes=("", "__old"), indicator=True)
    if len(merged) != len(fresh) or (merged["_merge"] != "both").any():
        return False
    for c in spec.column_names:
        if c in key:
            continue
        a, b = merged[c], merged[f"{c}__old"]
        if not ((a == b) | (a.isna() & b.isna())).all():
            return False
    return True


def sync_rows(spark: SparkSession, rows, spec: TableSpec, *, delete_missing: bool = True) -> WriteResult:
    """`merge_sync` for rows computed in Python (model outputs): converted to the declared Arrow schema,
    compared with the table first (delta-rs read: an unchanged result touches neither Spark nor the
    table), else one MERGE through `merge_sync`."""
    table = arrow_rows(rows, spec)
    existing = ensure_table(spec)
    before = existing.version()
    if _same_rows(table_rows(existing), table, spec, delete_missing):
        return WriteResult(
            spec.name, "none", rows_unchanged=table.num_rows, version_before=before, version_after=before
        )
    return merge_sync(spark, spark.createDataFrame(table), spec, delete_missing=delete_missing)


# --- reads and maintenance --------------------------------------------------------------------------


def read(
    spark: SparkSession, spec: TableSpec, *, version_as_of: int | None = None, check_schema: bool = True
) -> DataFrame:
    """The table as an engine DataFrame. `check_schema=False` only for a table this run just wrote
    under the declaration itself (e.g. write-audit-publish staging)."""
    if check_schema:
        check_table_schema(spec)
    reader = spark.read.format("delta")
    if version_as_of is not None:
        reader = reader.option("versionAsOf", version_as_of)
    return reader.load(str(spec.path))


def read_arrow(spec: TableSpec, columns: Sequence[str] | None = None) -> pa.Table:
    """The table's current rows via delta-rs (no engine), after checking its schema against the declaration."""
    table = check_table_schema(spec)
    if table is None:
        raise FileNotFoundError(f"table {spec.name} not found at {spec.path}")
    return table_rows(table, columns)


def history(path: LakePath, limit: int | None = None) -> list[dict]:
    """Commit history (newest first) via delta-rs: version, timestamp, operation, metrics."""
    return open_table(path).history(limit)


def compact(path: LakePath) -> dict:
    """Bin-pack small files (delta-rs OPTIMIZE); returns delta-rs metrics."""
    return open_table(path).optimize.compact()


def vacuum(path: LakePath, retention_hours: int = 168, dry_run: bool = True) -> list[str]:
    """Remove files no longer referenced and older than the retention (delta-rs VACUUM)."""
    return open_table(path).vacuum(
        retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=retention_hours >= 168
    )
