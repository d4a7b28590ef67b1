"""Superset configuration for CitySafe Lake (loaded via SUPERSET_CONFIG_PATH by dashboards/serve.py).

Hardened for a city's network: the secret key only from the environment, metadata in SQLite under
$SUPERSET_HOME (or PostgreSQL from $CITYSAFE_SUPERSET_METADATA_URI in production), no telemetry and
no third-party hosts in the content security policy (maps draw without base tiles), a data cache whose
keys carry the row-level-security clauses, and no database that can read server files.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_home = Path(os.environ.get("SUPERSET_HOME", "var/superset")).resolve()

SECRET_KEY = os.environ.get("SUPERSET_SECRET_KEY", "")
if len(SECRET_KEY) < 32:
    sys.exit(
        "superset_config: SUPERSET_SECRET_KEY is missing or shorter than 32 characters "
        "(`citysafe serve` sets it from the environment or var/secrets/superset_secret_key)"
    )

SQLALCHEMY_DATABASE_URI = os.environ.get("CITYSAFE_SUPERSET_METADATA_URI") or f"sqlite:///{_home / 'superset.db'}"
DATA_DIR = str(_home)

# No telemetry, no example data, no third-party hosts.
SCARF_ANALYTICS = False
DECKGL_BASE_MAP = None
MAPBOX_API_KEY = ""
TALISMAN_ENABLED = True
TALISMAN_CONFIG = {
    "content_security_policy": {
        "base-uri": ["'self'"],
        "default-src": ["'self'"],
        "img-src": ["'self'", "blob:", "data:"],
        "worker-src": ["'self'", "blob:"],
        "connect-src": ["'self'"],
        "object-src": "'none'",
        "style-src": ["'self'", "'unsafe-inline'"],
        "font-src": ["'self'", "data:"],
        "script-src": ["'self'", "'strict-dynamic'"],
    },
    "content_security_policy_nonce_in": ["script-src"],
    "force_https": False,
    "session_cookie_secure": False,
}
THEME_FONT_URL_ALLOWED_DOMAINS: list[str] = []

# Databases: only what the bundle imports; nothing that reads local files (SQLite) may be added.
PREVENT_UNSAFE_DB_CONNECTIONS = True

FEATURE_FLAGS = {
    "DASHBOARD_RBAC": True,  # dashboards are granted to roles (policy viewers see dashboards only)
    "ENABLE_TEMPLATE_PROCESSING": False,
    "ALERT_REPORTS": False,
}

# Chart data cache on disk. Superset puts the row-level-security clauses of the requesting user into
# every cache key, so two district analysts never share a cached result (tests/superset checks it).
_cache = {"CACHE_TYPE": "FileSystemCache", "CACHE_DEFAULT_TIMEOUT": 3600}
CACHE_CONFIG = {**_cache, "CACHE_DIR": str(_home / "cache" / "metadata"), "CACHE_KEY_PREFIX": "citysafe_meta_"}
DATA_CACHE_CONFIG = {**_cache, "CACHE_DIR": str(_home / "cache" / "data"), "CACHE_KEY_PREFIX": "citysafe_data_"}
FILTER_STATE_CACHE_CONFIG = {**_cache, "CACHE_DIR": str(_home / "cache" / "filter"), "CACHE_KEY_PREFIX": "citysafe_f_"}
EXPLORE_FORM_DATA_CACHE_CONFIG = {
    **_cache,
    "CACHE_DIR": str(_home / "cache" / "explore"),
    "CACHE_KEY_PREFIX": "citysafe_e_",
}

ROW_LIMIT = 50000
SQLLAB_CTAS_NO_LIMIT = False
WTF_CSRF_ENABLED = True
SESSION_COOKIE_SAMESITE = "Lax"
LOG_LEVEL = os.environ.get("CITYSAFE_SUPERSET_LOG_LEVEL", "WARNING")
