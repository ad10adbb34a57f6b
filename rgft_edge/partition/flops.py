"""One profiled forward pass: which module runs first, and forward FLOPs per module (per sample)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class ForwardProfile:
    first_call: dict[str, int]  # module path -> order of its first forward call
    flops: dict[str, float]  # module path -> forward FLOPs (inclusive of sub-modules) per sample
    total: float
    exclusive: dict[str, float] = None  # module path -> FLOPs of its own ops (children excluded)

    def segment_flops(self, start: int, end: int) -> float:
        """Forward FLOPs of every module whose first call lies in (start, end]."""
        return sum(f for m, f in (self.exclusive or {}).items()
                   if start < self.first_call.get(m, -1) <= end)


def _batch_size(inputs: Any) -> int:
    t = inputs
    if isinstance(inputs, dict):
        t = next(iter(inputs.values()))
    elif isinstance(inputs, (tuple, list)):
        t = inputs[0]
    return int(t.shape[0]) if isinstance(t, torch.Tensor) and t.dim() > 0 else 1


def call_model(model: nn.Module, inputs: Any):
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def profile_forward(model: nn.Module, inputs: Any, paths: Iterable[str]) -> ForwardProfile:
    paths = sorted(set(paths))
    if inputs is None:
        return ForwardProfile({p: i for i, p in enumerate(paths)}, {}, 0.0, {})
    order: dict[str, int] = {}
    handles = []
    for p, mod in model.named_modules():
        if not p:
            continue

        def pre_hook(_m, _a, _p=p):
            order.setdefault(_p, len(order))

        handles.append(mod.register_forward_pre_hook(pre_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            call_model(model, inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    n = _batch_size(inputs)
    flops: dict[str, float] = {}
    for key, ops in counter.get_flop_counts().items():
        path = key.split(".", 1)[1] if "." in key else ("" if key != "Global" else "Global")
        flops[path] = sum(ops.values()) / n
    total = flops.pop("Global", 0.0)
    flops.pop("", None)
    exclusive = dict(flops)
    for path, f in flops.items():
        parent = path
        while "." in parent:  # nearest called ancestor (ModuleLists are never called themselves)
            parent = parent.rsplit(".", 1)[0]
            if parent in exclusive:
                exclusive[parent] -= f
                break
    return ForwardProfile(order, flops, total, {k: max(0.0, v) for k, v in exclusive.items()})
