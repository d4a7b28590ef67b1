"""Write-audit-publish for every silver job.

Write: the job's candidate rows go to a staging Delta table of this run. Audit: the table's Great
Expectations suite validates what was written. Publish: only then MERGE into silver (and the
quarantine rows by lineage), mark the bronze batches published and drop the staging copy. A failed
suite publishes nothing, keeps the staging table and the validation result, and raises
QualityGateFailed (the CLI exits 3). Every bronze row must be accounted for, or the job fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from citysafe import delta_io, storage
from citysafe.config import Settings
from citysafe.delta_io import TableSpec
from citysafe.errors import QualityGateError
from citysafe.sources import Source
from spark_jobs import common, tables
from spark_jobs.bronze import bronze_spec

log = logging.getLogger(__name__)


class QualityGateFailed(QualityGateError):
    def __init__(self, message: str, result_path):
        super().__init__(message)
        self.result_path = result_path


# A job's transform gets the bronze rows and a `materialize(df, name)`: a barrier it may put after its
# expensive steps (see delta_io.materialize). Tests of pure transforms pass `no_barrier`.
Materialize = Callable[[DataFrame, str], DataFrame]


def no_barrier(df: DataFrame, _name: str) -> DataFrame:
    return df


@dataclasses.dataclass
class SilverOutput:
    published: DataFrame  # candidates for the target table, in its declared columns
    quarantined: DataFrame  # rows for silver.quarantine (common.quarantine_rows)
    duplicates: DataFrame  # rows dropped as duplicates (counted, not kept)


# Quarantine reasons a fix to reference data (a crosswalk row, an alias, a unit, a registry entry) can
# clear. Their rows are re-evaluated whenever that reference data changed since the job last ran.
RETRY_REASONS = (
    "unmapped_code",
    "out_of_scope",
    "unclassifiable_code",
    "needs_review",
    "unknown_district",
    "unknown_device",
    "unknown_enterprise",
    "unknown_unit",
    "invalid_device_type",
)
LINEAGE_KEY = ["_batch_id", "_source_file", "_source_row_number"]


def _quarantined_for_retry(spark: SparkSession, settings: Settings, source: Source) -> DataFrame | None:
    spec = tables.quarantine(settings.silver_dir)
    if delta_io.version(spec) is None:
        return None
    rows = delta_io.read(spark, spec).where((F.col("source") == source.name) & F.col("reason").isin(*RETRY_REASONS))
    return rows.select(*LINEAGE_KEY, F.col("run_id").alias("__first_run_id"))


def run_job(
    spark: SparkSession,
    settings: Settings,
    source: Source,
    run_id: str,
    *,
    job: str,
    target: TableSpec,
    suite: str,
    transform: Callable[[DataFrame, Materialize], SilverOutput],
    after_publish: Callable[[DataFrame], dict] | None = None,
    lookup_tables=(),
) -> dict:
    """Run one silver job for the bronze batches of `source` it has not published yet, plus (when the
    reference data or the `lookup_tables` changed since its last run) the rows it quarantined for a
    reason such a change can clear: those now publishable are published and leave the quarantine."""
    from citysafe import quality

    started = time.monotonic()
    done, pending = common.pending_batches(settings, job, source)
    fingerprint = common.reference_fingerprint(settings, lookup_tables)
    retry = None
    if done and common.job_state(settings, job, source).get("reference_fingerprint") != fingerprint:
        retry = _quarantined_for_retry(spark, settings, source)
    n_retry = retry.count() if retry is not None else 0
    if not pending and not n_retry:
        if done:  # remember the reference data this (empty) run saw
            common.mark_published(settings, job, source, done, [], fingerprint)
        log.info(f"  silver {job} <- {source.name}: no new bronze batches")
        return {
            "rows_read": 0,
            "published": 0,
            "quarantined": {},
            "duplicates": 0,
            "batches": [],
            "delta_version": delta_io.version(target),
            "seconds": round(time.monotonic() - started, 3),
        }

    bronze_all = delta_io.read(spark, bronze_spec(settings, source))
    bronze = bronze_all.where(F.col("_batch_id").isin(pending)) if pending else bronze_all.limit(0)
    if n_retry:
        log.info(f"  silver {job} <- {source.name}: reference data changed: re-evaluating {n_retry} quarantined rows")
        bronze = bronze.unionByName(bronze_all.join(retry.select(*LINEAGE_KEY), on=LINEAGE_KEY, how="left_semi"))
    rows_read = bronze.count()
    if rows_read == 0:
        # Only empty deliveries (a department with nothing to report that day): nothing to stage or gate
        # (the suites' row-count floor is for deliveries with rows), the batches are done.
        common.mark_published(settings, job, source, done, pending, fingerprint)
        log.info(f"  silver {job} <- {source.name}: {len(pending)} new batch(es) with no rows: nothing to publish")
        return {
            "rows_read": 0,
            "published": 0,
            "quarantined": {},
            "duplicates": 0,
            "batches": pending,
            "delta_version": delta_io.version(target),
            "reconciled": True,
            "seconds": round(time.monotonic() - started, 3),
        }
    # Scratch for the transform's barriers, beside this run's staging tables. It holds rows before
    # masking, so it lives only until the candidates and the quarantine rows are staged.
    scratch = settings.staging_dir / target.name / run_id / f"{source.name}__scratch"
    try:
        out = transform(bronze, lambda df, name: delta_io.materialize(df, scratch / name))
        quarantined = out.quarantined.withColumn("run_id", F.lit(run_id))
        if n_retry:  # a row still quarantined keeps the run that first quarantined it (re-runs stay no-ops)
            quarantined = (
                quarantined.join(retry, on=LINEAGE_KEY, how="left")
                .withColumn("run_id", F.coalesce(F.col("__first_run_id"), F.col("run_id")))
                .drop("__first_run_id")
            )

        # Write
        staging = dataclasses.replace(
            target,
            name=f"staging_{target.name}_{source.name}",
            path=settings.staging_dir / target.name / run_id / source.name,
        )
        staged = delta_io.stage(out.published, staging)
        # The quarantine rows are staged too: evaluated once here, not again by every later count and MERGE.
        quarantine_spec = tables.quarantine(settings.silver_dir)
        quarantine_staging = dataclasses.replace(
            quarantine_spec,
            name=f"staging_quarantine_{source.name}",
            path=staging.path.parent / f"{source.name}__quarantine",
        )
        delta_io.stage(quarantined, quarantine_staging)
        n_duplicates = out.duplicates.count()
    finally:
        storage.remove_tree(scratch)
    quarantined = delta_io.read(spark, quarantine_staging)
    log.info(f"  silver {job} <- {source.name}: {rows_read} bronze rows -> {staged.rows_written} candidates staged")
    reasons = {r["reason"]: r["count"] for r in quarantined.groupBy("reason").count().collect()}

    # Audit. A run that only re-evaluated quarantined rows and released none has no candidates: there
    # is nothing to publish, so nothing to gate (the suite's row-count floor is for new batches).
    if staged.rows_written == 0 and not pending:
        outcome = {"suite": suite, "success": True, "evaluated": 0, "failed": 0, "result_path": None}
        log.info(
            f"  silver {job} <- {source.name}: no candidates (every re-evaluated row stays quarantined); "
            f"suite {suite} not run"
        )
    else:
        outcome = quality.validate_staging(spark, settings, suite, staging, run_id, source.name, source=source)
    if not outcome["success"]:
        failing = ", ".join(
            f["expectation"] + (f"({f['column']})" if f.get("column") else "") for f in outcome["failures"]
        )
        raise QualityGateFailed(
            f"silver {job} <- {source.name}: Great Expectations suite {outcome['suite']} failed "
            f"({outcome['failed']} of {outcome['evaluated']} expectations: {failing}); nothing published; "
            f"staging kept at {staging.path}; GX result {outcome['result_path']}",
            outcome["result_path"],
        )
    if outcome["evaluated"]:
        log.info(
            f"  silver {job} <- {source.name}: suite {outcome['suite']} passed ({outcome['evaluated']} expectations)"
        )

    # Publish
    staged_df = delta_io.read(spark, staging)
    merged = delta_io.merge_upsert(spark, staged_df, target)
    q = delta_io.merge_sync(spark, quarantined, quarantine_spec, delete_missing=False)
    released = 0
    if n_retry:  # rows cleared by the reference fix (published now, or duplicates of published rows)
        still = quarantined.select(*LINEAGE_KEY)
        cleared = retry.select(*LINEAGE_KEY).join(still, on=LINEAGE_KEY, how="left_anti")
        released = delta_io.delete_keys(spark, cleared, quarantine_spec)
        log.info(f"  silver {job} <- {source.name}: {released} rows released from quarantine")
    extra = after_publish(staged_df) if after_publish else {}
    common.mark_published(settings, job, source, done, pending, fingerprint)
    storage.remove_tree(staging.path)
    storage.remove_tree(quarantine_staging.path)
    with contextlib.suppress(OSError):
        staging.path.parent.rmdir()  # the run's folder, once no source of it is left

    n_quarantined = sum(reasons.values())
    entry = {
        "rows_read": rows_read,
        "published": merged.rows_inserted + merged.rows_updated,
        "inserted": merged.rows_inserted,
        "updated": merged.rows_updated,
        "quarantined": dict(sorted(reasons.items())),
        # In-batch duplicates plus rows no newer than what silver already holds.
        "duplicates": n_duplicates + merged.rows_unchanged,
        "batches": pending,
        "retried_from_quarantine": n_retry,
        "released_from_quarantine": released,
        "delta_version": merged.version_after,
        "quarantine_delta_version": q.version_after,
        "validation": {k: outcome[k] for k in ("suite", "success", "evaluated", "failed", "result_path")},
        **extra,
        "seconds": round(time.monotonic() - started, 3),
    }
    accounted = entry["published"] + n_quarantined + entry["duplicates"]
    entry["reconciled"] = accounted == rows_read
    if not entry["reconciled"]:
        raise RuntimeError(
            f"silver {job} <- {source.name}: rows do not reconcile: read {rows_read} != published "
            f"{entry['published']} + quarantined {n_quarantined} + duplicates {entry['duplicates']}"
        )
    return entry
