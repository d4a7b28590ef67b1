"""One configuration file (YAML) with environment-variable overrides, validated at start-up.

Lookup order: the file named by $CITYSAFE_CONFIG, else config/citysafe.yaml in the repository.
Any key can be overridden with CITYSAFE_<KEY> (nested keys joined by "__"). Errors name the bad key.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from citysafe.errors import ConfigurationError
from citysafe.storage import S3Path, S3Store, is_remote, parse_location

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "config" / "citysafe.yaml"
ENV_PREFIX = "CITYSAFE_"
# Variables with the prefix that are not configuration keys.
_NON_KEY_ENV = {
    "CITYSAFE_CONFIG",
    "CITYSAFE_BIN",
    # set by citysafe.warehouse for dbt's own process
    "CITYSAFE_WAREHOUSE_BUILD_PATH",
    "CITYSAFE_SILVER_DIR",
    "CITYSAFE_GOLD_DIR",
    "CITYSAFE_DUCKDB_DELTA_EXTENSION",
    "CITYSAFE_DUCKDB_EXTENSION_DIR",
    "CITYSAFE_DUCKDB_MEMORY_LIMIT",
    "CITYSAFE_DUCKDB_HTTPFS_EXTENSION",
    "CITYSAFE_DUCKDB_POSTGRES_EXTENSION",
    "CITYSAFE_PROD_POSTGRES_DSN",
    "CITYSAFE_S3_KEY_ID",
    "CITYSAFE_S3_SECRET",
    "CITYSAFE_S3_SESSION_TOKEN",
    "CITYSAFE_S3_REGION",
    "CITYSAFE_S3_ENDPOINT",
    "CITYSAFE_S3_URL_STYLE",
    "CITYSAFE_S3_USE_SSL",
    # secrets and derived values for Superset (pipeline/serve.py), never config keys
    "CITYSAFE_SUPERSET_ADMIN_PASSWORD",
    "CITYSAFE_SUPERSET_METADATA_URI",
    "CITYSAFE_SUPERSET_WAREHOUSE_URI",
    "CITYSAFE_SUPERSET_WAREHOUSE_SCHEMA",
    "CITYSAFE_SUPERSET_WAREHOUSE_PASSWORD",
    "CITYSAFE_SUPERSET_LOG_LEVEL",
    "CITYSAFE_DASHBOARD_TARGETS",
}
_PATH_KEYS = (
    "lake_root",
    "state_root",
    "warehouse_path",
    "synthetic_root",
    "districts_geojson",
    "district_aliases",
    "real_data_root",
    "mlflow_root",
)


def bounds_ordered(bounds: tuple[float, float, float, float]) -> bool:
    """[min_lon, min_lat, max_lon, max_lat] with min < max, inside WGS84's ranges."""
    min_lon, min_lat, max_lon, max_lat = bounds
    return -180 <= min_lon < max_lon <= 180 and -90 <= min_lat < max_lat <= 90


class ConfigError(ConfigurationError):
    """Configuration is missing or invalid; the message names the key and the source."""


class CityConfig(BaseModel):
    """The city's display name; start and length of the synthetic city (the generator reads them)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "CitySafe synthetic city"
    start_date: dt.date = dt.date(2025, 1, 1)
    days: int = Field(365, ge=7, le=3660)


class RiskLevels(BaseModel):
    """Graded risk levels by a cell's rank share among the study area's cells (top 1% red, ...)."""

    model_config = ConfigDict(extra="forbid")
    red: float = Field(0.01, gt=0, lt=1)
    orange: float = Field(0.05, gt=0, lt=1)
    yellow: float = Field(0.15, gt=0, lt=1)

    @field_validator("yellow")
    @classmethod
    def _ordered(cls, v: float, info) -> float:
        red, orange = info.data.get("red", 0), info.data.get("orange", 0)
        if not (red < orange < v):
            raise ValueError(f"need red < orange < yellow, got {red} / {orange} / {v}")
        return v


class HotspotConfig(BaseModel):
    """The cell x week risk model (LightGBM, count objective) and its rolling-origin backtest."""

    model_config = ConfigDict(extra="forbid")
    backtest_weeks: int = Field(26, ge=2, le=520)  # target weeks scored, the newest ones
    retrain_every_weeks: int = Field(4, ge=1, le=13)  # refit the model every n backtest weeks (at most 4 asked)
    objective: str = Field("poisson", pattern="^(poisson|tweedie)$")
    num_boost_round: int = Field(150, ge=10, le=5000)
    learning_rate: float = Field(0.08, gt=0, le=1)
    num_leaves: int = Field(31, ge=2, le=1024)
    min_data_in_leaf: int = Field(50, ge=1)
    kde_bandwidths_km: tuple[float, ...] = (0.4, 0.7, 1.0, 1.5, 2.5)  # candidates, chosen on validation weeks
    kde_validation_weeks: int = Field(8, ge=1, le=104)  # the weeks just before the backtest
    domain_min_weekly_events: float = Field(25, ge=0)  # a domain gets its own map above this city-wide mean


class ForecastConfig(BaseModel):
    """District x domain weekly forecasts (mlforecast + LightGBM, conformal intervals)."""

    model_config = ConfigDict(extra="forbid")
    horizon_weeks: int = Field(13, ge=1, le=52)
    backtest_weeks: int = Field(26, ge=1, le=520)  # rolling origins cover this many of the newest weeks
    step_weeks: int = Field(4, ge=1, le=52)  # scored origins this many weeks apart (and the refit interval)
    lags: tuple[int, ...] = (1, 2, 3, 4, 8, 13, 52)  # weekly lags of the target (52: same week last year)
    min_train_weeks: int = Field(16, ge=4, le=520)  # history before the first backtest origin
    # a measure x domain is forecast when its city-wide weekly mean reaches this (else too sparse)
    min_weekly_events: float = Field(0.5, ge=0)


class SupersetConfig(BaseModel):
    """The analysts' dashboards (`citysafe serve`): where Superset keeps its state and where it listens."""

    model_config = ConfigDict(extra="forbid")
    port: int = Field(8088, ge=1024, le=65535)
    home: Path = Path("var/superset")  # metadata (SQLite by default), caches; relative to the repository
    # production: PostgreSQL metadata, e.g. postgresql://superset@db/superset (password from PGPASSWORD)
    metadata_uri: str | None = None
    # production: the charts query the PostgreSQL marts (`citysafe build-marts --target prod`) instead of
    # the DuckDB file, e.g. postgresql+psycopg2://superset_reader@db/citysafe; the password from
    # $CITYSAFE_SUPERSET_WAREHOUSE_PASSWORD, never in config
    warehouse_uri: str | None = None
    warehouse_schema: str = Field("marts", pattern=r"^[a-z_][a-z0-9_]{0,46}$")
    workers: int = Field(2, ge=1, le=32)

    @field_validator("warehouse_uri")
    @classmethod
    def _no_password_in_uri(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.startswith("postgresql"):
            raise ValueError("must be a PostgreSQL URI (postgresql+psycopg2://user@host/db)")
        userinfo = v.split("://", 1)[-1].split("@", 1)[0] if "@" in v else ""
        if ":" in userinfo:
            raise ValueError("must not hold a password: set $CITYSAFE_SUPERSET_WAREHOUSE_PASSWORD")
        return v

    # the hazard closed loop's targets the dashboards compare against
    hazard_overdue_rate_max: float = Field(0.05, ge=0, le=1)
    hazard_days_to_rectify_max: float = Field(7, ge=0)


class AlertChannel(BaseModel):
    """Where alert notifications go: an Apprise URL (webhook, email, DingTalk, WeCom, Feishu ...) and
    which alerts it receives. A red alert goes to every channel whatever its filters."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9_\-]{1,40}$")
    # Apprise URL. Secrets never in config: write ${VAR} and set VAR in the environment, e.g.
    # mailto://duty:${SMTP_PASSWORD}@mail.city.gov?to=duty@city.gov. "outbox" = files under <lake_root>/alerts/outbox/.
    url: str
    districts: tuple[str, ...] | Literal["all"] = "all"  # district codes whose alerts it receives
    min_level: Literal["blue", "yellow", "orange", "red"] = "blue"
    language: Literal["en", "zh", "both"] = "both"
    pipeline_failures: bool = False  # also receives Airflow task failures (the data stewards' channel)

    @field_validator("url")
    @classmethod
    def _no_secret_in_url(cls, v: str) -> str:
        if v == "outbox":
            return v
        if "://" not in v:
            raise ValueError("must be an Apprise URL like json://host/path or mailto://..., or 'outbox'")
        authority = re.split(r"[/?#]", v.split("://", 1)[1], maxsplit=1)[0]
        if "@" in authority:
            password = authority.rsplit("@", 1)[0].partition(":")[2]
            if password and not re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", password):
                raise ValueError("must not hold a password: write ${ENV_VAR} and set it in the environment")
        return v


class AlertsConfig(BaseModel):
    """Early warning (`citysafe alerts`): the rules file, the clock, the channels and delivery retries."""

    model_config = ConfigDict(extra="forbid")
    rules: Path = Path("reference/alert_rules.yaml")  # relative to the repository
    # "now": evaluate at the wall clock (production). "latest_data": at the newest reading or record in
    # the warehouse (a synthetic or historical city replays as if its last hour were now).
    clock: Literal["now", "latest_data"] = "now"
    # events older than this when first seen (a first run over a year of history, a long backfill)
    # are recorded but not sent: nobody needs last March's reminder today
    notify_within_hours: float = Field(72, ge=0)
    notify_events: tuple[Literal["opened", "escalated", "resolved"], ...] = ("opened", "escalated")
    retries: int = Field(3, ge=0, le=10)  # per message, with exponential backoff
    retry_backoff_seconds: float = Field(2, ge=0, le=300)
    channels: tuple[AlertChannel, ...] = (AlertChannel(name="duty_outbox", url="outbox", pipeline_failures=True),)

    @field_validator("channels")
    @classmethod
    def _unique_names(cls, v):
        names = [c.name for c in v]
        if len(set(names)) != len(names):
            raise ValueError(f"channel names must be unique: {names}")
        return v


class S3Config(BaseModel):
    """How to reach the object storage when lake_root is s3://bucket/prefix. Credentials are the
    standard AWS variables (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) or an instance role."""

    model_config = ConfigDict(extra="forbid")
    endpoint_url: str | None = None  # an S3-compatible server, e.g. http://minio:9000 (None: AWS S3)
    region: str = "us-east-1"

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"https?://[^/\s]+/?", v):
            raise ValueError("must be an http(s)://host[:port] URL")
        return v.rstrip("/") if v else v

    def store(self) -> S3Store:
        return S3Store(endpoint_url=self.endpoint_url, region=self.region)


class MLConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(20260101, ge=0)
    threads: int = Field(2, ge=1, le=64)
    risk_levels: RiskLevels = RiskLevels()
    hotspot: HotspotConfig = HotspotConfig()
    forecast: ForecastConfig = ForecastConfig()


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    # A folder, or s3://bucket/prefix (citysafe.storage): landing, bronze, silver, staging, gold, the
    # alert tables and the lake's state (watermarks, stage fingerprints).
    lake_root: Path | S3Path
    # Local to the host that runs the pipeline: run summaries, the lake lock, the GX project and Data
    # Docs, reports, the alert outbox, caches. None: the lake_root folder itself (required on S3).
    state_root: Path | None = None
    s3: S3Config = S3Config()
    warehouse_path: Path
    # DuckDB's memory_limit in the dbt builds: a cold build spills its window sorts to disk above it
    # instead of holding every device hour (scale 1.35: 4.6 GB unbounded, beside the pipeline's own).
    warehouse_memory_limit: str = "3GB"
    synthetic_root: Path
    # None (a city profile without polygons): districts come from the records' own area codes and the
    # H3 grid is the cells the published incidents fall in (see citysafe.city).
    districts_geojson: Path | None
    district_aliases: Path | None
    real_data_root: Path
    sources: tuple[str, ...] | None = None  # the sources this city runs (None: the synthetic city's)
    bounds: tuple[float, float, float, float] | None = None  # min_lon, min_lat, max_lon, max_lat
    engine: str = "sail"
    scale: float = Field(0.02, gt=0, le=10)
    seed: int = Field(20260101, ge=0)
    timezone: str = "Asia/Shanghai"
    h3_resolution: int = Field(8, ge=0, le=15)
    pii_key_env: str = "CITYSAFE_PII_KEY"
    lake_lock_wait_seconds: float = Field(0, ge=0, le=86400)
    city: CityConfig = CityConfig()
    mlflow_root: Path = Path("var/mlflow")
    ml: MLConfig = MLConfig()
    superset: SupersetConfig = SupersetConfig()
    alerts: AlertsConfig = AlertsConfig()
    config_file: Path | None = None

    @field_validator("engine")
    @classmethod
    def _engine(cls, v: str) -> str:
        if v in ("sail", "sail-local-cluster") or re.fullmatch(r"sc://[^/\s:]+:\d+(/.*)?", v):
            return v
        raise ValueError("must be 'sail', 'sail-local-cluster' or a Spark Connect URL like 'sc://host:15002'")

    @field_validator("warehouse_memory_limit")
    @classmethod
    def _memory_limit(cls, v: str) -> str:
        if re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", v.strip()):
            return v.strip()
        raise ValueError("give an amount with a unit DuckDB reads, e.g. '3GB' or '2.5GiB'")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {v!r}") from None
        return v

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, v):
        if v is not None and not bounds_ordered(v):
            raise ValueError("give [min_lon, min_lat, max_lon, max_lat] with min < max")
        return v

    @model_validator(mode="after")
    def _city_places(self):
        if self.districts_geojson is None and (self.bounds is None or not self.sources):
            raise ValueError("a city without district polygons (districts_geojson: null) needs `bounds` and `sources`")
        if self.districts_geojson is not None and self.district_aliases is None:
            raise ValueError("district_aliases is required with districts_geojson (the alias table of the polygons)")
        return self

    @field_validator("pii_key_env")
    @classmethod
    def _key_env(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", v):
            raise ValueError("must be the NAME of an environment variable (the key itself never goes in config)")
        return v

    @model_validator(mode="after")
    def _state_root(self):
        if is_remote(self.lake_root) and self.state_root is None:
            raise ValueError("a lake on object storage (lake_root: s3://...) needs state_root: a local folder")
        return self

    # Derived locations inside the lake -------------------------------------------------------
    @property
    def work_root(self) -> Path:
        """The host's own folder: state_root, or the lake folder when the lake is local."""
        return self.state_root if self.state_root is not None else self.lake_root

    @property
    def landing_dir(self) -> Path:
        return self.lake_root / "landing"

    @property
    def bronze_dir(self) -> Path:
        return self.lake_root / "bronze"

    @property
    def silver_dir(self) -> Path:
        return self.lake_root / "silver"

    @property
    def staging_dir(self) -> Path:
        """Write-audit-publish staging tables (validated before MERGE into silver)."""
        return self.lake_root / "staging"

    @property
    def gold_dir(self) -> Path:
        """Model outputs (risk maps, forecasts, backtests, model runs) as Delta tables."""
        return self.lake_root / "gold"

    @property
    def reports_dir(self) -> Path:
        """Quarterly risk reports: <quarter>/report_<lang>.html|.pdf and the frozen inputs they were made from."""
        return self.work_root / "reports"

    @property
    def alerts_dir(self) -> Path:
        """Early warning: the alert and alert_delivery Delta tables, and outbox/ (the file channel)."""
        return self.lake_root / "alerts"

    @property
    def alerts_outbox(self) -> Path:
        """The `outbox` alert channel: one text file per message."""
        return self.work_root / "alerts" / "outbox"

    @property
    def runs_dir(self) -> Path:
        return self.work_root / "runs"

    @property
    def state_dir(self) -> Path:
        """The lake's own state (watermarks, stage fingerprints): it describes the lake, so it lives there."""
        return self.lake_root / "_state"

    @property
    def cache_dir(self) -> Path:
        """Host-local scratch and caches (DuckDB extensions, dbt's parse state, bronze batch files)."""
        return self.work_root / "_state"

    def pii_key(self) -> bytes:
        """The HMAC key for PII, read from the environment variable the config names."""
        value = os.environ.get(self.pii_key_env, "")
        if len(value) < 16:
            raise ConfigError(
                f"PII hashing key missing: set the environment variable {self.pii_key_env} "
                "to a secret of at least 16 characters (e.g. `export "
                f"{self.pii_key_env}=$(python -c 'import secrets; print(secrets.token_hex(32))')`); "
                "`make run` creates one under var/ for local use."
            )
        return value.encode()


def _set_nested(data: dict, dotted: list[str], value: str) -> None:
    node = data
    for part in dotted[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"environment override for {'.'.join(dotted)}: {part} is not a section")
    if value.strip().startswith("["):  # a list, e.g. CITYSAFE_ML__FORECAST__LAGS="[1, 2, 4]"
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"environment override for {'.'.join(dotted)}: not a valid list: {exc}") from None
    node[dotted[-1]] = value


def _env_overrides(environ: dict[str, str]) -> dict[str, tuple[list[str], str]]:
    out = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _NON_KEY_ENV:
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__")]
        out[name] = (keys, value)
    return out


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (set CITYSAFE_CONFIG or create config/citysafe.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys")
    return data


def _deep_merge(base: dict, overlay: dict) -> dict:
    """The overlay's keys win; sections (mappings) merge key by key, lists and values are replaced."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_layers(path: Path, chain: tuple[Path, ...]) -> dict:
    """A config file, merged over the file its `extends:` names (relative to it): a city profile is an
    overlay on config/citysafe.yaml that states only what differs."""
    if path in chain:
        raise ConfigError(f"{path}: `extends` forms a cycle ({' -> '.join(str(p) for p in (*chain, path))})")
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(f"{path}: extends: give the path of the base config file")
    return _deep_merge(_read_layers((path.parent / parent).resolve(), (*chain, path)), data)


def _path_base(path: Path) -> Path:
    """Relative paths resolve against the folder that holds config/ (the repository root for
    config/citysafe.yaml and config/cities/*.yaml), else against the config file's folder."""
    for folder in path.parents:
        if folder.name == "config":
            return folder.parent
    return path.parent


def load_settings(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read, override from the environment, resolve paths and validate; raise ConfigError on any problem."""
    environ = dict(os.environ if environ is None else environ)
    path = Path(path or environ.get("CITYSAFE_CONFIG") or DEFAULT_CONFIG).resolve()
    data = _read_layers(path, ())

    known = set(Settings.model_fields) - {"config_file"}
    # The variable that holds the PII key is a secret, not a config key.
    secret_env = environ.get("CITYSAFE_PII_KEY_ENV") or str(data.get("pii_key_env") or "CITYSAFE_PII_KEY")
    for env_name, (keys, value) in _env_overrides(environ).items():
        if env_name == secret_env:
            continue
        if keys[0] not in known:
            raise ConfigError(
                f"environment variable {env_name}: unknown config key '{keys[0]}' (known: {', '.join(sorted(known))})"
            )
        _set_nested(data, keys, value)

    base = _path_base(path)
    try:
        store = S3Config.model_validate(data.get("s3") or {}).store()
    except ValidationError:
        store = S3Store()  # reported with its key by the validation below
    for key in _PATH_KEYS:
        if key in data and data[key] is not None:
            if key != "lake_root" and str(data[key]).startswith(("s3://", "s3a://")):
                raise ConfigError(f"{path}: {key}: only lake_root can be on object storage (s3://); give a folder")
            try:
                data[key] = parse_location(data[key], store, base)
            except ConfigurationError as exc:
                raise ConfigError(f"{path}: {key}: {exc}") from None
    data["config_file"] = path
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            problems.append(f"{loc}: {msg}")
        raise ConfigError(f"{path}: invalid configuration: " + "; ".join(problems)) from None
    local = {k: getattr(settings, k) for k in _PATH_KEYS if isinstance(getattr(settings, k), Path)}
    return settings.model_copy(update={k: v.resolve() for k, v in local.items()})
