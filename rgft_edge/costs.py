"""Depth-aware step cost: what a selection really costs in backward work.

Training component k costs its own weight-gradient work, and forces input-gradient work through
every component that lies above the lowest selected depth (backprop has to reach it). Forward work
is paid regardless. Costs are expressed as a fraction of a full step (every component trained).
"""

from __future__ import annotations

import numpy as np

from .components import ComponentTable


class CostModel:
    # AdamW touches each trained parameter ~12 times per step (grad buffer, m, v, update); paid
    # once per step, so per sample it is divided by the batch size.
    OPTIMIZER_FLOPS_PER_PARAM = 12.0

    def __init__(self, table: ComponentTable, batch_size: int = 16):
        self.depth = np.array(table.depths, dtype=np.int64)
        self.fwd = np.array([c.fwd_flops for c in table], dtype=np.float64)
        self.wgrad = np.array([c.wgrad_flops + self.OPTIMIZER_FLOPS_PER_PARAM * c.num_params
                               / max(1, batch_size) for c in table], dtype=np.float64)
        self.igrad = np.array([c.igrad_flops for c in table], dtype=np.float64)
        # Forward work outside any component (frozen parts, attention core ops) is in notes.
        self.extra_fwd = float(table.notes.get("untracked_fwd_flops", 0.0))
        self.forward_total = float(self.fwd.sum() + self.extra_fwd)
        self.full = self.flops(np.ones(len(table), dtype=bool))

    def backward_flops(self, mask: np.ndarray) -> float:
        """Estimated backward FLOPs per sample for training exactly the components in `mask`."""
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return 0.0
        cut = self.depth[mask].min()
        return float(self.igrad[self.depth > cut].sum() + self.wgrad[mask].sum())

    def flops(self, mask: np.ndarray) -> float:
        return self.forward_total + self.backward_flops(mask)

    def fraction(self, mask: np.ndarray) -> float:
        """Step cost relative to a full step, in (forward share, 1]."""
        return self.flops(mask) / self.full if self.full > 0 else 1.0

    @property
    def floor(self) -> float:
        """Forward alone: the cost no selection can beat."""
        return self.forward_total / self.full if self.full > 0 else 1.0
