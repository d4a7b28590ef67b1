"""The generated CitySafe DAGs: they parse, there is one per source entry plus the group DAGs, and each is
wired as the stage graph and its source entry say (tasks, commands, assets, schedules, owners, retries,
timeouts, pool, failure callback). Runs: test_dag_runs.py and test_scheduler.py."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import citysafe_dag_support as support
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO_ROOT / "dags"
SOURCES_DIR = REPO_ROOT / "sources"
GROUP_DAGS = ["citysafe_city_reference", "citysafe_marts", "citysafe_ml", "citysafe_report", "citysafe_alerts"]
SILVER_ASSETS = {
    f"citysafe://silver/{t}" for t in ("device", "device_reading", "enterprise", "hazard", "incident", "weather_daily")
}


def _source_entries(folder: Path = SOURCES_DIR) -> dict[str, dict]:
    entries = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.yaml"))]
    return {e["name"]: e for e in entries}


def _dagbag(sources_dir: Path | None = None, monkeypatch=None):
    from airflow.dag_processing.dagbag import DagBag

    if sources_dir is not None:
        monkeypatch.setenv(support.SOURCES_DIR_ENV, str(sources_dir))
    return DagBag(dag_folder=str(DAGS_DIR))


@pytest.fixture(scope="module")
def dagbag():
    return _dagbag()


@pytest.fixture(scope="module")
def graph() -> dict:
    return yaml.safe_load(support.STAGE_GRAPH_FILE.read_text(encoding="utf-8"))


def _uris(assets) -> set[str]:
    return {a.uri for a in assets}


def _cron(timetable) -> str:
    return timetable.expression


def _expected_cron(schedule: str) -> str:
    from airflow.sdk import CronTriggerTimetable

    return _cron(CronTriggerTimetable(schedule, timezone="UTC"))


def test_dagbag_has_one_dag_per_source_and_the_group_dags(dagbag):
    assert dagbag.import_errors == {}
    files = sorted(SOURCES_DIR.glob("*.yaml"))
    expected = {f"citysafe_source__{name}" for name in _source_entries()} | set(GROUP_DAGS)
    assert set(dagbag.dags) == expected
    assert len(dagbag.dags) == 1 + len(files) + 4  # city + sources + marts, ml, report, alerts
    [stat] = dagbag.dagbag_stats
    assert stat.dag_num == len(dagbag.dags)
    assert stat.duration < timedelta(seconds=2), stat  # parse stays cheap (~50 ms here)


def test_source_dags_follow_their_entries(dagbag, graph):
    from airflow.sdk import CronTriggerTimetable

    timeouts = {s["name"]: timedelta(minutes=s["timeout_minutes"]) for s in graph["stages"]}
    entries = _source_entries()
    for name, entry in entries.items():
        dag = dagbag.dags[f"citysafe_source__{name}"]
        silver = entry.get("silver")
        tasks = ["ingest", "silver"] if silver else ["ingest"]
        assert [t.task_id for t in dag.topological_sort()] == tasks, name
        assert dag.get_task("ingest").bash_command.endswith(f'ingest {name} --run-id "$DAG_RUN_ID"')
        assert dag.get_task("ingest").outlets == []
        if silver:
            task = dag.get_task("silver")
            assert task.upstream_task_ids == {"ingest"}
            assert task.bash_command.endswith(f'silver {name} --run-id "$DAG_RUN_ID"')
            assert _uris(task.outlets) == {f"citysafe://silver/{silver['table']}"}
        assert isinstance(dag.timetable, CronTriggerTimetable)
        assert _cron(dag.timetable) == _expected_cron(entry["schedule"]), name
        assert {t.owner for t in dag.tasks} == {entry["department"]}
        assert dag.description == " ".join(entry["description"].split())
        fresh = entry["freshness"]
        assert f"warn after {fresh['warn_after_hours']:g} h, error after {fresh['error_after_hours']:g} h" in dag.doc_md
        assert dag.dagrun_timeout <= timedelta(hours=fresh["error_after_hours"])
        assert dag.dagrun_timeout <= sum((timeouts[t] for t in tasks), timedelta()) * 3
        assert {"citysafe", "source", entry["department"]} <= set(dag.tags)


def test_group_dags_chain_through_assets(dagbag):
    from airflow.sdk import AssetAny, AssetOrTimeSchedule, CronTriggerTimetable

    city = dagbag.dags["citysafe_city_reference"]
    assert [t.task_id for t in city.topological_sort()] == ["generate", "reference"]
    assert _uris(city.get_task("reference").outlets) == {"citysafe://silver/reference"}
    assert isinstance(city.timetable, CronTriggerTimetable) and _cron(city.timetable) == "0 0 * * *"
    assert {t.owner for t in city.tasks} == {"data_stewards"}

    marts = dagbag.dags["citysafe_marts"]
    assert [t.task_id for t in marts.topological_sort()] == ["marts", "reconcile"]
    assert isinstance(marts.timetable.asset_condition, AssetAny)
    assert _uris(marts.timetable.asset_condition.objects) == SILVER_ASSETS
    assert not isinstance(marts.timetable, AssetOrTimeSchedule)  # assets only
    assert _uris(marts.get_task("marts").outlets) == {"citysafe://warehouse/marts"}
    assert marts.get_task("reconcile").outlets == []
    assert "astronomer-cosmos" in marts.doc_md and "one `marts` task" in marts.doc_md

    expected = {
        "citysafe_ml": ("ml", "0 3 * * 1", {"citysafe://warehouse/marts"}, "citysafe://gold/risk", "data_science"),
        "citysafe_report": (
            "report",
            "0 6 2 1,4,7,10 *",
            {"citysafe://gold/risk"},
            "citysafe://reports/quarterly",
            "policy_office",
        ),
        "citysafe_alerts": (
            "alerts",
            "0 * * * *",
            {"citysafe://silver/device_reading", "citysafe://gold/risk", "citysafe://warehouse/marts"},
            "citysafe://alerts/alert",
            "duty_office",
        ),
    }
    for dag_id, (task_id, cron, assets, outlet, owner) in expected.items():
        dag = dagbag.dags[dag_id]
        assert dag.task_ids == [task_id]
        assert isinstance(dag.timetable, AssetOrTimeSchedule), dag_id
        assert _cron(dag.timetable.timetable) == cron
        assert isinstance(dag.timetable.asset_condition, AssetAny)
        assert _uris(dag.timetable.asset_condition.objects) == assets
        assert _uris(dag.get_task(task_id).outlets) == {outlet}
        assert dag.get_task(task_id).owner == owner

    commands = {
        ("citysafe_city_reference", "generate"): "generate",
        ("citysafe_city_reference", "reference"): "reference",
        ("citysafe_marts", "marts"): "build-marts --skip-unchanged",
        ("citysafe_marts", "reconcile"): "reconcile",
        ("citysafe_ml", "ml"): "ml train --skip-unchanged",
        ("citysafe_report", "report"): "report",
        ("citysafe_alerts", "alerts"): 'alerts --as-of "$DAG_AS_OF"',
    }
    for (dag_id, task_id), command in commands.items():
        task = dagbag.dags[dag_id].get_task(task_id)
        assert task.bash_command.endswith(f' {command} --run-id "$DAG_RUN_ID"'), task.bash_command
    alerts = dagbag.dags["citysafe_alerts"].get_task("alerts")
    assert set(alerts.env) == {"DAG_RUN_ID", "DAG_AS_OF"} and "data_interval_end" in alerts.env["DAG_AS_OF"]


def test_every_task_retries_times_out_and_notifies(dagbag, graph):
    stages = {s["name"]: s for s in graph["stages"]}
    for dag in dagbag.dags.values():
        assert dag.catchup is False and dag.max_active_runs == 1, dag.dag_id
        assert dag.start_date is None  # no run for a past tick when unpaused (see citysafe_dags._timetable)
        assert timedelta(0) < dag.dagrun_timeout <= timedelta(hours=24), dag.dag_id
        assert dag.doc_md and "notify-failure" in dag.doc_md and "idempotent" in dag.doc_md
        assert ("backfill create" in dag.doc_md) == (dag.dag_id != "citysafe_marts")  # assets only: no backfill
        for task in dag.tasks:
            stage = stages[task.task_id]
            assert task.retries == 2
            assert task.retry_exponential_backoff == 2.0
            assert task.retry_delay == timedelta(seconds=support.DEFAULT_RETRY_DELAY_SECONDS)
            assert task.max_retry_delay == timedelta(seconds=support.DEFAULT_MAX_RETRY_DELAY_SECONDS)
            assert task.execution_timeout == timedelta(minutes=stage["timeout_minutes"])
            assert task.on_failure_callback == [support.notify_failure]
            assert task.pool == ("citysafe_lake" if stage.get("writes_lake", True) else "default_pool")
            assert task.weight_rule == "absolute"
            assert task.append_env is True
            assert task.env["DAG_RUN_ID"] == "{{ run_id }}"
            assert task.skip_on_exit_code == []  # every non-zero exit fails the task
            assert task.cwd == str(REPO_ROOT)
            assert '"${CITYSAFE_BIN:-' in task.bash_command and task.bash_command.startswith("env -u CITYSAFE_BIN ")


def test_adding_a_source_file_adds_its_dag(tmp_path, monkeypatch, dagbag):
    """No DAG code: a new sources/*.yaml is a new DAG (and a new silver table a new marts trigger)."""
    folder = tmp_path / "sources"
    shutil.copytree(SOURCES_DIR, folder)
    new = yaml.safe_load((SOURCES_DIR / "weather_daily.yaml").read_text(encoding="utf-8"))
    new.update(
        name="noise_sensors",
        department="environment",
        description="Street noise sensors, hourly.",
        schedule="*/15 * * * *",
        freshness={"warn_after_hours": 1, "error_after_hours": 4},
    )
    new["silver"]["table"] = "noise_level"
    (folder / "noise_sensors.yaml").write_text(yaml.safe_dump(new, allow_unicode=True))
    (folder / "broken.yaml").write_text("name: broken\n")  # reported and skipped; every other DAG stays

    bag = _dagbag(folder, monkeypatch)

    assert bag.import_errors == {}
    assert set(bag.dags) == set(dagbag.dags) | {"citysafe_source__noise_sensors"}
    dag = bag.dags["citysafe_source__noise_sensors"]
    assert [t.task_id for t in dag.topological_sort()] == ["ingest", "silver"]
    assert dag.get_task("silver").bash_command.endswith('silver noise_sensors --run-id "$DAG_RUN_ID"')
    assert _uris(dag.get_task("silver").outlets) == {"citysafe://silver/noise_level"}
    assert _cron(dag.timetable) == "*/15 * * * *"
    assert dag.owner == "environment"
    assert dag.dagrun_timeout == timedelta(hours=4)
    marts = bag.dags["citysafe_marts"]
    assert _uris(marts.timetable.asset_condition.objects) == SILVER_ASSETS | {"citysafe://silver/noise_level"}
