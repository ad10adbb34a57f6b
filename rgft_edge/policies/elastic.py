"""`elastic`: an ElasticTrainer-style selector (Huang et al., MobiSys 2023) at RGFT's budget.

Every `probe_every` steps one full step measures each component's importance as the first-order
loss decrease its update caused, sum(g * (w_before - w_after)); between probes the knapsack
selection on that importance is fixed. ElasticTrainer prices tensors by profiled backward time;
here the same FLOP cost model as RGFT prices weight-gradient work and backprop depth, so both
compete under one budget definition.
"""

from __future__ import annotations

import numpy as np

from .base import Policy, Selection
from .parts import Knapsack


class Elastic(Policy):
    def __init__(self, knapsack: Knapsack, probe_every: int = 50):
        if probe_every < 1:
            raise ValueError(f"elastic probe interval must be >= 1 step, got {probe_every}")
        self.knapsack, self.probe_every = knapsack, probe_every
        self.importance: np.ndarray | None = None
        self.mask: np.ndarray | None = None

    @property
    def uses_scores(self) -> bool:
        return False  # importance comes from probe steps (observe_gain), not the error map

    def wants_gain(self, step: int) -> bool:
        return step % self.probe_every == 0 or self.importance is None

    def observe_gain(self, step: int, gain: np.ndarray) -> None:
        self.importance = np.asarray(gain, dtype=np.float64)
        self.mask = None

    def select(self, scores, step, forced):
        if self.wants_gain(step):
            return Selection.of(np.ones(len(scores), bool))  # the probe: a full step
        if self.mask is None:
            self.mask = self.knapsack.best(self.importance, np.zeros(len(scores), bool))
        return Selection.of(self.mask)

    def tighten(self):
        change = self.knapsack.tighten()
        if change is not None:
            self.mask = None  # re-chosen under the new budget at the next step
        return change

    def state_dict(self):
        return {**self.knapsack.state_dict(),
                "importance": None if self.importance is None else self.importance.tolist(),
                "mask": None if self.mask is None else self.mask.tolist()}

    def load_state_dict(self, d):
        self.knapsack.load_state_dict(d)
        self.importance = None if d.get("importance") is None else np.asarray(d["importance"])
        self.mask = None if d.get("mask") is None else np.asarray(d["mask"], bool)
