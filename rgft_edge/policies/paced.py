"""`paced`: RGFT's budget policy with the depth price amortised over time.

`budget` solves the same knapsack every step, so under a tight budget it can only ever afford the
blocks nearest the output and the map decides nothing (the deep blocks train only when the
staleness rule forces them). `paced` changes two things:

- **Value accrues while a component waits**: v_k = E_k * (steps since k last trained). A deep,
  high-error block becomes worth a deep step; a block just trained is worth little until time
  passes (diminishing returns without re-measuring).
- **The budget is an average**: a step that spends less than the budget saves the difference (up
  to `pace_bank` of a full step) and a deep step spends the savings. Each step the policy weighs
  *plans*: "take target selection T now" when the savings cover it, or "take filler F now, saving
  toward T", where a plan's worth is its accrued value per second over the cycle (n fillers then
  T). The map thereby decides *when* a deep step is worth its price and what it trains.

Optionally (`pace_lr_age` = gamma > 0) a component trained after waiting n steps gets LR multiplier
min(n, `pace_lr_cap`)^gamma, so rarely trained blocks catch up on the updates they missed.
"""

from __future__ import annotations

import numpy as np

from .base import Policy, Selection
from .parts import Knapsack


class Paced(Policy):
    def __init__(self, knapsack: Knapsack, bank: float = 1.0, lr_age: float = 0.0, lr_cap: float = 8.0):
        if bank < 0:
            raise ValueError(f"pace bank must be >= 0 (a fraction of a full step), got {bank}")
        self.knapsack, self.bank, self.lr_age, self.lr_cap = knapsack, bank, lr_age, lr_cap
        self.credit = 0.0  # unspent budget of earlier steps (< 0: a forced refresh's overspend)
        self.trained_at: np.ndarray | None = None  # step each component last trained (-1: never)
        self._last: tuple[int, np.ndarray] | None = None  # this step's latest selection, not yet booked

    def values(self, scores: np.ndarray, step: int) -> np.ndarray:
        """Accrued value: error score times the steps since last trained. Components never scored
        yet count as the best scored one (unknown error is worth measuring)."""
        scores = np.maximum(np.asarray(scores, dtype=np.float64), 0.0)
        unknown = scores <= 0
        if unknown.any():
            scores = np.where(unknown, scores.max() if scores.max() > 0 else 1.0, scores)
        return scores * self.ages(step)

    def ages(self, step: int) -> np.ndarray:
        return (step - self.trained_at).astype(np.float64)

    def select(self, scores, step, forced):
        k = len(scores)
        if self.trained_at is None:
            self.trained_at = np.full(k, -1, dtype=np.int64)
        if self._last is not None and self._last[0] != step:
            self._book(*self._last)  # the loop may ask again within a step: book the final one
        mask = self._plan(self.values(scores, step), np.asarray(forced, bool))
        self._last = (step, mask)
        mult = 1.0
        if self.lr_age > 0:
            mult = np.minimum(self.ages(step), self.lr_cap) ** self.lr_age
        return Selection.of(mask, mult)

    def _book(self, step: int, mask: np.ndarray) -> None:
        spent = self.knapsack.cost.fraction(mask)
        self.credit = min(self.bank, self.credit + self.knapsack.budget - spent)
        self.trained_at[mask] = step

    def _plan(self, values: np.ndarray, forced: np.ndarray) -> np.ndarray:
        kn = self.knapsack
        budget = kn.budget
        now = max(kn.cheapest, budget + self.credit)  # what this step may spend
        (targets, ct), (fillers, cf) = kn.candidates_at(
            values, forced, [budget + max(self.bank, self.credit), min(budget, now)])
        vt, vf = targets @ values, fillers @ values
        tie_t, tie_f = 1e-12 * targets.sum(1), 1e-12 * fillers.sum(1)  # prefer more coverage on ties
        # Every plan's rate, in one array laid out in the order the plans are weighed (argmax takes
        # the first best, as a strict '>' scan would). Row t: column 0 is "take T now" when the
        # savings cover it; otherwise column 1 + f is "take filler F now, saving toward T", its
        # worth the accrued value per second over the cycle (n fillers, then T). Then each filler
        # on its own (no target worth saving for).
        saving = budget - cf
        afford = ct <= now + 1e-9
        with np.errstate(divide="ignore", invalid="ignore"):
            n = np.ceil((ct[:, None] - now) / saving - 1e-9)
            wait = (vt[:, None] + n * vf) / (ct[:, None] + n * cf) + tie_f
        rates = np.full((len(targets), 1 + len(fillers)), -np.inf)
        rates[afford, 0] = (vt / ct + tie_t)[afford]
        rates[:, 1:] = np.where(~afford[:, None] & (saving > 1e-9), wait, -np.inf)
        plans = rates.size
        rates = np.concatenate([rates.ravel(), vf / cf + tie_f])
        best = None
        if len(rates) and rates.max() > -1.0:
            i = int(np.argmax(rates))
            t, col = divmod(i, 1 + len(fillers))
            best = fillers[i - plans] if i >= plans else targets[t] if col == 0 else fillers[col - 1]
        if best is None and forced.any() and len(targets):
            # The staleness rule forces a step the savings cannot cover (it becomes debt): make the
            # deep step worth its price by the same rate, since blocks above the cut come cheap.
            best = targets[int(np.argmax(vt / ct))]
        return best.copy() if best is not None else kn.fallback(forced)

    def tighten(self):
        return self.knapsack.tighten()

    def state_dict(self):
        return {**self.knapsack.state_dict(), "credit": self.credit,
                "trained_at": None if self.trained_at is None else self.trained_at.tolist(),
                "last": None if self._last is None else [self._last[0], self._last[1].tolist()]}

    def load_state_dict(self, d):
        self.knapsack.load_state_dict(d)
        self.credit = float(d.get("credit", 0.0))
        self.trained_at = None if d.get("trained_at") is None else np.asarray(d["trained_at"], np.int64)
        last = d.get("last")
        self._last = None if last is None else (int(last[0]), np.asarray(last[1], bool))
