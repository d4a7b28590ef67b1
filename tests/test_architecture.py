"""Imports go one way: library <- jobs <- stage wiring <- CLI and DAGs.

    citysafe/                         the shared library: config, sources, connectors, Delta I/O, quality, errors
    spark_jobs/ synthetic_city/ ml/   jobs and models: import the library, never each other or anything above
    reports/                          the quarterly reports: read the warehouse through the library
    alerts/                           early warning: rules, the alert table, notifications (library only)
    pipeline/                         the stage graph and the CLI: import everything below

Every import statement counts, also those inside functions: a lazy import must not hide a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OWN = ("citysafe", "spark_jobs", "synthetic_city", "ml", "reports", "alerts", "pipeline")
# package -> the own packages it may import (besides itself)
ALLOWED = {
    "citysafe": set(),
    "spark_jobs": {"citysafe"},
    "synthetic_city": {"citysafe"},
    "ml": {"citysafe"},
    "reports": {"citysafe"},
    "alerts": {"citysafe"},
    "pipeline": {"citysafe", "spark_jobs", "synthetic_city", "ml", "reports", "alerts"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in the file, at any depth; relative imports stay inside."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def _violations(package: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, top in _imports(path):
            if top in OWN and top != package and top not in ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {top}")
    return bad


@pytest.mark.parametrize("package", [p for p in ALLOWED if (ROOT / p).is_dir()])
def test_imports_go_one_way(package):
    assert _violations(package) == []


def test_the_check_finds_a_library_module_importing_a_job(tmp_path, monkeypatch):
    fake = tmp_path / "citysafe"
    fake.mkdir()
    (fake / "sneaky.py").write_text("def f():\n    from spark_jobs.publish import QualityGateFailed\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _violations("citysafe") == ["citysafe/sneaky.py:2 imports spark_jobs"]


def test_dags_only_shell_out():
    """DAG files run in the Airflow venv: they call the CLI and import none of the pipeline's packages."""
    for path in sorted((ROOT / "dags").glob("*.py")):
        assert [f"{path.name}:{line} imports {top}" for line, top in _imports(path) if top in OWN] == []


def test_importing_the_whole_library_loads_no_job_module():
    modules = sorted(
        {f"citysafe.{p.stem}" for p in (ROOT / "citysafe").glob("*.py") if p.stem != "__init__"}
        | {"citysafe.connectors"}
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'spark_jobs', 'synthetic_city', 'ml', 'pipeline'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "[]"
