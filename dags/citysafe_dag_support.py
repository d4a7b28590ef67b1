"""Small helpers shared by the CitySafe DAG files (runs in the Airflow venv).

No pipeline code here and no Airflow imports: DAG tasks only shell out to the pipeline's CLI, which
lives in its own venv. Everything is cheap so that DAG parsing stays fast.
"""

from __future__ import annotations

import shlex
from datetime import timedelta
from pathlib import Path

# dags/ sits directly under the repository root.
REPO_ROOT = Path(__file__).resolve().parent.parent

CITYSAFE_BIN_ENV = "CITYSAFE_BIN"
DEFAULT_CITYSAFE_BIN = REPO_ROOT / ".venv" / "pipeline" / "bin" / "citysafe"

# The task's environment variable holding the Airflow run_id. Passing the run_id through the
# environment (rendered from {{ run_id }}) and expanding it inside double quotes makes the shell
# command safe whatever characters the run_id has (':' and '+' today). Deliberately not CITYSAFE_*:
# that prefix is the pipeline's config-override namespace.
RUN_ID_ENV = "DAG_RUN_ID"
RUN_ID_TEMPLATE = "{{ run_id }}"

DEFAULT_RETRY_DELAY_SECONDS = 30


def default_args(retry_delay_seconds: float = DEFAULT_RETRY_DELAY_SECONDS) -> dict:
    """Fresh ``default_args`` for CitySafe DAGs: one retry after a short delay."""
    return {"owner": "citysafe", "retries": 1, "retry_delay": timedelta(seconds=retry_delay_seconds)}


def _quoted_default(text: str) -> str:
    """Escape ``text`` for the ``word`` of a double-quoted ``"${VAR:-word}"``."""
    for char in ("\\", '"', "$", "`", "}"):
        text = text.replace(char, "\\" + char)
    return text


def citysafe_command(*args: str, default_bin: Path | str = DEFAULT_CITYSAFE_BIN) -> str:
    """Bash command running ``citysafe <args> --run-id <the DAG run's id>``.

    The CLI is ``$CITYSAFE_BIN`` when set in the task's environment at run time, else ``default_bin``.
    CITYSAFE_BIN itself is removed from the CLI's environment (``env -u``): the pipeline reads every
    CITYSAFE_* variable as a config override and rejects unknown keys. The run id comes from
    ``$DAG_RUN_ID`` (see :func:`citysafe_task_env`).
    """
    if not args:
        raise ValueError("citysafe_command needs at least the sub-command")
    executable = f'"${{{CITYSAFE_BIN_ENV}:-{_quoted_default(str(default_bin))}}}"'
    words = ["env", "-u", CITYSAFE_BIN_ENV, executable, *(shlex.quote(a) for a in args)]
    return " ".join([*words, "--run-id", f'"${RUN_ID_ENV}"'])


def citysafe_task_env() -> dict[str, str]:
    """Extra environment for a citysafe task (templated; use with ``append_env=True``)."""
    return {RUN_ID_ENV: RUN_ID_TEMPLATE}
