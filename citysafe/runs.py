"""Run identity and the per-run summary: <lake_root>/runs/<run_id>/summary.json.

Every stage adds its tables to the same summary, so one Airflow DAG run (several CLI calls sharing a
--run-id) and one `citysafe run` produce one file. Per table: rows read, published, quarantined by
reason, dropped as duplicates, the Delta version written and timings.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def sanitize_run_id(run_id: str) -> str:
    """Airflow run ids hold ':' and '+'; keep a file-system-safe, readable form."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._")
    if not clean:
        raise ValueError(f"run id {run_id!r} has no usable characters")
    return clean


def write_json_atomic(path: Path, data: Any) -> None:
    """Readers see the old file or the whole new one: a rename in a folder, one PUT on object storage."""
    if not isinstance(path, Path):  # an S3Path (citysafe.storage): a PUT is atomic by itself
        text = json.dumps(data, indent=2, sort_keys=True, default=str, ensure_ascii=False) + "\n"
        path.write_text(text, encoding="utf-8")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str, ensure_ascii=False)
        fh.write("\n")
    os.replace(fh.name, path)


class RunSummary:
    def __init__(self, runs_dir: Path, run_id: str):
        self.run_id = sanitize_run_id(run_id)
        self.dir = runs_dir / self.run_id
        self.path = self.dir / "summary.json"

    def load(self) -> dict:
        if self.path.exists():
            return json.loads(self.path.read_text(encoding="utf-8"))
        return {"run_id": self.run_id, "started_at": dt.datetime.now(dt.UTC).isoformat(), "tables": {}, "stages": {}}

    def record_table(self, table: str, entry: dict) -> None:
        data = self.load()
        data["tables"][table] = entry
        write_json_atomic(self.path, data)

    def record_stage(self, stage: str, status: str, seconds: float, **extra) -> None:
        data = self.load()
        data["stages"][stage] = {"status": status, "seconds": round(seconds, 3), **extra}
        data["updated_at"] = dt.datetime.now(dt.UTC).isoformat()
        write_json_atomic(self.path, data)
