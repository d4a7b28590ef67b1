"""A real S3-compatible server on 127.0.0.1 for the object-storage tests: moto's server (`python -m
moto.server`, its own process) behind a TCP relay (socat) the test can cut and restore.

Cutting the relay is the storage outage: every open connection is reset and new ones are refused, as
when an S3 endpoint dies, while the objects already stored stay stored (moto keeps them in memory; a
real MinIO or S3 keeps them on disk). Restoring it brings the same endpoint back.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from loopback_servers import free_port

ACCESS_KEY = "citysafe-test"
SECRET_KEY = "citysafe-test-secret"  # moto accepts any key pair; nothing real is protected by it
REGION = "us-east-1"


class CuttableRelay:
    """socat (Debian's) forwarding 127.0.0.1:<port> to the server, one child per connection, in its own
    process group: `cut()` kills the group, so every open connection is reset and new ones are
    refused; `restore()` starts it again on the same port."""

    def __init__(self, target_port: int, port: int | None = None):
        self.target_port = target_port
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10) -> None:
        self.proc = subprocess.Popen(
            ["socat", f"TCP-LISTEN:{self.port},bind=127.0.0.1,reuseaddr,fork", f"TCP:127.0.0.1:{self.target_port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"socat did not start listening on {self.port}")
            time.sleep(0.05)

    def cut(self) -> None:
        """The outage: the relay and every connection through it die at once."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def restore(self) -> None:
        self.start()


class S3Server:
    """moto's S3 server in its own process, reached through a CuttableRelay."""

    def __init__(self, log_path=None):
        self.log_path = log_path  # moto's request log (None: discarded)
        self.server_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.relay: CuttableRelay | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.relay.port}"

    def start(self, timeout: float = 30) -> S3Server:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.server_port)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log_path, "w") if self.log_path else subprocess.DEVNULL,  # noqa: SIM115
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.server_port}/moto-api/", timeout=2)
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.2)
        self.relay = CuttableRelay(self.server_port)
        self.relay.start()
        return self

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def env(self) -> dict[str, str]:
        """The variables a process needs to reach this server (credentials the AWS way)."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "CITYSAFE_S3__ENDPOINT_URL": self.endpoint_url,
            "CITYSAFE_S3__REGION": REGION,
        }

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.cut()
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
