"""The two ExecuTorch runtimes behind one `run(method, inputs) -> outputs` on numpy arrays, and
what both ExecuTorch adapters (cut-depth methods: executorch_runner.py, stage methods:
executorch_stages.py) share: opening a program, the environment record, evaluation metrics from
logits, padding a short batch to the program's fixed batch size."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from rgft_edge.artifact import ArtifactError
from rgft_edge.backend import EvalOutput

RUNTIMES = ("native", "bindings")


class BindingsProgram:
    """The program through ExecuTorch's Python extension (imports torch)."""

    def __init__(self, pte: Path, threads: int):
        import torch
        from executorch.extension.pybindings import _C as et  # not `executorch.runtime`: that imports exir, +144 MB

        self.torch = torch
        torch.set_num_threads(threads)
        et._unsafe_reset_threadpool(threads)
        self.program = et._load_program(str(pte), enable_etdump=False, debug_buffer_size=0, data_path=None,
                                        program_verification=et.Verification.InternalConsistency)
        self.methods: dict[str, object] = {}

    def run(self, method: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
        if method not in self.methods:  # loaded once; every loaded method shares the program's arenas
            self.methods[method] = self.program.load_method(method)
        outs = self.methods[method](tuple(self.torch.from_numpy(np.ascontiguousarray(a)) for a in inputs))
        return [o.numpy() for o in outs]

    def close(self) -> None:
        self.methods, self.program = {}, None


def runtime_choice() -> str:
    choice = os.environ.get("RGFT_EDGE_EXECUTORCH_RUNTIME", "native")
    if choice not in RUNTIMES:
        raise ArtifactError(f"RGFT_EDGE_EXECUTORCH_RUNTIME={choice!r}: expected one of {', '.join(RUNTIMES)}")
    return choice


def open_program(pte: Path, threads: int, runtime: str | None = None):
    """(program, runtime name): the native runtime unless told otherwise or it cannot be built."""
    from rgft_edge.device_runners.executorch_native import NativeBuildError, NativeProgram

    runtime = runtime or runtime_choice()
    if runtime == "native":
        try:
            return NativeProgram(pte, "train", threads), "native"
        except NativeBuildError as e:
            print(f"rgft-edge: ExecuTorch's native runtime is unavailable ({e}); using its Python bindings",
                  file=sys.stderr)
    return BindingsProgram(pte, threads), "bindings"


def environment(runtime: str, program) -> dict:
    from rgft_edge.device_runners.executorch_native import executorch_root, executorch_version

    env = {"executorch": executorch_version(executorch_root()), "executorch_runtime": runtime}
    if runtime == "bindings":
        env["torch"] = program.torch.__version__
    return env


def logits_metrics(parts: list[tuple[np.ndarray, np.ndarray]], task: str) -> EvalOutput:
    """Mean cross-entropy and accuracy (a causal LM: perplexity, next-token, label -100 ignored)
    over (logits, labels) pairs, in numpy: the same metrics as the eager runner."""
    total, n, correct = 0.0, 0, 0
    for logits, labels in parts:
        logits = np.asarray(logits, dtype=np.float64)
        if task == "causal-lm":
            logits, labels = logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)
            keep = labels != -100
            logits, labels = logits[keep], labels[keep]
        shifted = logits - logits.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        total += float(-log_probs[np.arange(len(labels)), labels].sum())
        correct += int((logits.argmax(-1) == labels).sum())
        n += len(labels)
    mean = total / max(1, n)
    if task == "causal-lm":
        return EvalOutput(mean, {"loss": mean, "perplexity": float(np.exp(min(50.0, mean)))})
    return EvalOutput(mean, {"loss": mean, "accuracy": correct / max(1, n)})


def pad_batch(arr: np.ndarray, size: int) -> np.ndarray:
    if len(arr) >= size:
        return arr
    reps = np.repeat(arr[-1:], size - len(arr), axis=0)
    return np.concatenate([arr, reps], axis=0)


