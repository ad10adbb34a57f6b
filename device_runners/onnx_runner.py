"""Standard-ONNX adapter: numpy + stock onnxruntime only (no torch, no training build).

The artifact holds per-stage graphs (`export/onnx_backend.py`): a forward graph, and gradient
graphs for the input (`x`), the stage's trainable weights (`w`) or both (`xw`), each with a forward
that saves the activations it reads (`save_x`...). This adapter is the autograd engine over them.
A step that trains the components S runs every stage forward — from the lowest member of S upward
through the saving forwards, keeping what they save — then walks back from the head to that lowest
stage only: selected stages return their weight gradients, the stages between only pass the input
gradient down. So a step's cost follows its selection inside one artifact. (Artifacts compiled
before saved activations have gradient graphs that recompute their forward; they still run.)

The adapter owns the weights: the trainable ones are the master arrays the loop's optimizer
updates in place (every graph reads them as inputs, so nothing is copied), the frozen base is
loaded once with its int8 weights kept int8 (the graphs dequantize them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import onnxruntime as ort

from rgft_edge.artifact import Artifact, ArtifactError
from rgft_edge.backend import Batch, EvalOutput, ProgramBackendTraits

from .ort_memory import share_process_arena
from .stage_chain import StageChain, StageSpec


class OnnxBackend(StageChain, ProgramBackendTraits):
    name = "onnx"
    eval_batch_size = None  # batch and sequence axes are dynamic
    # saved activations: a 25% faster full fp32 step on MiniLM for ~100-175 MB more peak RSS at
    # batch 16x64 (docs/onnx.md); `train` sets this under a memory budget
    recompute_activations = False

    def __init__(self, artifact: Artifact, threads: int):
        ort.set_default_logger_severity(3)
        self.artifact, self.table, self.threads = artifact, artifact.table, threads
        info = artifact.manifest["backend_info"]
        self.task, self.data_inputs = info["task"], info["data_inputs"]
        self.data_dtypes = {n: np.dtype(info.get("data_dtypes", {}).get(n, "int64")) for n in self.data_inputs}
        self.context_outputs = info["context_outputs"]
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        # spinning worker threads burn a shared core for nothing between the small graphs
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._options = share_process_arena(so)
        self.sessions = {(kind, v): self._session(f) for kind, files in info["graphs"].items()
                         for v, f in files.items()}
        # a CNN has no context graph (nothing but the labels, which come with the batch)
        self.context = self._session("onnx/context.onnx") if self.context_outputs else None
        self._load_stages(artifact, info["stages"])
        self._inputs = {k: [i.name for i in s.get_inputs()] for k, s in self.sessions.items()}
        self._outputs = {k: [o.name for o in s.get_outputs()] for k, s in self.sessions.items()}
        # artifacts with saved activations: the head's gradient graphs return the loss too
        self.joint_head = bool(info.get("saved_activations"))

    def _session(self, rel: str) -> ort.InferenceSession:
        path = self.artifact.path(rel)
        try:
            return ort.InferenceSession(str(path), self._options, providers=["CPUExecutionProvider"])
        except Exception as e:  # e.g. an operator this onnxruntime build does not implement
            raise ArtifactError(f"{path}: onnxruntime {ort.__version__} cannot load this graph: "
                                f"{str(e).splitlines()[0][:400]}") from e

    def _bind(self, st: StageSpec, frozen: dict[str, np.ndarray]) -> None:
        root = self.artifact.root
        for p in st.params:
            name, key = p["input"], p["key"]
            try:
                if p["role"] == "trainable":
                    st.feeds[name] = self.master[key]
                elif p["role"] == "int8":
                    st.feeds[name + ".int8"] = frozen[key + "::qdata"]
                    st.feeds[name + ".scale"] = np.ascontiguousarray(frozen[key + "::scale"].reshape(-1),
                                                                     dtype=np.float32)
                    if key + "::zero_point" in frozen:
                        st.feeds[name + ".zp"] = frozen[key + "::zero_point"].reshape(-1).astype(np.int8)
                else:
                    st.feeds[name] = np.ascontiguousarray(frozen[key], dtype=np.float32)
            except KeyError as e:
                raise ArtifactError(f"{root}/weights: no tensor {e.args[0]!r} for stage {st.name}") from e

    # -- running graphs -------------------------------------------------------------------------
    def _run(self, st: StageSpec, variant: str, x, ctx: dict, gy=None, saved: dict | None = None) -> list[np.ndarray]:
        key = (st.graphs, variant)
        feed = dict(st.feeds)
        if st.first:
            feed.update(x)
        else:
            feed["x"] = x
        feed.update(ctx)
        if gy is not None:
            feed["gy"] = gy
        if saved:
            feed.update(saved)
        return self.sessions[key].run(None, {n: feed[n] for n in self._inputs[key]})

    def _graphs_for(self, st: StageSpec, variant: str) -> tuple[str | None, str]:
        """(the forward that saves what the gradient graph reads, or None; the gradient graph).
        Saved activations by default; with `recompute_activations` (set under a memory budget) the
        gradient graph that recomputes its forward from x, so a step keeps one tensor per stage.
        Artifacts compiled before saved activations have only recomputing gradient graphs."""
        if (st.graphs, "save_" + variant) not in self.sessions:
            return None, variant
        if self.recompute_activations and (st.graphs, "rc_" + variant) in self.sessions:
            return None, "rc_" + variant
        return "save_" + variant, variant

    def _saved(self, st: StageSpec, graph: str, extra: list[np.ndarray]) -> dict:
        return dict(zip(self._outputs[(st.graphs, graph)][1:], extra))  # after y: the saved

    def _context(self, batch: Batch) -> tuple[dict, dict]:
        data = {n: np.ascontiguousarray(batch[n], dtype=self.data_dtypes[n]) for n in self.data_inputs}
        ctx = {}
        if self.context is not None:
            names = [i.name for i in self.context.get_inputs()]
            ctx = dict(zip(self.context_outputs, self.context.run(None, {n: data[n] for n in names})))
        if "labels" not in ctx:
            ctx["labels"] = np.ascontiguousarray(batch["labels"], dtype=np.int64)
        return data, ctx

    # -- Backend interface --------------------------------------------------------------------
    def evaluate(self, batches: Iterable[Batch]) -> EvalOutput:
        """Mean loss over examples; accuracy for classification, perplexity for a causal LM
        (the same metrics as the eager runner)."""
        total, n, correct = 0.0, 0, 0
        for batch in batches:
            data, ctx = self._context(batch)
            loss, logits, _ = self._forward(data, ctx, {})
            size = len(batch[self.data_inputs[0]])
            total += loss * size
            n += size
            if self.task != "causal-lm":
                correct += int((logits.argmax(-1) == ctx["labels"]).sum())
        mean = total / max(1, n)
        if self.task == "causal-lm":
            return EvalOutput(mean, {"loss": mean, "perplexity": float(np.exp(min(50.0, mean)))})
        return EvalOutput(mean, {"loss": mean, "accuracy": correct / max(1, n)})

    def environment(self) -> dict:
        return {"onnxruntime": ort.__version__, "threads": self.threads,
                "onnxruntime_build": "training" if _has_training_build() else "stock"}

    def export_adapted(self, out: Path) -> dict:
        """The adapted weights as safetensors; the artifact's forward graphs run them for inference."""
        from safetensors.numpy import save_file

        out.mkdir(parents=True, exist_ok=True)
        save_file(self.trainable_state(), str(out / "trainable.safetensors"), {"format": "rgft-edge trainable"})
        return {"safetensors": str(out / "trainable.safetensors")}

    def close(self) -> None:
        self.sessions = {}


def _has_training_build() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime.training") is not None
