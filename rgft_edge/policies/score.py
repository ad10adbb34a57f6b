"""The RGFT policies: follow the live error map within a limit, with an LR rule.

`ScorePolicy(limit, rule)` is every error-map policy: `top-p` and `budget` (no rule: base LR),
`rank`, `scale` (seed 001) and `clip` (seed 002) differ only in the LR rule applied to the
selected components, and `top-p`-style and `budget`-style only in their limit.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .base import Policy, Selection
from .parts import Limit

# (scores, selected mask, step) -> per-component LR multiplier
LRRule = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


class ScorePolicy(Policy):
    """The best selection within `limit` by the live error map, or by fixed `values` instead (a
    map-free prior such as `top-blocks`); `rule` sets the selected components' LR multipliers."""

    def __init__(self, limit: Limit, rule: LRRule | None = None, values: np.ndarray | None = None):
        self.limit, self.rule, self.values = limit, rule, values
        self._last: tuple[int, np.ndarray] | None = None  # this step's latest selection, not yet booked

    @property
    def uses_scores(self) -> bool:
        return self.values is None

    def select(self, scores, step, forced):
        if self.values is not None:
            scores, forced = self.values, np.zeros(len(scores), bool)
        if self._last is not None and self._last[0] != step:
            self.limit.charge(self._last[1])  # the loop may ask again within a step: book the final one
        mask = self.limit.best(scores, forced)
        self._last = (step, mask)
        return Selection.of(mask, 1.0 if self.rule is None else self.rule(scores, mask, step))

    def tighten(self):
        return self.limit.tighten()

    def state_dict(self):
        return self.limit.state_dict()

    def load_state_dict(self, d):
        self.limit.load_state_dict(d)


def rank_rule(floor: float) -> LRRule:
    """Multiplier falls linearly with rank among the selected, from 1 to `floor`."""

    def rule(scores, mask, step):
        idx = np.flatnonzero(mask)
        order = idx[np.lexsort((idx, -scores[idx]))]
        mult = np.zeros(len(scores))
        denom = max(1, len(order) - 1)
        for r, i in enumerate(order):
            mult[i] = 1.0 - (1.0 - floor) * r / denom
        return mult

    return rule


def scale_rule(alpha: float) -> LRRule:
    """Seed 001: eta_k = eta0 * (1 + alpha * E_k / max_j E_j)."""

    def rule(scores, mask, step):
        top = scores.max() if scores.max() > 0 else 1.0
        return 1.0 + alpha * scores / top

    return rule


class ClipRule:
    """Seed 002: eta_k = eta0 * clip(E_k / (thresh_t * max E), eps, 1), thresh_t rising linearly.

    eps > 0 keeps every trained component moving (the convergence argument needs it).
    """

    def __init__(self, eps: float = 0.1, thresh_init: float = 0.1, thresh_final: float = 0.5,
                 warmup_steps: int = 100):
        if not 0.0 < eps <= 1.0:
            raise ValueError(f"clip eps must be in (0, 1], got {eps}")
        self.eps, self.t0, self.t1, self.warmup = eps, thresh_init, thresh_final, max(1, warmup_steps)

    def threshold(self, step: int) -> float:
        return self.t0 + (self.t1 - self.t0) * min(1.0, step / self.warmup)

    def __call__(self, scores, mask, step):
        top = scores.max() if scores.max() > 0 else 1.0
        return np.clip(scores / (self.threshold(step) * top), self.eps, 1.0)
