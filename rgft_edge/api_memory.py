"""`RGFT(..., memory_budget="1GB", example_inputs=batch)`: the CLI's memory guard in your own loop.

The guard needs what `--memory-budget` measures before training: the process's resident base and
what a step needs per backprop cut depth. Your loss function is not known here, so the profiling
steps back-propagate a stand-in (the sum of the model's floating outputs) from `example_inputs`:
a step's memory is the activations autograd saves and the gradients it writes, which do not depend
on what the scalar at the top is. Give the largest batch your loop will use (the longest sequence);
a bigger one is outside the model. Weights are never changed by profiling (gradients are dropped).
The CLI bounds the C heap before loading anything; here it is bounded from `RGFT(...)` on, so
call it before allocating much else (and pad your batches to a few fixed widths, as the CLI does).

Each step the selection is shrunk until its predicted peak fits; after `optimizer.step()` the
measured peak of that step (VmHWM, reset per step) teaches the model its error, the heap is
trimmed when RSS nears the budget, and `rgft.should_stop()` returns "memory budget reached" when
even the cheapest step no longer fits — before the kernel's OOM killer would act.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .budgets.allocator import settle_heap, trim_heap
from .budgets.memory_guard import MemoryGuard, profiled_guard
from .components import ComponentTable
from .device_runners.torch_eager import saved_activation_bytes
from .meters import MemoryMeter
from .partition.flops import call_model
from .policies import Selection


def stand_in_loss(out: Any) -> torch.Tensor:
    """A scalar over every floating tensor a model returned (a tensor, tuple, dict or HF output)."""
    if isinstance(out, torch.Tensor):
        parts = [out]
    elif isinstance(out, dict):  # HF ModelOutput is a dict
        parts = list(out.values())
    elif isinstance(out, (tuple, list)):
        parts = list(out)
    else:
        raise TypeError(f"cannot back-propagate from a model output of type {type(out).__name__}")
    parts = [p for p in parts if isinstance(p, torch.Tensor) and p.is_floating_point() and p.requires_grad]
    if not parts:
        raise ValueError("the model's output on example_inputs has no tensor that depends on a trainable "
                         "parameter: nothing to profile a training step with")
    return sum(p.float().sum() for p in parts)


class ApiMemoryGuard:
    """The memory guard around the steps of a user's loop."""

    def __init__(self, model: nn.Module, table: ComponentTable, set_trainable: Callable[[np.ndarray], None],
                 example_inputs: Any, meter: MemoryMeter, budget_bytes: float):
        if example_inputs is None:
            raise ValueError("memory_budget needs example_inputs: the largest batch your loop will use "
                             "(the guard measures a training step on it)")
        k = len(table)
        settle_heap()  # the CLI's bounded heap (glibc), from here on: the model is already loaded

        def forward() -> torch.Tensor:
            return stand_in_loss(call_model(model, example_inputs))

        def run_step(mask: np.ndarray) -> None:  # gradients dropped, weights untouched
            set_trainable(mask)
            forward().backward()
            set_trainable(np.zeros(k, bool))

        set_trainable(np.ones(k, bool))
        acts = saved_activation_bytes(model, table, forward)
        set_trainable(np.zeros(k, bool))
        self.meter = meter
        self.guard: MemoryGuard = profiled_guard(table, acts, run_step, meter, budget_bytes)
        self.predicted: float | None = None

    def fit(self, sel: Selection, state_mask: np.ndarray) -> Selection:
        """Shrink the selection until its predicted peak fits; a new peak window starts."""
        sel, self.predicted = self.guard.fit(sel, state_mask)
        self.meter.window_peak()
        return sel

    def after_step(self, mask: np.ndarray, state_mask: np.ndarray,
                   evict: Callable[[], bool] | None = None) -> tuple[str | None, np.ndarray]:
        """Learn from the step's measured peak; trim, drop old optimizer state (`evict`) or stop.
        Returns (stop reason or None, the components that cannot train within the budget even
        alone: the staleness rule spares them)."""
        model = self.guard.model
        if self.predicted is not None:
            model.calibrate(self.meter.window_peak(), self.predicted)
        model.observe_step(mask)
        stop = self.guard.check(self.meter.current_rss_bytes, trim_heap, lambda: self.meter.current_rss_bytes, evict)
        return stop, self.guard.unaffordable(state_mask)

    def summary(self) -> dict[str, Any]:
        return {"memory_budget_bytes": self.guard.budget, "memory_guard_shrunk_steps": self.guard.shrunk_steps,
                "memory_heap_trims": self.guard.trims, "memory_state_evictions": self.guard.evictions}
