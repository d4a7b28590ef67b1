"""Cheap fingerprints of what a stage reads and writes, to skip a stage when nothing changed.

A Delta table's state is its latest commit version (the newest `_delta_log/*.json`, no table read);
a folder of files is the sha256 of its files' relative names and contents.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from citysafe.storage import LakePath, as_path

IGNORED_PARTS = {"target", "logs", "__pycache__", ".pytest_cache", "dbt_packages"}


def delta_version(table: LakePath) -> int | None:
    """Latest commit version of the Delta table at `table`, None when there is none."""
    log = as_path(table) / "_delta_log"
    try:
        versions = [int(p.name[:-5]) for p in log.iterdir() if p.name.endswith(".json") and p.name[:-5].isdigit()]
    except FileNotFoundError:
        return None
    return max(versions, default=None)


def delta_versions(folder: LakePath) -> dict[str, int | None]:
    """`{table name: version}` for every Delta table directly under `folder`."""
    folder = as_path(folder)
    if not folder.is_dir():
        return {}
    return {p.name: delta_version(p) for p in sorted(folder.iterdir()) if (p / "_delta_log").is_dir()}


def files_digest(paths: Iterable[Path], root: Path | None = None) -> str:
    """sha256 over the names and contents of every file under `paths` (files or folders); missing paths
    count as missing, so creating one changes the digest."""
    digest = hashlib.sha256()
    for base in paths:
        base = Path(base)
        files = (
            [base]
            if base.is_file()
            else sorted(
                p for p in base.rglob("*") if p.is_file() and not IGNORED_PARTS & set(p.relative_to(base).parts)
            )
        )
        if not base.exists():
            digest.update(f"missing:{base}\n".encode())
        for path in files:
            name = path.relative_to(root) if root and path.is_relative_to(root) else path
            digest.update(f"{name}\n".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def file_state(path: Path) -> list | None:
    """(size, mtime_ns) of a file, None if it does not exist: enough to notice a swapped file."""
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns]
