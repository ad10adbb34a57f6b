"""One profiled forward pass: which module runs first, and forward FLOPs per module (per sample).

FLOPs are counted at the torch-function level (`TorchFunctionMode`) with the formulas of
`torch.utils.flop_counter` (multiply-adds x 2 of linear / matmul / conv; bias adds ignored) instead
of `FlopCounterMode` itself: any torch *dispatch* mode makes torch import dynamo, sympy and
torch.distributed on its first op (~820 modules, +78 MB resident, measured), which would stay in the
device's memory for the whole run and raise the minimum memory budget by as much. Like
`FlopCounterMode` on CPU, attention inside `scaled_dot_product_attention` is not counted (its CPU
kernel has no registered formula there); a test pins the two counters equal on the model families.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode


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


def _matmul_flops(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> float:
    # torch.matmul lowers a matrix-vector product to mv / dot, which torch's counter does not count
    return 2.0 * out.numel() * a.shape[-1] if b.dim() >= 2 else 0.0


def _conv_flops(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, transposed: bool) -> float:
    # torch's conv_flop_count: every point of the output (transposed: the input) spatial grid
    # times the whole filter bank of its group
    if transposed:
        batch = x.shape[0] if x.dim() == w.dim() else 1
        return 2.0 * batch * float(np.prod(x.shape[-(w.dim() - 2):])) * w.numel()
    return 2.0 * out.numel() * float(np.prod(w.shape[1:]))


F = torch.nn.functional
_MATMULS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm, torch.Tensor.mm,
            torch.bmm, torch.Tensor.bmm}
_ADD_MATMULS = {torch.addmm, torch.Tensor.addmm, torch.baddbmm, torch.Tensor.baddbmm}
_CONVS = {F.conv1d: False, F.conv2d: False, F.conv3d: False,
          F.conv_transpose1d: True, F.conv_transpose2d: True, F.conv_transpose3d: True}


def op_flops(func, args: tuple, kwargs: dict, out) -> float:
    """FLOPs of one torch-function call (0 for ops without a formula)."""
    try:
        if func is F.linear:
            return 2.0 * out.numel() * args[0].shape[-1]
        if func in _MATMULS:
            return _matmul_flops(args[0], args[1], out)
        if func in _ADD_MATMULS:
            return 2.0 * out.numel() * args[1].shape[-1]
        if func in _CONVS:
            return _conv_flops(args[0], args[1] if len(args) > 1 else kwargs["weight"], out, _CONVS[func])
    except TypeError:  # unhashable func objects
        return 0.0
    return 0.0


class FlopCount(TorchFunctionMode):
    """Forward FLOPs per module path (inclusive: an op counts for every module on the call stack)
    and in total, for one pass; the caller keeps `stack` = the paths of the modules now running."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.by_module: dict[str, float] = {}
        self.total = 0.0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        f = op_flops(func, args, kwargs, out) if isinstance(out, torch.Tensor) else 0.0
        if f:
            self.total += f
            for p in set(self.stack):  # a module re-entered on the stack counts once per op
                self.by_module[p] = self.by_module.get(p, 0.0) + f
        return out


def profile_forward(model: nn.Module, inputs: Any, paths: Iterable[str]) -> ForwardProfile:
    paths = sorted(set(paths))
    if inputs is None:
        return ForwardProfile({p: i for i, p in enumerate(paths)}, {}, 0.0, {})
    order: dict[str, int] = {}
    counter = FlopCount()
    handles = []
    for p, mod in model.named_modules():
        if not p:
            continue

        def pre_hook(_m, _a, _p=p):
            order.setdefault(_p, len(order))
            counter.stack.append(_p)

        def post_hook(_m, _a, _o, _p=p):
            if counter.stack and counter.stack[-1] == _p:
                counter.stack.pop()

        handles.append(mod.register_forward_pre_hook(pre_hook))
        handles.append(mod.register_forward_hook(post_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            call_model(model, inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    n = _batch_size(inputs)
    flops = {path: f / n for path, f in counter.by_module.items()}
    total = counter.total / n
    exclusive = dict(flops)
    for path, f in flops.items():
        parent = path
        while "." in parent:  # nearest called ancestor (ModuleLists are never called themselves)
            parent = parent.rsplit(".", 1)[0]
            if parent in exclusive:
                exclusive[parent] -= f
                break
    return ForwardProfile(order, flops, total, {k: max(0.0, v) for k, v in exclusive.items()})
