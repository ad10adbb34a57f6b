"""A policy added the documented way, by a test: this file, plus one `register_policy` line.

`every-other`: alternates between the upper and the lower half of the components (a toy, but it
exercises options, tightening, state and the CLI like any real policy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rgft_edge.policies import Policy, Selection, option


@dataclass
class EveryOtherOptions:
    every_other_period: int = option(1, "every-other: steps per half before switching",
                                     lambda v: v is not None and v >= 1, ">= 1")


class EveryOther(Policy):
    def __init__(self, k: int, period: int):
        self.k, self.period, self.width = k, period, max(1, k // 2)

    @property
    def uses_scores(self):
        return False  # a fixed schedule: the staleness rule does not steer it

    def select(self, scores, step, forced):
        mask = np.zeros(self.k, bool)
        upper = (step // self.period) % 2 == 0
        if upper:
            mask[self.k - self.width:] = True
        else:
            mask[: self.width] = True
        return Selection.of(mask)

    def tighten(self):
        if self.width <= 1:
            return None
        self.width -= 1
        return {"components": self.width}

    def state_dict(self):
        return {"width": self.width}

    def load_state_dict(self, d):
        self.width = int(d.get("width", self.width))
