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
import shutil
import time
from collections.abc import Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from citysafe import delta_io
from citysafe.config import Settings
from citysafe.delta_io import TableSpec
from citysafe.sources import Source
from spark_jobs import common, tables
from spark_jobs.bronze import bronze_spec


class QualityGateFailed(Exception):
    def __init__(self, message: str, result_path):
        super().__init__(message)
        self.result_path = result_path


@dataclasses.dataclass
class SilverOutput:
    published: DataFrame    # candidates for the target table, in its declared columns
    quarantined: DataFrame  # rows for silver.quarantine (common.quarantine_rows)
    duplicates: DataFrame   # rows dropped as duplicates (counted, not kept)


def run_job(spark: SparkSession, settings: Settings, source: Source, run_id: str, *, job: str,
            target: TableSpec, suite: str, transform: Callable[[DataFrame], SilverOutput], progress=print,
            after_publish: Callable[[DataFrame], dict] | None = None) -> dict:
    """Run one silver job for the bronze batches of `source` it has not published yet."""
    from citysafe import quality

    started = time.monotonic()
    done, pending = common.pending_batches(settings, job, source)
    if not pending:
        progress(f"  silver {job} <- {source.name}: no new bronze batches")
        return {"rows_read": 0, "published": 0, "quarantined": {}, "duplicates": 0, "batches": [],
                "delta_version": delta_io.version(target), "seconds": round(time.monotonic() - started, 3)}

    bronze = delta_io.read(spark, bronze_spec(settings, source)).where(F.col("_batch_id").isin(pending))
    rows_read = bronze.count()
    out = transform(bronze)
    quarantined = out.quarantined.withColumn("run_id", F.lit(run_id))

    # Write
    staging = dataclasses.replace(target, name=f"staging_{target.name}_{source.name}",
                                  path=settings.staging_dir / target.name / run_id / source.name)
    staged = delta_io.append(out.published, staging)
    progress(f"  silver {job} <- {source.name}: {rows_read} bronze rows -> {staged.rows_written} candidates staged")
    n_duplicates = out.duplicates.count()
    reasons = {r["reason"]: r["count"] for r in quarantined.groupBy("reason").count().collect()}

    # Audit
    outcome = quality.validate_staging(spark, settings, suite, staging, run_id, source.name)
    if not outcome["success"]:
        raise QualityGateFailed(
            f"silver {job} <- {source.name}: Great Expectations suite {outcome['suite']} failed "
            f"({outcome['failed']} of {outcome['evaluated']} expectations); nothing published; staging kept at "
            f"{staging.path}; result {outcome['result_path']}", outcome["result_path"])
    progress(f"  silver {job} <- {source.name}: suite {outcome['suite']} passed ({outcome['evaluated']} expectations)")

    # Publish
    staged_df = delta_io.read(spark, staging)
    merged = delta_io.merge_upsert(spark, staged_df, target)
    q = delta_io.merge_upsert(spark, quarantined, tables.quarantine(settings.silver_dir))
    extra = after_publish(staged_df) if after_publish else {}
    common.mark_published(settings, job, source, done, pending)
    shutil.rmtree(staging.path, ignore_errors=True)
    with contextlib.suppress(OSError):
        staging.path.parent.rmdir()  # the run's folder, once no source of it is left

    n_quarantined = sum(reasons.values())
    entry = {
        "rows_read": rows_read,
        "published": merged.rows_inserted + merged.rows_updated,
        "inserted": merged.rows_inserted, "updated": merged.rows_updated,
        "quarantined": dict(sorted(reasons.items())),
        # In-batch duplicates plus rows no newer than what silver already holds.
        "duplicates": n_duplicates + merged.rows_unchanged,
        "batches": pending,
        "delta_version": merged.version_after,
        "quarantine_delta_version": q.version_after,
        "validation": {k: outcome[k] for k in ("suite", "success", "evaluated", "failed", "result_path")},
        **extra,
        "seconds": round(time.monotonic() - started, 3),
    }
    accounted = entry["published"] + n_quarantined + entry["duplicates"]
    entry["reconciled"] = accounted == rows_read
    if not entry["reconciled"]:
        raise RuntimeError(f"silver {job} <- {source.name}: rows do not reconcile: read {rows_read} != published "
                           f"{entry['published']} + quarantined {n_quarantined} + duplicates {entry['duplicates']}")
    return entry
