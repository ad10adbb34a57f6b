"""What every selection policy is: the `Policy` interface, `Selection`, and what a policy is given.

A policy maps the error map to (which components train this step, at which LR multiplier). The
loop calls only the members declared here; `tighten()` is how the energy controller asks any
policy to spend less per step, so no caller needs to know which policy it holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
import numpy as np

from ..components import ComponentTable
from ..costs import CostModel


@dataclass
class Selection:
    mask: np.ndarray  # bool, which components train this step
    lr_mult: np.ndarray  # float, per-component multiplier of the base LR (0 where not trained)

    @classmethod
    def of(cls, mask: np.ndarray, mult: np.ndarray | float = 1.0) -> "Selection":
        mask = np.asarray(mask, dtype=bool)
        lr = np.where(mask, mult, 0.0).astype(np.float64)
        return cls(mask, lr)


@dataclass(frozen=True)
class PolicyContext:
    """What a policy may know about the run when it is built."""

    table: ComponentTable
    cost: CostModel  # depth-aware step cost at the run's batch size
    seed: int = 0


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


class Policy(ABC):
    """The selection interface. Implement it directly (shared behaviour comes from the parts in
    `policies/parts.py`, held as attributes, not inherited) and register a builder for it with
    `rgft_edge.policies.register_policy`."""

    @abstractmethod
    def select(self, scores: np.ndarray, step: int, forced: np.ndarray) -> Selection:
        """This step's selection; `forced` holds components the staleness rule needs measured."""

    @abstractmethod
    def tighten(self) -> dict | None:
        """Spend less per step from now on (energy projection over budget). Returns what changed
        (logged as a budget adjustment) or None when this policy cannot spend less."""

    @property
    def uses_scores(self) -> bool:
        """False: the error map (and so the staleness rule) does not steer this policy now."""
        return True

    def wants_gain(self, step: int) -> bool:
        """True on steps where the loop should measure each component's loss decrease
        (sum(g * -dw)) and hand it to `observe_gain`."""
        return False

    def observe_gain(self, step: int, gain: np.ndarray) -> None:
        """Per-component first-order loss decrease of this step's update (when `wants_gain`)."""

    def state_dict(self) -> dict:
        """JSON-serialisable state for checkpoints."""
        return {}

    def load_state_dict(self, d: dict) -> None:
        pass
