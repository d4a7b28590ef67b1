"""Build the served DuckDB warehouse (the dbt marts) from the silver Delta tables.

`build_marts` runs `dbt build` on the project in dbt/ as a SUBPROCESS (never `import dbt` here: the
dbt/ folder at the repository root shadows the dbt namespace package, see STACK_NOTES) and:

- builds into a NEW DuckDB file, never into the served one (a DuckDB file is locked by its writer, so
  readers would fail while dbt writes). The build file is `<warehouse dir>/.build-<run_id>/<served
  file name>`: it has the same file name as the served file, so the DuckDB catalog name (the file stem)
  is the same before and after the swap and any catalog-qualified reference stored inside stays valid;
- builds INCREMENTALLY when it can: the build file then starts as a copy of the served warehouse
  (`copy_file`: in-kernel, a reflink where the file system can) and the incremental models
  (materialized='incremental': the device hours and their alert state) recompute only what changed in
  silver, while every other model is rebuilt and every data test runs as in a full build (the dbt unit
  tests, which check the models' SQL on fixed inputs, run in the full builds only: an incremental build
  has the project they passed with, so they would give the same answer again). It continues the
  served warehouse only when that was built with the same dbt project and vars (`project_fingerprint`,
  kept in the build marker `<served>.build.json`): after a change of a model, a macro, a seed, the
  profile, a var or the dbt / DuckDB version, when there is no served warehouse, and with
  `full_refresh=True` (`citysafe build-marts --full-refresh`), the build starts from an empty file as
  before. Either way the served file is only read, and the swap rule below is the same;
- on success checkpoints and closes it, then `os.replace`s it over `settings.warehouse_path` (atomic on
  one filesystem: open readers keep the old data, new connections see the new);
- on any failure leaves the served file untouched, removes only the failed build file, and raises
  `WarehouseBuildError` naming the failing dbt nodes;
- keeps dbt's target and log folders under `<lake_root>/runs/<run_id>/` (dbt/target stays clean), and
  dbt's partial-parse state (partial_parse.msgpack, one per dbt target) under
  `<lake_root>/_state/dbt_partial_parse/<target>/`: it is copied into the run's target folder before
  dbt starts and moved back when dbt wrote a new one, so a build re-parses only what changed (dbt
  itself checks the project files, vars, profile and env vars and parses in full when any differ).
  The profile sees the build file by a RELATIVE path (its file name; dbt runs in the build folder), so
  the per-run build folder does not change the profile and void the saved state;
- `select` (dbt's --select syntax) builds and tests only the selected nodes: the build file then starts
  as a copy of the served warehouse, so the models outside the selection keep their served rows, and
  the swap rule is the same (every selected model and test passed); selected incremental models are
  rebuilt in full (dbt's --full-refresh) when asked or when the project fingerprint changed;
- with `target="prod"` also publishes the marts to PostgreSQL before the swap: the dbt target `prod`
  attaches the database (DuckDB's postgres extension, from the duckdb-extension-postgres-scanner
  wheel) and `dbt run-operation publish_marts` copies every mart into it in one PostgreSQL
  transaction (a schema swap, row counts checked before COMMIT). A failed publish rolls back,
  leaves the served DuckDB file untouched and raises `WarehouseBuildError`. The DSN is read from the
  environment variable the caller names (default MARTS_POSTGRES_DSN); its password reaches dbt only
  as libpq's PGPASSWORD, never in the profile or a log line;
- `generate_docs` runs `dbt docs generate` (offline: dbt-core ships the page) against a copy of the
  served warehouse, so the catalog describes exactly what readers see.

Everything dbt needs comes through environment variables of the child process only (they are NOT set
in this process: `citysafe.config.load_settings` refuses unknown CITYSAFE_* variables):

    CITYSAFE_WAREHOUSE_BUILD_PATH   the new DuckDB file dbt writes (its name, relative to dbt's working folder)
    CITYSAFE_SILVER_DIR             <lake_root>/silver (the sources read it with delta_scan)
    CITYSAFE_DUCKDB_DELTA_EXTENSION absolute path of delta.duckdb_extension from the wheel
    CITYSAFE_DUCKDB_EXTENSION_DIR   DuckDB's extension directory (under <lake_root>/_state)
    CITYSAFE_DUCKDB_MEMORY_LIMIT    DuckDB's memory_limit (the config's warehouse_memory_limit)
    DBT_PROFILES_DIR, DBT_SEND_ANONYMOUS_USAGE_STATS=false, DO_NOT_TRACK=1
  and for target prod only:
    CITYSAFE_DUCKDB_POSTGRES_EXTENSION  absolute path of postgres_scanner.duckdb_extension from the wheel
    CITYSAFE_PROD_POSTGRES_DSN          the PostgreSQL DSN without its password
    PGPASSWORD                          the password (libpq reads it), when the DSN has one
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from citysafe import logs, storage
from citysafe.config import REPO_ROOT, ConfigError, Settings
from citysafe.errors import MartsError
from citysafe.runs import write_json_atomic
from citysafe.sources import load_registry

log = logging.getLogger(__name__)

DBT_PROJECT_DIR = REPO_ROOT / "dbt"
DBT_TARGET = "dev"
TARGETS = ("dev", "prod")
PROD_DSN_ENV = "MARTS_POSTGRES_DSN"  # default name of the variable holding the prod PostgreSQL DSN
PROD_SCHEMA = "marts"
_SCHEMA_OK = re.compile(r"[a-z_][a-z0-9_]{0,46}")
# Statuses in run_results.json that fail a build ("warn" passes; "skipped" follows a failure).
_FAILED = {"error", "fail", "runtime error"}
_PASSED_TESTS = {"pass"}
_RUN_ID_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=@-]*")


class WarehouseBuildError(MartsError):
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
    return _wheel_extension_path("duckdb_extension_delta", "delta", "DuckDB cannot read Delta")


def httpfs_extension_path() -> Path:
    """Absolute path of httpfs.duckdb_extension from the duckdb-extension-httpfs wheel: DuckDB reads a
    lake on S3-compatible storage (lake_root: s3://...) through it."""
    return _wheel_extension_path("duckdb_extension_httpfs", "httpfs", "DuckDB cannot read a lake on S3")


def s3_secret_env(settings: Settings) -> dict[str, str]:
    """The values of DuckDB's S3 secret (dbt/profiles.yml `secrets`, `lake_access_sql`): the lake's
    store and the AWS credentials of this process. A lake in a folder gets an unused default secret."""
    lake = settings.lake_root
    if not storage.is_remote(lake):
        return {}
    store = lake.store
    creds = store.credentials()
    env = {
        "CITYSAFE_S3_KEY_ID": creds.get("AWS_ACCESS_KEY_ID", ""),
        "CITYSAFE_S3_SECRET": creds.get("AWS_SECRET_ACCESS_KEY", ""),
        "CITYSAFE_S3_SESSION_TOKEN": creds.get("AWS_SESSION_TOKEN", ""),
        "CITYSAFE_S3_REGION": store.region,
    }
    if store.endpoint_url:  # an S3-compatible server: path-style URLs, TLS as its URL says
        env["CITYSAFE_S3_ENDPOINT"] = urlparse(store.endpoint_url).netloc
        env["CITYSAFE_S3_URL_STYLE"] = "path"
        env["CITYSAFE_S3_USE_SSL"] = "false" if store.allow_http else "true"
    return env


def lake_access_sql(settings: Settings) -> list[str]:
    """Statements that let a DuckDB connection read the lake's Delta tables (the same as the profile)."""
    quote = "'{}'".format
    statements = [f"LOAD {quote(str(delta_extension_path()).replace(chr(39), chr(39) * 2))}"]
    env = s3_secret_env(settings)
    if env:
        statements.append(f"LOAD {quote(str(httpfs_extension_path()).replace(chr(39), chr(39) * 2))}")
        options = {
            "KEY_ID": env["CITYSAFE_S3_KEY_ID"],
            "SECRET": env["CITYSAFE_S3_SECRET"],
            "SESSION_TOKEN": env["CITYSAFE_S3_SESSION_TOKEN"],
            "REGION": env["CITYSAFE_S3_REGION"],
            "ENDPOINT": env.get("CITYSAFE_S3_ENDPOINT", "s3.amazonaws.com"),
            "URL_STYLE": env.get("CITYSAFE_S3_URL_STYLE", "vhost"),
            "USE_SSL": env.get("CITYSAFE_S3_USE_SSL", "true"),
        }
        body = ", ".join(f"{k} {quote(v.replace(chr(39), chr(39) * 2))}" for k, v in options.items())
        statements.append(f"CREATE OR REPLACE SECRET citysafe_lake (TYPE s3, {body})")
    return statements


def postgres_extension_path() -> Path:
    """Absolute path of postgres_scanner.duckdb_extension from the duckdb-extension-postgres-scanner wheel
    (DuckDB's own download of the extension needs the internet; the wheel does not)."""
    return _wheel_extension_path(
        "duckdb_extension_postgres_scanner", "postgres_scanner", "the prod target cannot attach PostgreSQL"
    )


def _wheel_extension_path(package: str, extension: str, consequence: str) -> Path:
    wheel = package.replace("_", "-")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WarehouseBuildError(f"package {wheel} is not installed ({consequence})")
    candidates: list[Path] = []
    for location in spec.submodule_search_locations:
        candidates += sorted(Path(location).glob(f"extensions/*/{extension}.duckdb_extension"))
    if not candidates:
        raise WarehouseBuildError(f"{wheel} ships no {extension}.duckdb_extension file")
    try:
        duckdb_version = importlib.metadata.version("duckdb")
    except importlib.metadata.PackageNotFoundError:
        duckdb_version = ""
    for path in candidates:
        if path.parent.name == f"v{duckdb_version}":
            return path.resolve()
    found = ", ".join(p.parent.name for p in candidates)
    raise WarehouseBuildError(
        f"{extension}.duckdb_extension for DuckDB v{duckdb_version} not found (the wheel has: {found}); "
        f"install duckdb and {wheel} of the same version"
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


def dbt_env(
    settings: Settings, build_path: Path, base: dict[str, str] | None = None, postgres_dsn: str | None = None
) -> dict[str, str]:
    """Environment for a dbt subprocess (a copy; this process's environment is not changed).

    `postgres_dsn` (target prod): the PostgreSQL DSN to attach; its password travels as PGPASSWORD."""
    env = dict(os.environ if base is None else base)
    env.pop(settings.pii_key_env, None)  # dbt needs no secrets
    env.pop("PGPASSWORD", None)
    if postgres_dsn is not None:
        dsn, password = _split_password(postgres_dsn)
        env["CITYSAFE_DUCKDB_POSTGRES_EXTENSION"] = str(postgres_extension_path())
        env["CITYSAFE_PROD_POSTGRES_DSN"] = dsn
        if password is not None:
            env["PGPASSWORD"] = password
    env.update(
        {
            "CITYSAFE_WAREHOUSE_BUILD_PATH": str(build_path),
            "CITYSAFE_SILVER_DIR": str(settings.silver_dir),
            "CITYSAFE_GOLD_DIR": str(settings.gold_dir),
            "CITYSAFE_DUCKDB_DELTA_EXTENSION": str(delta_extension_path()),
            "CITYSAFE_DUCKDB_HTTPFS_EXTENSION": str(httpfs_extension_path()),
            **s3_secret_env(settings),
            "CITYSAFE_DUCKDB_EXTENSION_DIR": str(settings.cache_dir / "duckdb_extensions"),
            "CITYSAFE_DUCKDB_MEMORY_LIMIT": settings.warehouse_memory_limit,
            "DBT_PROFILES_DIR": str(DBT_PROJECT_DIR),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "DO_NOT_TRACK": "1",
        }
    )
    return env


def _split_password(dsn: str) -> tuple[str, str | None]:
    """(DSN without its password, the password): the password is handed to libpq as PGPASSWORD so that
    it never appears in the profile, the ATTACH statement or a log line."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except Exception as exc:  # noqa: BLE001 - psycopg raises several kinds; the message names the fault, never the value
        raise WarehouseBuildError(f"the prod PostgreSQL DSN cannot be parsed: {type(exc).__name__}") from None
    password = params.pop("password", None)
    return make_conninfo(**params), (None if password is None else str(password))


def dbt_vars(settings: Settings, registry: dict | None = None) -> dict:
    """The dbt vars the pipeline passes: the city's time zone from the config, and from the source
    registry (sources/*.yaml) the sources feeding silver `incident` (one count column each in the
    marts) and those among them that map dispatched / on-scene times (mart_response_times)."""
    registry = load_registry() if registry is None else registry
    incident = sorted(n for n, s in registry.items() if s.silver is not None and s.silver.table == "incident")
    timed = sorted(
        n for n in incident if registry[n].silver.fields.dispatched_at or registry[n].silver.fields.on_scene_at
    )
    return {"city_timezone": settings.timezone, "incident_sources": incident, "response_time_sources": timed}


def _dbt_vars(settings: Settings) -> str:
    return json.dumps(dbt_vars(settings), sort_keys=True)


# What the models compute depends on these files (docs and dbt/tests do not change a row).
PROJECT_LOGIC = ("models", "macros", "seeds", "dbt_project.yml", "profiles.yml")
VERSIONED_PACKAGES = ("dbt-core", "dbt-duckdb", "duckdb")


def project_fingerprint(settings: Settings) -> str:
    """sha256 of what the marts are computed with: the dbt project's models, macros, seeds, project and
    profile files, the vars and the dbt / DuckDB versions. An incremental build continues the served
    warehouse only when it was built with the same fingerprint; otherwise it builds in full."""
    from citysafe import fingerprint

    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    files = fingerprint.files_digest([DBT_PROJECT_DIR / name for name in PROJECT_LOGIC], DBT_PROJECT_DIR)
    payload = json.dumps({"files": files, "vars": dbt_vars(settings), "versions": versions}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


# --- running dbt ---------------------------------------------------------------------------------------


def dbt_command(
    command: str, settings: Settings, target_path: Path, log_path: Path, *, target: str = DBT_TARGET
) -> list[str]:
    """The dbt CLI call for `command` ("build", "docs generate" ...) on this project and profile, with
    dbt's target and log folders where the caller wants them (created here)."""
    target_path.mkdir(parents=True, exist_ok=True)
    log_path.mkdir(parents=True, exist_ok=True)
    (settings.cache_dir / "duckdb_extensions").mkdir(parents=True, exist_ok=True)
    return [
        str(dbt_executable()),
        *command.split(),
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target",
        target,
        "--target-path",
        str(target_path),
        "--log-path",
        str(log_path),
        # dbt.log at info: one line per node. Debug level (dbt's default for the file) writes every
        # statement and event, about 50 lines per node: 3-4 s of a daily build's 35 at scale 1. The
        # SQL each node ran stays in <target-path>/run/.
        "--log-level-file",
        "info",
        "--vars",
        _dbt_vars(settings),
    ]


def _error_detail(errors: Sequence[str]) -> str:
    """dbt's error lines, each once, cut to a length that fits an exception message."""
    return "; ".join(dict.fromkeys(e for e in errors if e))[:4000]


PARTIAL_PARSE_FILE = "partial_parse.msgpack"


def partial_parse_state(settings: Settings, target: str = DBT_TARGET) -> Path:
    """Where dbt's partial-parse state for `target` is kept between runs (the vars hash dbt checks
    includes the target, so each target keeps its own)."""
    return settings.cache_dir / "dbt_partial_parse" / target / PARTIAL_PARSE_FILE


def _restore_parse_state(state: Path, target_path: Path) -> None:
    if state.is_file():
        shutil.copyfile(state, target_path / PARTIAL_PARSE_FILE)


def _save_parse_state(state: Path, target_path: Path) -> None:
    """Move the state dbt wrote into the stable folder (atomically: a concurrent reader sees the old or
    the new file; a broken file only makes dbt parse in full)."""
    written = target_path / PARTIAL_PARSE_FILE
    if not written.is_file():
        return
    state.parent.mkdir(parents=True, exist_ok=True)
    tmp = state.with_name(f".{state.name}.{os.getpid()}.tmp")
    try:
        shutil.move(str(written), tmp)
        os.replace(tmp, state)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        log.warning("dbt partial-parse state not kept (%s): the next run parses in full", exc)


def _run_dbt(
    command: str,
    settings: Settings,
    build_path: Path,
    target_path: Path,
    log_path: Path,
    timeout_s: float,
    extra_args: Sequence[str] = (),
    *,
    target: str = DBT_TARGET,
    postgres_dsn: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> tuple[int, list[str]]:
    """Run one dbt command, streaming a short line per finished model; return (exit code, error lines).

    dbt runs in `build_path`'s folder and the profile gets the file NAME only: the profile (part of what
    dbt's partial-parse check hashes) is then the same for every run, whatever its build folder."""
    cmd = dbt_command(command, settings, target_path, log_path, target=target) + [
        "--log-format",
        "json",
        "--log-format-file",
        "text",
        "--no-use-colors",
        *extra_args,
    ]
    errors: list[str] = []
    steps = logs.StepProgress(f"dbt {command}", log)
    workdir = build_path.parent
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**dbt_env(settings, Path(build_path.name), postgres_dsn=postgres_dsn), **(extra_env or {})}
    state = partial_parse_state(settings, target)
    _restore_parse_state(state, target_path)
    with subprocess.Popen(
        cmd,
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
    ) as proc:
        watchdog = threading.Timer(timeout_s, proc.kill)  # also fires when dbt hangs without output
        watchdog.daemon = True
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                _report_line(line, errors, steps)
            rc = proc.wait()
        finally:
            steps.close()
            timed_out = not watchdog.is_alive() and proc.returncode is not None and proc.returncode < 0
            watchdog.cancel()
    _save_parse_state(state, target_path)
    if timed_out:
        errors.insert(0, f"dbt {command} ran past {timeout_s:.0f} s and was stopped")
    return rc, errors


def _report_line(line: str, errors: list[str], steps: logs.StepProgress) -> None:
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
        steps.step(
            f"dbt [{data.get('index')}/{data.get('total')}] model {node.get('node_name')}: "
            f"{status} in {float(data.get('execution_time', 0)):.1f}s",
            done=data.get("index"),
            total=data.get("total"),
        )
    elif name in ("LogTestResult", "LogNodeResult") and str(data.get("status", "")).lower() in _FAILED:
        node = data.get("node_info", {})
        log.warning(
            f"dbt [{data.get('index')}/{data.get('total') or data.get('num_models')}] "
            f"{node.get('resource_type', 'test')} {node.get('node_name')}: {str(data.get('status')).upper()}"
        )
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


BUILD_LOCK = ".building"
STALE_UNLOCKED_BUILD_SECONDS = 3600  # a build folder without a lock file (older versions) is stale after this


def copy_file(source: Path, target: Path) -> None:
    """Copy a file inside the kernel with copy_file_range: a reflink (instant, no extra space) on file
    systems that share blocks (XFS, btrfs), an in-kernel copy elsewhere (ext4: 0.2 s for the 470 MB
    scale-1 warehouse from the page cache; DuckDB's ATTACH + COPY FROM DATABASE took 28 s). Falls back
    to shutil.copyfile where the call is refused (another file system, an old kernel)."""
    try:
        with open(source, "rb") as src, open(target, "wb") as dst:
            left = os.fstat(src.fileno()).st_size
            while left > 0:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), left)
                if copied == 0:
                    raise OSError(f"{source}: copy_file_range stopped {left} bytes before the end")
                left -= copied
    except OSError:
        shutil.copyfile(source, target)


def _remove_build(build_path: Path) -> None:
    """Remove a build file, its DuckDB WAL, its lock and its (private) folder; nothing else."""
    for p in (build_path, Path(f"{build_path}.wal"), build_path.parent / BUILD_LOCK):
        p.unlink(missing_ok=True)
    try:
        build_path.parent.rmdir()
    except OSError:
        pass  # not empty or gone: leave it


def _connect(path: Path, *, read_only: bool = False):
    """A DuckDB connection that never installs or auto-loads an extension (nothing downloads)."""
    import duckdb

    return duckdb.connect(
        str(path),
        read_only=read_only,
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
    )


def _count_and_close(settings: Settings, build_path: Path, model_relations: dict[str, str]) -> dict[str, int]:
    """Row count of every built model, then CHECKPOINT so the file is whole without its WAL."""
    counts: dict[str, int] = {}
    con = _connect(build_path)
    try:
        con.execute("SET TimeZone = 'UTC'")
        for statement in lake_access_sql(settings):  # staging views read the lake's Delta tables
            con.execute(statement)
        for model, relation in sorted(model_relations.items()):
            counts[model] = int(con.execute(f"select count(*) from {relation}").fetchone()[0])
        con.execute("CHECKPOINT")
    finally:
        con.close()
    if Path(f"{build_path}.wal").exists():
        raise WarehouseBuildError(f"{build_path}: a WAL file is left after CHECKPOINT; not swapping it in")
    return counts


def build_marker_path(served: Path) -> Path:
    return Path(f"{served}.build.json")


def _write_build_marker(
    served: Path,
    settings: Settings,
    run_id: str,
    select: list[str],
    mode: str,
    fingerprint: str,
    lake: str | None,
    started_at: dt.datetime,
) -> None:
    """Which run built every model of the served file last (a selected build keeps that), with which
    project fingerprint, from which lake (lake_identity), and which run last touched it. Written after
    the swap: a crash in between leaves an older marker, which then only causes a full build."""
    marker = build_marker_path(served)
    previous = _read_build_marker(served)
    data = {
        "full_build_run_id": previous.get("full_build_run_id") if select else run_id,
        # when that build started (the silver rows stamped before it were all tested by it)
        "full_build_started_at": previous.get("full_build_started_at") if select else started_at.isoformat(),
        # a selected build leaves the models outside the selection as they were built
        "project_fingerprint": previous.get("project_fingerprint") if select else fingerprint,
        "lake": lake,
        "last_run_id": run_id,
        "last_select": select,
        "last_mode": mode,
    }
    write_json_atomic(marker, data)


def _read_build_marker(served: Path) -> dict:
    try:
        data = json.loads(build_marker_path(served).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def served_build(settings: Settings) -> dict:
    """{"exists": bool, "full_build_run_id": ...}: identifies the served warehouse's last build of every
    model, full or incremental (a selected build, e.g. the gold marts after a model run, does not change it)."""
    served = Path(settings.warehouse_path)
    if not served.is_file():
        return {"exists": False}
    return {"exists": True, "full_build_run_id": _read_build_marker(served).get("full_build_run_id")}


def has_models(settings: Settings, *models: str) -> bool:
    """True when the served warehouse has every named model (table or view)."""
    if not Path(settings.warehouse_path).is_file():
        return False
    names = set(query(settings, "select table_name from information_schema.tables")["table_name"])
    return all(m in names for m in models)


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


@contextlib.contextmanager
def _build_lock(build_dir: Path):
    """Held for the whole build: a folder whose lock nobody holds belongs to a build that was killed."""
    build_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(build_dir / BUILD_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def remove_stale_builds(served: Path) -> list[Path]:
    """Delete the `.build-*` folders next to the served file that no live build holds (a killed build
    leaves its folder behind); returns what was removed."""
    removed = []
    for folder in sorted(Path(served).parent.glob(".build-*")):
        if not folder.is_dir():
            continue
        lock = folder / BUILD_LOCK
        if lock.exists():
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a build is running in it
            finally:
                os.close(fd)
        elif time.time() - folder.stat().st_mtime < STALE_UNLOCKED_BUILD_SECONDS:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
        log.warning("removed %s: left behind by a marts build that did not finish", folder)
    return removed


# --- public API -----------------------------------------------------------------------------------------


def build_marts(
    settings: Settings,
    run_id: str,
    *,
    timeout_s: float = 3600,
    target: str = DBT_TARGET,
    postgres_dsn_env: str = PROD_DSN_ENV,
    postgres_schema: str = PROD_SCHEMA,
    select: Sequence[str] = (),
    full_refresh: bool = False,
) -> dict:
    """Build the dbt marts into a new DuckDB file and swap it over the served warehouse.

    Returns {"warehouse": served path, "models": {model: row_count}, "tests_passed": n, "seconds": s,
    "target_path": dbt target folder, "mode": "full" | "incremental" | "selected", "copy_seconds": s}.
    Raises WarehouseBuildError (served file untouched) on any failure.

    mode "incremental": the build starts from a copy of the served warehouse (built with the same
    `project_fingerprint`) and the incremental models process only what changed; "full": from an
    empty file, because there is no served warehouse, its fingerprint differs, or `full_refresh`.

    target="prod": the same build with the PostgreSQL database in $`postgres_dsn_env` attached; after
    every test passed the marts are published to its schema `postgres_schema` in one transaction
    (result key "published": {"schema", "tables"}), then the DuckDB file is swapped in. A failed
    publish leaves PostgreSQL and the served DuckDB file as they were.

    select: dbt node selectors (e.g. ["+mart_incident_district_week"]): only those nodes are built and
    tested, into a copy of the served warehouse (every other model keeps its served rows); "models" then
    counts the selected models only. Same swap rule: every selected model and test must pass. Selected
    incremental models are rebuilt in full with `full_refresh` or when the fingerprint changed.
    """
    if target not in TARGETS:
        raise ValueError(f"target {target!r}: use one of {', '.join(TARGETS)}")
    select = [select] if isinstance(select, str) else list(select)
    bad = [s for s in select if not isinstance(s, str) or not s.strip() or s.startswith("-")]
    if bad:
        raise ValueError(f"select {bad!r}: give dbt node selectors, not options")
    postgres_dsn = None
    if target == "prod":
        if not _SCHEMA_OK.fullmatch(postgres_schema or ""):
            raise ConfigError(
                f"postgres schema {postgres_schema!r}: use a lower-case identifier, at most 47 characters"
            )
        postgres_dsn = os.environ.get(postgres_dsn_env)
        if not postgres_dsn:
            raise WarehouseBuildError(
                f"target prod: set the environment variable {postgres_dsn_env} to the "
                "PostgreSQL DSN the marts are published to"
            )
        postgres_extension_path()  # fail before building when the wheel is missing
    started = time.monotonic()
    served = Path(settings.warehouse_path)
    build_path = build_path_for(settings, run_id)
    run_dir = Path(settings.runs_dir) / run_id
    target_path, log_path = run_dir / "dbt_target", run_dir / "dbt_logs"

    served.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(served)  # killed builds' folders, this run_id's earlier try included
    _remove_build(build_path)
    (target_path / "run_results.json").unlink(missing_ok=True)
    with _build_lock(build_path.parent):
        return _build(
            settings,
            served,
            build_path,
            run_dir,
            target_path,
            log_path,
            timeout_s,
            target,
            postgres_dsn,
            postgres_schema,
            started,
            select,
            full_refresh,
        )


def lake_identity(settings: Settings) -> str | None:
    """The Delta table id of silver.device_reading_hourly (None before the table exists): the incremental
    device marts follow its rows' change stamps, which mean nothing for another lake's table (or for
    this one re-created), so the served warehouse is continued only for the same table."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    path = settings.silver_dir / "device_reading_hourly"
    try:
        return DeltaTable(str(path), storage_options=storage.delta_options(path)).metadata().id
    except TableNotFoundError:
        return None


def plan_build(served: Path, select: Sequence[str], full_refresh: bool, fingerprint: str, lake: str | None) -> dict:
    """How a build starts: {"mode": "full" | "incremental" | "selected", "copy_served": start from a copy
    of the served file, "refresh_selected": pass dbt --full-refresh, "reason": why not incremental,
    "unit_tests": run dbt's unit tests (when the project is not the one the served file was built and
    its unit tests passed with), "silver_changed_since": from when the staging tests of the big silver
    tables check the rows (ISO time, or "-infinity": every row)}. `lake`: lake_identity() now."""
    served = Path(served)
    marker = _read_build_marker(served) if served.is_file() else {}
    changed = marker.get("project_fingerprint") != fingerprint
    other_lake = marker.get("lake") != lake
    why_full = (
        "--full-refresh"
        if full_refresh
        else "no served warehouse"
        if not served.is_file()
        else "the dbt project, its vars or the dbt / DuckDB version changed since the served warehouse was built"
        if changed
        else "the served warehouse was built from another lake (silver.device_reading_hourly's Delta table id differs)"
        if other_lake
        else ""
    )
    # unit tests check the SQL on fixed inputs: run them unless this project passed them when it built
    # the served file (another lake needs the models rebuilt, not re-checked)
    unit_tests = full_refresh or not served.is_file() or changed
    if select:
        # the models outside the selection keep their served rows; selected incremental ones start over
        refresh = served.is_file() and (full_refresh or changed or other_lake)
        plan = {"mode": "selected", "copy_served": served.is_file(), "refresh_selected": refresh}
    else:
        # a full build starts from an empty file: every model, the incremental ones too, is built in full
        plan = {"mode": "full" if why_full else "incremental", "copy_served": not why_full, "refresh_selected": False}
    # Continuing the served file, the big silver tables' staging tests check the rows stamped since its
    # last build of every model started (the older ones passed them then); otherwise every row.
    continued = plan["copy_served"] and not plan["refresh_selected"]
    since = marker.get("full_build_started_at") if continued else None
    return {**plan, "reason": why_full, "unit_tests": unit_tests, "silver_changed_since": since or "-infinity"}


def _build(
    settings: Settings,
    served: Path,
    build_path: Path,
    run_dir: Path,
    target_path: Path,
    log_path: Path,
    timeout_s: float,
    target: str,
    postgres_dsn: str | None,
    postgres_schema: str,
    started: float,
    select: list[str],
    full_refresh: bool,
) -> dict:
    fingerprint, lake = project_fingerprint(settings), lake_identity(settings)
    plan = plan_build(served, select, full_refresh, fingerprint, lake)
    # The build runs under the lake lock (the marts stage holds it), so silver rows stamped (_changed_at)
    # before this moment are all in what it reads, and none are stamped while it runs (the next build's
    # tests start from it: plan_build's silver_changed_since).
    started_at = dt.datetime.now(dt.UTC)
    silver_since = {"CITYSAFE_MARTS_SILVER_CHANGED_SINCE": plan["silver_changed_since"]}
    mode, copy_served = plan["mode"], plan["copy_served"]
    if plan["reason"]:
        log.info(f"{mode} build: {plan['reason']}")
    dbt_args = (
        (["--select", *select] if select else [])
        + (["--full-refresh"] if plan["refresh_selected"] else [])
        + ([] if plan["unit_tests"] else ["--exclude-resource-type", "unit_test"])
    )
    log.info(
        f"dbt build --target {target} {' '.join(dbt_args)}".rstrip()
        + f" -> {build_path} ({mode}; silver: {settings.silver_dir})"
    )
    published = None
    copy_seconds = 0.0
    try:
        if copy_served:
            if Path(f"{served}.wal").exists():
                raise WarehouseBuildError(
                    f"{served}.wal exists: something is writing to the served warehouse; not copying it"
                )
            t0 = time.monotonic()
            copy_file(served, build_path)
            copy_seconds = round(time.monotonic() - t0, 2)
            log.info(f"copied the served warehouse ({served.stat().st_size / 1e6:.0f} MB) in {copy_seconds:.1f}s")
        rc, errors = _run_dbt(
            "build",
            settings,
            build_path,
            target_path,
            log_path,
            timeout_s,
            dbt_args,
            target=target,
            postgres_dsn=postgres_dsn,
            extra_env=silver_since,
        )
        results = _read_run_results(target_path)
        failed_results = [r for r in results if str(r.get("status")).lower() in _FAILED]
        failed = [_node_name(r["unique_id"]) for r in failed_results]
        if rc != 0 or failed or not results:
            detail = _failure_detail(failed_results) or _error_detail(errors)
            skipped = sum(1 for r in results if r.get("status") == "skipped")
            raise WarehouseBuildError(
                f"dbt build failed (exit code {rc}"
                + (f", {skipped} nodes skipped" if skipped else "")
                + ")"
                + (f": {detail}" if detail else ""),
                failed,
                run_dir,
            )

        relations = {
            r["unique_id"].split(".")[-1]: r.get("relation_name")
            for r in results
            if r["unique_id"].startswith("model.")
        }
        missing = [m for m, rel in relations.items() if not rel]
        if missing:
            raise WarehouseBuildError("dbt reported models without a relation", missing, run_dir)
        tests_passed = sum(
            1
            for r in results
            if r["unique_id"].split(".")[0] in ("test", "unit_test") and str(r.get("status")).lower() in _PASSED_TESTS
        )
        counts = _count_and_close(settings, build_path, relations)
        if postgres_dsn is not None:
            published = _publish_to_postgres(settings, build_path, run_dir, timeout_s, postgres_dsn, postgres_schema)
            if Path(f"{build_path}.wal").exists():
                raise WarehouseBuildError(f"{build_path}: publishing left a WAL file; not swapping it in")

        if Path(f"{served}.wal").exists():
            raise WarehouseBuildError(
                f"{served}.wal exists: something is writing to the served warehouse; not replacing it"
            )
        os.replace(build_path, served)
        _fsync_dir(served.parent)
        _write_build_marker(served, settings, run_dir.name, select, mode, fingerprint, lake, started_at)
    except BaseException:
        _remove_build(build_path)
        raise
    _remove_build(build_path)  # only the (now empty) build folder is left

    seconds = round(time.monotonic() - started, 2)
    log.info(f"warehouse {served}: {len(counts)} models, {tests_passed} tests passed in {seconds:.1f}s ({mode})")
    result = {
        "warehouse": str(served),
        "models": counts,
        "tests_passed": tests_passed,
        "seconds": seconds,
        "target_path": str(target_path),
        "mode": mode,
        "copy_seconds": copy_seconds,
    }
    if published is not None:
        result["published"] = published
    return result


def _publish_to_postgres(
    settings: Settings, build_path: Path, run_dir: Path, timeout_s: float, postgres_dsn: str, schema: str
) -> dict:
    """`dbt run-operation publish_marts` on the finished build file (dbt/macros/publish_marts.sql)."""
    target_path, log_path = run_dir / "dbt_publish_target", run_dir / "dbt_publish_logs"
    log.info(f"publishing the marts to PostgreSQL schema {schema} (one transaction)")
    rc, errors = _run_dbt(
        "run-operation publish_marts",
        settings,
        build_path,
        target_path,
        log_path,
        timeout_s,
        ["--args", json.dumps({"schema": schema})],
        target="prod",
        postgres_dsn=postgres_dsn,
    )
    if rc != 0:
        detail = _error_detail(errors)
        raise WarehouseBuildError(
            f"publishing the marts to PostgreSQL failed (exit code {rc}); nothing was "
            "published" + (f": {detail}" if detail else ""),
            run_dir=run_dir,
        )
    manifest = json.loads((target_path / "manifest.json").read_text(encoding="utf-8"))
    tables = sorted(
        n["alias"]
        for n in manifest["nodes"].values()
        if n["resource_type"] == "model"
        and n["fqn"][1:2] in (["marts"], ["gold"])  # as dbt/macros/publish_marts.sql selects them
        and n["config"].get("materialized") in ("table", "incremental")
    )
    log.info(f"published {len(tables)} marts to PostgreSQL schema {schema}")
    return {"schema": schema, "tables": tables}


def generate_docs(settings: Settings, run_id: str, *, timeout_s: float = 900) -> Path:
    """`dbt docs generate` for the served warehouse; returns the folder holding index.html, catalog.json
    and manifest.json (<lake_root>/runs/<run_id>/dbt_docs). Works offline: dbt-core ships the page.

    dbt opens its database read-write, so it reads a private COPY of the served file (same file name,
    so the catalog name inside stays the same); readers of the served file are not disturbed."""
    served = Path(settings.warehouse_path)
    if not served.is_file():
        raise WarehouseBuildError(f"no served warehouse at {served}: build the marts first")
    run_dir = Path(settings.runs_dir) / _check_run_id(run_id)
    docs_path, log_path = run_dir / "dbt_docs", run_dir / "dbt_docs_logs"
    copy = run_dir / ".docs-warehouse" / served.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy_file(served, copy)
    try:
        rc, errors = _run_dbt("docs generate", settings, copy, docs_path, log_path, timeout_s)
    finally:
        _remove_build(copy)
    missing = [n for n in ("index.html", "catalog.json", "manifest.json") if not (docs_path / n).is_file()]
    if rc != 0 or missing:
        detail = _error_detail(errors)
        raise WarehouseBuildError(
            f"dbt docs generate failed (exit code {rc}"
            + (f", missing {missing}" if missing else "")
            + ")"
            + (f": {detail}" if detail else ""),
            run_dir=run_dir,
        )
    log.info(f"dbt docs -> {docs_path / 'index.html'}")
    return docs_path


def dbt_parse(settings: Settings, target_path: Path | None = None, *, timeout_s: float = 600) -> Path:
    """Run `dbt parse` (no database is opened) and return the path of the manifest.json it wrote.

    Default target: <lake_root>/_state/dbt_parse/target (for Airflow / cosmos, which read the manifest).
    """
    target_path = Path(target_path) if target_path else settings.cache_dir / "dbt_parse" / "target"
    log_path = target_path.parent / "logs"
    # The profile needs a path to render; parse never opens it. The served file's name: the same profile
    # as the builds', so parse and build share dbt's partial-parse state.
    placeholder = target_path / Path(settings.warehouse_path).name
    rc, errors = _run_dbt("parse", settings, placeholder, target_path, log_path, timeout_s)
    manifest = target_path / "manifest.json"
    if rc != 0 or not manifest.is_file():
        detail = _error_detail(errors)
        raise WarehouseBuildError(f"dbt parse failed (exit code {rc})" + (f": {detail}" if detail else ""))
    log.info(f"dbt parse -> {manifest}")
    return manifest


def query(settings: Settings, sql: str, params: Sequence | None = None):
    """Run one read-only query against the served warehouse and return a pandas DataFrame (models, reports).

    Tables (marts) read without any extension; views over the lake need the Delta extension, loaded from
    the wheel. Raises MartsError when the warehouse has not been built."""
    served = Path(settings.warehouse_path)
    if not served.is_file():
        raise MartsError(f"warehouse {served} not found: run `citysafe build-marts` (or `citysafe run`) first")
    con = _connect(served, read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(sql, params or []).df()
    finally:
        con.close()
