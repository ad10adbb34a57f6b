"""The backend contract (what the RGFT loop and session need from a runtime) and the registry.

An adapter runs forward/backward for a batch with a given trainable set and returns the loss and
the gradients it has; the loop (not the backend) owns the optimizer and writes updates into the
buffers `parameters()` exposes, then calls `commit()` so backends whose runtime holds its own copy
(ONNX Runtime) can take the new values. Exported backends fix their trainable set per program, so
they report which components they actually produced gradients for; the loop handles the rest.

Every member of `Backend` is called by the loop or the session, and nothing else is: a new runtime
implements exactly this protocol (tests/test_backend_contract.py checks every registered one).
`register_backend` names its exporter and runner by import path, so nothing here imports torch
or any runtime until that backend is used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, MutableMapping, Protocol, runtime_checkable

import numpy as np

from .components import ComponentTable

Batch = Mapping[str, np.ndarray]


@dataclass
class StepOutput:
    loss: float
    grads: Mapping[str, Any]  # parameter name -> gradient (torch tensor or numpy array)
    # component index -> (||dL/dh||_F, ||h||_F); None when the backend cannot observe activations
    hook_norms: dict[int, tuple[float, float]] | None = None
    info: dict = field(default_factory=dict)  # backend extras (program used, backward FLOPs, ...)


@dataclass
class EvalOutput:
    loss: float
    metrics: dict[str, float]


@runtime_checkable
class Backend(Protocol):
    table: ComponentTable
    name: str
    activation_scores: bool  # False: the backend cannot observe activation gradients
    eval_batch_size: int | None  # held-out batch size it prefers (None: the training batch)

    def parameters(self) -> MutableMapping[str, Any]:
        """Trainable parameter buffers by name, updated in place by the optimizer."""

    def train_step(self, batch: Batch, trainable: np.ndarray, measure_activations: bool) -> StepOutput:
        """Forward + backward with exactly the components in `trainable` needing gradients."""

    def commit(self, touched: list[str]) -> None:
        """Make in-place updates to these parameters visible to the runtime."""

    def evaluate(self, batches: Iterable[Batch]) -> EvalOutput:
        """Loss and task metrics on held-out batches, no gradients."""

    def trainable_state(self) -> dict[str, np.ndarray]:
        """Copies of every trainable parameter, for saving as safetensors."""

    def activation_bytes(self, batch: Batch) -> np.ndarray | None:
        """Bytes saved for backward per component on one fully-trainable step of `batch`
        (the memory guard's activation model); None when the runtime cannot tell."""

    def rng_state(self) -> np.ndarray | None:
        """The generator behind dropout masks, for bit-identical resume; None if not reachable."""

    def set_rng_state(self, state: np.ndarray) -> None:
        """Restore what `rng_state` returned (never called when it returned None)."""

    def environment(self) -> dict:
        """Runtime versions and threads, recorded in the run directory."""

    def export_adapted(self, out: Path) -> dict:
        """Write the adapted weights in open formats (and the runtime's own) under `out`."""

    def close(self) -> None:
        """Release hooks, sessions and buffers."""


class ProgramBackendTraits:
    """What exported-program backends (ExecuTorch, ONNX Runtime) share: their programs return
    parameter gradients only (no activation scores), their runtimes plan their own memory arenas
    (no per-component activation model) and hold any RNG out of Python's reach."""

    activation_scores = False
    # set by `train` under a memory budget: runners that can trade speed for memory (recompute a
    # stage's forward in its backward instead of keeping its activations) do; the others ignore it
    recompute_activations = False

    def activation_bytes(self, batch: Batch) -> None:
        return None

    def rng_state(self) -> None:
        return None

    def set_rng_state(self, state: np.ndarray) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no reachable RNG state")


def shallowest_program(programs: list, cut_of, table: ComponentTable, trainable: np.ndarray):
    """The program with the shallowest backprop cut that still covers the selection
    (`programs` sorted by cut depth; `cut_of(program)` gives its minimum trainable depth)."""
    low = min(table.depths[i] for i in np.flatnonzero(trainable))
    return [p for p in programs if cut_of(p) <= low][-1]


# -- registry -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendSpec:
    name: str
    runner: str  # "module:callable"; callable(artifact, threads) -> a Backend over the artifact
    exporter: str  # "module:function"; function(prepared, out_dir, cut_depths) -> (programs, info)
    device_extra: str  # the pip extra a device installs for this runner
    activation_scores: bool  # whether its runner can score by activation attribution
    description: str

    def open(self, artifact, threads: int) -> Backend:
        """The runner for a validated artifact (imports only this backend's runtime)."""
        return _load(self.runner)(artifact, threads)

    def exporter_fn(self):
        return _load(self.exporter)


def _load(path: str):
    module, attr = path.split(":")
    return getattr(importlib.import_module(module), attr)


_BACKENDS: dict[str, BackendSpec] = {}


def register_backend(spec: BackendSpec) -> BackendSpec:
    """Make a backend known to `compile --backend`, manifests, profiles and `train`."""
    _BACKENDS[spec.name] = spec
    return spec


def backend_names() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def get_backend(name: str) -> BackendSpec:
    if name not in _BACKENDS:
        raise KeyError(f"unknown backend {name!r}; known: {', '.join(_BACKENDS)}")
    return _BACKENDS[name]


def open_backend(artifact, threads: int) -> Backend:
    """The registered runner for a validated artifact (`rgft_edge.artifact.load_artifact`)."""
    return get_backend(artifact.backend).open(artifact, threads)


register_backend(BackendSpec(
    "torch", "rgft_edge.device_runners.torch_artifact:open_torch_artifact",
    "rgft_edge.export.torch_backend:export_programs", "device-torch", True,
    "eager PyTorch on a model rebuilt from config + safetensors (no programs)"))
register_backend(BackendSpec(
    "executorch", "rgft_edge.device_runners.executorch_runner:open_executorch",
    "rgft_edge.export.executorch_backend:export_programs", "device-executorch", False,
    "ExecuTorch training programs (.pte): one method per backprop cut depth, or per-stage methods; C++ runtime, no torch"))
register_backend(BackendSpec(
    "onnxruntime", "rgft_edge.device_runners.onnxruntime_runner:OrtBackend",
    "rgft_edge.export.onnxruntime_backend:export_programs", "device-ort", False,
    "ONNX Runtime training artifacts, one per backprop cut depth"))
register_backend(BackendSpec(
    "onnx", "rgft_edge.device_runners.onnx_runner:OnnxBackend",
    "rgft_edge.export.onnx_backend:export_programs", "device-onnx", False,
    "standard ONNX graphs per stage, chained by the runner (stock onnxruntime, no torch)"))
