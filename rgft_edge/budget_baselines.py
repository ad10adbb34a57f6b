"""Baselines that spend exactly RGFT's per-step budget, chosen without the live error map.

All three price a step with the budget policy's depth-aware cost model; they differ from RGFT's
`budget` policy only in how they choose within it:

- `random-budget`: every step, components in a random order, each kept while the step fits the budget;
- `static-budget`: the error map of a short all-components warm-up, then one selection kept forever;
- `elastic`: ElasticTrainer-style (Huang et al., MobiSys 2023). Every `probe_every` steps one full
  step measures each component's importance as the first-order loss decrease its update caused,
  sum(g * (w_before - w_after)); between probes the knapsack selection on that importance is fixed.
  ElasticTrainer prices tensors by profiled backward time; here the same FLOP cost model as RGFT
  prices weight-gradient work and backprop depth, so both compete under one budget definition.
"""

from __future__ import annotations

import numpy as np

from .policies import Budget, Policy, Selection, Static


class RandomBudget(Policy):
    name = "random-budget"
    uses_scores = False

    def __init__(self, knapsack: Budget, seed: int = 0):
        self.knapsack = knapsack
        self.rng = np.random.default_rng(seed)

    def select(self, scores, step, forced):
        # Components in a uniformly random order, each kept if the step still fits the budget.
        # (Random *values* into the knapsack would not do: with every value positive it simply
        # buys the most components, i.e. the same top blocks every step.)
        cost, limit = self.knapsack.cost, self.knapsack.budget + 1e-9
        mask = np.zeros(len(scores), bool)
        for i in self.rng.permutation(len(scores)):
            mask[i] = True
            if cost.fraction(mask) > limit:
                mask[i] = False
        if not mask.any():  # nothing fits alone: the cheapest single component (as Budget does)
            mask = self.knapsack.best_mask(np.ones(len(scores)), np.zeros(len(scores), bool))
        return Selection.of(mask)

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, d):
        self.rng.bit_generator.state = d["rng"]


class StaticBudget(Static):
    name = "static-budget"

    def __init__(self, knapsack: Budget, warmup_steps: int = 10):  # noqa: super() needs k and p
        self.knapsack, self.warmup = knapsack, warmup_steps
        self.frozen: np.ndarray | None = None

    def freeze(self, scores: np.ndarray) -> np.ndarray:
        return self.knapsack.best_mask(scores, np.zeros(len(scores), bool))


class Elastic(Policy):
    name = "elastic"
    uses_scores = False  # importance comes from probe steps (observe_gain), not the error map

    def __init__(self, knapsack: Budget, probe_every: int = 50):
        if probe_every < 1:
            raise ValueError(f"elastic probe interval must be >= 1 step, got {probe_every}")
        self.knapsack, self.probe_every = knapsack, probe_every
        self.importance: np.ndarray | None = None
        self.mask: np.ndarray | None = None

    def wants_gain(self, step: int) -> bool:
        """The loop asks the optimizer to measure sum(g * -dw) per component on these steps."""
        return step % self.probe_every == 0 or self.importance is None

    def observe_gain(self, step: int, gain: np.ndarray) -> None:
        self.importance = np.asarray(gain, dtype=np.float64)
        self.mask = None

    def select(self, scores, step, forced):
        if self.wants_gain(step):
            return Selection.of(np.ones(len(scores), bool))  # the probe: a full step
        if self.mask is None:
            self.mask = self.knapsack.best_mask(self.importance, np.zeros(len(scores), bool))
        return Selection.of(self.mask)

    def state_dict(self):
        return {"importance": None if self.importance is None else self.importance.tolist(),
                "mask": None if self.mask is None else self.mask.tolist()}

    def load_state_dict(self, d):
        self.importance = None if d.get("importance") is None else np.asarray(d["importance"])
        self.mask = None if d.get("mask") is None else np.asarray(d["mask"], bool)


def make_budget_baseline(name: str, knapsack: Budget, *, seed: int = 0, **opts) -> Policy:
    if name == "random-budget":
        return RandomBudget(knapsack, seed)
    if name == "static-budget":
        return StaticBudget(knapsack, opts.get("static_warmup_steps", 10))
    if name == "elastic":
        return Elastic(knapsack, opts.get("probe_every", 50))
    raise ValueError(f"unknown budget baseline {name!r}")
