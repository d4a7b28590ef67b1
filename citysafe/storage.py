"""Where the lake lives: a local folder (pathlib.Path) or S3-compatible object storage (S3Path).

`lake_root: s3://bucket/prefix` puts the lake on object storage: landing, bronze, silver, staging,
gold, the alert tables and the lake's own state (watermarks, stage fingerprints). Every reader and
writer reaches it: Sail (the AWS_* variables `engine_environment` gives the server), delta-rs
(`delta_options`), DuckDB (the httpfs extension and an S3 secret, see citysafe.warehouse) and the
Python code (S3Path, over pyarrow's S3 file system). What is local to the host that runs the pipeline
stays in `state_root` (run summaries, the lake lock, the GX project and Data Docs, reports, the alert
outbox, caches): see citysafe.config.

Credentials come from the standard AWS variables (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or an
instance role), never from config; the endpoint and region from config `s3:`.

S3Path implements the part of pathlib's interface the pipeline uses (`/`, name, parent, exists,
read/write, glob, unlink), so code written for a folder works unchanged; the few places that rename
or remove folders call `remove_tree` / `replace_dir` here.
"""

from __future__ import annotations

import atexit
import dataclasses
import fnmatch
import functools
import gc
import os
import shutil
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from citysafe.errors import ConfigurationError, StorageError

S3_SCHEMES = ("s3://", "s3a://")


@dataclasses.dataclass(frozen=True)
class S3Store:
    """How to reach an S3-compatible service: endpoint (None: AWS S3) and region."""

    endpoint_url: str | None = None
    region: str = "us-east-1"

    @property
    def allow_http(self) -> bool:
        return bool(self.endpoint_url) and self.endpoint_url.startswith("http://")

    def credentials(self) -> dict[str, str]:
        """The AWS variables that are set (an instance role needs none)."""
        names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
        return {n: os.environ[n] for n in names if os.environ.get(n)}

    def environment(self) -> dict[str, str]:
        """AWS_* variables for engines that read them (Sail, object_store)."""
        env = {"AWS_REGION": self.region, **self.credentials()}
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
            env["AWS_ALLOW_HTTP"] = "true" if self.allow_http else "false"
        return env

    @functools.cached_property
    def filesystem(self):
        from pyarrow import fs

        _finalize_s3_at_exit(self)
        creds = self.credentials()
        kwargs = {"region": self.region, "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=3)}
        if self.endpoint_url:
            parsed = urlparse(self.endpoint_url)
            kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https")
        if creds.get("AWS_ACCESS_KEY_ID"):
            kwargs.update(
                access_key=creds["AWS_ACCESS_KEY_ID"],
                secret_key=creds.get("AWS_SECRET_ACCESS_KEY"),
                session_token=creds.get("AWS_SESSION_TOKEN"),
            )
        return fs.S3FileSystem(**kwargs)


_STORES_WITH_FILESYSTEM: list[S3Store] = []


def _finalize_s3_at_exit(store: S3Store) -> None:
    """Shut pyarrow's AWS SDK down with none of our file systems alive.

    pyarrow finalizes the SDK in its own atexit hook; an S3FileSystem still referenced then is destroyed
    later, during interpreter teardown, after the SDK is gone, which can abort the process after the
    command's work is done (apache/arrow #41087, #50188). atexit hooks run last-registered first, so this
    one (registered after pyarrow.fs was imported) drops our file systems and finalizes first.
    """
    if not _STORES_WITH_FILESYSTEM:
        atexit.register(_release_filesystems)
    _STORES_WITH_FILESYSTEM.append(store)


def _release_filesystems() -> None:
    from pyarrow import fs

    for store in _STORES_WITH_FILESYSTEM:
        store.__dict__.pop("filesystem", None)
    _STORES_WITH_FILESYSTEM.clear()
    gc.collect()  # file handles and listings that still hold a file system
    fs.ensure_s3_finalized()


class S3Path:
    """An object key prefix in a bucket, with pathlib's interface where the pipeline uses it."""

    __slots__ = ("_key", "store")

    def __init__(self, url: str, store: S3Store):
        for scheme in S3_SCHEMES:
            if url.startswith(scheme):
                url = url[len(scheme) :]
                break
        else:
            raise ValueError(f"not an s3:// URL: {url!r}")
        key = str(PurePosixPath(url.strip("/")))
        if not key or key == "." or key.startswith("/"):
            raise ValueError("an s3:// URL needs a bucket: s3://bucket/prefix")
        self._key = key  # bucket/prefix/..., what pyarrow's file system takes
        self.store = store

    # --- pure path ------------------------------------------------------------------------------
    def __str__(self) -> str:
        return "s3://" + self._key

    def __repr__(self) -> str:
        return f"S3Path({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, S3Path) and other._key == self._key

    def __hash__(self) -> int:
        return hash(("s3", self._key))

    def __lt__(self, other: S3Path) -> bool:
        return self._key < other._key

    def __truediv__(self, part) -> S3Path:
        return S3Path(f"s3://{self._key}/{part}", self.store)

    @property
    def name(self) -> str:
        return PurePosixPath(self._key).name

    @property
    def stem(self) -> str:
        return PurePosixPath(self._key).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self._key).suffix

    @property
    def parent(self) -> S3Path:
        parent = str(PurePosixPath(self._key).parent)
        return self if "/" not in self._key else S3Path("s3://" + parent, self.store)

    @property
    def bucket(self) -> str:
        return self._key.split("/", 1)[0]

    def relative_to(self, other: S3Path) -> PurePosixPath:
        return PurePosixPath(self._key).relative_to(other._key)

    def resolve(self) -> S3Path:
        return self

    def expanduser(self) -> S3Path:
        return self

    def is_absolute(self) -> bool:
        return True

    # --- the object store ------------------------------------------------------------------------
    def _info(self):
        return self.store.filesystem.get_file_info(self._key)

    def exists(self) -> bool:
        from pyarrow import fs

        return self._info().type != fs.FileType.NotFound

    def is_file(self) -> bool:
        from pyarrow import fs

        return self._info().type == fs.FileType.File

    def is_dir(self) -> bool:
        from pyarrow import fs

        return self._info().type == fs.FileType.Directory

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Object storage has no folders: a prefix exists once an object is under it."""

    def rmdir(self) -> None:
        """Remove an empty "folder": the marker object pyarrow leaves for a prefix whose last object it
        deleted. Like os.rmdir, a prefix with objects under it is an OSError."""
        if any(True for _ in self.iterdir()):
            raise OSError(f"{self} is not empty")
        self.store.filesystem.delete_dir(self._key)

    def read_bytes(self) -> bytes:
        try:
            with self.store.filesystem.open_input_stream(self._key) as fh:
                return fh.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"no such object: {self}") from None

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> int:
        """One PUT: readers see the old object or the whole new one, never a part."""
        with self.store.filesystem.open_output_stream(self._key) as fh:
            fh.write(data)
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.store.filesystem.delete_file(self._key)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def iterdir(self):
        from pyarrow import fs

        selector = fs.FileSelector(self._key, allow_not_found=True)
        for info in self.store.filesystem.get_file_info(selector):
            yield S3Path("s3://" + info.path, self.store)

    def glob(self, pattern: str):
        """Entries matching a relative pattern of fixed depth ("*/manifest.json", "*/*/_delta_log")."""
        from pyarrow import fs

        depth = len(PurePosixPath(pattern).parts)
        selector = fs.FileSelector(self._key, recursive=True, allow_not_found=True)
        prefix = self._key + "/"
        found = set()
        for info in self.store.filesystem.get_file_info(selector):
            rel = PurePosixPath(info.path[len(prefix) :])
            if len(rel.parts) >= depth:  # a deeper object implies its folders at this depth
                head = PurePosixPath(*rel.parts[:depth])
                if fnmatch.fnmatch(str(head), pattern):
                    found.add(str(head))
        return [self / h for h in sorted(found)]


LakePath = Path | S3Path


def is_remote(path) -> bool:
    return isinstance(path, S3Path)


def as_path(value) -> LakePath:
    """`value` as a path: an S3Path stays one, anything else becomes a pathlib.Path."""
    return value if isinstance(value, S3Path) else Path(value)


def parse_location(value: str | Path, store: S3Store, base: Path) -> LakePath:
    """A configured location: an s3:// URL, or a folder (relative ones resolve against `base`)."""
    text = str(value)
    if text.startswith(S3_SCHEMES):
        try:
            return S3Path(text, store)
        except ValueError as exc:
            raise ConfigurationError(f"{text}: {exc}") from None
    path = Path(text).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def remove_tree(path: LakePath) -> None:
    """Remove a folder or prefix and everything under it; nothing there is fine."""
    if isinstance(path, S3Path):
        fs_ = path.store.filesystem
        try:
            fs_.delete_dir_contents(path._key, missing_dir_ok=True)
            fs_.delete_dir(path._key)
        except (FileNotFoundError, OSError) as exc:
            if path.exists():
                raise OSError(f"could not remove {path}: {exc}") from None
    else:
        shutil.rmtree(path, ignore_errors=True)


def engine_environment(lake_root: LakePath) -> dict[str, str]:
    """The AWS_* variables the engine needs for a lake on object storage (none for a folder)."""
    return lake_root.store.environment() if isinstance(lake_root, S3Path) else {}


def delta_options(path: LakePath) -> dict[str, str] | None:
    """delta-rs storage_options for a table at `path` (None for a local folder)."""
    if not isinstance(path, S3Path):
        return None
    store = path.store
    options = {"AWS_REGION": store.region, **store.credentials()}
    if store.endpoint_url:
        options.update(AWS_ENDPOINT_URL=store.endpoint_url, AWS_ALLOW_HTTP=str(store.allow_http).lower())
    # A storage outage fails the write after a short, bounded wait (the run then exits with a clear
    # line and a re-run continues) instead of retrying for minutes.
    options.update(max_retries="2", retry_timeout="20s", timeout="60s", connect_timeout="5s")
    return options


# What Sail, delta-rs (object_store), pyarrow and DuckDB say when the object store is down or cut off.
_UNREACHABLE_MARKERS = (
    "connection refused",
    "connection reset",
    "error sending request",
    "error trying to connect",
    "tcp connect error",
    "broken pipe",
    "connection closed",
    "connection aborted",
    "timed out",
    "timeout",
    "could not connect",
    "unable to connect",
    "curlcode: 7",
    "curl error",
    "failed to connect",
    "http request failed",
    "generic s3 error",
    "service unavailable",
)


def unreachable(exc: BaseException) -> StorageError | None:
    """A one-line StorageError when `exc` says the object store could not be reached, else None."""
    text = str(exc)
    lowered = text.lower()
    if not any(marker in lowered for marker in _UNREACHABLE_MARKERS):
        return None
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return StorageError(
        f"the lake's object storage failed a request ({first[:240]}); nothing half-written was published: "
        "run the same command again when the storage is back"
    )
