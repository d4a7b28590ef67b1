"""`citysafe serve`: the analysts' dashboards on the served warehouse (Superset, its own venv).

Resolves what Superset needs from the configuration and the environment, then hands over to
dashboards/serve.py in the Superset venv: the secret key from $SUPERSET_SECRET_KEY, the admin password
from $CITYSAFE_SUPERSET_ADMIN_PASSWORD, each else generated once under var/secrets/ (mode 0600, never
committed); no default password exists anywhere.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

from citysafe.config import REPO_ROOT, ConfigError, Settings

SUPERSET_VENV = REPO_ROOT / ".venv" / "superset"
SECRETS_DIR = REPO_ROOT / "var" / "secrets"
ADMIN_PASSWORD_ENV = "CITYSAFE_SUPERSET_ADMIN_PASSWORD"
ADMIN_PASSWORD_FILE = SECRETS_DIR / "superset_admin_password"
SECRET_KEY_FILE = SECRETS_DIR / "superset_secret_key"


def secret(env_name: str, path: Path, nbytes: int, environ: dict | None = None) -> str:
    """The value of $env_name, else the one stored at `path`, else a new random one stored there."""
    value = (os.environ if environ is None else environ).get(env_name, "")
    if value:
        return value
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def superset_home(settings: Settings) -> Path:
    home = settings.superset.home
    return home if home.is_absolute() else REPO_ROOT / home


def environment(settings: Settings, environ: dict | None = None) -> dict:
    """Superset's environment: the caller's (`environ`, default os.environ) plus home and secrets."""
    base = dict(os.environ if environ is None else environ)
    env = {k: v for k, v in base.items() if k != ADMIN_PASSWORD_ENV}
    env.update(
        {
            "SUPERSET_HOME": str(superset_home(settings)),
            "SUPERSET_SECRET_KEY": secret("SUPERSET_SECRET_KEY", SECRET_KEY_FILE, 48, base),
            "SUPERSET_ADMIN_PASSWORD": secret(ADMIN_PASSWORD_ENV, ADMIN_PASSWORD_FILE, 18, base),
        }
    )
    env["CITYSAFE_DASHBOARD_TARGETS"] = json.dumps(
        {
            "hazard_overdue_rate_max": settings.superset.hazard_overdue_rate_max,
            "hazard_days_to_rectify_max": settings.superset.hazard_days_to_rectify_max,
        }
    )
    if settings.superset.metadata_uri:
        env["CITYSAFE_SUPERSET_METADATA_URI"] = settings.superset.metadata_uri
    if settings.superset.warehouse_uri:  # production: the charts query the PostgreSQL marts
        env["CITYSAFE_SUPERSET_WAREHOUSE_URI"] = settings.superset.warehouse_uri
        env["CITYSAFE_SUPERSET_WAREHOUSE_SCHEMA"] = settings.superset.warehouse_schema
    return env


def command(settings: Settings, *, start: bool = True) -> list[str]:
    python = SUPERSET_VENV / "bin" / "python"
    if not settings.warehouse_path.is_file():
        raise ConfigError(f"no warehouse at {settings.warehouse_path}: run `make run` (or `citysafe run`) first")
    if not python.is_file():
        raise ConfigError(f"the Superset venv is missing ({SUPERSET_VENV}): run `make setup`")
    args = [
        str(python),
        "-m",
        "dashboards.serve",
        "--warehouse",
        str(settings.warehouse_path),
        "--home",
        str(superset_home(settings)),
        "--port",
        str(settings.superset.port),
        "--workers",
        str(settings.superset.workers),
    ]
    return args if start else [*args, "--no-start"]


def login_hint(settings: Settings) -> str:
    where = f"${ADMIN_PASSWORD_ENV}" if os.environ.get(ADMIN_PASSWORD_ENV) else str(ADMIN_PASSWORD_FILE)
    return f"http://127.0.0.1:{settings.superset.port}/ - user admin, password in {where}"


def serve(settings: Settings, args: list[str]) -> int:
    """Run `args` (from `command`) with Superset's environment, until it stops."""
    return subprocess.call(args, env=environment(settings), cwd=REPO_ROOT)
