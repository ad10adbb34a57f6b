"""ExecuTorch lowering shared by both layouts (export/executorch_backend.py: cut-depth methods,
export/executorch_stages.py: stage methods): the decompositions the kernel libraries need, and
`to_edge` with XNNPACK's partitioner for the training methods."""

from __future__ import annotations

import torch


def _linear_as_mm(x, w, b=None):
    y = torch.matmul(x, w.t())
    return y if b is None else y + b


def _empty_permuted_as_empty(size, physical_layout, *, dtype=None, layout=None, device=None,
                             pin_memory=None):
    return torch.empty(size, dtype=dtype, device=device)  # layout is a hint; contiguous is valid


def _decompositions(kernels: str = "optimized"):
    """Ops the portable kernel library lacks or runs slowly:
    new_empty_strided (appears with torchao int8) and empty_permuted (Llama's backward) have no
    out-variant; linear -> matmul + add (except for `portable`) because the portable addmm is
    ~15x slower than mm and XNNPACK does not take addmm with a non-static weight."""
    from torch._decomp import get_decompositions

    table = get_decompositions([torch.ops.aten.new_empty_strided.default])
    if kernels != "portable":
        table[torch.ops.aten.linear.default] = _linear_as_mm
    table[torch.ops.aten.empty_permuted.default] = _empty_permuted_as_empty
    return table


def xnnpack_partitioner():
    """XNNPACK for training graphs: weights are runtime inputs; no clone / dim-order-copy configs
    (they make pass-through subgraphs in joint graphs, which XNNPACK refuses)."""
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    skip = {"CloneConfig", "CloneDimOrderConfig", "ToDimOrderCopyConfig"}
    return XnnpackPartitioner(configs=[c for c in ALL_PARTITIONER_CONFIGS if c.__name__ not in skip],
                              force_non_static_weights_for_f32_linear=True)


def _to_edge(eps: dict, kernels: str):
    """Edge programs; with `xnnpack` the training methods are lowered (the inference method is
    not: its trainable weights are external constants that a device replaces, and XNNPACK would
    pack the compile-time values into its blob)."""
    from executorch.exir import EdgeCompileConfig, to_edge, to_edge_transform_and_lower

    ecc = EdgeCompileConfig(_check_ir_validity=False)
    if kernels != "xnnpack":
        return to_edge(eps, compile_config=ecc)
    parts = {name: ([xnnpack_partitioner()] if name.startswith("train_") else []) for name in eps}
    return to_edge_transform_and_lower(eps, partitioner=parts, compile_config=ecc)


