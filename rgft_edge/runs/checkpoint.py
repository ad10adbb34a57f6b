"""Checkpoints: save, load and restore, in open formats only (safetensors for tensors, JSON for the
rest). What a run needs to continue exactly: trainable weights, optimizer state, error map, policy
state, RNG, step (the data position: the batch order is seeded) and the energy already spent.

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

from ..error_map import ErrorMap
from ..errors import UserError
from ..optim import ComponentAdamW
from ..policies import Policy


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x))


def _like(template: Any, arr: np.ndarray):
    """`arr` as the buffer type of `template` (torch for eager / ExecuTorch, numpy for ORT)."""
    if hasattr(template, "detach"):
        import torch

        return torch.from_numpy(arr.copy()).to(template.dtype)
    return arr.astype(template.dtype, copy=True)


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
    opt_tensors, opt_meta = optimizer.state_tensors()
    save_file({k: _to_numpy(v) for k, v in opt_tensors.items()} or {"empty": np.zeros(0, np.float32)},
              str(tmp / "optimizer.safetensors"))
    state = {"step": step, "optimizer": opt_meta["components"], "optimizer_evictions": opt_meta["evictions"],
             "error_map": {k: v.tolist() for k, v in error_map.state_dict().items()}, **extra}
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


def clear_checkpoint(run_dir: str | os.PathLike) -> None:
    """Remove an earlier run's checkpoint: a fresh run must not resume or roll back into it."""
    for d in ("checkpoint", "checkpoint.old", "checkpoint.tmp"):
        shutil.rmtree(Path(run_dir) / d, ignore_errors=True)


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    return any((Path(run_dir) / d / "state.json").is_file() for d in ("checkpoint", "checkpoint.old"))


def load_checkpoint(run_dir: str | os.PathLike) -> dict:
    from safetensors.numpy import load_file

    ck = Path(run_dir) / "checkpoint"
    if not (ck / "state.json").is_file() and (Path(run_dir) / "checkpoint.old" / "state.json").is_file():
        ck = Path(run_dir) / "checkpoint.old"  # power lost between the two renames of a save
    if not (ck / "state.json").is_file():
        raise UserError(f"{run_dir}: no checkpoint to resume from (checkpoint/state.json missing)")
    try:
        state = json.loads((ck / "state.json").read_text())
        params = load_file(str(ck / "trainable.safetensors"))
        opt = load_file(str(ck / "optimizer.safetensors"))
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise UserError(f"{ck}: unreadable checkpoint ({e})") from e
    return {"state": state, "params": params, "optimizer": opt}


def restore(ck: dict, params: dict, optimizer: ComponentAdamW, error_map: ErrorMap,
            policy: Policy) -> int:
    """Put a loaded checkpoint back into the live objects (the caller commits the parameters to its
    backend and restores the backend's RNG); returns the step to continue from."""
    missing = set(params) - set(ck["params"])
    if missing:
        raise UserError(f"checkpoint lacks trainable parameters {sorted(missing)[:3]}")
    for name, buf in params.items():
        value = _like(buf, ck["params"][name])
        if tuple(value.shape) != tuple(buf.shape):
            raise UserError(f"checkpoint parameter {name!r} has shape {tuple(value.shape)}, expected {tuple(buf.shape)}")
        buf[...] = value
    state = ck["state"]
    optimizer.load_state_tensors(ck["optimizer"], {"components": state["optimizer"],
                                                   "evictions": state.get("optimizer_evictions", 0)},
                                 lambda name, arr: _like(params[name], arr))
    error_map.load_state_dict({k: np.asarray(v) for k, v in state["error_map"].items()})
    policy.load_state_dict(state.get("policy", {}))
    return int(state["step"])


def trim_metrics(run_dir: Path, step: int) -> list[dict]:
    """Drop metric records from steps after the checkpoint (they will be redone); returns the kept
    records so the writer can rebuild its error-map arrays."""
    path = run_dir / "metrics.jsonl"
    kept, records = [], []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut off by the power loss
            if rec.get("step", 0) < step:
                kept.append(line)
                if rec.get("type") == "step":
                    records.append(rec)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
    os.replace(tmp, path)
    return records
