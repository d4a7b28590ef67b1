"""A killed marts build leaves its `.build-*` folder behind; the next build removes it, never a live one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from citysafe import warehouse

BUILDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from citysafe.warehouse import _build_lock
    folder = Path(sys.argv[1])
    with _build_lock(folder):
        (folder / "marts.duckdb").write_bytes(b"half a database")
        print("building", flush=True)
        time.sleep(600)
""")


def _start_build(folder) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", BUILDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "building"
    return proc


def test_stale_build_folders_are_removed_and_live_ones_kept(tmp_path):
    served = tmp_path / "marts.duckdb"
    killed, live = tmp_path / ".build-killed", tmp_path / ".build-live"
    old_unlocked, new_unlocked = tmp_path / ".build-old-version", tmp_path / ".build-just-started"
    victim = _start_build(killed)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    running = _start_build(live)
    try:
        for folder in (old_unlocked, new_unlocked):
            folder.mkdir()
            (folder / "marts.duckdb").write_bytes(b"x")
        hours_ago = time.time() - 2 * warehouse.STALE_UNLOCKED_BUILD_SECONDS
        os.utime(old_unlocked, (hours_ago, hours_ago))

        removed = warehouse.remove_stale_builds(served)

        assert sorted(p.name for p in removed) == [".build-killed", ".build-old-version"]
        assert not killed.exists() and not old_unlocked.exists()
        assert (live / "marts.duckdb").exists() and (new_unlocked / "marts.duckdb").exists()
    finally:
        running.kill()
        running.wait()
    # once its builder is gone, the formerly live folder is stale too
    assert [p.name for p in warehouse.remove_stale_builds(served)] == [".build-live"]
