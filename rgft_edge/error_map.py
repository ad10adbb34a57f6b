"""EMA error map with a staleness rule, so no component starves.

E_k <- beta * E_k + (1 - beta) * s_k for every component measured this step; others keep their
score and age. The exploration rule: a component whose age reaches `max_staleness` is forced into
the measured set (with every component at least half-way stale), so every component is re-measured
at least once every `max_staleness` steps (tests check the bound).
"""

from __future__ import annotations

import numpy as np


class ErrorMap:
    def __init__(self, num_components: int, beta: float = 0.9, max_staleness: int = 20):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        if max_staleness < 1:
            raise ValueError(f"max_staleness must be >= 1, got {max_staleness}")
        self.beta = beta
        self.max_staleness = max_staleness
        self.scores = np.zeros(num_components, dtype=np.float64)
        self.measured_once = np.zeros(num_components, dtype=bool)
        self.last_measured = np.full(num_components, -1, dtype=np.int64)
        # components the staleness rule leaves alone: training them cannot fit a memory budget now
        self.exempt = np.zeros(num_components, dtype=bool)

    def __len__(self) -> int:
        return len(self.scores)

    def ages(self, step: int) -> np.ndarray:
        """Steps since each component was last measured (never measured: step + 1)."""
        return step - self.last_measured

    def stale(self, step: int, already: np.ndarray) -> np.ndarray:
        """Mask of components that must be measured this step to honour the staleness bound.

        Nothing is forced until some component reaches the bound; then every component at least
        half-way there is forced along with it. Grouping matters under a depth-aware cost: one deep
        backward pass refreshes many low components for the price of one, whereas forcing one
        component per step would make most steps deep.
        """
        ages = self.ages(step)
        open_ = ~np.asarray(already, dtype=bool) & ~self.exempt
        due = open_ & (ages >= self.max_staleness)
        if not due.any():
            return due
        return open_ & (ages >= max(1, self.max_staleness // 2))

    def update(self, step: int, measured: np.ndarray, values: np.ndarray) -> None:
        measured = np.asarray(measured, dtype=bool)
        values = np.asarray(values, dtype=np.float64)
        ok = measured & np.isfinite(values)
        first = ok & ~self.measured_once
        # The first measurement initialises the score (no bias toward zero from the EMA start).
        self.scores[first] = values[first]
        rest = ok & self.measured_once
        self.scores[rest] = self.beta * self.scores[rest] + (1 - self.beta) * values[rest]
        self.measured_once |= ok
        self.last_measured[ok] = step

    def state_dict(self) -> dict:
        return {"scores": self.scores.copy(), "measured_once": self.measured_once.copy(),
                "last_measured": self.last_measured.copy()}

    def load_state_dict(self, d: dict) -> None:
        self.scores = np.asarray(d["scores"], dtype=np.float64).copy()
        self.measured_once = np.asarray(d["measured_once"], dtype=bool).copy()
        self.last_measured = np.asarray(d["last_measured"], dtype=np.int64).copy()
