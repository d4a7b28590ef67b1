"""CitySafe Lake: shared library and CLI (config, engine, Delta I/O, run summaries)."""

__version__ = "0.1.0"
