"""The same silver transforms give identical results on Sail and on Apache Spark's own Spark Connect
server (JVM, `remote("local[2]")`): the proof that job code runs unchanged on a Spark cluster."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = Path(__file__).parent / "portability_runner.py"


def _result(engine: str) -> dict:
    proc = subprocess.run([sys.executable, str(RUNNER), engine], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT-JSON "))
    return json.loads(line.removeprefix("RESULT-JSON "))


@pytest.mark.slow
@pytest.mark.jvm
@pytest.mark.skipif(shutil.which("java") is None, reason="needs Java 17 (installed by .ci/run)")
def test_sail_and_apache_spark_agree():
    sail = _result("sail")
    spark = _result("local[2]")
    assert len(sail["published"]) == 6 and len(sail["quarantined"]) == 8 and len(sail["duplicates"]) == 2
    for part in ("published", "quarantined", "duplicates"):
        assert spark[part] == sail[part], part
