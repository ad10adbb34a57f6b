"""Weights of a prepared model as safetensors: trainable part and frozen base (int8 kept int8).

`weights/trainable.safetensors`: every requires_grad parameter, fp32, by its model name.
`weights/frozen.safetensors`: frozen float tensors by name; an int8 weight is stored as
`<name>::qdata` (int8), `<name>::scale` (and `<name>::zero_point` when present), with its block size
in the file's metadata, so it is int8 on disk and can be rebuilt int8 in memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.numpy import save_file


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().contiguous().numpy().copy()


def is_int8_tensor(t: torch.Tensor) -> bool:
    return hasattr(t, "qdata") and hasattr(t, "scale") and getattr(t.qdata, "dtype", None) == torch.int8


def split_state(model: nn.Module) -> tuple[dict, dict, dict]:
    """(trainable fp32, frozen tensors incl. int8 parts, int8 metadata) by parameter name."""
    trainable, frozen, meta = {}, {}, {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            trainable[name] = _np(p)
        elif is_int8_tensor(p):
            frozen[f"{name}::qdata"] = _np(p.qdata)
            frozen[f"{name}::scale"] = _np(p.scale.float())
            if getattr(p, "zero_point", None) is not None:
                frozen[f"{name}::zero_point"] = _np(p.zero_point)
            meta[name] = {"block_size": list(p.block_size), "shape": list(p.shape)}
        else:
            frozen[name] = _np(p)
    return trainable, frozen, meta


def save_weights(model: nn.Module, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    trainable, frozen, meta = split_state(model)
    save_file(trainable, str(out / "trainable.safetensors"), {"format": "rgft-edge trainable"})
    save_file(frozen, str(out / "frozen.safetensors"), {"format": "rgft-edge frozen",
                                                      "int8": json.dumps(meta)})
    return {"trainable_params": int(sum(v.size for v in trainable.values())),
            "int8_weights": sorted(meta),
            "frozen_bytes": int(sum(v.nbytes for v in frozen.values())),
            "trainable_bytes": int(sum(v.nbytes for v in trainable.values()))}


def dequantize(qdata: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None,
               block_size: list[int]) -> np.ndarray:
    """Float values of an int8 weight (per-block scale), for backends that cannot hold int8."""
    q = qdata.astype(np.float32)
    if zero_point is not None:
        q = q - _expand(zero_point.astype(np.float32), qdata.shape, block_size)
    return q * _expand(scale.astype(np.float32), qdata.shape, block_size)


def _expand(s: np.ndarray, shape, block_size) -> np.ndarray:
    s = s.reshape([max(1, d // b) for d, b in zip(shape, block_size)])
    for axis, b in enumerate(block_size):
        if b > 1:
            s = np.repeat(s, b, axis=axis)
    return s
