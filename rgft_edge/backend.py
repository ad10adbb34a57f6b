"""What the RGFT loop needs from a backend (torch eager, ExecuTorch, ONNX Runtime).

An adapter runs forward/backward for a batch with a given trainable set and returns the loss and
the gradients it has; the loop (not the backend) owns the optimizer and writes updates into the
buffers `parameters()` exposes, then calls `commit()` so backends whose runtime holds its own copy
(ONNX Runtime) can take the new values. Exported backends fix their trainable set per program, so
they report which components they actually produced gradients for; the loop handles the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, MutableMapping, Protocol

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


def shallowest_program(programs: list, cut_of, table: ComponentTable, trainable: np.ndarray):
    """The program with the shallowest backprop cut that still covers the selection
    (`programs` sorted by cut depth; `cut_of(program)` gives its minimum trainable depth)."""
    low = min(table.depths[i] for i in np.flatnonzero(trainable))
    return [p for p in programs if cut_of(p) <= low][-1]


class Backend(Protocol):
    table: ComponentTable
    name: str
    activation_scores: bool  # False: the backend cannot observe activation gradients

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
