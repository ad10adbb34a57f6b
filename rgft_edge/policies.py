"""Allocation policies: from the error map to (which components train, at which LR multiplier).

All policies share one interface, `select(scores, step, forced) -> Selection`. `forced` holds the
components the staleness rule needs measured this step; score-driven policies include them within
their quota where possible so the per-step cost stays what the user asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .components import ComponentTable
from .costs import CostModel

POLICIES = ("top-p", "scale", "clip", "rank", "budget", "full", "random", "static", "head-only",
            "random-budget", "static-budget", "elastic")


@dataclass
class Selection:
    mask: np.ndarray  # bool, which components train this step
    lr_mult: np.ndarray  # float, per-component multiplier of the base LR (0 where not trained)

    @classmethod
    def of(cls, mask: np.ndarray, mult: np.ndarray | float = 1.0) -> "Selection":
        mask = np.asarray(mask, dtype=bool)
        lr = np.where(mask, mult, 0.0).astype(np.float64)
        return cls(mask, lr)


def top_k_mask(scores: np.ndarray, k: int, forced: np.ndarray | None = None) -> np.ndarray:
    """The k best components by score, forced ones first (ties broken by index)."""
    n = len(scores)
    forced = np.zeros(n, bool) if forced is None else np.asarray(forced, bool)
    mask = forced.copy()
    rest = max(0, k - int(mask.sum()))
    order = np.lexsort((np.arange(n), -np.asarray(scores, dtype=np.float64)))
    for i in order:
        if rest == 0:
            break
        if not mask[i]:
            mask[i] = True
            rest -= 1
    return mask


class Policy:
    name = "policy"
    uses_scores = True  # False: the error map (and the staleness rule) does not steer it

    def select(self, scores: np.ndarray, step: int, forced: np.ndarray) -> Selection:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, d: dict) -> None:
        pass


def _count(p: float, k: int) -> int:
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top-p must be in (0, 1], got {p}")
    return max(1, math.ceil(p * k - 1e-9))


class Full(Policy):
    name = "full"
    uses_scores = False

    def select(self, scores, step, forced):
        return Selection.of(np.ones(len(scores), bool))


class TopP(Policy):
    name = "top-p"

    def __init__(self, k: int, p: float = 0.3):
        self.n = _count(p, k)

    def select(self, scores, step, forced):
        return Selection.of(top_k_mask(scores, self.n, forced))


class Rank(TopP):
    """Top-p selection; LR multiplier falls linearly with rank from 1 to `floor`."""

    name = "rank"

    def __init__(self, k: int, p: float = 0.3, floor: float = 0.25):
        super().__init__(k, p)
        self.floor = floor

    def select(self, scores, step, forced):
        mask = top_k_mask(scores, self.n, forced)
        idx = np.flatnonzero(mask)
        order = idx[np.lexsort((idx, -scores[idx]))]
        mult = np.zeros(len(scores))
        denom = max(1, len(order) - 1)
        for r, i in enumerate(order):
            mult[i] = 1.0 - (1.0 - self.floor) * r / denom
        return Selection.of(mask, mult)


class Scale(TopP):
    """Seed 001: eta_k = eta0 * (1 + alpha * E_k / max_j E_j), over the top-p set (p=1: all)."""

    name = "scale"

    def __init__(self, k: int, p: float = 1.0, alpha: float = 1.0):
        super().__init__(k, p)
        self.alpha = alpha

    def select(self, scores, step, forced):
        mask = top_k_mask(scores, self.n, forced)
        top = scores.max() if scores.max() > 0 else 1.0
        return Selection.of(mask, 1.0 + self.alpha * scores / top)


class Clip(TopP):
    """Seed 002: eta_k = eta0 * clip(E_k / (thresh_t * max E), eps, 1), thresh_t rising linearly.

    eps > 0 keeps every trained component moving (the convergence argument needs it).
    """

    name = "clip"

    def __init__(self, k: int, p: float = 1.0, eps: float = 0.1, thresh_init: float = 0.1,
                 thresh_final: float = 0.5, warmup_steps: int = 100):
        super().__init__(k, p)
        if not 0.0 < eps <= 1.0:
            raise ValueError(f"clip eps must be in (0, 1], got {eps}")
        self.eps, self.t0, self.t1, self.warmup = eps, thresh_init, thresh_final, max(1, warmup_steps)

    def threshold(self, step: int) -> float:
        return self.t0 + (self.t1 - self.t0) * min(1.0, step / self.warmup)

    def select(self, scores, step, forced):
        mask = top_k_mask(scores, self.n, forced)
        top = scores.max() if scores.max() > 0 else 1.0
        mult = np.clip(scores / (self.threshold(step) * top), self.eps, 1.0)
        return Selection.of(mask, mult)


class Random(TopP):
    """Baseline: as many components as top-p, drawn uniformly each step."""

    name = "random"
    uses_scores = False

    def __init__(self, k: int, p: float = 0.3, seed: int = 0):
        super().__init__(k, p)
        self.rng = np.random.default_rng(seed)

    def select(self, scores, step, forced):
        mask = np.zeros(len(scores), bool)
        mask[self.rng.choice(len(scores), self.n, replace=False)] = True
        return Selection.of(mask)

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, d):
        self.rng.bit_generator.state = d["rng"]


class Static(TopP):
    """Baseline: train everything for `warmup_steps` (probe), then freeze the top-p set for good."""

    name = "static"

    def __init__(self, k: int, p: float = 0.3, warmup_steps: int = 10):
        super().__init__(k, p)
        self.warmup = warmup_steps
        self.frozen: np.ndarray | None = None

    @property
    def uses_scores(self):  # type: ignore[override]
        return self.frozen is None

    def select(self, scores, step, forced):
        if step < self.warmup:
            return Selection.of(np.ones(len(scores), bool))
        if self.frozen is None:
            self.frozen = self.freeze(scores)
        return Selection.of(self.frozen)

    def freeze(self, scores: np.ndarray) -> np.ndarray:
        """The selection kept for the rest of the run, from the warm-up's error map."""
        return top_k_mask(scores, self.n)

    def state_dict(self):
        return {"frozen": None if self.frozen is None else self.frozen.tolist()}

    def load_state_dict(self, d):
        self.frozen = None if d.get("frozen") is None else np.asarray(d["frozen"], bool)


class HeadOnly(Policy):
    name = "head-only"
    uses_scores = False

    def __init__(self, table: ComponentTable):
        idx = table.indices_of_kind("classifier", "head")
        if not idx:
            raise ValueError("head-only: the model has no classifier/head component")
        self.mask = np.zeros(len(table), bool)
        self.mask[idx] = True

    def select(self, scores, step, forced):
        return Selection.of(self.mask)


class Budget(Policy):
    """Maximise covered error subject to a per-step cost budget that prices backprop depth.

    For each cut depth d, the base cost is forward + input-gradient work of everything above d; the
    rest of the budget buys weight-gradient work of components at depth >= d, chosen by a 0/1
    knapsack DP (ElasticTrainer-style) on costs discretised to `resolution` units.
    """

    name = "budget"

    def __init__(self, cost: CostModel, budget: float = 0.5, resolution: int = 256):
        self.cost, self.budget, self.res = cost, budget, resolution
        k = len(cost.depth)
        singles = [cost.fraction(np.eye(k, dtype=bool)[i]) for i in range(k)]
        cheapest = self.cheapest = min(singles)
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"budget must be in (0, 1], got {budget}")
        if budget + 1e-9 < cheapest:
            raise ValueError(
                f"budget {budget:.3f} of a full step cannot train any component: forward alone "
                f"costs {cost.floor:.3f} and the cheapest component needs {cheapest:.3f}")

    def select(self, scores, step, forced):
        return Selection.of(self.best_mask(scores, forced))

    def best_mask(self, values: np.ndarray, forced: np.ndarray) -> np.ndarray:
        """The selection of highest total value (forced ones included) that fits the budget."""
        c = self.cost
        forced = np.asarray(forced, bool)
        values = np.maximum(np.asarray(values, dtype=np.float64), 0.0)
        limit = self.budget * c.full
        best, best_val = None, -1.0
        min_forced = c.depth[forced].min() if forced.any() else None
        for d in np.unique(c.depth):
            if min_forced is not None and d > min_forced:
                break
            allowed = (c.depth >= d) & ~forced
            spare = limit - c.forward_total - c.igrad[c.depth > d].sum() - c.wgrad[forced].sum()
            if spare < 0:
                continue
            chosen = self._knapsack(values, c.wgrad, allowed, spare)
            mask = chosen | forced
            val = values[mask].sum() + 1e-12 * mask.sum()  # prefer more coverage on ties
            if mask.any() and val > best_val:
                best, best_val = mask, val
        if best is None:  # only the forced set is left; it may exceed the budget (logged as cost)
            best = forced if forced.any() else np.eye(len(values), dtype=bool)[int(np.argmin(
                [c.fraction(np.eye(len(values), dtype=bool)[i]) for i in range(len(values))]))]
        return best

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


def make_policy(name: str, table: ComponentTable, *, top_p: float = 0.3, budget: float = 0.5,
                seed: int = 0, **opts) -> Policy:
    k = len(table)
    if name == "full":
        return Full()
    if name == "top-p":
        return TopP(k, top_p)
    if name == "rank":
        return Rank(k, top_p, opts.get("rank_floor", 0.25))
    if name == "scale":
        return Scale(k, opts.get("scale_top_p", 1.0), opts.get("alpha", 1.0))
    if name == "clip":
        return Clip(k, opts.get("clip_top_p", 1.0), opts.get("eps", 0.1),
                    opts.get("thresh_init", 0.1), opts.get("thresh_final", 0.5),
                    opts.get("clip_warmup_steps", 100))
    if name == "random":
        return Random(k, top_p, seed)
    if name == "static":
        return Static(k, top_p, opts.get("static_warmup_steps", 10))
    if name == "head-only":
        return HeadOnly(table)
    if name == "budget":
        return Budget(CostModel(table), budget)
    if name in ("random-budget", "static-budget", "elastic"):
        from .budget_baselines import make_budget_baseline

        return make_budget_baseline(name, Budget(CostModel(table), budget), seed=seed, **opts)
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
