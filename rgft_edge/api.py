"""RGFT in your own PyTorch loop: `RGFT(model)`, `rgft.optimizer()`, `with rgft.step(): ...`.

The same parts as `rgft-edge finetune` (component table, error map, any registered policy, the
per-component AdamW, checkpoints in safetensors + JSON), without its data pipeline, so any
`nn.Module` and any loss and loader work:

    rgft = RGFT(model, example_inputs=x0, policy="paced", budget=0.5)
    optimizer = rgft.optimizer(lr=3e-5)
    for x, y in loader:
        with rgft.step():                  # selects, freezes the rest; scores on exit
            loss_fn(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()

`step()` picks this step's components from the live error map and sets `requires_grad` so that
autograd computes weight gradients only for them (and stops below the lowest); on exit it scores
the selected components from their gradients and updates the map. `optimizer.step()` applies AdamW
to the selected components with the policy's LR multipliers.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from .api_memory import ApiMemoryGuard
from .api_run import RunLog
from .budgets.units import parse_bytes
from .components import ComponentTable
from .costs import CostModel
from .error_map import ErrorMap
from .estimators import grad_norm_scores
from .loop import choose
from .optim import ComponentAdamW
from .partition import build_component_table
from .policies import Policy, Selection, make_policy
from .runs import checkpoint

__all__ = ["RGFT", "RGFTOptimizer"]


class RGFT:
    """Residual-guided selection for a model you train yourself.

    Args:
        model: any `nn.Module`; its parameters with `requires_grad` become the trainable set
            (freeze embeddings or a backbone before, as usual).
        policy: a registered policy name (`rgft_edge.policies.policy_names()`), e.g. "paced",
            "budget", "top-p", "full"; its options as keyword arguments (`budget=0.5`, `top_p=0.3`).
        example_inputs: one batch (a tensor, a tuple, or a dict of keyword tensors) used once to
            order the components by depth and estimate their cost; without it, registration order
            and unit costs.
        granularity: "layer", "block" (attention vs FFN), "head", or "lora" for transformers;
            other models are split into their top-level units (a CNN's stages and head).
        table: a ready `ComponentTable` instead of the automatic partition (your own groups).
        batch_size: examples per step (prices the optimizer's work against the backward pass).
        beta, max_staleness: error map EMA factor and the steps after which an unmeasured
            component is forced into a step.
        seed: for random policies.
        run_dir: write the CLI's run directory there (metrics.jsonl, error map, summary.json,
            power.json; `finish(report=True)` adds report.html).
        energy_budget, time_budget: e.g. "2Wh" / 500 (J), "20m" / 90 (s); `should_stop()` turns
            true once spent.
        memory_budget: e.g. "1.2GB" / bytes: peak RSS of the whole process kept under it (the
            CLI's guard: selections shrink, the heap is trimmed, `should_stop()` says "memory budget
            reached" before the OOM killer would act). Needs `example_inputs` as large as your
            largest batch (a training step is measured on it); refused with the measured minimum
            when too small. Energy comes from the best power source found (a sensor, else the
            device profile's model; the summary names which).
        profile: a device profile name or YAML (power model); detected when omitted.
    """

    def __init__(self, model: nn.Module, policy: str = "paced", *, example_inputs: Any = None,
                 granularity: str = "block", table: ComponentTable | None = None, batch_size: int = 16,
                 beta: float = 0.9, max_staleness: int = 20, seed: int = 0, run_dir: str | Path | None = None,
                 energy_budget: str | float | None = None, time_budget: str | float | None = None,
                 profile: str | None = None, memory_budget: str | float | None = None, **policy_options: Any):
        self.model = model
        self.table = table if table is not None else build_component_table(model, granularity, example_inputs)
        self.cost = CostModel(self.table, batch_size)
        self.policy: Policy = make_policy(policy, self.table, seed=seed, cost=self.cost, **policy_options)
        self.error_map = ErrorMap(len(self.table), beta, max_staleness)
        named = dict(model.named_parameters())
        missing = sorted(set(self.table.param_names()) - set(named))
        if missing:
            raise ValueError(f"the component table names parameters the model lacks: {missing[:3]}")
        self._params = {n: named[n] for n in sorted(self.table.param_names())}
        self._comp_params = [sorted({r.name for r in c.params}) for c in self.table]
        self._depth = np.array(self.table.depths)
        self.step_count = 0
        self.selection: Selection | None = None  # the current (or last) step's selection
        self._optimizer: RGFTOptimizer | None = None  # its AdamW is what checkpoints save
        self._t_step = 0.0
        self.run: RunLog | None = None  # meters, budgets and run directory, when asked for
        if any(v is not None for v in (run_dir, energy_budget, time_budget, profile, memory_budget)):
            self.run = RunLog(self.table, run_dir, energy_budget, time_budget, profile,
                              {"policy": policy, "granularity": self.table.granularity, "seed": seed,
                               "memory_budget": memory_budget,
                               **{k: v for k, v in policy_options.items() if isinstance(v, (int, float, str))}})
        self._guard: ApiMemoryGuard | None = None
        if memory_budget is not None:
            budget = parse_bytes(memory_budget) if isinstance(memory_budget, str) else float(memory_budget)
            if budget <= 0:
                raise ValueError(f"memory_budget must be positive, got {memory_budget!r}")
            self.run.energy.wait_ready()  # the meter's own imports belong in the measured base
            self._guard = self.run.guard = ApiMemoryGuard(model, self.table, self._set_trainable, example_inputs,
                                                          self.run.memory, budget)

    # -- the loop ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def step(self) -> Iterator[Selection]:
        """Select this step's components, make only them trainable; score them on exit."""
        yield self.begin_step()
        self.end_step()

    def begin_step(self) -> Selection:
        """Select this step's components and make only them trainable (the context manager's
        entry; call it yourself when forward/backward are out of your hands, e.g. a Trainer)."""
        probe = self.step_count == 0 and self.policy.uses_scores  # measure everything once
        sel, _ = choose(self.policy, self.error_map, self.step_count, "grad-norm", self._depth, probe)
        if self._guard is not None:
            sel = self._guard.fit(sel, self._state_mask())
        self._set_trainable(sel.mask)
        self.selection = sel
        self._t_step = time.perf_counter()
        return sel

    def _set_trainable(self, mask: np.ndarray) -> None:
        on = {n for i in np.flatnonzero(mask) for n in self._comp_params[i]}
        for n, p in self._params.items():
            p.requires_grad_(n in on)
            p.grad = None

    def _state_mask(self) -> np.ndarray:
        """Components whose AdamW state is held (it counts against a memory budget)."""
        mask = np.zeros(len(self.table), bool)
        if self._optimizer is not None:
            mask[list(self._optimizer.adamw.state)] = True
        return mask

    def end_step(self) -> None:
        """Score the selected components from their gradients (after backward, before the update)."""
        grads = self._grads()
        if grads and all(bool(torch.isfinite(g).all()) for g in grads.values()):
            scores, measured = grad_norm_scores(self.table, grads)
            self.error_map.update(self.step_count, measured, scores)

    def apply_update(self, adamw: ComponentAdamW) -> None:
        """AdamW on this step's selection with the policy's LR multipliers; ends the step."""
        if self.selection is None:
            raise RuntimeError("optimizer.step() outside an RGFT step: wrap forward and backward in "
                               "`with rgft.step():` first")
        grads = self._grads()
        ok = bool(grads) and all(bool(torch.isfinite(g).all()) for g in grads.values())
        if ok:  # a step with a non-finite gradient is skipped, as in the CLI's loop
            track = self.policy.wants_gain(self.step_count)
            with torch.no_grad():
                adamw.step(self._tensors(), grads, self.selection.lr_mult, self.step_count, track)
            if track:
                self.policy.observe_gain(self.step_count, adamw.last_gain)
        if self.run is not None:
            self.run.step(self.step_count, self.selection.mask, self.selection.lr_mult, self.error_map.scores,
                          time.perf_counter() - self._t_step, skipped=not ok)
        if self._guard is not None:
            evict = self._optimizer.adamw.evict_oldest if self._optimizer is not None else None
            self.run.memory_stop, self.error_map.exempt = self._guard.after_step(self.selection.mask,
                                                                                 self._state_mask(), evict)
        self.step_count += 1
        self.selection = None

    def _grads(self) -> dict[str, torch.Tensor]:
        return {n: p.grad for n, p in self._params.items() if p.grad is not None}

    def optimizer(self, lr: float = 3e-5, weight_decay: float = 0.01, evict_after: int = 200) -> "RGFTOptimizer":
        """The per-component AdamW over the selected components (one per RGFT object)."""
        self._optimizer = RGFTOptimizer(self, ComponentAdamW(self.table, lr, weight_decay=weight_decay,
                                                             evict_after=evict_after))
        return self._optimizer

    # -- meters, budgets, run directory (with run_dir / energy_budget / time_budget / profile) ----
    def log(self, **values: float) -> None:
        """Attach values (e.g. loss=loss) to the current step's record in metrics.jsonl."""
        if self.run is not None:
            self.run.pending.update({k: float(v.detach() if isinstance(v, torch.Tensor) else v)
                                     for k, v in values.items()})

    def log_eval(self, **metrics: float) -> None:
        """Record an evaluation (e.g. accuracy=0.81) at the current step (the report plots it)."""
        if self.run is not None:
            self.run.log_eval(self.step_count, {k: float(v) for k, v in metrics.items()})

    def should_stop(self) -> str | None:
        """The reason to stop ("energy budget reached", "time budget reached", "memory budget
        reached") or None."""
        return self.run.should_stop() if self.run is not None else None

    def finish(self, report: bool = True) -> dict[str, Any]:
        """Stop the meters; write summary.json, power.json, the error map (and report.html) to the
        run directory; return the summary (energy with its source, peak RSS, components per step)."""
        if self.run is None:
            raise RuntimeError("finish() needs run_dir, energy_budget, time_budget, memory_budget or profile "
                               "at RGFT(...)")
        return self.run.finish(self.step_count, report)

    @property
    def scores(self) -> np.ndarray:
        """The live error map: one score per component (model order)."""
        return self.error_map.scores.copy()

    @property
    def component_names(self) -> list[str]:
        return [c.name for c in self.table]

    # -- checkpoints (safetensors + JSON, never pickle) -------------------------------------------
    def save_checkpoint(self, directory: str | Path) -> Path:
        """Trainable weights, optimizer state, error map, policy state and step, written atomically."""
        if self._optimizer is None:
            raise RuntimeError("create the optimizer (rgft.optimizer()) before checkpointing")
        return checkpoint.save_checkpoint(Path(directory), self.step_count, self._tensors(),
                                          self._optimizer.adamw, self.error_map,
                                          {"policy": self.policy.state_dict(), "api": True})

    def load_checkpoint(self, directory: str | Path) -> int:
        """Continue from `save_checkpoint`'s directory; returns the step to continue from."""
        if self._optimizer is None:
            raise RuntimeError("create the optimizer (rgft.optimizer()) before loading a checkpoint")
        ck = checkpoint.load_checkpoint(directory)
        self.step_count = checkpoint.restore(ck, self._tensors(), self._optimizer.adamw, self.error_map,
                                             self.policy)
        return self.step_count

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {n: p.data for n, p in self._params.items()}


class RGFTOptimizer:
    """AdamW per component on the selection of the RGFT step in progress (or just finished)."""

    def __init__(self, rgft: RGFT, adamw: ComponentAdamW):
        self.rgft, self.adamw = rgft, adamw

    @property
    def lr(self) -> float:
        return self.adamw.lr

    @lr.setter
    def lr(self, value: float) -> None:
        self.adamw.lr = value

    def step(self) -> None:
        self.rgft.apply_update(self.adamw)

    def zero_grad(self) -> None:
        for p in self.rgft._params.values():
            p.grad = None
