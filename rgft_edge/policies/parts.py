"""Parts that policies hold (composition, not inheritance).

A *limit* says how much a step may train: `Quota` (a number of components) or `Knapsack` (a
depth-priced cost budget). Both offer the same small interface — `best` (highest-value selection
within the limit), `draw` (a random selection within it), `tighten`, and state for checkpoints —
so every policy works with either, and tightening is the limit's business, not the policy's.
`FrozenAfterWarmup` is the static baselines' memory of one selection.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

import numpy as np

from ..costs import CostModel
from .base import top_k_mask


class Limit(Protocol):
    def best(self, values: np.ndarray, forced: np.ndarray) -> np.ndarray: ...
    def draw(self, rng: np.random.Generator, k: int) -> np.ndarray: ...
    def charge(self, mask: np.ndarray) -> None: ...
    def tighten(self) -> dict | None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, d: dict) -> None: ...


class Quota:
    """How many components a count-based policy trains per step: ceil(p * K), at least one."""

    def __init__(self, k: int, p: float):
        if not 0.0 < p <= 1.0:
            raise ValueError(f"top-p must be in (0, 1], got {p}")
        self.n = max(1, math.ceil(p * k - 1e-9))

    def best(self, values: np.ndarray, forced: np.ndarray) -> np.ndarray:
        return top_k_mask(values, self.n, forced)

    def draw(self, rng: np.random.Generator, k: int) -> np.ndarray:
        mask = np.zeros(k, bool)
        mask[rng.choice(k, self.n, replace=False)] = True
        return mask

    def charge(self, mask: np.ndarray) -> None:
        pass  # a count has nothing to carry over

    def tighten(self) -> dict | None:
        if self.n <= 1:
            return None
        self.n -= 1
        return {"components": self.n}

    def state_dict(self) -> dict:
        return {"n": self.n}

    def load_state_dict(self, d: dict) -> None:
        self.n = int(d.get("n", self.n))


class Knapsack:
    """The selection of highest value under a per-step cost budget that prices backprop depth.

    For each cut depth d, the base cost is forward + input-gradient work of everything above d; the
    rest of the budget buys weight-gradient work of components at depth >= d, chosen by a 0/1
    knapsack DP (ElasticTrainer-style) on costs discretised to `resolution` units.
    """

    TIGHTEN_FACTOR = 0.85  # each tightening asks 15% less of a step, down to the cheapest single

    def __init__(self, cost: CostModel, budget: float = 0.5, resolution: int = 256, amortize: bool = False):
        self.cost, self.budget, self.res, self.amortize = cost, budget, resolution, amortize
        self.debt = 0.0  # overspend of earlier steps (forced refreshes), paid back by later ones
        k = len(cost.depth)
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"budget must be in (0, 1], got {budget}")
        singles = [cost.fraction(np.eye(k, dtype=bool)[i]) for i in range(k)]
        self.cheapest = min(singles)
        self._cheapest_mask = np.eye(k, dtype=bool)[int(np.argmin(singles))]
        if budget + 1e-9 < self.cheapest:
            raise ValueError(
                f"budget {budget:.3f} of a full step cannot train any component: forward alone "
                f"costs {cost.floor:.3f} and the cheapest component needs {self.cheapest:.3f}")

    def best(self, values: np.ndarray, forced: np.ndarray) -> np.ndarray:
        """The selection of highest total value (forced ones included) that fits the budget."""
        values = np.maximum(np.asarray(values, dtype=np.float64), 0.0)
        best, best_val = None, -1.0
        for mask in self.candidates(values, forced, self.available()):
            val = values[mask].sum() + 1e-12 * mask.sum()  # prefer more coverage on ties
            if val > best_val:
                best, best_val = mask, val
        return best if best is not None else self.fallback(forced)

    def candidates(self, values: np.ndarray, forced: np.ndarray, capacity: float) -> list[np.ndarray]:
        """For each backprop cut depth that fits `capacity` (a fraction of a full step): the
        highest-value selection whose lowest component sits at or above that cut."""
        c = self.cost
        forced = np.asarray(forced, bool)
        values = np.maximum(np.asarray(values, dtype=np.float64), 0.0)
        limit = capacity * c.full
        out = []
        min_forced = c.depth[forced].min() if forced.any() else None
        for d in np.unique(c.depth):
            if min_forced is not None and d > min_forced:
                break
            allowed = (c.depth >= d) & ~forced
            spare = limit - c.forward_total - c.igrad[c.depth > d].sum() - c.wgrad[forced].sum()
            if spare < 0:
                continue
            mask = self._knapsack(values, c.wgrad, allowed, spare) | forced
            if mask.any():
                out.append(mask)
        return out

    def fallback(self, forced: np.ndarray) -> np.ndarray:
        """When nothing fits: the forced set (it may exceed the budget; logged as cost), else the
        cheapest single component."""
        forced = np.asarray(forced, bool)
        return forced.copy() if forced.any() else self._cheapest_mask.copy()

    def available(self) -> float:
        """This step's budget: the budget less what earlier overspending still owes (never below
        the cheapest component, so a step always trains something)."""
        return max(self.cheapest, self.budget - self.debt)

    def charge(self, mask: np.ndarray) -> None:
        """Book a step's selection: spending above the budget (a forced deep refresh) becomes debt
        that the next steps pay back, so the budget holds on average, refreshes included (only
        with `amortize`; otherwise a forced refresh simply costs more than the budget)."""
        if self.amortize:
            self.debt = max(0.0, self.debt + self.cost.fraction(mask) - self.budget)

    def draw(self, rng: np.random.Generator, k: int) -> np.ndarray:
        # Components in a uniformly random order, each kept if the step still fits the budget.
        # (Random *values* into the knapsack would not do: with every value positive it simply
        # buys the most components, i.e. the same top blocks every step.)
        mask = np.zeros(k, bool)
        for i in rng.permutation(k):
            mask[i] = True
            if self.cost.fraction(mask) > self.budget + 1e-9:
                mask[i] = False
        return mask if mask.any() else self._cheapest_mask.copy()

    def _knapsack(self, values, weights, allowed, capacity) -> np.ndarray:
        idx = np.flatnonzero(allowed)
        unit = capacity / self.res if capacity > 0 else 1.0
        w = np.ceil(weights[idx] / unit - 1e-9).astype(np.int64) if capacity > 0 else \
            np.where(weights[idx] > 0, self.res + 1, 0)
        cap = self.res
        table = np.zeros(cap + 1)
        take = np.zeros((len(idx), cap + 1), dtype=bool)
        for j, (wj, vj) in enumerate(zip(w, values[idx])):
            if wj > cap:
                continue
            cand = np.full(cap + 1, -np.inf)
            cand[wj:] = table[: cap + 1 - wj] + vj + 1e-12
            better = cand > table
            take[j] = better
            table = np.where(better, cand, table)
        mask = np.zeros(len(values), bool)
        r = cap
        for j in range(len(idx) - 1, -1, -1):
            if take[j, r]:
                mask[idx[j]] = True
                r -= w[j]
        return mask

    def tighten(self) -> dict | None:
        new = max(self.cheapest + 1e-6, self.budget * self.TIGHTEN_FACTOR)
        if new >= self.budget:
            return None
        self.budget = new
        return {"budget": new}

    def state_dict(self) -> dict:
        return {"budget": self.budget, "debt": self.debt}

    def load_state_dict(self, d: dict) -> None:
        self.budget = float(d.get("budget", self.budget))
        self.debt = float(d.get("debt", 0.0))


class FrozenAfterWarmup:
    """Every component for `warmup` steps, then one selection chosen from the error map of that
    moment and kept. After the limit behind `choose` tightens, `rechoose` picks again from the
    same frozen-time scores (still no live error map)."""

    def __init__(self, warmup_steps: int, choose: Callable[[np.ndarray], np.ndarray]):
        if warmup_steps < 1:
            raise ValueError(f"warm-up must be >= 1 step, got {warmup_steps}")
        self.warmup, self.choose = warmup_steps, choose
        self.scores: np.ndarray | None = None  # the error map when the selection was frozen
        self.mask: np.ndarray | None = None

    @property
    def frozen(self) -> bool:
        return self.mask is not None

    def select(self, scores: np.ndarray, step: int) -> np.ndarray:
        if step < self.warmup:
            return np.ones(len(scores), bool)
        if self.mask is None:
            self.scores = np.asarray(scores, dtype=np.float64).copy()
            self.mask = self.choose(self.scores)
        return self.mask

    def rechoose(self) -> None:
        if self.scores is not None:
            self.mask = self.choose(self.scores)

    def state_dict(self) -> dict:
        return {"frozen": None if self.mask is None else self.mask.tolist(),
                "frozen_scores": None if self.scores is None else self.scores.tolist()}

    def load_state_dict(self, d: dict) -> None:
        self.mask = None if d.get("frozen") is None else np.asarray(d["frozen"], bool)
        self.scores = None if d.get("frozen_scores") is None else np.asarray(d["frozen_scores"])
