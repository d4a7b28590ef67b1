"""Deterministic synthetic city "Jiangcheng" (江城): every department's raw deliveries plus the truth
needed to reconcile and score the CitySafe Lake pipeline. See synthetic_city/README.md."""

from .generator import generate
from .increment import IncrementError, generate_day, generated_days, next_day

__all__ = ["IncrementError", "generate", "generate_day", "generated_days", "next_day"]
__version__ = "1.0.0"
