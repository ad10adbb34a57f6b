"""ExecuTorch training adapter: runs the cut-depth methods of one train.pte (no transformers).

Every method takes (data inputs, labels, all trainable parameters) and returns (loss, logits,
gradients of the parameters its cut trains). The adapter's master arrays are the only copy of the
trainable weights: the loop's optimizer updates them in place and the next call, whatever its cut,
receives them. Programs have a fixed batch size: a short final evaluation batch is padded and the
padding ignored.

Two runtimes run the same program, behind one `run(method, inputs) -> outputs` on numpy arrays:
- `native` (default): ExecuTorch's C++ runtime through a small shim (executorch_native.py): no
  torch in the process, so it installs where torch cannot (linux-aarch64) and holds ~250 MB less.
- `bindings`: ExecuTorch's Python extension (`executorch.extension.pybindings._C`), which links
  libtorch. Used when `RGFT_EDGE_EXECUTORCH_RUNTIME=bindings`, or when the shim cannot be built
  (no C++ compiler), with a note on stderr.
Both load the program as an ExecuTorch `Program` whose methods share one set of memory arenas sized
to the largest method, so peak memory does not grow with the number of cut-depth methods a run
uses (the pybindings `Module` planned one per method: 987 vs 723 MB on MiniLM int8+LoRA), and give
ExecuTorch's thread pool, where XNNPACK's kernels run, the runner's threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from rgft_edge.artifact import Artifact, ArtifactError
from rgft_edge.backend import Batch, EvalOutput, ProgramBackendTraits, StepOutput, shallowest_program

from .executorch_program import environment, logits_metrics, open_program, pad_batch

class ExecuTorchBackend(ProgramBackendTraits):
    name = "executorch"

    def __init__(self, artifact: Artifact, threads: int, runtime: str | None = None):
        from safetensors.numpy import load_file

        self.threads = threads
        self.artifact, self.table = artifact, artifact.table
        info = artifact.manifest["backend_info"]
        self.prefix, self.data_inputs = info["param_prefix"], info["data_inputs"]
        self.batch_size = self.eval_batch_size = artifact.manifest["input_spec"]["batch_size"]
        self.programs = sorted((p for p in artifact.programs if p["kind"] == "train"),
                               key=lambda p: p["min_depth"])
        if not self.programs:
            raise ArtifactError(f"{artifact.root}/manifest.json: no training program")
        self.param_order = info["param_inputs"]
        initial = load_file(str(artifact.path("weights/trainable.safetensors")))
        missing = [n for n in self.param_order if n not in initial]
        if missing:
            raise ArtifactError(f"{artifact.root}/weights/trainable.safetensors lacks {missing[:3]}")
        self.master = {n: np.ascontiguousarray(initial[n], dtype=np.float32) for n in self.param_order}
        self.program, self.runtime = open_program(artifact.path(self.programs[0]["files"]["program"]), threads, runtime)

    def _step(self, prog: dict, batch: Batch):
        inputs = [np.asarray(batch[n], dtype=np.int64) for n in self.data_inputs]
        inputs.append(np.asarray(batch["labels"], dtype=np.int64))
        outs = self.program.run(prog["name"], inputs + [self.master[n] for n in self.param_order])
        return outs[0], outs[1], dict(zip(prog["trainable_params"], outs[2:]))

    def program_for(self, trainable: np.ndarray) -> dict:
        return shallowest_program(self.programs, lambda p: p["min_depth"], self.table, trainable)

    # -- Backend interface --------------------------------------------------------------------
    def parameters(self) -> dict[str, np.ndarray]:
        return self.master

    def train_step(self, batch: Batch, trainable: np.ndarray, measure_activations: bool) -> StepOutput:
        prog = self.program_for(trainable)
        loss, _, grads = self._step(prog, batch)
        return StepOutput(float(loss), grads, None, {"program": prog["name"], "cut_depth": prog["min_depth"]})

    def commit(self, touched: list[str]) -> None:
        pass  # the master arrays are the program inputs: nothing to copy

    def evaluate(self, batches: Iterable[Batch]) -> EvalOutput:
        """Loss and accuracy through the shallowest program (forward plus the head's tiny
        backward), which sees the current weights; gradients are discarded."""
        prog, parts = self.programs[-1], []
        for batch in batches:
            real = len(batch["labels"])
            _, logits, _ = self._step(prog, {k: pad_batch(np.asarray(v), self.batch_size) for k, v in batch.items()})
            parts.append((logits[:real], np.asarray(batch["labels"], dtype=np.int64)))
        return logits_metrics(parts, "sequence-classification")

    def trainable_state(self) -> dict[str, np.ndarray]:
        return {n: a.copy() for n, a in self.master.items()}

    def environment(self) -> dict:
        return {**environment(self.runtime, self.program), "threads": self.threads}

    def export_adapted(self, out: Path) -> dict:
        """Adapted weights as safetensors; where the exporter's Python side is installed (it needs
        torch), also a .ptd that train.pte's forward method reads."""
        import importlib.util

        from safetensors.numpy import save_file

        out.mkdir(parents=True, exist_ok=True)
        save_file(self.trainable_state(), str(out / "trainable.safetensors"), {"format": "rgft-edge trainable"})
        result = {"safetensors": str(out / "trainable.safetensors")}
        if importlib.util.find_spec("torch") is None:
            result["ptd"] = "not written: needs torch (the exporter's serializer); the safetensors hold the weights"
            return result
        ptd = out / "adapted.ptd"
        template = self.artifact.path(f"executorch/{self.artifact.manifest['backend_info']['weights_tag']}.ptd")
        write_ptd({self.prefix + n: a for n, a in self.master.items()}, ptd, template.read_bytes())
        result.update(ptd=str(ptd), program=str(self.artifact.path("executorch/train.pte")), method="forward")
        return result

    def close(self) -> None:
        self.program.close()


def open_executorch(artifact: Artifact, threads: int, runtime: str | None = None):
    """The adapter for the artifact's layout: cut-depth methods, or stage methods."""
    if artifact.manifest["backend_info"].get("layout") == "stages":
        from .executorch_stages import ExecuTorchStageBackend

        return ExecuTorchStageBackend(artifact, threads, runtime)
    return ExecuTorchBackend(artifact, threads, runtime)


def write_ptd(named: dict[str, np.ndarray], path: Path, template: bytes) -> None:
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
        bufs.append(np.ascontiguousarray(named[key]).tobytes())
        payload.named_data[key] = DataEntry(len(bufs) - 1, 16, entry.tensor_layout)
    payload.buffers = bufs
    with open(path, "wb") as f:
        ser.serialize(payload).write_to_file(f)
