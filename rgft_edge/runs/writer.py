"""The run directory: everything a run leaves behind, in open formats (JSON, .npy, safetensors).

config.json        resolved configuration (and environment: versions, threads, seed)
components.json    the component table the run used
metrics.jsonl      one JSON object per step (type "step") and per evaluation (type "eval")
error_map.npy      float64 [steps, components]: the EMA error map after every step
selected.npy       bool [steps, components]: which components trained at each step
eval.json          final held-out evaluation
trainable.safetensors  trained weights (only the trainable part)
summary.json       the run in one object (also printed)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    _atomic_write(path, (json.dumps(obj, indent=1, default=_default) + "\n").encode())


def write_safetensors(path: Path, arrays: dict) -> None:
    """Named numpy arrays as one safetensors file, replaced atomically (never half-written)."""
    from safetensors.numpy import save

    _atomic_write(path, save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))


def _default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class RunWriter:
    def __init__(self, root: str | os.PathLike, num_components: int, fresh: bool = False):
        """`fresh`: a new run in this directory starts a new metrics log (an earlier run's records
        would otherwise mix into its curves); a resumed run appends."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.k = num_components
        self._metrics = open(self.root / "metrics.jsonl", "w" if fresh else "a", encoding="utf-8")
        self.error_rows: list[np.ndarray] = []
        self.selected_rows: list[np.ndarray] = []

    def write_json(self, name: str, obj) -> None:
        write_json(self.root / name, obj)

    def add_rows(self, record: dict) -> None:
        """The error-map and selection rows of one step record (also used when resuming)."""
        self.error_rows.append(np.asarray(record["scores"], dtype=np.float64))
        sel = np.zeros(self.k, bool)
        sel[record["selected"]] = True
        self.selected_rows.append(sel)

    def log(self, record: dict) -> None:
        if record.get("type") == "step":
            self.add_rows(record)
        self._metrics.write(json.dumps(record, default=_default) + "\n")
        self._metrics.flush()

    def save_arrays(self) -> None:
        shape = (0, self.k)
        for name, rows, dtype in (("error_map.npy", self.error_rows, np.float64),
                                  ("selected.npy", self.selected_rows, bool)):
            arr = np.stack(rows).astype(dtype) if rows else np.zeros(shape, dtype)
            tmp = self.root / (name + ".tmp")
            with open(tmp, "wb") as f:
                np.save(f, arr, allow_pickle=False)
            os.replace(tmp, self.root / name)

    def save_weights(self, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> Path:
        from safetensors.numpy import save

        path = self.root / "trainable.safetensors"
        _atomic_write(path, save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata))
        return path

    def close(self) -> None:
        self.save_arrays()
        self._metrics.close()
