"""Depth-aware step cost: what a selection really costs in backward work.

Training component k costs its own weight-gradient work, and forces input-gradient work through
every component that lies above the lowest selected depth (backprop has to reach it). Forward work
is paid regardless. Costs are expressed as a fraction of a full step (every component trained).
"""

from __future__ import annotations

from typing import Callable

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
        self.unit = "FLOPs (modelled)"  # `calibrate` re-prices in measured seconds

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


def calibrate(cost: CostModel, step_seconds: Callable[[np.ndarray], float], forward_seconds: float,
              max_levels: int = 8) -> dict:
    """Re-price `cost` in measured seconds, so a budget of 0.5 means half of a full step's *time*.

    Measures a step that trains everything from depth d up, at up to `max_levels` depths (bottom
    and top always), plus a forward pass. Between two measured depths the FLOP model's work is
    scaled by one ratio (measured seconds / modelled FLOPs of that span), so the relative prices of
    components inside a span stay those of the FLOP model. Returns what was measured.
    """
    depths = np.unique(cost.depth)
    if len(depths) > max_levels:
        depths = np.unique(depths[np.round(np.linspace(0, len(depths) - 1, max_levels)).astype(int)])
    above = [cost.depth >= d for d in depths]
    measured = [float(step_seconds(m)) for m in above]
    modelled = [cost.flops(m) for m in above]
    # spans from the top down: forward -> top depth -> next depth -> ... -> bottom
    edges_t = [forward_seconds] + measured[::-1]
    edges_f = [cost.forward_total] + modelled[::-1]
    cuts = list(depths[::-1])
    igrad, wgrad = cost.igrad.copy(), cost.wgrad.copy()
    floor_rate = (measured[0] - forward_seconds) / max(1e-12, modelled[0] - cost.forward_total)
    for j, cut in enumerate(cuts):
        upper = cuts[j - 1] if j else None  # the previous (higher) measured cut
        d_t, d_f = edges_t[j + 1] - edges_t[j], edges_f[j + 1] - edges_f[j]
        rate = d_t / d_f if d_t > 0 and d_f > 0 else max(floor_rate, 1e-15)  # noise: the average rate
        # work that enters when the cut moves from `upper` down to `cut`
        w_new = (cost.depth >= cut) & ((cost.depth < upper) if upper is not None else True)
        i_new = (cost.depth > cut) & ((cost.depth <= upper) if upper is not None else False)
        wgrad[w_new] *= rate
        igrad[i_new] *= rate
    cost.igrad, cost.wgrad = igrad, wgrad
    cost.fwd = cost.fwd * (forward_seconds / max(1e-12, cost.forward_total))
    cost.extra_fwd = forward_seconds - float(cost.fwd.sum())
    cost.forward_total = forward_seconds
    cost.full = cost.flops(np.ones(len(cost.depth), dtype=bool))
    cost.unit = "seconds (measured)"
    return {"cut_depths": [int(d) for d in depths], "step_s": measured, "forward_s": forward_seconds,
            "modelled_fraction": [f / modelled[0] for f in modelled],
            "measured_fraction": [t / measured[0] for t in measured]}
