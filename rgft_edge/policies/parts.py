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
    knapsack DP (ElasticTrainer-style) on values discretised to `resolution` steps (`_solve`).
    """

    TIGHTEN_FACTOR = 0.85  # each tightening asks 15% less of a step, down to the cheapest single

    def __init__(self, cost: CostModel, budget: float = 0.5, resolution: int = 4096, amortize: bool = False):
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
        masks, _ = self.candidates_at(values, forced, [self.available()])[0]
        if not len(masks):
            return self.fallback(forced)
        val = masks @ values + 1e-12 * masks.sum(1)  # prefer more coverage on ties
        return masks[int(np.argmax(val))].copy()  # argmax: the first best, as a strict '>' scan

    def candidates(self, values: np.ndarray, forced: np.ndarray, capacity: float) -> list[np.ndarray]:
        """For each backprop cut depth that fits `capacity` (a fraction of a full step): the
        highest-value selection whose lowest component sits at or above that cut (repeats of
        an earlier cut's selection left out)."""
        return list(self.candidates_at(values, forced, [capacity])[0][0])

    def candidates_at(self, values: np.ndarray, forced: np.ndarray,
                      capacities: list[float]) -> list[tuple[np.ndarray, np.ndarray]]:
        """`candidates` at several capacities from one DP pass: per capacity, the distinct
        selections as rows of a bool array (from the deepest cut up) and their step costs."""
        c = self.cost
        forced = np.asarray(forced, bool)
        values = np.maximum(np.asarray(values, dtype=np.float64), 0.0)
        depths, above = self._above()
        cuts = np.arange(len(depths))
        if forced.any():  # a cut above a forced component would leave it out
            cuts = cuts[depths <= c.depth[forced].min()]
        base = c.forward_total + above[cuts] + c.wgrad[forced].sum()
        # Components by depth, deepest last: the ones allowed at a cut are a prefix of this order.
        items = np.flatnonzero(~forced)
        items = items[np.argsort(-c.depth[items], kind="stable")]
        n_allowed = (c.depth[items][None, :] >= depths[cuts][:, None]).sum(1)
        spare = np.concatenate([cap * c.full - base for cap in capacities])  # (capacity, cut) rows
        rows = np.repeat(np.arange(len(capacities)), len(cuts))
        fits = spare >= 0  # cuts whose base cost already exceeds a capacity are out
        n_allowed = np.tile(n_allowed, len(capacities))[fits]
        items = items[: n_allowed.max(initial=0)]  # the rest sit below every cut that fits
        sel = self._solve(values[items], c.wgrad[items], n_allowed, spare[fits])
        masks = np.zeros((len(sel), len(values)), bool)
        masks[:, items] = sel
        masks |= forced
        # Step costs as `cost.fraction` prices them, for all rows at once.
        cut = np.searchsorted(depths, np.where(masks, c.depth, depths[-1]).min(1))
        cost = ((c.forward_total + above[cut] + masks @ c.wgrad) / c.full if c.full > 0
                else np.ones(len(masks)))
        out = []
        for i in range(len(capacities)):
            keep = np.flatnonzero((rows[fits] == i) & masks.any(1))
            first = {}  # a cut whose best leaves its own depth out repeats a shallower cut's answer
            for r, key in zip(keep, np.packbits(masks[keep], axis=1)):
                first.setdefault(key.tobytes(), r)
            keep = np.array(sorted(first.values()), dtype=np.int64)
            out.append((masks[keep], cost[keep]))
        return out

    def _above(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct depths, and the input-gradient work of everything above each of them."""
        c = self.cost
        depths, at = np.unique(c.depth, return_inverse=True)
        per = np.bincount(at, weights=c.igrad, minlength=len(depths))
        return depths, np.append(np.cumsum(per[::-1])[::-1][1:], 0.0)

    def _solve(self, v, w, n_allowed, spare) -> np.ndarray:
        """One 0/1 knapsack DP for many queries: row r may take items[:n_allowed[r]] within weight
        spare[r]. The DP runs over *value* (a grid of `resolution` steps up to an upper bound of any
        answer): table[u] is the least weight that buys value >= u. Being independent of the
        capacity, one pass answers every cut and capacity (the items allowed at a cut are a
        prefix), and weights stay exact floats, so an answer never exceeds its capacity; its value
        is within |S| grid steps of any selection S that fits. Leftover room is then filled
        greedily (by value, then lightness), which also takes items too small for the grid."""
        n = len(v)
        sel = np.zeros((len(spare), n), bool)
        if not len(spare):
            return sel
        # An upper bound on any answer: the densest items, up to and including the first that
        # no longer fits the largest spare (the fractional-knapsack bound, rounded up).
        fit = w <= spare.max()  # the others fit no row: left out of the DP
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            order = np.argsort(-(v[fit] / w[fit]))  # v/0 = inf sorts first, 0/0 = nan last
        m = int(np.searchsorted(np.cumsum(w[fit][order]), spare.max(), side="right"))
        bound = v[fit][order][: m + 1].sum()
        if bound > 0:
            size = self.res + 1
            q = np.floor(np.minimum(v * (self.res / bound), size)).astype(np.int64)  # capped: no overflow
            table = np.full(size, np.inf)
            table[0] = 0.0
            take = np.zeros((n, size), bool)
            best = np.zeros(len(spare), np.int64)  # the value (in grid steps) each row reaches
            by_end = np.argsort(n_allowed, kind="stable")  # rows grouped by where their items end
            lo, hi = (np.searchsorted(n_allowed[by_end], np.arange(1, n + 1), side=side).tolist()
                      for side in ("left", "right"))
            shifted = np.empty(size)
            for j in range(n):
                if q[j] > 0 and fit[j]:
                    k = min(q[j], size)
                    shifted[:k] = w[j]
                    shifted[k:] = table[: size - k] + w[j]
                    np.less(shifted, table, out=take[j])
                    np.minimum(shifted, table, out=table)
                if hi[j] > lo[j]:  # rows whose allowed items end here: read off their answer
                    done = by_end[lo[j]:hi[j]]
                    best[done] = np.searchsorted(table, spare[done], side="right") - 1
            for j in np.flatnonzero(take.any(1))[::-1]:  # backtrack every row at once
                took = (n_allowed > j) & take[j, best]
                sel[:, j] = took
                best = np.where(took, np.maximum(best - q[j], 0), best)
        left = spare - sel @ w
        allowed = n_allowed[:, None] > np.arange(n)
        could = (allowed & ~sel & (w <= left[:, None])).any(0)  # only shrinks as rows fill up
        for j in np.lexsort((w, -v)):
            if could[j]:
                can = allowed[:, j] & ~sel[:, j] & (w[j] <= left)
                sel[:, j] |= can
                left = np.where(can, left - w[j], left)
        return sel

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
