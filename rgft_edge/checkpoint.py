"""Checkpoints in open formats only: safetensors for tensors, JSON for the rest.

Written into a temporary directory, fsynced, then renamed over the old checkpoint, so a power cut
leaves either the old or the new checkpoint, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .error_map import ErrorMap
from .optim import ComponentAdamW


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def save_checkpoint(root: Path, step: int, params: dict, optimizer: ComponentAdamW,
                    error_map: ErrorMap, extra: dict) -> Path:
    from safetensors.numpy import save_file

    final = Path(root) / "checkpoint"
    tmp = Path(root) / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({n: _to_numpy(p) for n, p in params.items()}, str(tmp / "trainable.safetensors"))
    opt_tensors, opt_meta = {}, {}
    for i, st in optimizer.state.items():
        opt_meta[str(i)] = {"t": st["t"], "last": st["last"]}
        for j, (m, v) in enumerate(zip(st["m"], st["v"])):
            if m is not None:
                opt_tensors[f"{i}.{j}.m"] = _to_numpy(m)
                opt_tensors[f"{i}.{j}.v"] = _to_numpy(v)
    save_file(opt_tensors or {"empty": np.zeros(0, np.float32)}, str(tmp / "optimizer.safetensors"))
    em = error_map.state_dict()
    state = {"step": step, "optimizer": opt_meta, "optimizer_evictions": optimizer.evictions,
             "error_map": {k: v.tolist() for k, v in em.items()}, **extra}
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tmp)
    old = Path(root) / "checkpoint.old"
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(Path(root))
    return final
