"""What the CitySafe DAGs are made of, as plain data (runs in the Airflow venv).

No pipeline code here and no Airflow imports: the DAGs only shell out to the pipeline's CLI, which lives
in its own venv, and everything they run is read from two places the pipeline reads too:

- ``pipeline/stage_graph.yaml``: the stages in run order, each stage's command, DAG group and timeout,
  and per DAG group its id, schedule, owner and the assets each task updates;
- ``sources/*.yaml`` (or ``$DAGS_CITYSAFE_SOURCES_DIR``): one source DAG per entry.

:func:`dag_specs` turns them into :class:`DagSpec` values; ``citysafe_dags.py`` turns those into Airflow
objects. Everything is cheap (two folders of small YAML files) so that DAG parsing stays fast.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
import subprocess
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

# dags/ sits directly under the repository root.
REPO_ROOT = Path(__file__).resolve().parent.parent

CITYSAFE_BIN_ENV = "CITYSAFE_BIN"
DEFAULT_CITYSAFE_BIN = REPO_ROOT / ".venv" / "pipeline" / "bin" / "citysafe"

STAGE_GRAPH_FILE = REPO_ROOT / "pipeline" / "stage_graph.yaml"
DEFAULT_SOURCES_DIR = REPO_ROOT / "sources"
# Where the source entries are read from (tests point it at a copy). Deliberately not CITYSAFE_*: that
# prefix is the pipeline's config-override namespace and the pipeline rejects unknown keys.
SOURCES_DIR_ENV = "DAGS_CITYSAFE_SOURCES_DIR"

# The task's environment variable holding the Airflow run_id. Passing the run_id through the
# environment (rendered from {{ run_id }}) and expanding it inside double quotes makes the shell
# command safe whatever characters the run_id has (':' and '+' today). Deliberately not CITYSAFE_*.
RUN_ID_ENV = "DAG_RUN_ID"
RUN_ID_TEMPLATE = "{{ run_id }}"
# Same for a DAG group's `as_of` template (the alerts DAG: `citysafe alerts --as-of "$DAG_AS_OF"`).
AS_OF_ENV = "DAG_AS_OF"

# Every task that writes the lake (stage `writes_lake`, default true) runs in this pool of ONE slot: the
# pipeline allows one writer per lake (a second one exits 7), so Airflow queues them instead. Within the
# pool, tasks of earlier stages go first (priority_weight from the stage order), so that a DAG started by
# the first silver asset builds the marts after the other sources' queued ingest and silver tasks.
LAKE_POOL = "citysafe_lake"
LAKE_POOL_SLOTS = 1

DEFAULT_RETRY_DELAY_SECONDS = 30
DEFAULT_MAX_RETRY_DELAY_SECONDS = 600
RETRIES = 2
RETRY_BACKOFF = 2.0  # Airflow 3 multiplier: the delay doubles per try (True would mean 1.0, i.e. constant)
NOTIFY_TIMEOUT_SECONDS = 60.0

log = logging.getLogger(__name__)


def default_args(
    retry_delay_seconds: float = DEFAULT_RETRY_DELAY_SECONDS,
    max_retry_delay_seconds: float = DEFAULT_MAX_RETRY_DELAY_SECONDS,
) -> dict:
    """Fresh ``default_args`` for CitySafe DAGs: two retries, exponential backoff from the given delay."""
    return {
        "owner": "citysafe",
        "retries": RETRIES,
        "retry_delay": timedelta(seconds=retry_delay_seconds),
        "retry_exponential_backoff": RETRY_BACKOFF,
        "max_retry_delay": timedelta(seconds=max(max_retry_delay_seconds, retry_delay_seconds)),
    }


# --------------------------------------------------------------------------- commands


def _quoted_default(text: str) -> str:
    """Escape ``text`` for the ``word`` of a double-quoted ``"${VAR:-word}"``."""
    for char in ("\\", '"', "$", "`", "}"):
        text = text.replace(char, "\\" + char)
    return text


_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


def citysafe_command(
    *args: str, default_bin: Path | str = DEFAULT_CITYSAFE_BIN, env_options: Mapping[str, str] | None = None
) -> str:
    """Bash command running ``citysafe <args> [<option> "$<VAR>" ...] --run-id <the DAG run's id>``.

    The CLI is ``$CITYSAFE_BIN`` when set in the task's environment at run time, else ``default_bin``.
    CITYSAFE_BIN itself is removed from the CLI's environment (``env -u``): the pipeline reads every
    CITYSAFE_* variable as a config override and rejects unknown keys. The run id comes from
    ``$DAG_RUN_ID`` (see :func:`citysafe_task_env`); ``env_options`` maps an option to the environment
    variable holding its (rendered) value, e.g. ``{"--as-of": "DAG_AS_OF"}``.
    """
    if not args:
        raise ValueError("citysafe_command needs at least the sub-command")
    executable = f'"${{{CITYSAFE_BIN_ENV}:-{_quoted_default(str(default_bin))}}}"'
    words = ["env", "-u", CITYSAFE_BIN_ENV, executable, *(shlex.quote(a) for a in args)]
    for option, var in (env_options or {}).items():
        if not _ENV_NAME.fullmatch(var) or var.startswith("CITYSAFE_"):
            raise ValueError(f"{var!r}: not an environment variable name a task may set (and not CITYSAFE_*)")
        words += [shlex.quote(option), f'"${var}"']
    return " ".join([*words, "--run-id", f'"${RUN_ID_ENV}"'])


def citysafe_task_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Extra environment for a citysafe task (templated; use with ``append_env=True``)."""
    return {RUN_ID_ENV: RUN_ID_TEMPLATE, **(extra or {})}


def citysafe_argv(*args: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment to run the CLI directly (no shell): the failure callback's way."""
    env = dict(os.environ)
    executable = env.pop(CITYSAFE_BIN_ENV, "") or str(DEFAULT_CITYSAFE_BIN)
    return [executable, *args], env


def notify_failure(context: Mapping[str, Any], timeout: float = NOTIFY_TIMEOUT_SECONDS) -> None:
    """Task ``on_failure_callback`` (the last try failed): tell the data stewards.

    Runs ``citysafe alerts notify-failure --dag .. --task .. --airflow-run .. --try .. [--log-url ..]``,
    which sends an orange message to the stewards' channels of the pipeline config and exits 0 when it
    was delivered. Never raises and never waits longer than ``timeout``: a missing or failing CLI is
    logged as a warning in the task's log.
    """
    try:
        ti = context["ti"]
        args = ["alerts", "notify-failure", "--dag", str(ti.dag_id), "--task", str(ti.task_id)]
        args += ["--airflow-run", str(ti.run_id), "--try", str(ti.try_number)]
        try:
            log_url = ti.log_url
        except Exception:  # noqa: BLE001 - the URL is a courtesy; the notification goes without it
            log_url = None
        if log_url:
            args += ["--log-url", str(log_url)]
        argv, env = citysafe_argv(*args)
        proc = subprocess.run(
            argv,
            env=env,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
            log.warning("failure notification not delivered (exit %s): %s", proc.returncode, " | ".join(tail))
        else:
            log.info("failure notification sent: %s", " ".join(args))
    except subprocess.TimeoutExpired:
        log.warning("failure notification: `citysafe alerts notify-failure` ran past %.0f s and was stopped", timeout)
    except Exception as exc:  # noqa: BLE001 - a callback must never fail the task's bookkeeping
        log.warning("failure notification not sent: %s", exc)


# --------------------------------------------------------------------------- the stage graph and the sources


def _load_yaml(path: Path) -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster to parse
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=loader)  # noqa: S506 - a safe loader


def load_stage_graph(path: Path = STAGE_GRAPH_FILE) -> dict:
    graph = _load_yaml(path)
    if (
        not isinstance(graph, dict)
        or not isinstance(graph.get("stages"), list)
        or not isinstance(graph.get("dags"), dict)
    ):
        raise ValueError(f"{path}: needs a `stages:` list and a `dags:` mapping")
    return graph


def sources_dir() -> Path:
    return Path(os.environ.get(SOURCES_DIR_ENV) or DEFAULT_SOURCES_DIR)


_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _check_source(path: Path, entry: Any) -> dict:
    """The fields a DAG needs; raises ValueError naming the file and the key."""
    if not isinstance(entry, dict):
        raise ValueError(f"{path.name}: not a mapping")
    for key in ("name", "department"):
        if not isinstance(entry.get(key), str) or not _NAME.fullmatch(entry[key]):
            raise ValueError(f"{path.name}: `{key}` must be a lower-case name, got {entry.get(key)!r}")
    if entry.get("schedule") is not None and not isinstance(entry["schedule"], str):
        raise ValueError(f"{path.name}: `schedule` must be a cron expression or preset")
    freshness = entry.get("freshness") or {}
    if not isinstance(freshness, dict) or any(
        not isinstance(freshness.get(k), int | float) for k in freshness if k.endswith("_hours")
    ):
        raise ValueError(f"{path.name}: `freshness` must map warn_after_hours / error_after_hours to numbers")
    silver = entry.get("silver")
    if silver is not None and not (isinstance(silver, dict) and isinstance(silver.get("table"), str)):
        raise ValueError(f"{path.name}: `silver.table` must name the silver table")
    return entry


def load_sources(folder: Path | None = None) -> tuple[list[dict], list[str]]:
    """(entries sorted by name, one error line per file that cannot become a DAG).

    A broken file costs only its own DAG: it is reported (the DAG file logs the errors) and skipped, so one
    typo does not stop the scheduling of every other DAG in the file."""
    folder = sources_dir() if folder is None else Path(folder)
    entries: dict[str, dict] = {}
    errors: list[str] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            entry = _check_source(path, _load_yaml(path))
        except ValueError as exc:  # names the file and the key
            errors.append(str(exc))
            continue
        except (OSError, yaml.YAMLError) as exc:
            errors.append(f"{path.name}: {' '.join(str(exc).split())}")
            continue
        if entry["name"] in entries:
            errors.append(f"{path.name}: source name {entry['name']!r} is declared twice")
            continue
        entries[entry["name"]] = {**entry, "_file": path.name}
    return [entries[n] for n in sorted(entries)], errors


# --------------------------------------------------------------------------- DAG specs


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    task_id: str  # the stage's name
    args: tuple[str, ...]  # the citysafe sub-command and its arguments (before --run-id)
    timeout: timedelta  # execution_timeout (the stage's timeout_minutes)
    writes_lake: bool  # runs in the one-slot lake pool
    priority: int  # absolute priority_weight: earlier stages first
    outlets: tuple[str, ...]  # asset URIs it updates
    env_options: tuple[tuple[str, str], ...] = ()  # (option, environment variable) pairs

    @property
    def command_text(self) -> str:
        extra = [f'{option} "${var}"' for option, var in self.env_options]
        return " ".join(["citysafe", *self.args, *extra, "--run-id", "<run_id>"])


@dataclasses.dataclass(frozen=True)
class DagSpec:
    dag_id: str
    group: str  # the `dags:` key: city, source, marts, ml, report, alerts
    owner: str
    description: str
    cron: str | None  # time schedule (UTC)
    assets_any: tuple[str, ...]  # asset schedule: any of these updated
    tasks: tuple[TaskSpec, ...]  # in stage order; each depends on the previous one
    dagrun_timeout: timedelta
    as_of: str | None  # template for $DAG_AS_OF
    tags: tuple[str, ...]
    doc_md: str
    source: dict | None = None  # the source's entry (source DAGs)


def _fill(template: Any, values: Mapping[str, Any], where: str) -> Any:
    if not isinstance(template, str):
        return template
    try:
        return template.format_map(values)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"{where}: cannot fill {template!r} ({exc!r})") from None


def _schedule(spec: Any, where: str) -> tuple[str | None, Any]:
    """(cron, assets_any) of a `schedule:` value: a cron string, or {cron: .., assets_any: ..}."""
    if spec is None or isinstance(spec, str):
        return spec, ()
    if isinstance(spec, dict) and set(spec) <= {"cron", "assets_any"}:
        assets = spec.get("assets_any", ())
        if isinstance(assets, list):
            assets = tuple(assets)
        return spec.get("cron"), assets
    raise ValueError(f"{where}: schedule must be a cron string or {{cron: ..., assets_any: [...]}}, got {spec!r}")


def _outlets(group: Mapping[str, Any], where: str) -> dict[str, list[str]]:
    outlets = group.get("outlets") or {}
    if not isinstance(outlets, dict) or not all(isinstance(v, list) for v in outlets.values()):
        raise ValueError(f"{where}: outlets must map a stage name to a list of asset URIs, got {outlets!r}")
    return outlets


def _freshness_text(freshness: Mapping[str, Any]) -> str:
    parts = [f"{k.removesuffix('_after_hours')} after {v:g} h" for k, v in freshness.items() if k.endswith("_hours")]
    return ", ".join(parts) or "not declared"


def dag_specs(graph: Mapping[str, Any], sources: list[dict]) -> list[DagSpec]:
    """Every CitySafe DAG: one per source entry, one per other group of the stage graph's `dags:`."""
    stages = graph["stages"]
    groups = graph["dags"]
    for s in stages:
        if s.get("dag") not in groups:
            raise ValueError(f"stage {s['name']!r}: dag group {s.get('dag')!r} is not under `dags:`")
    n = len(stages)
    priority = {s["name"]: (n - i) * 100 for i, s in enumerate(stages)}
    silver_order = list(groups.get("source", {}).get("silver_order", []))

    def group_stages(group: str) -> list[dict]:
        return [s for s in stages if s["dag"] == group]

    def task(stage: dict, group: dict, values: Mapping[str, Any], where: str, bonus: int = 0) -> TaskSpec:
        outlets = _outlets(group, where).get(stage["name"], [])
        env_options = (("--as-of", AS_OF_ENV),) if group.get("as_of") else ()
        args = (
            tuple(stage["command"])
            + ((values["source"],) if stage.get("per_source") else ())
            + tuple(stage.get("dag_options", ()))
        )
        return TaskSpec(
            task_id=stage["name"],
            args=args,
            timeout=timedelta(minutes=float(stage["timeout_minutes"])),
            writes_lake=bool(stage.get("writes_lake", True)),
            priority=priority[stage["name"]] + bonus,
            outlets=tuple(_fill(u, values, f"{where} outlets") for u in outlets),
            env_options=env_options,
        )

    source_outlets: set[str] = set()
    out: list[DagSpec] = []
    if "source" in groups:
        group = groups["source"]
        for entry in sources:
            where = f"source {entry['name']} ({entry['_file']})"
            silver = entry.get("silver")
            values = {
                "source": entry["name"],
                "department": entry["department"],
                "schedule": entry.get("schedule"),
                "description": " ".join(str(entry.get("description") or entry["name"]).split()),
                "silver_table": silver["table"] if silver else "",
            }
            chosen = [s for s in group_stages("source") if s["name"] != "silver" or silver]
            tasks = []
            for stage in chosen:
                bonus = 0
                if stage["name"] == "silver" and silver["table"] in silver_order:
                    bonus = len(silver_order) - silver_order.index(silver["table"])
                tasks.append(task(stage, group, values, where, bonus))
            tasks = tuple(tasks)
            source_outlets.update(u for t in tasks for u in t.outlets)
            schedule = entry.get("schedule") if group.get("schedule") == "{schedule}" else group.get("schedule")
            cron, assets = _schedule(_fill(schedule, values, where), where)
            freshness = {k: v for k, v in (entry.get("freshness") or {}).items() if k.endswith("_hours")}
            out.append(
                _spec(
                    graph_group="source",
                    group=group,
                    values=values,
                    where=where,
                    cron=cron,
                    assets=assets,
                    tasks=tasks,
                    freshness=freshness,
                    tags=("citysafe", "source", entry["department"], *map(str, entry.get("tags") or ())),
                    source=entry,
                )
            )
    for key, group in groups.items():
        if key == "source":
            continue
        where = f"dags.{key}"
        chosen = group_stages(key)
        if not chosen:
            raise ValueError(f"{where}: no stage runs in this DAG (stages name their `dag:`)")
        unknown = set(_outlets(group, where)) - {s["name"] for s in chosen}
        if unknown:
            raise ValueError(f"{where}: outlets for stages {sorted(unknown)} that do not run in this DAG")
        cron, assets = _schedule(group.get("schedule"), where)
        if assets == "source":
            assets = tuple(sorted(source_outlets))
        elif isinstance(assets, str):
            raise ValueError(f"{where}: assets_any must be a list of asset URIs or `source`")
        tasks = tuple(task(s, group, {}, where) for s in chosen)
        out.append(
            _spec(
                graph_group=key,
                group=group,
                values={},
                where=where,
                cron=cron,
                assets=tuple(assets),
                tasks=tasks,
                freshness=None,
                tags=("citysafe", key),
                source=None,
            )
        )
    ids = [d.dag_id for d in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate dag_id in {sorted(i for i in ids if ids.count(i) > 1)}")
    return out


def _spec(*, graph_group, group, values, where, cron, assets, tasks, freshness, tags, source) -> DagSpec:
    dag_id = _fill(group["dag_id"], values, where)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", dag_id):
        raise ValueError(f"{where}: {dag_id!r} is not a valid dag_id")
    # A run may take every try of every task; a source DAG's run also ends when its data would be past the
    # source's error freshness anyway (the next run then starts from whatever was delivered).
    worst = sum((t.timeout for t in tasks), timedelta()) * (RETRIES + 1)
    timeout = worst
    if freshness and "error_after_hours" in freshness:
        timeout = min(worst, timedelta(hours=float(freshness["error_after_hours"])))
    spec = DagSpec(
        dag_id=dag_id,
        group=graph_group,
        owner=_fill(group.get("owner", "citysafe"), values, where),
        description=_fill(group.get("description", ""), values, where),
        cron=cron,
        assets_any=tuple(assets),
        tasks=tasks,
        dagrun_timeout=timeout,
        as_of=group.get("as_of"),
        tags=tuple(dict.fromkeys(tags)),
        doc_md="",
        source=source,
    )
    return dataclasses.replace(spec, doc_md=doc_md(spec, freshness))


# --------------------------------------------------------------------------- docs


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} h"


def _schedule_text(spec: DagSpec) -> str:
    parts = []
    if spec.cron:
        parts.append(f"`{spec.cron}` (UTC)")
    if spec.assets_any:
        parts.append("when any of " + ", ".join(f"`{a}`" for a in spec.assets_any) + " is updated")
    return " or ".join(parts) if parts else "only when triggered"


MARTS_NOTE = """
**Why one `marts` task and not one task per dbt model (astronomer-cosmos).** `citysafe build-marts` runs
`dbt build` into a NEW DuckDB file next to the served one, counts and checkpoints it, writes the build
marker and swaps it in with one `os.replace` only when every model and test passed (the `prod` target also
publishes to PostgreSQL in one transaction before the swap). Cosmos' local mode runs one dbt process per
node: 49 models plus their tests, each paying a `dbt` start-up (~3 s with dbt's partial-parse state, 6.5 s
without; `dbt ls` here) and an Airflow task start-up on 2 cores, where the whole `build-marts` of the test
city (49 models, 732 tests) takes ~31 s; DuckDB lets one process write a file at a time, so those tasks
could not run side by side anyway. Its watcher mode keeps one `dbt build` but runs plain dbt, not
`build-marts`, and adds a sensor task per node (deferred to a triggerer). Either way the build file, the
counts, the marker and the swap live in the pipeline's `build_marts` (pipeline venv), which a DAG in the
Airflow venv cannot call between dbt nodes without re-implementing them. So the guarantee (the served file
is untouched unless everything passed) is kept by one task; dbt's per-model results are in its log and
under `<lake_root>/runs/<run_id>/`.

**Why silver/reference does not start this DAG.** `reconcile` compares every synthetic source with the
generator's truth, so it holds only once each source's delivery reached silver; the city DAG's reference
update comes before the sources' ingest. The marts are rebuilt after the next source's silver (daily).
"""


def doc_md(spec: DagSpec, freshness: Mapping[str, Any] | None) -> str:
    lines = [f"### {spec.dag_id}", "", spec.description, ""]
    if spec.source is not None:
        src = spec.source
        lines += [
            f"- **Source**: `{src['name']}` (`sources/{src['_file']}`), department `{src['department']}` (the owner)",
            f"- **Freshness**: {_freshness_text(freshness or {})}; a run still going after "
            f"{_hours(spec.dagrun_timeout)} is failed (dagrun_timeout), so the next one can start",
        ]
    lines += [
        f"- **Schedule**: {_schedule_text(spec)}; one run at a time, no catch-up: a DAG starts at its next "
        "scheduled time after it is unpaused (trigger it to run now)",
        "- **Tasks** (in stage order, `pipeline/stage_graph.yaml`):",
    ]
    for t in spec.tasks:
        outlet = f"; updates {', '.join(f'`{u}`' for u in t.outlets)}" if t.outlets else ""
        pool = f"pool `{LAKE_POOL}`" if t.writes_lake else "no lake lock"
        lines.append(f"  - `{t.task_id}`: `{t.command_text}` (timeout {_hours(t.timeout)}, {pool}){outlet}")
    if spec.as_of:
        lines.append(
            "- **As of**: `--as-of` is the run's `data_interval_end` (scheduled runs and backfills: the end of "
            "the hour evaluated); a run started by an asset or by hand evaluates at the time it was triggered"
        )
    lines += [
        "",
        "Each task runs `$CITYSAFE_BIN <command> --run-id <run_id>` (default CLI "
        "`<repo>/.venv/pipeline/bin/citysafe`) in the repository, with the worker's `CITYSAFE_*` config "
        "overrides and `CITYSAFE_PII_KEY`; every task of a run writes into `<lake_root>/runs/<run_id>/summary.json`. "
        f"Tasks that write the lake share the pool `{LAKE_POOL}` ({LAKE_POOL_SLOTS} slot: one writer per lake), "
        "earlier stages first.",
        "",
        f"**Retries**: {RETRIES}, after `[citysafe] retry_delay_seconds` (default {DEFAULT_RETRY_DELAY_SECONDS} s) "
        f"doubling per try, at most `[citysafe] max_retry_delay_seconds` (default {DEFAULT_MAX_RETRY_DELAY_SECONDS} s). "
        "After the last try the failure callback runs `citysafe alerts notify-failure --dag .. --task .. "
        "--airflow-run .. --try .. --log-url ..`: an orange message to the data stewards' channels of the "
        "pipeline config (it never fails the callback; a delivery failure is a warning in the task log).",
        "",
        (
            f"**Backfill** (`airflow backfill create --dag-id {spec.dag_id} --from-date .. --to-date ..`) and re-runs "
            if spec.cron
            else "**Re-runs** (this DAG runs on assets only, so it has no backfill) "
        )
        + "are idempotent: ingest lands each delivery once (manifest, sha256, watermark), silver MERGEs only "
        "newer rows, the marts are rebuilt and swapped whole, the model run and the report of unchanged inputs "
        "commit nothing new, and alerts evaluate each run at its own `--as-of`.",
    ]
    if spec.group == "marts":
        lines.append(MARTS_NOTE)
    return "\n".join(lines) + "\n"
