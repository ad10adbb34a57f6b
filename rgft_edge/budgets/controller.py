"""Budgets during a run: memory (shrink selections), energy and time (project, tighten, stop).

The controller plugs into the loop through `constrain` (memory guard on every selection) and
`should_stop` (energy / time spent). Every `check_every` steps it projects the run's energy from
the energy used per step so far; when the projection breaks the budget it tightens the policy's
per-step budget or component count (`Policy.tighten`), so the run spends less per step instead of
stopping early. Exit statuses for a run stopped by a budget are in `EXIT_CODES`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..meters import EnergyMeter
from ..policies import Policy, Selection
from .memory_guard import MemoryGuard

EXIT_CODES = {"completed": 0, "training time reached": 0, "energy budget spent": 3,
              "time budget spent": 4, "non-finite loss": 5, "memory budget reached": 6}


@dataclass
class BudgetController:
    policy: Policy
    total_steps: int
    energy_budget_j: float | None = None
    time_budget_s: float | None = None
    guard: MemoryGuard | None = None
    energy_meter: EnergyMeter | None = None
    state_mask: Callable[[], np.ndarray] | None = None  # -> components holding optimizer state
    check_every: int = 10
    started: float = field(default_factory=time.perf_counter)
    adjustments: list = field(default_factory=list)
    predicted_peaks: list = field(default_factory=list)
    memory_stop: str | None = None  # set between steps when the memory guard says stop

    def energy_used(self) -> float:
        return self.energy_meter.snapshot().energy_j if self.energy_meter is not None else 0.0

    def constrain(self, sel: Selection, step: int) -> Selection:
        if self.guard is None:
            return sel
        state = self.state_mask() if self.state_mask else np.zeros(len(sel.mask), bool)
        sel, predicted = self.guard.fit(sel, state)
        self.predicted_peaks.append(predicted)
        return sel

    def should_stop(self, step: int) -> str | None:
        if self.memory_stop is not None:
            return self.memory_stop
        if self.time_budget_s is not None and time.perf_counter() - self.started >= self.time_budget_s:
            return "time budget spent"
        if self.energy_budget_j is not None and self.energy_meter is not None:
            used = self.energy_used()
            if used >= self.energy_budget_j:
                return "energy budget spent"
            if step and step % self.check_every == 0:
                self._project(step, used)
        return None

    def _project(self, step: int, used: float) -> None:
        projected = used + used / step * max(0, self.total_steps - step)
        if projected <= self.energy_budget_j:
            return
        change = self.policy.tighten()  # every policy declares it; None: it cannot spend less
        if change is not None:
            self.adjustments.append({"step": step, "projected_j": projected, **change})
