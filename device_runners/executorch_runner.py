"""ExecuTorch training adapter: runs the cut-depth methods of one train.pte (no transformers).

Each method returns (loss, logits), the gradients of its trainable set, then its parameters as
tensors that alias the method's memory: writing into them is how updates reach the program.
Methods do not share parameter memory, so the adapter keeps master copies and, before a method
runs, copies in whatever changed since that method last ran. A method's parameter tensors only
exist after its first call, so that first call runs twice (once to learn the aliases).
Programs have a fixed batch size: a short final evaluation batch is padded and the padding ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from rgft_edge.artifact import Artifact, ArtifactError
from rgft_edge.backend import Batch, EvalOutput, StepOutput


class ExecuTorchBackend:
    name = "executorch"

    def __init__(self, artifact: Artifact, threads: int):
        from executorch.extension.pybindings.portable_lib import _load_for_executorch

        torch.set_num_threads(threads)
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
        files = self.programs[0]["files"]
        self.ptd_path = artifact.path(files["weights"])
        self.module = _load_for_executorch(str(artifact.path(files["program"])), data_path=str(self.ptd_path))
        self.meta: dict[str, tuple] = {}
        self.aliases: dict[str, dict[str, torch.Tensor]] = {}
        self.seen: dict[str, dict[str, int]] = {p["name"]: {} for p in self.programs}
        from safetensors.torch import load_file

        initial = load_file(str(artifact.path("weights/trainable.safetensors")))
        self.master = {n: initial[n].clone() for n in sorted(self.table.param_names())}
        self.version = {n: 1 for n in self.master}

    def _inputs(self, batch: Batch) -> tuple:
        data = [torch.as_tensor(np.ascontiguousarray(batch[n]), dtype=torch.long) for n in self.data_inputs]
        return tuple(data) + (torch.as_tensor(np.asarray(batch["labels"]), dtype=torch.long),)

    def _run(self, name: str, inputs: tuple):
        if name not in self.meta:
            r = self.module.run_method
            self.meta[name] = (r("__et_training_gradients_index_" + name, ())[0],
                               r("__et_training_parameters_index_" + name, ())[0],
                               [f[len(self.prefix):] for f in r("__et_training_fqn_" + name, ())])
        gi, pi, fqn = self.meta[name]
        outs = self.module.run_method(name, inputs, clone_outputs=False)
        first = name not in self.aliases
        if first:
            self.aliases[name] = dict(zip(fqn, outs[pi:pi + len(fqn)]))
        return outs, gi, fqn, first

    def _sync(self, name: str) -> bool:
        changed = False
        for n, t in self.aliases[name].items():
            if self.seen[name].get(n) != self.version[n]:
                t.copy_(self.master[n])
                self.seen[name][n] = self.version[n]
                changed = True
        return changed

    def _step(self, name: str, inputs: tuple):
        if name in self.aliases:
            self._sync(name)
        outs, gi, fqn, first = self._run(name, inputs)
        if first and self._sync(name):  # the first call ran on the initial weights: run again
            outs, gi, fqn, _ = self._run(name, inputs)
        loss, logits = outs[0].clone(), outs[1].clone()
        grads = {n: g.clone() for n, g in zip(fqn, outs[gi:gi + len(fqn)])}
        return loss, logits, grads

    def program_for(self, trainable: np.ndarray) -> dict:
        low = min(self.table.depths[i] for i in np.flatnonzero(trainable))
        return [p for p in self.programs if p["min_depth"] <= low][-1]

    # -- Backend interface --------------------------------------------------------------------
    def parameters(self) -> dict[str, torch.Tensor]:
        return self.master

    def train_step(self, batch: Batch, trainable: np.ndarray, measure_activations: bool) -> StepOutput:
        if measure_activations:
            raise ArtifactError("ExecuTorch programs expose no activation gradients; "
                                "use --estimator grad-norm")
        prog = self.program_for(trainable)
        loss, _, grads = self._step(prog["name"], self._inputs(batch))
        return StepOutput(float(loss), grads, None, {"program": prog["name"], "cut_depth": prog["min_depth"]})

    def commit(self, touched: list[str]) -> None:
        for n in touched:
            self.version[n] += 1

    def evaluate(self, batches: Iterable[Batch]) -> EvalOutput:
        """Loss and accuracy through the shallowest program (forward plus the head's tiny
        backward), which sees the current weights; gradients are discarded."""
        name = self.programs[-1]["name"]
        total, n, correct = 0.0, 0, 0
        for batch in batches:
            real = len(batch["labels"])
            padded = {k: _pad(np.asarray(v), self.batch_size) for k, v in batch.items()}
            _, logits, _ = self._step(name, self._inputs(padded))
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
        """Adapted weights as safetensors and as a .ptd that the artifact's infer.pte reads."""
        from safetensors.numpy import save_file

        out.mkdir(parents=True, exist_ok=True)
        save_file(self.trainable_state(), str(out / "trainable.safetensors"), {"format": "rgft-edge trainable"})
        ptd = out / "adapted.ptd"
        write_ptd({self.prefix + n: t for n, t in self.master.items()}, ptd, self.ptd_path.read_bytes())
        return {"safetensors": str(out / "trainable.safetensors"), "ptd": str(ptd),
                "program": str(self.artifact.path("executorch/infer.pte"))}

    def close(self) -> None:
        self.aliases, self.module = {}, None


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
