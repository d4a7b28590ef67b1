"""Deterministic synthetic city "Jiangcheng" (江城): every department's raw deliveries plus the truth
needed to reconcile and score the CitySafe Lake pipeline. See synthetic_city/README.md."""

from .generator import generate

__all__ = ["generate"]
__version__ = "1.0.0"
