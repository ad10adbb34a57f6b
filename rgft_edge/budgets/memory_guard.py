"""Per-component memory model and the memory guard that keeps selections inside a budget.

Peak memory of a step = resident base (process after load: weights, runtime, data)
                      + gradients of the trained components (4 B per parameter)
                      + AdamW state held (8 B per parameter of every component with m/v)
                      + activations saved for backward from the cut depth up (measured per
                        component on one profiled step, scaled by batch).
The base is measured, not modelled; `calibrate()` folds the gap between measured peak RSS and the
prediction into a safety margin, so the model errs on the safe side after each step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..components import ComponentTable
from ..errors import UserError
from ..policies import Selection


@dataclass
class MemoryModel:
    base_bytes: float  # measured RSS after load plus an inference forward pass
    activation_bytes: np.ndarray  # per component: saved-for-backward bytes per step (full batch)
    param_counts: np.ndarray
    depth: np.ndarray
    margin_bytes: float = 0.0  # learned from measured peaks (never negative)
    history: list = field(default_factory=list)

    @classmethod
    def for_table(cls, table: ComponentTable, base_bytes: float, activation_bytes) -> "MemoryModel":
        return cls(float(base_bytes), np.asarray(activation_bytes, dtype=np.float64),
                   np.array([c.num_params for c in table], dtype=np.float64), np.array(table.depths))

    def predict(self, mask: np.ndarray, state_mask: np.ndarray) -> float:
        mask = np.asarray(mask, bool)
        grads = 4.0 * self.param_counts[mask].sum()
        state = 8.0 * self.param_counts[np.asarray(state_mask, bool) | mask].sum()
        acts = self.activation_bytes[self.depth >= self.depth[mask].min()].sum() if mask.any() else 0.0
        return self.base_bytes + grads + state + acts + self.margin_bytes

    def minimum(self) -> float:
        """Smallest budget that can train anything: base plus the cheapest single component."""
        return self.predict(self.cheapest_mask(), np.zeros(len(self.param_counts), bool))

    def cheapest_mask(self) -> np.ndarray:
        k = len(self.param_counts)
        none = np.zeros(k, bool)
        costs = [self.predict(np.eye(k, dtype=bool)[i], none) for i in range(k)]
        return np.eye(k, dtype=bool)[int(np.argmin(costs))]

    def breakdown(self, mask: np.ndarray) -> dict[str, float]:
        """The prediction for training `mask` (no other optimizer state), by part, in bytes."""
        mask = np.asarray(mask, bool)
        return {"process after load (weights, runtime, data)": self.base_bytes,
                "gradients": 4.0 * self.param_counts[mask].sum(),
                "AdamW state": 8.0 * self.param_counts[mask].sum(),
                "saved activations": float(self.activation_bytes[self.depth >= self.depth[mask].min()].sum()),
                "allocator margin": self.margin_bytes}

    def calibrate(self, measured_peak: float, predicted: float) -> None:
        self.history.append((predicted, measured_peak))
        if measured_peak > predicted:
            self.margin_bytes += measured_peak - predicted


class MemoryGuard:
    """Shrinks a selection until the predicted peak fits the budget (lowest components go first:
    dropping them raises the cut, which frees their activations and everything above it keeps)."""

    STOP_AT = 0.97  # RSS share of the budget, after a heap trim, at which the run stops itself
    TRIM_AT = 0.90  # RSS share of the budget at which the heap is trimmed

    def __init__(self, model: MemoryModel, budget_bytes: float, load_peak_bytes: float = 0.0):
        self.model, self.budget = model, float(budget_bytes)
        need = max(model.minimum(), load_peak_bytes)
        if budget_bytes < need:
            parts = model.breakdown(model.cheapest_mask())
            if load_peak_bytes > model.minimum():
                parts = {"peak before training (model load, data, cost calibration)": load_peak_bytes}
            lines = "; ".join(f"{k} {v / 1e6:.0f} MB" for k, v in parts.items())
            raise UserError(f"memory budget {budget_bytes / 1e9:.2f} GB is below what training needs "
                            f"here: at least {need / 1e9:.2f} GB ({lines})")
        self.shrunk_steps = 0
        self.trims = 0

    def check(self, rss_bytes: float, trim: Callable[[], bool], rss_now: Callable[[], float]) -> str | None:
        """Between steps (after the margin has learned from the last step's measured peak): trim
        the heap when RSS nears the budget; a reason to stop when even the cheapest step no longer
        fits, or RSS stays within 3% of the budget after trimming."""
        if rss_bytes >= self.TRIM_AT * self.budget and trim():
            self.trims += 1
            rss_bytes = rss_now()
        if self.model.minimum() > self.budget or rss_bytes >= self.STOP_AT * self.budget:
            return "memory budget reached"
        return None

    def fit(self, sel: Selection, state_mask: np.ndarray) -> tuple[Selection, float]:
        mask = sel.mask.copy()
        shrunk = False
        while mask.sum() > 1 and self.model.predict(mask, state_mask) > self.budget:
            idx = np.flatnonzero(mask)
            mask[idx[np.argmin(self.model.depth[idx])]] = False
            shrunk = True
        self.shrunk_steps += int(shrunk)
        return Selection.of(mask, sel.lr_mult), self.model.predict(mask, state_mask)
