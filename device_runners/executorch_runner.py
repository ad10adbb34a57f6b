"""ExecuTorch training adapter: runs the cut-depth methods of one train.pte (no transformers).

Every method takes (data inputs, labels, all trainable parameters) and returns (loss, logits,
gradients of the parameters its cut trains). The adapter's master tensors are the only copy of
the trainable weights: the loop's optimizer updates them in place and the next call, whatever its
cut, receives them. Programs have a fixed batch size: a short final evaluation batch is padded and
the padding ignored.

The program is loaded as an ExecuTorch `Program` (the C++ runtime's, which `executorch.runtime`
wraps): its host-only methods share one set of memory arenas sized to the largest method (outputs
are copied out on every call), so peak memory does not grow with the number of cut-depth methods
a run uses — the pybindings `Module` planned a separate arena per loaded method (MiniLM int8+LoRA,
4 methods: 987 vs 723 MB). The extension is imported directly: `executorch.runtime` and
`portable_lib` first import `executorch.exir` (and torchao), +144 MB resident for nothing a
device needs. ExecuTorch's thread pool, where XNNPACK's kernels run, gets the runner's threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from rgft_edge.artifact import Artifact, ArtifactError
from rgft_edge.backend import Batch, EvalOutput, ProgramBackendTraits, StepOutput, shallowest_program


class ExecuTorchBackend(ProgramBackendTraits):
    name = "executorch"

    def __init__(self, artifact: Artifact, threads: int):
        from executorch.extension.pybindings import _C as et

        torch.set_num_threads(threads)
        et._unsafe_reset_threadpool(threads)
        self.threads = threads
        self.artifact, self.table = artifact, artifact.table
        info = artifact.manifest["backend_info"]
        self.prefix, self.data_inputs = info["param_prefix"], info["data_inputs"]
        spec = artifact.manifest["input_spec"]
        self.batch_size = self.eval_batch_size = spec["batch_size"]
        self.programs = sorted((p for p in artifact.programs if p["kind"] == "train"),
                               key=lambda p: p["min_depth"])
        if not self.programs:
            raise ArtifactError(f"{artifact.root}/manifest.json: no training program")
        self.program = et._load_program(str(artifact.path(self.programs[0]["files"]["program"])),
                                        enable_etdump=False, debug_buffer_size=0, data_path=None,
                                        program_verification=et.Verification.InternalConsistency)
        self.methods: dict[str, object] = {}
        self.param_order = info["param_inputs"]
        from safetensors.torch import load_file

        initial = load_file(str(artifact.path("weights/trainable.safetensors")))
        missing = [n for n in self.param_order if n not in initial]
        if missing:
            raise ArtifactError(f"{artifact.root}/weights/trainable.safetensors lacks {missing[:3]}")
        self.master = {n: initial[n].clone().contiguous() for n in self.param_order}

    def _inputs(self, batch: Batch) -> tuple:
        data = [torch.as_tensor(np.ascontiguousarray(batch[n]), dtype=torch.long) for n in self.data_inputs]
        labels = torch.as_tensor(np.asarray(batch["labels"]), dtype=torch.long)
        return tuple(data) + (labels,) + tuple(self.master[n] for n in self.param_order)

    def _step(self, prog: dict, batch: Batch):
        name = prog["name"]
        if name not in self.methods:  # loaded once; every loaded method shares the program's arenas
            self.methods[name] = self.program.load_method(name)
        outs = self.methods[name](self._inputs(batch))
        grads = dict(zip(prog["trainable_params"], outs[2:]))
        return outs[0], outs[1], grads

    def program_for(self, trainable: np.ndarray) -> dict:
        return shallowest_program(self.programs, lambda p: p["min_depth"], self.table, trainable)

    # -- Backend interface --------------------------------------------------------------------
    def parameters(self) -> dict[str, torch.Tensor]:
        return self.master

    def train_step(self, batch: Batch, trainable: np.ndarray, measure_activations: bool) -> StepOutput:
        prog = self.program_for(trainable)
        loss, _, grads = self._step(prog, batch)
        return StepOutput(float(loss), grads, None, {"program": prog["name"], "cut_depth": prog["min_depth"]})

    def commit(self, touched: list[str]) -> None:
        pass  # the master tensors are the program inputs: nothing to copy

    def evaluate(self, batches: Iterable[Batch]) -> EvalOutput:
        """Loss and accuracy through the shallowest program (forward plus the head's tiny
        backward), which sees the current weights; gradients are discarded."""
        prog = self.programs[-1]
        total, n, correct = 0.0, 0, 0
        for batch in batches:
            real = len(batch["labels"])
            padded = {k: _pad(np.asarray(v), self.batch_size) for k, v in batch.items()}
            _, logits, _ = self._step(prog, padded)
            logits = logits[:real].float()
            labels = torch.as_tensor(np.asarray(batch["labels"]), dtype=torch.long)
            total += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(-1) == labels).sum())
            n += real
        return EvalOutput(total / max(1, n), {"loss": total / max(1, n), "accuracy": correct / max(1, n)})

    def trainable_state(self) -> dict[str, np.ndarray]:
        return {n: t.detach().numpy().copy() for n, t in self.master.items()}

    def environment(self) -> dict:
        import executorch

        return {"executorch": getattr(executorch, "__version__", "1.5.1"), "torch": torch.__version__,
                "threads": self.threads}

    def export_adapted(self, out: Path) -> dict:
        """Adapted weights as safetensors and as a .ptd that train.pte's forward method reads."""
        from safetensors.numpy import save_file

        out.mkdir(parents=True, exist_ok=True)
        save_file(self.trainable_state(), str(out / "trainable.safetensors"), {"format": "rgft-edge trainable"})
        ptd = out / "adapted.ptd"
        template = self.artifact.path(f"executorch/{self.artifact.manifest['backend_info']['weights_tag']}.ptd")
        write_ptd({self.prefix + n: t for n, t in self.master.items()}, ptd, template.read_bytes())
        return {"safetensors": str(out / "trainable.safetensors"), "ptd": str(ptd),
                "program": str(self.artifact.path("executorch/train.pte")), "method": "forward"}

    def close(self) -> None:
        self.methods, self.program = {}, None


def _pad(arr: np.ndarray, size: int) -> np.ndarray:
    if len(arr) >= size:
        return arr
    reps = np.repeat(arr[-1:], size - len(arr), axis=0)
    return np.concatenate([arr, reps], axis=0)


def write_ptd(named: dict[str, torch.Tensor], path: Path, template: bytes) -> None:
    """A .ptd with the template's layout and new tensor values (Python stand-in for the C++
    flat_tensor save_ptd)."""
    from executorch.exir._serialize._cord import Cord
    from executorch.exir._serialize.data_serializer import DataEntry
    from executorch.extension.flat_tensor.serialize.serialize import FlatTensorConfig, FlatTensorSerializer

    ser = FlatTensorSerializer(FlatTensorConfig())
    payload = ser.deserialize(Cord(template))
    bufs = list(payload.buffers)
    for key, entry in payload.named_data.items():
        if key not in named:
            raise ArtifactError(f"{path}: no adapted value for {key!r}")
        bufs.append(named[key].detach().contiguous().numpy().tobytes())
        payload.named_data[key] = DataEntry(len(bufs) - 1, 16, entry.tensor_layout)
    payload.buffers = bufs
    with open(path, "wb") as f:
        ser.serialize(payload).write_to_file(f)
