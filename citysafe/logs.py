"""Logging for CitySafe Lake: standard `logging`, one handler set up by the CLI.

Library, job and model code only calls `logging.getLogger(__name__)`. The CLI calls `configure()`
once: every line carries the time since start, the stage being run and the level. On a terminal,
long loops show a progress bar (`progress_bar`); in Airflow task logs (not a terminal) they log a
plain line every few percent instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_stage: contextvars.ContextVar[str] = contextvars.ContextVar("citysafe_stage", default="-")
_started = time.monotonic()
ROOT_LOGGER = "citysafe_lake"
# Loggers of our own packages; third-party loggers stay at WARNING.
OWN_PACKAGES = ("citysafe", "spark_jobs", "synthetic_city", "pipeline", "ml")


class _StageFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.stage = _stage.get()
        record.elapsed = time.monotonic() - _started
        return True


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            message += "\n" + self.formatException(record.exc_info)
        return f"[{record.elapsed:7.1f}s] {record.stage:<11} {record.levelname:<7} {message}"


_handler: logging.Handler | None = None


def configure(level: int = logging.INFO, stream=None) -> None:
    """Install the one stderr handler on our packages' loggers (idempotent)."""
    global _handler, _started
    _started = time.monotonic()
    stream = stream or sys.stderr
    reset()
    _handler = logging.StreamHandler(stream)
    _handler.addFilter(_StageFilter())
    _handler.setFormatter(_Formatter())
    for name in OWN_PACKAGES:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.addHandler(_handler)
        logger.propagate = False


def reset() -> None:
    """Remove the handler `configure` installed (tests that run the CLI in-process)."""
    global _handler
    if _handler is not None:
        for name in OWN_PACKAGES:
            logger = logging.getLogger(name)
            logger.removeHandler(_handler)
            logger.propagate = True
            logger.setLevel(logging.NOTSET)
        _handler = None


@contextlib.contextmanager
def stage_context(name: str) -> Iterator[None]:
    """Every log line inside the block names `name` as its stage."""
    token = _stage.set(name)
    try:
        yield
    finally:
        _stage.reset(token)


def _interactive() -> bool:
    return _handler is not None and getattr(getattr(_handler, "stream", None), "isatty", lambda: False)()


def progress_bar(
    items: Iterable[T], *, total: int | None = None, desc: str, logger: logging.Logger, every_percent: int = 25
) -> Iterator[T]:
    """Iterate `items`; on a terminal with a tqdm bar, elsewhere with a log line every `every_percent`%."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if _interactive():
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=desc, leave=False, file=_handler.stream, dynamic_ncols=True)
        return
    step = max(1, (total or 0) * every_percent // 100)
    for done, item in enumerate(items, start=1):
        yield item
        if total and (done % step == 0 or done == total):
            logger.info("%s: %d/%d", desc, done, total)


class StepProgress:
    """Progress through steps reported one at a time (e.g. dbt's finished models): a tqdm bar on a
    terminal, an INFO line per step elsewhere (Airflow task logs, files, tests)."""

    def __init__(self, desc: str, logger: logging.Logger):
        self.desc, self.logger, self._bar = desc, logger, None

    def step(self, message: str, *, done: int | None = None, total: int | None = None) -> None:
        if not _interactive():
            self.logger.info(message)
            return
        self.logger.debug(message)
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self.desc, leave=False, file=_handler.stream, dynamic_ncols=True)
        if total and self._bar.total != total:
            self._bar.total = total
        self._bar.update((done - self._bar.n) if done is not None else 1)
        self._bar.set_postfix_str(message[-60:], refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
