"""pipeline/stage_graph.yaml is the one stage graph: `citysafe run` binds it, the DAG factory reads it.

This checks the half that lives in the pipeline venv: every declared stage is bound to code, each stage's
command is a real CLI command, and every stage belongs to a declared DAG group. tests/airflow checks that
the DAGs are generated from the same file.
"""

from __future__ import annotations

import click

from pipeline import stages
from pipeline.cli import main


def test_every_declared_stage_runs_in_order_and_has_a_cli_command():
    graph = stages.load_stage_graph()
    assert [s["name"] for s in graph["stages"]] == list(stages.STAGE_NAMES)
    for st in stages.STAGES:
        command: click.Command = main
        for word in st.command:
            assert isinstance(command, click.Group) and word in command.commands, (st.name, st.command)
            command = command.commands[word]
        options = {o for p in command.params for o in p.opts}
        entry = next(e for e in graph["stages"] if e["name"] == st.name)
        for option in entry.get("dag_options", []):
            assert option in options, (st.name, option)  # the DAGs pass it
        assert st.dag in graph["dags"], (st.name, st.dag)
    assert {st.name for st in stages.STAGES if st.per_source} == {"ingest", "silver"}


def test_the_run_order_is_the_declared_order():
    assert stages.STAGE_NAMES.index("marts") > stages.STAGE_NAMES.index("silver")
    assert stages.STAGE_NAMES[-3:] == ("ml", "report", "alerts")


def test_the_dags_give_silver_tables_the_lake_in_the_silver_jobs_order():
    from spark_jobs import silver

    graph = stages.load_stage_graph()
    assert graph["dags"]["source"]["silver_order"] == silver.ORDER
