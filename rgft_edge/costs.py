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
        self.opt = np.array([self.OPTIMIZER_FLOPS_PER_PARAM * c.num_params / max(1, batch_size)
                             for c in table], dtype=np.float64)
        self.wgrad = np.array([c.wgrad_flops for c in table], dtype=np.float64) + self.opt
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
              optimizer_seconds_per_param: float = 0.0, params: np.ndarray | None = None,
              max_levels: int = 8) -> dict:
    """Re-price `cost` in measured seconds, so a budget of 0.5 means half of a full step's *time*.

    At up to `max_levels` backprop cut depths (bottom and top always) it times two steps: one that
    trains everything from the cut up, and one that trains only the components at the cut. Each span
    between two measured depths gets a rate (seconds per modelled FLOP); input-gradient work costs
    `kappa` times weight-gradient work per FLOP, one `kappa` for the model; forward FLOPs get their
    own rate. All are fitted by least squares to the timed steps (the eval-mode forward pass enters
    with a small weight: no autograd bookkeeping there), so relative prices inside a span stay the
    FLOP model's. The optimizer is priced separately, from its measured seconds per parameter.
    Returns what was measured.
    """
    depths = np.unique(cost.depth)
    if len(depths) > max_levels:
        depths = np.unique(depths[np.round(np.linspace(0, len(depths) - 1, max_levels)).astype(int)])
    span = np.searchsorted(depths, cost.depth, side="right") - 1  # span of each component (bottom depth is measured)
    n_span = len(depths)
    params = np.zeros(len(cost.depth)) if params is None else np.asarray(params, dtype=np.float64)
    wgrad_only = cost.wgrad - cost.opt
    masks, times = [], []
    for d in depths:
        for mask in (cost.depth >= d, cost.depth == d):
            masks.append(mask)
            times.append(float(step_seconds(mask)))  # forward + backward; no optimizer update
    x, kappa = _fit_rates(cost, masks, np.array(times), forward_seconds, span, n_span, wgrad_only)
    r = x[1:]
    cost.fwd = cost.fwd * x[0]
    cost.extra_fwd *= x[0]
    cost.forward_total = float(cost.fwd.sum() + cost.extra_fwd)
    cost.igrad = cost.igrad * r[span] * kappa
    cost.opt = optimizer_seconds_per_param * params
    cost.wgrad = wgrad_only * r[span] + cost.opt
    cost.full = cost.flops(np.ones(len(cost.depth), dtype=bool))
    cost.unit = "seconds (measured)"
    predicted = [cost.flops(m) for m in masks]
    return {"cut_depths": [int(d) for d in depths], "step_s": times, "forward_s": forward_seconds,
            "optimizer_s_per_param": optimizer_seconds_per_param, "igrad_vs_wgrad_rate": float(kappa),
            "fit_error_pct": float(100 * np.median(np.abs(np.array(predicted) - np.array(times))
                                                   / np.maximum(1e-9, np.array(times))))}


def _fit_rates(cost: CostModel, masks: list[np.ndarray], times: np.ndarray, forward_seconds: float,
               span: np.ndarray, n_span: int, wgrad_only: np.ndarray) -> tuple[np.ndarray, float]:
    """(forward rate, span rates) and kappa minimising the squared error of the timed steps:
    linear least squares for the rates at a given kappa; a grid, then golden-section, over kappa."""
    weak = 0.1  # the forward pass alone ran in eval mode (no autograd bookkeeping)
    mean = max(1e-18, (times[0] - forward_seconds) / max(1e-12, cost.full - cost.forward_total))

    def solve(log_kappa: float) -> tuple[float, np.ndarray]:
        kappa = float(np.exp(log_kappa))
        rows = []
        for mask in masks:
            cut = cost.depth[mask].min()
            row = np.zeros(1 + n_span)
            row[0] = cost.forward_total
            np.add.at(row, 1 + span[cost.depth > cut], kappa * cost.igrad[cost.depth > cut])
            np.add.at(row, 1 + span[mask], wgrad_only[mask])
            rows.append(row)
        a = np.vstack(rows + [np.eye(1, 1 + n_span)[0] * cost.forward_total * weak])
        b = np.append(times, forward_seconds * weak)
        scale = np.maximum(np.abs(a).max(axis=0), 1e-30)
        x = np.linalg.lstsq(a / scale, b, rcond=None)[0] / scale
        x = np.where(x > 0, x, mean)  # a rate lost in noise: the mean rate of the backward pass
        return float(np.sum((a[:-1] @ x - times) ** 2)), x

    grid = np.log(np.geomspace(0.2, 5.0, 17))
    k = int(np.argmin([solve(g)[0] for g in grid]))
    lo, hi = grid[max(0, k - 1)], grid[min(len(grid) - 1, k + 1)]
    golden = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        m1, m2 = hi - golden * (hi - lo), lo + golden * (hi - lo)
        if solve(m1)[0] <= solve(m2)[0]:
            hi = m2
        else:
            lo = m1
    log_kappa = (lo + hi) / 2
    return solve(log_kappa)[1], float(np.exp(log_kappa))
