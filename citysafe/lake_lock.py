"""One writer per lake: a lake-level lock held by every command that writes tables.

Two runs writing the same Delta table at once make one of them fail its commit. Instead, the
second run waits for the lock (up to `lake_lock_wait_seconds`) or stops at once with one line naming
the holder (exit 7). The lock is an advisory `flock` on `<lake_root>/.citysafe.lock`: the kernel
releases it when the holder exits, however it exits, so a killed run never leaves a stale lock.
The file's content (pid, host, command, run id, since) only serves the message.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from citysafe.errors import LakeBusyError

log = logging.getLogger(__name__)

LOCK_NAME = ".citysafe.lock"
_POLL_SECONDS = 0.5

# Re-entrant within one process: `citysafe run` holds the lock while its stages take it again.
_held: dict[Path, tuple[int, int]] = {}  # lock path -> (fd, depth)


def lock_path(lake_root: Path) -> Path:
    return Path(lake_root) / LOCK_NAME


def holder(lake_root: Path) -> dict | None:
    """What the lock file says about its last holder (None when never locked or unreadable)."""
    try:
        return json.loads(lock_path(lake_root).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None


def _describe(info: dict | None) -> str:
    if not info:
        return "another process"
    return (
        f"run {info.get('run_id') or '?'} (`{info.get('command', '?')}`, pid {info.get('pid')} on "
        f"{info.get('host')}, since {info.get('since')})"
    )


@contextlib.contextmanager
def lake_lock(lake_root: Path, *, run_id: str = "", wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold the lake's write lock for the block; raise LakeBusyError if another process keeps it."""
    path = lock_path(lake_root).resolve()
    if path in _held:
        fd, depth = _held[path]
        _held[path] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _held[path]
            _held[path] = (fd, depth - 1)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_seconds
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                info = holder(lake_root)
                if time.monotonic() >= deadline:
                    waited = f" after waiting {wait_seconds:g}s" if wait_seconds else ""
                    raise LakeBusyError(
                        f"the lake at {lake_root} is locked by {_describe(info)}{waited}; retry when it has "
                        f"finished (or set lake_lock_wait_seconds to wait)"
                    ) from None
                if not announced:
                    log.warning("waiting up to %gs for the lake lock held by %s", wait_seconds, _describe(info))
                    announced = True
                time.sleep(_POLL_SECONDS)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "run_id": run_id,
            "command": " ".join(["citysafe", *sys.argv[1:2]]) if sys.argv else "citysafe",
            "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        _held[path] = (fd, 1)
        try:
            yield
        finally:
            del _held[path]
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
