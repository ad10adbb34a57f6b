"""Baselines: full, head-only, random (within a limit) and static (one selection after a warm-up).

`random` / `random-budget` and `static` / `static-budget` are one class each, holding a `Quota`
or a `Knapsack`: the baseline at equal *count* and the one at equal *cost* differ only in limit.
"""

from __future__ import annotations

import numpy as np

from ..components import ComponentTable
from .base import Policy, Selection
from .parts import FrozenAfterWarmup, Limit


class Full(Policy):
    """Every component, every step (plain fine-tuning)."""

    @property
    def uses_scores(self) -> bool:
        return False

    def select(self, scores, step, forced):
        return Selection.of(np.ones(len(scores), bool))

    def tighten(self):
        return None  # full fine-tuning has no smaller step; the energy budget stops it instead


class HeadOnly(Policy):
    """The task head only (linear probing)."""

    def __init__(self, table: ComponentTable):
        idx = table.indices_of_kind("classifier", "head")
        if not idx:
            raise ValueError("head-only: the model has no classifier/head component")
        self.mask = np.zeros(len(table), bool)
        self.mask[idx] = True

    @property
    def uses_scores(self) -> bool:
        return False

    def select(self, scores, step, forced):
        return Selection.of(self.mask)

    def tighten(self):
        return None  # already the smallest selection that still trains the task


class RandomSelection(Policy):
    """A fresh random selection within the limit every step (no error map)."""

    def __init__(self, limit: Limit, seed: int = 0):
        self.limit = limit
        self.rng = np.random.default_rng(seed)

    @property
    def uses_scores(self) -> bool:
        return False

    def select(self, scores, step, forced):
        return Selection.of(self.limit.draw(self.rng, len(scores)))

    def tighten(self):
        return self.limit.tighten()

    def state_dict(self):
        return {**self.limit.state_dict(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, d):
        self.limit.load_state_dict(d)
        if "rng" in d:
            self.rng.bit_generator.state = d["rng"]


class StaticSelection(Policy):
    """Every component for the warm-up, then the best selection within the limit by the error map
    of that moment, kept for the rest of the run."""

    def __init__(self, limit: Limit, warmup_steps: int = 10):
        self.limit = limit
        self.frozen = FrozenAfterWarmup(warmup_steps, lambda s: limit.best(s, np.zeros(len(s), bool)))

    @property
    def uses_scores(self) -> bool:
        return not self.frozen.frozen

    def select(self, scores, step, forced):
        return Selection.of(self.frozen.select(scores, step))

    def tighten(self):
        change = self.limit.tighten()
        if change is not None:
            self.frozen.rechoose()
        return change

    def state_dict(self):
        return {**self.limit.state_dict(), **self.frozen.state_dict()}

    def load_state_dict(self, d):
        self.limit.load_state_dict(d)
        self.frozen.load_state_dict(d)



def nearest_output_first(depth: np.ndarray) -> np.ndarray:
    """Fixed values under which any component outweighs every component below it together: a
    limit's `best` then buys the components nearest the output (the map-free `top-blocks`)."""
    order = np.lexsort((np.arange(len(depth)), np.asarray(depth)))
    rank = np.empty(len(depth))
    rank[order] = np.arange(len(depth))
    return 2.0 ** rank
