"""Build the served DuckDB warehouse (the dbt marts) from the silver Delta tables.

`build_marts` runs `dbt build` on the project in dbt/ as a SUBPROCESS (never `import dbt` here: the
dbt/ folder at the repository root shadows the dbt namespace package, see STACK_NOTES) and:

- builds into a NEW DuckDB file, never into the served one (a DuckDB file is locked by its writer, so
  readers would fail while dbt writes). The build file is `<warehouse dir>/.build-<run_id>/<served
  file name>`: it has the same file name as the served file, so the DuckDB catalog name (the file stem)
  is the same before and after the swap and any catalog-qualified reference stored inside stays valid;
- on success checkpoints and closes it, then `os.replace`s it over `settings.warehouse_path` (atomic on
  one filesystem: open readers keep the old data, new connections see the new);
- on any failure leaves the served file untouched, removes only the failed build file, and raises
  `WarehouseBuildError` naming the failing dbt nodes;
- keeps dbt's target and log folders under `<lake_root>/runs/<run_id>/` (dbt/target stays clean).

Everything dbt needs comes through environment variables of the child process only (they are NOT set
in this process: `citysafe.config.load_settings` refuses unknown CITYSAFE_* variables):

    CITYSAFE_WAREHOUSE_BUILD_PATH   the new DuckDB file dbt writes
    CITYSAFE_SILVER_DIR             <lake_root>/silver (the sources read it with delta_scan)
    CITYSAFE_DUCKDB_DELTA_EXTENSION absolute path of delta.duckdb_extension from the wheel
    CITYSAFE_DUCKDB_EXTENSION_DIR   DuckDB's extension directory (under <lake_root>/_state)
    DBT_PROFILES_DIR, DBT_SEND_ANONYMOUS_USAGE_STATS=false, DO_NOT_TRACK=1
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from citysafe.config import REPO_ROOT, Settings

DBT_PROJECT_DIR = REPO_ROOT / "dbt"
DBT_TARGET = "dev"
# Statuses in run_results.json that fail a build ("warn" passes; "skipped" follows a failure).
_FAILED = {"error", "fail", "runtime error"}
_PASSED_TESTS = {"pass"}
_RUN_ID_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=@-]*")

Progress = Callable[[str], None]


class WarehouseBuildError(RuntimeError):
    """The marts could not be built; the served warehouse was left as it was."""

    def __init__(self, message: str, failed_nodes: Sequence[str] = (), run_dir: Path | None = None):
        self.failed_nodes = list(failed_nodes)
        self.run_dir = run_dir
        if self.failed_nodes:
            message = f"{message}; failing nodes: {', '.join(self.failed_nodes)}"
        if run_dir is not None:
            message = f"{message} (dbt logs and run_results under {run_dir})"
        super().__init__(message)


# --- locations ---------------------------------------------------------------------------------------


def dbt_executable() -> Path:
    """The dbt CLI of the running virtual environment."""
    candidate = Path(sys.executable).parent / "dbt"
    if candidate.is_file():
        return candidate
    found = shutil.which("dbt")
    if found:
        return Path(found)
    raise WarehouseBuildError(f"dbt executable not found next to {sys.executable} nor on PATH")


def delta_extension_path() -> Path:
    """Absolute path of delta.duckdb_extension shipped by the duckdb-extension-delta wheel.

    The wheel pins DuckDB exactly; the folder matching the installed DuckDB version is preferred.
    """
    spec = importlib.util.find_spec("duckdb_extension_delta")
    if spec is None or not spec.submodule_search_locations:
        raise WarehouseBuildError("package duckdb-extension-delta is not installed (DuckDB cannot read Delta)")
    candidates: list[Path] = []
    for location in spec.submodule_search_locations:
        candidates += sorted(Path(location).glob("extensions/*/delta.duckdb_extension"))
    if not candidates:
        raise WarehouseBuildError("duckdb-extension-delta ships no delta.duckdb_extension file")
    try:
        duckdb_version = importlib.metadata.version("duckdb")
    except importlib.metadata.PackageNotFoundError:
        duckdb_version = ""
    for path in candidates:
        if path.parent.name == f"v{duckdb_version}":
            return path.resolve()
    found = ", ".join(p.parent.name for p in candidates)
    raise WarehouseBuildError(
        f"delta.duckdb_extension for DuckDB v{duckdb_version} not found (the wheel has: {found}); "
        "install duckdb and duckdb-extension-delta of the same version"
    )


def _check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID_OK.fullmatch(run_id) or len(run_id) > 200:
        raise ValueError(f"run_id {run_id!r}: use letters, digits and . _ : + = @ - (no slashes, at most 200)")
    return run_id


def build_path_for(settings: Settings, run_id: str) -> Path:
    """Where a build writes: a hidden folder next to the served file, same file name as the served file."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", _check_run_id(run_id))
    served = Path(settings.warehouse_path)
    return served.parent / f".build-{safe}" / served.name


def dbt_env(settings: Settings, build_path: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a dbt subprocess (a copy; this process's environment is not changed)."""
    env = dict(os.environ if base is None else base)
    env.pop(settings.pii_key_env, None)  # dbt needs no secrets
    env.update({
        "CITYSAFE_WAREHOUSE_BUILD_PATH": str(build_path),
        "CITYSAFE_SILVER_DIR": str(Path(settings.silver_dir)),
        "CITYSAFE_DUCKDB_DELTA_EXTENSION": str(delta_extension_path()),
        "CITYSAFE_DUCKDB_EXTENSION_DIR": str(Path(settings.state_dir) / "duckdb_extensions"),
        "DBT_PROFILES_DIR": str(DBT_PROJECT_DIR),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DO_NOT_TRACK": "1",
    })
    return env


def _dbt_vars(settings: Settings) -> str:
    return json.dumps({"city_timezone": settings.timezone})


# --- running dbt ---------------------------------------------------------------------------------------


def _run_dbt(command: str, settings: Settings, build_path: Path, target_path: Path, log_path: Path,
             progress: Progress, timeout_s: float, extra_args: Sequence[str] = ()) -> tuple[int, list[str]]:
    """Run one dbt command, streaming a short line per finished model; return (exit code, error lines)."""
    target_path.mkdir(parents=True, exist_ok=True)
    log_path.mkdir(parents=True, exist_ok=True)
    Path(settings.state_dir, "duckdb_extensions").mkdir(parents=True, exist_ok=True)
    cmd = [
        str(dbt_executable()), command,
        "--project-dir", str(DBT_PROJECT_DIR),
        "--profiles-dir", str(DBT_PROJECT_DIR),
        "--target", DBT_TARGET,
        "--target-path", str(target_path),
        "--log-path", str(log_path),
        "--vars", _dbt_vars(settings),
        "--log-format", "json",
        "--log-format-file", "text",
        "--no-use-colors",
        *extra_args,
    ]
    errors: list[str] = []
    # cwd is the run's log folder so that nothing dbt might drop in its working directory lands in the repo.
    with subprocess.Popen(cmd, cwd=log_path, env=dbt_env(settings, build_path), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace") as proc:
        watchdog = threading.Timer(timeout_s, proc.kill)  # also fires when dbt hangs without output
        watchdog.daemon = True
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                _report_line(line, progress, errors)
            rc = proc.wait()
        finally:
            timed_out = not watchdog.is_alive() and proc.returncode is not None and proc.returncode < 0
            watchdog.cancel()
    if timed_out:
        errors.insert(0, f"dbt {command} ran past {timeout_s:.0f} s and was stopped")
    return rc, errors


def _report_line(line: str, progress: Progress, errors: list[str]) -> None:
    line = line.strip()
    if not line:
        return
    try:
        event = json.loads(line)
        info, data = event["info"], event.get("data", {})
    except (ValueError, KeyError, TypeError):
        errors.append(line[:500])  # not an event: a crash or a traceback line
        return
    name, level = info.get("name", ""), info.get("level", "")
    if name == "LogModelResult":
        node = data.get("node_info", {})
        status = str(data.get("status", node.get("node_status", ""))).upper()
        progress(f"dbt [{data.get('index')}/{data.get('total')}] model {node.get('node_name')}: "
                 f"{status} in {float(data.get('execution_time', 0)):.1f}s")
    elif name in ("LogTestResult", "LogNodeResult") and str(data.get("status", "")).lower() in _FAILED:
        node = data.get("node_info", {})
        progress(f"dbt [{data.get('index')}/{data.get('total') or data.get('num_models')}] {node.get('resource_type', 'test')} "
                 f"{node.get('node_name')}: {str(data.get('status')).upper()}")
    elif level == "error":
        msg = info.get("msg", "").strip()
        if msg:
            errors.append(msg[:2000])


def _read_run_results(target_path: Path) -> list[dict]:
    path = target_path / "run_results.json"
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8")).get("results", [])


def _node_name(unique_id: str) -> str:
    # model.citysafe.stg_x -> stg_x ; test.citysafe.unique_stg_x_id.abc123 -> unique_stg_x_id
    parts = unique_id.split(".")
    if parts[0] in ("test", "unit_test") and len(parts) >= 4:
        return f"{parts[0]} {'.'.join(parts[2:-1]) if parts[0] == 'test' else '.'.join(parts[2:])}"
    return f"{parts[0]} {'.'.join(parts[2:])}" if len(parts) >= 3 else unique_id


def _failure_detail(failed_results: list[dict], limit: int = 3) -> str:
    """One line per distinct failure: the node and the first line of dbt's message after its header."""
    seen: dict[str, str] = {}
    for r in failed_results:
        lines = [ln.strip() for ln in str(r.get("message") or r.get("status")).splitlines() if ln.strip()]
        if len(lines) > 1 and re.match(r"(Runtime|Compilation|Database) Error in ", lines[0]):
            lines = lines[1:]
        seen.setdefault(lines[0][:500] if lines else "", _node_name(r["unique_id"]))
    parts = [f"{node}: {msg}" for msg, node in list(seen.items())[:limit]]
    if len(seen) > limit:
        parts.append(f"... {len(seen) - limit} more")
    return "; ".join(parts)


def _remove_build(build_path: Path) -> None:
    """Remove a build file, its DuckDB WAL and its (private) folder; nothing else."""
    for p in (build_path, Path(f"{build_path}.wal")):
        p.unlink(missing_ok=True)
    try:
        build_path.parent.rmdir()
    except OSError:
        pass  # not empty or gone: leave it


def _count_and_close(build_path: Path, model_relations: dict[str, str]) -> dict[str, int]:
    """Row count of every built model, then CHECKPOINT so the file is whole without its WAL."""
    import duckdb

    counts: dict[str, int] = {}
    con = duckdb.connect(str(build_path), config={"autoinstall_known_extensions": False,
                                                  "autoload_known_extensions": False})
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"LOAD '{str(delta_extension_path()).replace(chr(39), chr(39) * 2)}'")  # staging views read Delta
        for model, relation in sorted(model_relations.items()):
            counts[model] = int(con.execute(f"select count(*) from {relation}").fetchone()[0])
        con.execute("CHECKPOINT")
    finally:
        con.close()
    if Path(f"{build_path}.wal").exists():
        raise WarehouseBuildError(f"{build_path}: a WAL file is left after CHECKPOINT; not swapping it in")
    return counts


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- public API -----------------------------------------------------------------------------------------


def build_marts(settings: Settings, run_id: str, progress: Progress = print, *,
                timeout_s: float = 3600) -> dict:
    """Build the dbt marts into a new DuckDB file and swap it over the served warehouse.

    Returns {"warehouse": served path, "models": {model: row_count}, "tests_passed": n, "seconds": s,
    "target_path": dbt target folder}. Raises WarehouseBuildError (served file untouched) on any failure.
    """
    started = time.monotonic()
    served = Path(settings.warehouse_path)
    build_path = build_path_for(settings, run_id)
    run_dir = Path(settings.runs_dir) / run_id
    target_path, log_path = run_dir / "dbt_target", run_dir / "dbt_logs"

    served.parent.mkdir(parents=True, exist_ok=True)
    _remove_build(build_path)  # a leftover of an earlier try with the same run_id
    build_path.parent.mkdir(parents=True, exist_ok=True)
    (target_path / "run_results.json").unlink(missing_ok=True)

    progress(f"dbt build -> {build_path} (silver: {settings.silver_dir})")
    try:
        rc, errors = _run_dbt("build", settings, build_path, target_path, log_path, progress, timeout_s)
        results = _read_run_results(target_path)
        failed_results = [r for r in results if str(r.get("status")).lower() in _FAILED]
        failed = [_node_name(r["unique_id"]) for r in failed_results]
        if rc != 0 or failed or not results:
            detail = _failure_detail(failed_results) or "; ".join(dict.fromkeys(e for e in errors if e))[:4000]
            skipped = sum(1 for r in results if r.get("status") == "skipped")
            raise WarehouseBuildError(
                f"dbt build failed (exit code {rc}" + (f", {skipped} nodes skipped" if skipped else "") + ")"
                + (f": {detail}" if detail else ""), failed, run_dir)

        relations = {r["unique_id"].split(".")[-1]: r.get("relation_name")
                     for r in results if r["unique_id"].startswith("model.")}
        missing = [m for m, rel in relations.items() if not rel]
        if missing:
            raise WarehouseBuildError("dbt reported models without a relation", missing, run_dir)
        tests_passed = sum(1 for r in results
                           if r["unique_id"].split(".")[0] in ("test", "unit_test")
                           and str(r.get("status")).lower() in _PASSED_TESTS)
        counts = _count_and_close(build_path, relations)

        if Path(f"{served}.wal").exists():
            raise WarehouseBuildError(
                f"{served}.wal exists: something is writing to the served warehouse; not replacing it")
        os.replace(build_path, served)
        _fsync_dir(served.parent)
    except BaseException:
        _remove_build(build_path)
        raise
    _remove_build(build_path)  # only the (now empty) build folder is left

    seconds = round(time.monotonic() - started, 2)
    progress(f"warehouse {served}: {len(counts)} models, {tests_passed} tests passed in {seconds:.1f}s")
    return {"warehouse": str(served), "models": counts, "tests_passed": tests_passed, "seconds": seconds,
            "target_path": str(target_path)}


def dbt_parse(settings: Settings, target_path: Path | None = None, progress: Progress = print, *,
              timeout_s: float = 600) -> Path:
    """Run `dbt parse` (no database is opened) and return the path of the manifest.json it wrote.

    Default target: <lake_root>/_state/dbt_parse/target (for Airflow / cosmos, which read the manifest).
    """
    target_path = Path(target_path) if target_path else Path(settings.state_dir) / "dbt_parse" / "target"
    log_path = target_path.parent / "logs"
    # The profile needs a path to render; parse never opens it.
    placeholder = target_path / "parse-only.duckdb"
    rc, errors = _run_dbt("parse", settings, placeholder, target_path, log_path, progress, timeout_s)
    manifest = target_path / "manifest.json"
    if rc != 0 or not manifest.is_file():
        detail = "; ".join(dict.fromkeys(e for e in errors if e))[:4000]
        raise WarehouseBuildError(f"dbt parse failed (exit code {rc})" + (f": {detail}" if detail else ""))
    progress(f"dbt parse -> {manifest}")
    return manifest
