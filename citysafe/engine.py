"""The Spark engine, chosen by configuration only.

`engine: sail` starts Sail's Spark Connect server in this process (no JVM); `engine: sail-local-cluster`
starts it in Sail's cluster mode inside this process (a driver and workers on their own threads that talk
over RPC, as Sail's Kubernetes mode does across pods; SAIL_CLUSTER__WORKER_INITIAL_COUNT sets how many,
default 4): the way to test the distributed plan on one machine. `engine: sc://host:port` connects to
an existing Spark Connect server (Apache Spark + delta-spark, or Sail on Kubernetes).
Job code receives a SparkSession and never knows which one it got.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator

from pyspark.sql import SparkSession

from citysafe.errors import ConfigurationError

log = logging.getLogger(__name__)

# Settings every session gets, whatever the engine: UTC so timestamps mean instants, and ANSI off
# so try_* parsing returns NULL instead of failing a whole batch.
SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",
}


class EngineError(ConfigurationError):
    pass


CONNECT_TIMEOUT_SECONDS = 10

# The embedded engines and the Sail mode each runs in (Sail reads SAIL_MODE when the server is made).
SAIL_MODES = {"sail": "local", "sail-local-cluster": "local-cluster"}


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """Set one environment variable for the duration of the block only: the engine setting, not a
    SAIL_MODE left in the environment, decides the mode of every server this process makes."""
    with _environment_vars({name: value}):
        yield


@contextlib.contextmanager
def _environment_vars(values: dict[str, str]) -> Iterator[None]:
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _check_reachable(url: str, timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
    """Fail fast with one line when nothing listens at the Spark Connect URL: the client itself
    retries an unreachable server for minutes before it gives up."""
    hostport = url[len("sc://") :].split("/", 1)[0].split(";", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise EngineError(f"engine {url!r}: expected sc://host:port")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise EngineError(
            f"cannot reach the Spark Connect server at {url}: {exc.strerror or exc}; "
            f"start it or fix `engine` in the configuration"
        ) from None


@contextlib.contextmanager
def spark_session(
    engine: str = "sail", app_name: str = "citysafe", storage_env: dict[str, str] | None = None
) -> Iterator[SparkSession]:
    """Yield a Spark Connect session for `engine`; always stop the session before the server.
    `storage_env`: the AWS_* variables of a lake on object storage (citysafe.storage), set while the
    session lives: the in-process Sail server reads them when it opens the store. A Spark Connect
    server elsewhere gets them (or fs.s3a.* settings) from its own deployment (infra/)."""
    with _environment_vars(storage_env or {}):
        with _session(engine, app_name) as spark:
            yield spark


@contextlib.contextmanager
def _session(engine: str, app_name: str) -> Iterator[SparkSession]:
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    server = None
    if engine in SAIL_MODES:
        # Sail logs every session at INFO on stderr; keep the user's terminal for progress lines.
        os.environ.setdefault("RUST_LOG", "error")
        from pysail.spark import SparkConnectServer

        with _environment("SAIL_MODE", SAIL_MODES[engine]):
            server = SparkConnectServer(ip="127.0.0.1", port=0)
        server.start(background=True)
        host, port = server.listening_address
        url = f"sc://{host}:{port}"
    elif engine.startswith("sc://"):
        url = engine
        _check_reachable(url)
    else:
        raise EngineError(f"unknown engine {engine!r}: use 'sail', 'sail-local-cluster' or 'sc://host:port'")
    spark = None
    try:
        try:
            builder = SparkSession.builder.remote(url).appName(app_name)
            for key, value in SESSION_CONF.items():
                builder = builder.config(key, value)
            spark = builder.create()  # never an existing session: stopping ours must not stop a caller's
        except Exception as exc:  # connection refused, bad URL ...
            raise EngineError(f"cannot connect to Spark Connect at {url}: {exc}") from exc
        yield spark
    finally:
        # Order matters: stopping an in-process server before its session hangs the process at exit.
        if spark is not None:
            with contextlib.suppress(Exception):
                spark.stop()
            # pyspark's SparkSession.__del__ closes the client again, which shuts down a release thread pool
            # SHARED by every Spark Connect session of the process and waits for its pending calls. When
            # the garbage collector runs that finalizer on a thread the in-process Sail server needs (one
            # running a Python UDF), the wait never ends (seen as a hung test). The session is stopped:
            # drop its client, so the finalizer finds nothing to close.
            spark._client = None
        if server is not None:
            server.stop()
