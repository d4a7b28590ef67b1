"""A throw-away PostgreSQL server for tests, benchmarks and trying the postgres connector by hand:
initdb into a temporary folder, listen on 127.0.0.1 only.

Used by the tests' session fixture `pg_server` (tests/pg_server.py), by benchmarks/loopback_servers.py,
or by hand: `python -m citysafe.pg_local [folder]` starts one, prints its DSN and stops it on Ctrl-C
(scripts/pg_local.sh wraps that).

- Binaries: $PG_BIN_DIR, else the newest /usr/lib/postgresql/*/bin (Debian's `postgresql` package),
  else whatever `initdb` is on PATH. None found: the tests are skipped, or fail when $CI is set.
- initdb refuses to run as root. As root, every server command runs as the unprivileged user `nobody`
  (`runuser -u nobody --`, or `setpriv --reuid --regid --clear-groups` where runuser is missing); the
  data folder is chown-ed to it, and its parent folders get search-only permission (o+x, no listing)
  where they lack it, as pytest's own temp root is 0700. As any other user the commands run directly.
- The server listens on 127.0.0.1 on a free port, its unix socket stays inside the temp folder, fsync
  is off (throw-away data). TCP logins use scram-sha-256 passwords, so a wrong password is refused.
- `start_seconds` is how long initdb + start took (0.7-0.9 s measured on a 2-CPU container; stop ~0.1 s).
"""

from __future__ import annotations

import atexit
import dataclasses
import glob
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

SUPERUSER = "citysafe_admin"
SUPERUSER_PASSWORD = "admin-pw-Xq7"  # throw-away server on 127.0.0.1, gone at the end of the session
RUN_AS = "nobody"


class PgServerError(RuntimeError):
    pass


def find_bin_dir() -> Path | None:
    if os.environ.get("PG_BIN_DIR"):
        return Path(os.environ["PG_BIN_DIR"])
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
    )
    for candidate in reversed(candidates):
        if (Path(candidate) / "initdb").is_file():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _drop_privileges_prefix() -> tuple[list[str], int | None, int | None]:
    """The command prefix that runs a program as `nobody` (as root), or nothing (as anyone else)."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        user = pwd.getpwnam(RUN_AS)
    except KeyError:
        raise PgServerError(f"running as root and there is no {RUN_AS!r} user to run PostgreSQL as") from None
    if shutil.which("runuser"):
        return ["runuser", "-u", RUN_AS, "--"], user.pw_uid, user.pw_gid
    if shutil.which("setpriv"):
        return (
            ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"],
            user.pw_uid,
            user.pw_gid,
        )
    raise PgServerError("running as root and neither runuser nor setpriv is available to drop privileges")


def _can_search(path: Path, uid: int, gid: int) -> bool:
    st = path.stat()
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _make_reachable(folder: Path, uid: int, gid: int, allow: Path) -> bool:
    """Add search permission (o+x, not read) where `uid` lacks it on folder or a parent at or below `allow`.

    Returns False, changing nothing, when a parent above `allow` blocks the way.
    """
    allow = allow.resolve()
    folder = folder.resolve()
    blocked = [p for p in (folder, *folder.parents) if not _can_search(p, uid, gid)]
    if any(p != allow and allow not in p.parents for p in blocked):
        return False
    for p in blocked:
        p.chmod(p.stat().st_mode | stat.S_IXOTH)
    return True


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@dataclasses.dataclass
class PgServer:
    bin_dir: Path
    root: Path
    port: int
    prefix: list[str]
    start_seconds: float = 0.0
    host: str = "127.0.0.1"
    superuser: str = SUPERUSER
    password: str = SUPERUSER_PASSWORD

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def dsn(
        self, dbname: str = "postgres", user: str | None = None, password: str | None = None, port: int | None = None
    ) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host=self.host,
            port=port or self.port,
            dbname=dbname,
            user=user or self.superuser,
            password=self.password if password is None else password,
            connect_timeout=5,
        )

    def connect(self, dbname: str = "postgres"):
        import psycopg

        return psycopg.connect(self.dsn(dbname), autocommit=True)

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}
        result = subprocess.run(
            [*self.prefix, *args], cwd=self.root, env=env, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-3000:] if self.log_file.exists() else ""
            raise PgServerError(
                f"{' '.join(args[:2])} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n{log}"
            )
        return result

    def start(self) -> None:
        # The commands run in the server's folder, with paths relative to it.
        started = time.monotonic()
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        self._chown(pwfile)
        try:
            self._run(
                str(self.bin_dir / "initdb"),
                "-D",
                "data",
                "-U",
                self.superuser,
                "--pwfile=pwfile",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            )
        finally:
            pwfile.unlink()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=30 "
            "-c shared_buffers=16MB -c log_min_messages=warning"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"), "start", "-D", "data", "-w", "-t", "30", "-l", "server.log", "-o", options
        )
        self.start_seconds = round(time.monotonic() - started, 3)

    def stop(self) -> None:
        """Immediate shutdown (throw-away data): pg_ctl, else SIGQUIT (what pg_ctl -m immediate sends).

        The fallback is for a parent folder that lost its o+x meanwhile (another pytest run resets its
        0700 temp root): pg_ctl, run as `nobody`, then cannot find its way back to the folder.
        """
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return
        try:
            self._run(str(self.bin_dir / "pg_ctl"), "stop", "-D", "data", "-m", "immediate", "-w", "-t", "30")
            return
        except (PgServerError, subprocess.TimeoutExpired):
            pass
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)
        except (OSError, ValueError, IndexError):
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _running(pid):
            time.sleep(0.05)

    def _chown(self, path: Path) -> None:
        if self.prefix:
            user = pwd.getpwnam(RUN_AS)
            os.chown(path, user.pw_uid, user.pw_gid)


def start_server(
    base: Path, bin_dir: Path | None = None, allow_chmod: Path | None = None, attempts: int = 3
) -> PgServer:
    """initdb + start a server in a new folder under `base` (up to `attempts` tries: port taken ...).

    As root, folders from `allow_chmod` (default: base) down may get o+x so that `nobody` can reach
    the data folder; if something above it blocks the way, a fresh folder in the system temp is used.
    """
    bin_dir = bin_dir or find_bin_dir()
    if bin_dir is None:
        raise PgServerError(
            "PostgreSQL server binaries not found (install Debian's `postgresql` package, "
            "or set PG_BIN_DIR to the folder holding initdb and pg_ctl)"
        )
    prefix, uid, gid = _drop_privileges_prefix()
    if uid is not None and not _make_reachable(base, uid, gid, allow_chmod or base):
        base = Path(tempfile.mkdtemp(prefix="citysafe-pg-"))  # e.g. --basetemp under /root: use /tmp
        base.chmod(0o711)
    for attempt in range(attempts):
        root = Path(tempfile.mkdtemp(prefix="pg", dir=base))  # 0700
        if uid is not None:
            os.chown(root, uid, gid)
            _make_reachable(base, uid, gid, allow_chmod or base)  # again: a concurrent pytest may reset it
        server = PgServer(bin_dir, root, free_port(), prefix)
        try:
            server.start()
            atexit.register(server.stop)  # also if the session ends without the fixture's teardown
            return server
        except (PgServerError, subprocess.TimeoutExpired):  # port taken meanwhile, folder made unreachable
            server.stop()
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


if __name__ == "__main__":
    import sys

    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="citysafe-pg-"))
    folder.mkdir(parents=True, exist_ok=True)
    srv = start_server(folder)
    print(f"started in {srv.start_seconds:.2f} s; data in {srv.root}")
    print(f"DSN: {srv.dsn()}")
    print("Ctrl-C (or SIGTERM) stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
