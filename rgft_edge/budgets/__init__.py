"""Budgets during a run: the memory guard (`memory_guard.py`), the energy / time controller
(`controller.py`) and the units budgets are written in (`units.py`)."""

from .controller import EXIT_CODES, BudgetController
from .memory_guard import MemoryGuard, MemoryModel
from .units import parse_bytes, parse_duration, parse_energy

__all__ = ["EXIT_CODES", "BudgetController", "MemoryGuard", "MemoryModel", "parse_bytes",
           "parse_duration", "parse_energy"]
