"""Every expected failure of CitySafe Lake, each carrying the exit code the CLI returns for it.

The CLI maps errors to exit codes in one place (`CitySafeError.exit_code`); anything that is not a
`CitySafeError` is unexpected and exits 1 with its traceback. Expected failures print one line.

| code | meaning |
|---|---|
| 0 | ok |
| 1 | unexpected error (a bug: the traceback is printed) |
| 2 | configuration or reference data (config keys, sources/*.yaml, crosswalks, classifier rules, engine) |
| 3 | a quality gate failed: nothing was published; staging and the validation result are kept |
| 4 | the lake does not reconcile with the expected counts |
| 5 | unreadable input: a delivery or a table that does not match its declaration |
| 6 | the dbt marts or their tests failed: the served warehouse is left as it was |
| 7 | the lake is busy: another run holds the lake lock, or a concurrent commit won; retry later |
| 8 | some alert notifications were not delivered after their retries (recorded; the next run retries) |
| 9 | the lake's object storage could not be reached or failed a request: nothing half-written is published; retry |
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_QUALITY = 3
EXIT_RECONCILE = 4
EXIT_INPUT = 5
EXIT_MARTS = 6
EXIT_BUSY = 7
EXIT_DELIVERY = 8
EXIT_STORAGE = 9

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "ok",
    EXIT_ERROR: "unexpected error",
    EXIT_CONFIG: "configuration or reference data",
    EXIT_QUALITY: "a quality gate failed (nothing published)",
    EXIT_RECONCILE: "the lake does not reconcile",
    EXIT_INPUT: "unreadable input",
    EXIT_MARTS: "the marts or their tests failed (served warehouse unchanged)",
    EXIT_BUSY: "the lake is busy (another run or a concurrent commit); retry",
    EXIT_DELIVERY: "alert notifications not delivered (recorded; the next run retries)",
    EXIT_STORAGE: "the lake's object storage is unreachable; retry when it is back",
}


class CitySafeError(Exception):
    """Base of every expected failure; `exit_code` is what the CLI exits with."""

    exit_code: int = EXIT_ERROR


class ConfigurationError(CitySafeError):
    """Configuration, a source declaration, reference data or the engine set-up is wrong."""

    exit_code = EXIT_CONFIG


class QualityGateError(CitySafeError):
    """A Great Expectations gate failed; nothing was published."""

    exit_code = EXIT_QUALITY


class ReconcileError(CitySafeError):
    """The lake does not reconcile with the expected counts."""

    exit_code = EXIT_RECONCILE


class InputError(CitySafeError):
    """A delivery or a table cannot be read as declared."""

    exit_code = EXIT_INPUT


class MartsError(CitySafeError):
    """The marts could not be built or their tests failed; the served warehouse is unchanged."""

    exit_code = EXIT_MARTS


class LakeBusyError(CitySafeError):
    """Another run holds the lake lock, or a concurrent writer committed first."""

    exit_code = EXIT_BUSY


class StorageError(CitySafeError):
    """The lake's object storage could not be reached (or failed a request) during a run. Delta commits
    are atomic and landed batches count only once their manifest is written, so a re-run continues."""

    exit_code = EXIT_STORAGE
