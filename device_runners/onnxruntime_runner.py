"""ONNX Runtime training adapter: numpy + onnxruntime-training only (no torch, no transformers).

One program (artifact set) per backprop cut depth. The adapter keeps master copies of the
trainable parameters; before a program runs, the parameters the runner changed since that program
last ran are copied into its checkpoint state (zero-copy views, so this is a memcpy). The frozen
base is loaded once and fed to every program as inputs. The loop owns the optimizer; this adapter
only runs forward/backward and returns gradients for the program's trainable set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import onnxruntime as ort
from safetensors.numpy import load_file

from rgft_edge.artifact import Artifact, ArtifactError
from rgft_edge.backend import Batch, EvalOutput, ProgramBackendTraits, StepOutput, shallowest_program

from .ort_memory import share_process_arena


def _training_api():
    """onnxruntime.training.api without onnxruntime/training/__init__.py, which imports torch
    (its optim/amp helpers) and so fails on a device without torch. The api modules themselves
    need only the C extension, so we register a bare package object and import them under it."""
    import importlib
    import sys
    import types

    if "onnxruntime.training" not in sys.modules:
        pkg = types.ModuleType("onnxruntime.training")
        pkg.__path__ = [os.path.join(os.path.dirname(ort.__file__), "training")]
        sys.modules["onnxruntime.training"] = pkg
    api = importlib.import_module("onnxruntime.training.api")
    return api.CheckpointState, api.Module


CheckpointState, Module = _training_api()


class _Program:
    def __init__(self, spec: dict, module: Module, state: CheckpointState, prefix: str):
        self.spec, self.module, self.state = spec, module, state
        self.min_depth = spec["min_depth"]
        self.trainable = spec["trainable_params"]
        self.onnx: dict[str, str] = {}  # every parameter the runner owns that this program holds
        self.inputs = module.input_names()
        self.seen: dict[str, int] = {}  # parameter -> version last copied in


class OrtBackend(ProgramBackendTraits):
    name = "onnxruntime"

    def __init__(self, artifact: Artifact, threads: int):
        ort.set_default_logger_severity(3)
        self.artifact, self.table = artifact, artifact.table
        info = artifact.manifest["backend_info"]
        self.prefix = info["param_prefix"]
        self.data_inputs, self.label_input = info["data_inputs"], info["label_input"]
        self.eval_batch_size = artifact.manifest["input_spec"]["batch_size"]
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        share_process_arena(so)  # the cut programs' arenas would add up (see ort_memory)
        self.threads = threads
        self.frozen = self._load_frozen(info["frozen_inputs"])
        programs = sorted(artifact.programs, key=lambda p: p["min_depth"])
        if not programs or programs[0]["min_depth"] != min(self.table.depths):
            raise ArtifactError(f"{artifact.root}/manifest.json: no program covers the lowest component")
        self.programs: list[_Program] = []
        for spec in programs:
            files = spec["files"]
            state = CheckpointState.load_checkpoint(str(artifact.path(files["checkpoint"])))
            ev = files.get("eval_model.onnx")
            module = Module(str(artifact.path(files["training_model.onnx"])), state,
                            str(artifact.path(ev)) if ev else None, session_options=so)
            self.programs.append(_Program(spec, module, state, self.prefix))
        base = self.programs[0]
        self.master = {n: base.state.parameters[self.prefix + n].data.copy() for n in base.trainable}
        for p in self.programs:
            # Parameters trained by a deeper cut are frozen inside a shallower program, but they
            # still live in its state and must follow the master copies too.
            p.onnx = {n: self.prefix + n for n in self.master}
        missing = self.table.param_names() - set(self.master)
        if missing:
            raise ArtifactError(f"{artifact.root}: checkpoint lacks trainable parameters {sorted(missing)[:3]}")
        self.version = {n: 1 for n in self.master}
        full = base.module.get_contiguous_parameters(False)
        for p in self.programs[1:]:
            if p.spec.get("nominal_checkpoint"):  # a nominal state must be filled whole first
                p.module.copy_buffer_to_parameters(getattr(full, "_ortvalue", full), False)
        for p in self.programs:
            self._sync(p)

    def _load_frozen(self, spec: dict) -> dict[str, np.ndarray]:
        path = self.artifact.path("weights/frozen.safetensors")
        tensors = load_file(str(path))
        out = {}
        for name, meta in spec.items():
            if meta["key"] not in tensors:
                raise ArtifactError(f"{path}: no tensor {meta['key']!r} for graph input {name!r}")
            arr = tensors[meta["key"]].astype(meta["dtype"], copy=False).reshape(meta["shape"])
            out[name] = np.ascontiguousarray(arr)
        return out

    def _sync(self, prog: _Program) -> None:
        for n in prog.onnx:
            if prog.seen.get(n) != self.version[n]:
                np.copyto(prog.state.parameters[prog.onnx[n]].data, self.master[n])
                prog.seen[n] = self.version[n]

    def _feed(self, prog: _Program, batch: Batch, names: list[str]) -> list[np.ndarray]:
        feed = {**self.frozen, **{k: np.ascontiguousarray(v, dtype=np.int64) for k, v in batch.items()
                                  if k in self.data_inputs}}
        if self.label_input in names:
            feed[self.label_input] = np.ascontiguousarray(batch["labels"], dtype=np.int64)
        try:
            return [feed[n] for n in names]
        except KeyError as e:
            raise ArtifactError(f"program {prog.spec['name']} wants input {e.args[0]!r} the batch lacks") from e

    def program_for(self, trainable: np.ndarray) -> _Program:
        """The shallowest backward that still covers the selection."""
        return shallowest_program(self.programs, lambda p: p.min_depth, self.table, trainable)

    # -- Backend interface --------------------------------------------------------------------
    def parameters(self) -> dict[str, np.ndarray]:
        return self.master

    def train_step(self, batch: Batch, trainable: np.ndarray, measure_activations: bool) -> StepOutput:
        prog = self.program_for(trainable)
        self._sync(prog)
        prog.module.train()
        prog.module.lazy_reset_grad()
        outs = prog.module(*self._feed(prog, batch, prog.inputs))
        loss = float(np.asarray(outs[0] if isinstance(outs, (list, tuple)) else outs))
        grads = {n: prog.state.parameters[prog.onnx[n]].grad.copy() for n in prog.trainable}
        return StepOutput(loss, grads, None, {"program": prog.spec["name"], "cut_depth": prog.min_depth})

    def commit(self, touched: list[str]) -> None:
        for n in touched:
            self.version[n] += 1

    def evaluate(self, batches: Iterable[Batch]) -> EvalOutput:
        prog = self.programs[0]
        self._sync(prog)
        prog.module.eval()
        names = prog.module.input_names()
        total, n, correct = 0.0, 0, 0
        for batch in batches:
            loss, logits = prog.module(*self._feed(prog, batch, names))
            size = len(batch["labels"])
            total += float(loss) * size
            n += size
            correct += int((np.asarray(logits).argmax(-1) == batch["labels"]).sum())
        return EvalOutput(total / max(1, n), {"loss": total / max(1, n), "accuracy": correct / max(1, n)})

    def trainable_state(self) -> dict[str, np.ndarray]:
        return {n: v.copy() for n, v in self.master.items()}

    def environment(self) -> dict:
        return {"onnxruntime": ort.__version__, "threads": self.threads}

    def export_adapted(self, out: Path) -> dict:
        """Adapted weights as safetensors, plus an inference ONNX model with every weight folded
        back in (trained parameters and the int8 frozen base), runnable by InferenceSession."""
        from safetensors.numpy import save_file

        out.mkdir(parents=True, exist_ok=True)
        save_file(self.trainable_state(), str(out / "trainable.safetensors"), {"format": "rgft-edge trainable"})
        prog = self.programs[0]
        self._sync(prog)
        raw = out / "inference.with-inputs.onnx"
        prog.module.export_model_for_inferencing(str(raw), ["logits"])
        model_path = out / "model.onnx"
        try:
            _fold_inputs(raw, model_path, self.frozen)
        finally:
            raw.unlink(missing_ok=True)
        return {"safetensors": str(out / "trainable.safetensors"), "onnx": str(model_path)}

    def close(self) -> None:
        self.programs = []


def _fold_inputs(src: Path, dst: Path, frozen: dict[str, np.ndarray]) -> None:
    """Turn the frozen graph inputs back into initializers (needs the `onnx` package)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:  # keep the raw graph: it runs when the frozen tensors are fed as inputs
        os.replace(src, dst.with_name("inference.with-inputs.onnx"))
        (dst.parent / "frozen_inputs.json").write_text(json.dumps(sorted(frozen)))
        return
    m = onnx.load(str(src))
    keep = [i for i in m.graph.input if i.name not in frozen]
    used = {i.name for i in m.graph.input} & set(frozen)
    del m.graph.input[:]
    m.graph.input.extend(keep)
    m.graph.initializer.extend(numpy_helper.from_array(frozen[n], n) for n in sorted(used))
    onnx.save(m, str(dst))
