"""The source registry: one YAML file per source in sources/, validated at load.

Adding a department is one file here (plus a crosswalk in reference/crosswalks/), not new code.
Errors name the file and the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from citysafe.config import REPO_ROOT, Settings, bounds_ordered
from citysafe.errors import ConfigurationError

SOURCES_DIR = REPO_ROOT / "sources"
CROSSWALK_DIR = REPO_ROOT / "reference" / "crosswalks"  # = citysafe.reference.CROSSWALK_DIR (no pandas import here)


class SourceError(ConfigurationError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileConnector(_Strict):
    """A drop folder: every new file (by checksum) matching `pattern` is picked up once."""

    type: Literal["files"]
    path: str
    pattern: str = "*"
    recursive: bool = False

    def folder(self, settings: Settings) -> Path:
        return Path(
            self.path.format(
                synthetic_root=settings.synthetic_root,
                lake_root=settings.lake_root,
                real_data_root=settings.real_data_root,
            )
        )


class RestConnector(_Strict):
    """A paged JSON API with an incremental watermark, Socrata style ($where / $order / $limit / $offset)."""

    type: Literal["rest"]
    url: str  # may hold {env:NAME} placeholders for hosts/tokens
    page_size: int = Field(1000, gt=0, le=50000)
    timeout_seconds: float = Field(30, gt=0)
    max_retries: int = Field(5, ge=0, le=20)
    backoff_seconds: float = Field(1.0, ge=0)
    token_env: str | None = None  # name of the env var holding an app token, never the token
    tie_breaker: str | None = None  # unique column ordering rows that share a watermark value
    start_watermark: str | None = None  # first run pulls rows after this value (None: everything)


class PostgresConnector(_Strict):
    """Incremental pull from a department's operational PostgreSQL table by watermark column.

    The source's `watermark` column orders the pull; `tie_breaker` (a unique NOT NULL column, e.g. the
    key) orders rows sharing a watermark value, so none is skipped or read twice at a chunk boundary.
    The source's format must be jsonl (each chunk is delivered as JSON lines).
    """

    type: Literal["postgres"]
    dsn_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")  # NAME of the env var with the DSN, never the DSN
    table: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
    batch_size: int = Field(10000, gt=0)
    tie_breaker: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    start_watermark: str | None = None  # first run pulls rows after this value (None: everything)
    connect_timeout_seconds: int = Field(10, ge=2, le=300)

    @field_validator("dsn_env")
    @classmethod
    def _not_a_config_key(cls, v: str) -> str:
        if v.upper().startswith("CITYSAFE_"):
            raise ValueError(
                f"{v!r}: CITYSAFE_* variables are configuration keys; name the DSN variable "
                "after the department instead (e.g. FIRE_DB_DSN)"
            )
        return v


class DataFormat(_Strict):
    type: Literal["csv", "jsonl", "json", "xlsx"]
    encoding: str = "utf-8"  # or "auto": UTF-8, else GB18030 (GBK)
    delimiter: str = ","
    quotechar: str = '"'
    header: bool = True
    rename: dict[str, str] = {}  # delivered column name -> declared name
    records_key: str | None = None  # json: the key holding the array of records
    sheet: str | None = None  # xlsx: sheet name (default: the first)
    strict_columns: bool = False  # csv: refuse files whose header differs from the schema

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str) -> str:
        import codecs

        if v == "auto":
            return v
        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown text encoding {v!r}") from None
        return v


class SchemaColumn(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    type: Literal["string"] = "string"
    sensitivity: Literal["public", "internal", "personal"]
    required: bool = False


class Freshness(_Strict):
    warn_after_hours: int = Field(gt=0)
    error_after_hours: int = Field(gt=0)


class IncidentFields(_Strict):
    """Which delivered column plays which role in the unified incident table.

    Real sources may leave out: `record_id` (then the source's primary_key columns joined with '|'),
    `updated_at` (no update time delivered: the occurrence time stands in), `occurred_at` (when the
    silver section gives `occurred_at_parts`) and `code` (when its `code:` section holds
    the source: composite, constant or derived codes)."""

    record_id: str | None = None
    occurred_at: str | None = None
    updated_at: str | None = None
    code: str | None = None
    label: str | None = None
    district: str | None = None
    lon: str | None = None
    lat: str | None = None
    address: str | None = None
    status: str | None = None
    description: str | None = None  # free text about the event (scrubbed in silver; not published)
    # Dispatch-chain times (fire/EMS, hotline); occurred_at is usually one of them (e.g. received).
    received_at: str | None = None
    dispatched_at: str | None = None
    on_scene_at: str | None = None


class PersonalFields(_Strict):
    """Personal columns, hashed with the keyed HMAC before anything leaves bronze."""

    reporter_name: str | None = None
    reporter_phone: str | None = None
    reporter_id: str | None = None
    other: list[str] = []  # further personal columns: hashed in place, never published

    def columns(self) -> list[str]:
        return [c for c in (self.reporter_name, self.reporter_phone, self.reporter_id, *self.other) if c]


class Geography(_Strict):
    """Where a source's records lie when it is not the synthetic city: its own time zone, bounding box
    and area codes. Without it the city's polygons and district alias table apply (settings)."""

    class District(_Strict):
        """The source's own area code (police district, beat, precinct, borough, zip) -> a namespaced
        district code (`CHI-011`, `NYC-MN`) through reference/districts/<crosswalk>.csv
        (source_value,district_code,district_name; matched trimmed and case-insensitively)."""

        column: str | list[str]  # several: tried in order, the first that maps wins
        crosswalk: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
        extract: str | None = None  # regex; group 1 of the delivered value is the key
        strip_decimal_zero: bool = False  # a float-formatted code ('8.0') is read as '8'

        @property
        def columns(self) -> list[str]:
            return [self.column] if isinstance(self.column, str) else list(self.column)

        @property
        def path(self) -> Path:
            return REPO_ROOT / "reference" / "districts" / f"{self.crosswalk}.csv"

        def table(self) -> list[dict]:
            """The crosswalk rows (validated: the three columns, no blank value, one code per value)."""
            import csv

            if not self.path.is_file():
                raise SourceError(f"district crosswalk not found: {self.path}")
            with self.path.open(encoding="utf-8", newline="") as fh:
                rows = list(csv.DictReader(fh))
            seen: dict[str, str] = {}
            for i, row in enumerate(rows, start=2):
                for key in ("source_value", "district_code", "district_name"):
                    if not (row.get(key) or "").strip():
                        raise SourceError(f"{self.path}:{i}: {key} is empty")
                value = row["source_value"].strip().upper()
                if seen.setdefault(value, row["district_code"]) != row["district_code"]:
                    raise SourceError(f"{self.path}:{i}: {row['source_value']!r} maps to two district codes")
            return rows

        def district_codes(self) -> list[str]:
            return sorted({r["district_code"].strip() for r in self.table()})

    timezone: str  # IANA name: local time of the naive timestamps
    bounds: tuple[float, float, float, float]  # min_lon, min_lat, max_lon, max_lat of the city
    district: District
    point: str | None = None  # a '(lat, lon)' column, when lon/lat are not delivered apart

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {v!r}") from None
        return v

    @field_validator("bounds")
    @classmethod
    def _ordered(cls, v):
        if not bounds_ordered(v):
            raise ValueError("bounds: give [min_lon, min_lat, max_lon, max_lat] with min < max")
        return v


class SilverTarget(_Strict):
    """A department's records -> silver.incident. The department's category goes through a reviewed
    `crosswalk` (codes) or a reviewed rule `classifier` (free text); one of the two is required."""

    class Classifier(_Strict):
        """Rule/keyword classifier for a free-text category (the `code` role's column)."""

        rules: str  # reference/classifiers/<rules>.csv
        min_confidence: float = Field(gt=0, le=1)  # below: not guessed, quarantined as needs_review

    class Links(_Strict):
        """Cross-department duplicates: this source's records that report the same real event as a
        record of one of `sources` (same subcategory or category, within the distance and time window)
        are linked in silver.incident_link."""

        sources: list[str] = Field(min_length=1)
        max_distance_m: float = Field(200, gt=0, le=5000)
        max_minutes: float = Field(30, gt=0, le=24 * 60)
        # How early a report may come before the department's record (minutes, <= 0). A report cannot
        # precede the event it describes, so a small allowance for clock offsets is enough; without
        # it the window is symmetric (-max_minutes).
        min_minutes: float | None = Field(None, le=0, ge=-24 * 60)

        @model_validator(mode="after")
        def _window(self):
            if self.min_minutes is not None and -self.min_minutes > self.max_minutes:
                raise ValueError(
                    f"min_minutes {self.min_minutes:g} reaches further back than max_minutes "
                    f"{self.max_minutes:g}: the time buckets are max_minutes wide"
                )
            return self

        @property
        def earliest_minutes(self) -> float:
            return -self.max_minutes if self.min_minutes is None else self.min_minutes

    table: Literal["incident"]
    crosswalk: str | None = None  # reference/crosswalks/<name>.csv
    classifier: Classifier | None = None
    fields: IncidentFields
    personal: PersonalFields = PersonalFields()
    links: Links | None = None
    geography: Geography | None = None  # another city than the synthetic one (real sources)
    # Spark datetime patterns for local (naive) times, tried before the built-in forms.
    time_formats: list[str] = []
    # occurred_at from several columns joined with a space (e.g. [date, hour] + 'M/d/yyyy H'); each part
    # trimmed, a float-formatted integer ('6.0') read as '6'. Replaces fields.occurred_at.
    occurred_at_parts: list[str] = []

    @model_validator(mode="after")
    def _one_way_to_classify(self):
        if (self.crosswalk is None) == (self.classifier is None):
            raise ValueError("silver: give exactly one of crosswalk (codes) or classifier (free-text categories)")
        if bool(self.fields.occurred_at) == bool(self.occurred_at_parts):
            raise ValueError("silver: give exactly one of fields.occurred_at or occurred_at_parts")
        if self.classifier is not None and not self.fields.code:
            raise ValueError("silver: a classifier needs fields.code (the free-text category column)")
        return self


class DeviceFields(_Strict):
    device_id: str
    device_type: str
    unit: str
    district: str | None = None
    lon: str | None = None
    lat: str | None = None
    installed_date: str | None = None
    clock_skew_seconds: str | None = None  # device clock minus true time, when known
    model: str | None = None
    owner: str | None = None


class DeviceTarget(_Strict):
    """A device registry -> silver.device."""

    table: Literal["device"]
    fields: DeviceFields
    personal: PersonalFields = PersonalFields()


class ReadingFields(_Strict):
    device_id: str
    reading_ts: str  # the device's own clock
    seq: str  # per-device counter: the reading's identity
    value: str
    unit: str
    received_at: str | None = None  # server arrival time


class DeviceReadingTarget(_Strict):
    """A device log -> silver.device_reading (raw, cleaned) and silver.device_reading_hourly."""

    table: Literal["device_reading"]
    registry: str  # the source whose silver.device rows these devices are in
    fields: ReadingFields
    personal: PersonalFields = PersonalFields()


class TableTarget(_Strict):
    """Sources whose silver job takes its column roles from `fields` (the job checks the roles it needs)."""

    table: Literal["enterprise", "hazard", "weather_daily"]
    fields: dict[str, str]
    crosswalk: str | None = None  # reference/crosswalks/<name>.csv for the source's codes
    personal: PersonalFields = PersonalFields()


class CountRule(_Strict):
    """Derived code: `code` when any of `columns` holds a number > 0."""

    code: str
    columns: list[str] = Field(min_length=1)


class CodeSystem(_Strict):
    """Where a dataset's incident code is and which crosswalk maps it (reference/crosswalks/<crosswalk>.csv).

    The code is exactly one of: one delivered column, several joined with "|" (`columns`); a `constant`
    (the publisher filtered the data on one code and dropped the column); or the first matching count
    `rule` (plus `default` when every count is a number and none is positive). A measurement dataset
    has no code system: `none: <what it measures>` and nothing else.
    """

    none: str | None = None
    crosswalk: str | None = None
    columns: list[str] = []
    constant: str | None = None
    rules: list[CountRule] = []
    default: str | None = None
    normalize: Literal["none", "strip_decimal_zero"] = "none"
    label_columns: list[str] = []  # the dataset's own label of the code (documentation)
    note: str = ""

    @field_validator("crosswalk")
    @classmethod
    def _crosswalk_file(cls, v: str | None) -> str | None:
        if v is not None and not (CROSSWALK_DIR / f"{v}.csv").is_file():
            raise ValueError(f"{v!r} has no file reference/crosswalks/{v}.csv")
        return v

    @model_validator(mode="after")
    def _one_way(self):
        if self.none is not None:
            if self.crosswalk or self.columns or self.constant is not None or self.rules or self.default:
                raise ValueError("none: a dataset without a code system has no crosswalk, columns, constant or rules")
            return self
        if not self.crosswalk:
            raise ValueError("crosswalk: required (or `none: <what the dataset measures>`)")
        if sum([bool(self.columns), self.constant is not None, bool(self.rules)]) != 1:
            raise ValueError("give exactly one of columns, constant or rules")
        if self.default is not None and not self.rules:
            raise ValueError("default: only applies to rules")
        return self

    @property
    def input_columns(self) -> list[str]:
        cols = list(self.columns)
        for rule in self.rules:
            cols += [c for c in rule.columns if c not in cols]
        return cols


class Source(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    department: str
    kind: Literal["records", "device_log"]
    description: str = ""
    tags: list[str] = []  # e.g. synthetic (the embedded default city), real (public data)
    connector: FileConnector | RestConnector | PostgresConnector = Field(discriminator="type")
    format: DataFormat
    schema_: list[SchemaColumn] = Field(alias="schema", min_length=1)
    primary_key: list[str] = Field(min_length=1)
    watermark: str | None = None
    schedule: str
    freshness: Freshness
    silver: SilverTarget | DeviceTarget | DeviceReadingTarget | TableTarget | None = Field(None, discriminator="table")
    code: CodeSystem | None = None  # real datasets: where the incident code is (citysafe.code_mapping)
    file: Path | None = None

    @model_validator(mode="after")
    def _columns_exist(self):
        names = [c.name for c in self.schema_]
        if len(set(names)) != len(names):
            raise ValueError("schema: duplicate column names")
        for key in [*self.primary_key, *([self.watermark] if self.watermark else [])]:
            if key not in names:
                raise ValueError(f"primary_key/watermark: {key!r} is not a column in schema")
        if self.code is not None:
            code = self.code
            named = {
                **{f"code.columns[{i}]": c for i, c in enumerate(code.columns)},
                **{f"code.label_columns[{i}]": c for i, c in enumerate(code.label_columns)},
                **{
                    f"code.rules[{i}].columns[{j}]": c
                    for i, rule in enumerate(code.rules)
                    for j, c in enumerate(rule.columns)
                },
            }
            for key, column in named.items():
                if column not in names:
                    raise ValueError(f"{key}: {column!r} is not a column in schema")
            silver_crosswalk = getattr(self.silver, "crosswalk", None)
            if code.crosswalk and silver_crosswalk is not None and silver_crosswalk != code.crosswalk:
                raise ValueError(
                    f"silver.crosswalk: {silver_crosswalk!r} differs from code.crosswalk "
                    f"{code.crosswalk!r} (one crosswalk maps the source's codes)"
                )
        if self.silver:
            fields = self.silver.fields if isinstance(self.silver.fields, dict) else self.silver.fields.model_dump()
            personal = self.silver.personal
            mapped = {**fields, **{k: v for k, v in personal.model_dump().items() if k != "other"}}
            mapped.update({f"personal.other[{i}]": c for i, c in enumerate(personal.other)})
            for role, column in mapped.items():
                if column is not None and column not in names:
                    raise ValueError(f"silver: {role} maps to {column!r}, which is not a column in schema")
            undeclared = [c for c in self.personal_columns if c not in personal.columns()]
            if undeclared:
                raise ValueError(f"silver.personal: personal column(s) {undeclared} have no hashing role")
        return self

    @property
    def columns(self) -> list[str]:
        return [c.name for c in self.schema_]

    @property
    def personal_columns(self) -> list[str]:
        return [c.name for c in self.schema_ if c.sensitivity == "personal"]

    @property
    def required_columns(self) -> list[str]:
        return [c.name for c in self.schema_ if c.required]


# libyaml's parser when PyYAML has it (about 10x faster: a CLI process reads every entry).
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_source_file(path: Path) -> Source:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        raise SourceError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SourceError(f"{path}: must be a mapping")
    try:
        source = Source.model_validate({**data, "file": path})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]).replace("schema_", "schema")
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            problems.append(f"{loc}: {msg}" if loc else msg)  # whole-entry checks name their key in msg
        raise SourceError(f"{path}: invalid source entry: " + "; ".join(problems)) from None
    if source.name != path.stem:
        raise SourceError(f"{path}: name {source.name!r} must match the file name {path.stem!r}")
    return source


# Parsed registries by folder, valid while no entry file changed (name, size and mtime of each).
_REGISTRY_CACHE: dict[Path, tuple[tuple, dict[str, Source]]] = {}


def load_registry(folder: Path = SOURCES_DIR) -> dict[str, Source]:
    paths = sorted(folder.glob("*.yaml"))
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    cached = _REGISTRY_CACHE.get(folder)
    if cached is not None and cached[0] == stamp:
        return dict(cached[1])
    registry = {p.stem: load_source_file(p) for p in paths}
    _REGISTRY_CACHE[folder] = (stamp, registry)
    return dict(registry)


def get_source(name: str, folder: Path = SOURCES_DIR) -> Source:
    registry = load_registry(folder)
    if name not in registry:
        raise SourceError(
            f"unknown source {name!r}; known sources: {', '.join(sorted(registry)) or '(none)'} "
            f"(add sources/{name}.yaml to register it)"
        )
    return registry[name]
