"""Resume a run from its last checkpoint: weights, optimizer state, error map, policy state, RNG,
data position and the energy already spent, so an interrupted run continues exactly."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .error_map import ErrorMap
from .optim import ComponentAdamW
from .policies import Policy


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


def _like(template: Any, arr: np.ndarray):
    if hasattr(template, "detach"):  # torch tensor buffers (eager, ExecuTorch)
        import torch

        return torch.from_numpy(arr.copy()).to(template.dtype)
    return arr.astype(template.dtype, copy=True)


def restore(ck: dict, params: dict, optimizer: ComponentAdamW, error_map: ErrorMap, policy: Policy,
            backend) -> int:
    """Put the checkpoint back into the live objects; returns the step to continue from."""
    missing = set(params) - set(ck["params"])
    if missing:
        raise UserError(f"checkpoint lacks trainable parameters {sorted(missing)[:3]}")
    for name, buf in params.items():
        value = _like(buf, ck["params"][name])
        if tuple(value.shape) != tuple(buf.shape):
            raise UserError(f"checkpoint parameter {name!r} has shape {tuple(value.shape)}, expected {tuple(buf.shape)}")
        buf[...] = value
    backend.commit(list(params))
    optimizer.state = {}
    for key, meta in ck["state"]["optimizer"].items():
        i = int(key)
        refs = optimizer.table[i].params
        m, v = [], []
        for j, ref in enumerate(refs):
            tmpl = params[ref.name]
            m.append(_like(tmpl, ck["optimizer"][f"{i}.{j}.m"]) if f"{i}.{j}.m" in ck["optimizer"] else None)
            v.append(_like(tmpl, ck["optimizer"][f"{i}.{j}.v"]) if f"{i}.{j}.v" in ck["optimizer"] else None)
        optimizer.state[i] = {"t": meta["t"], "last": meta["last"], "m": m, "v": v}
    optimizer.evictions = ck["state"].get("optimizer_evictions", 0)
    error_map.load_state_dict({k: np.asarray(v) for k, v in ck["state"]["error_map"].items()})
    policy.load_state_dict(ck["state"].get("policy", {}))
    rng = ck["state"].get("rng")
    if rng is not None and hasattr(backend, "set_rng_state"):
        backend.set_rng_state(np.asarray(rng, dtype=np.uint8))
    return int(ck["state"]["step"])


def trim_metrics(run_dir: Path, step: int) -> list[dict]:
    """Drop metric records from steps after the checkpoint (they will be redone); returns the kept
    step records so the error-map arrays can be rebuilt."""
    path = run_dir / "metrics.jsonl"
    kept, steps = [], []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut off by the power loss
            if rec.get("step", 0) < step:
                kept.append(line)
                if rec.get("type") == "step":
                    steps.append(rec)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
    os.replace(tmp, path)
    return steps
