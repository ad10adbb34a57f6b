"""ExecuTorch adapter for stage-layout artifacts (`compile --executorch-layout stages`): the stage
chain of `stage_chain.StageChain` over the per-stage methods of one train.pte
(export/executorch_stages.py), on the same native / bindings runtimes as the cut-depth adapter.

Every method input is named in the manifest (`backend_info.methods`): data, context, the output
gradient, saved activations, and weights — trainable ones are the master arrays the loop's
optimizer updates in place, frozen ones are loaded once (int8 kept int8: the methods dequantize).
The program does not copy its inputs into its arena (they are not memory-planned), so each call
reads these arrays where they are. Methods have a fixed batch: a short evaluation batch is padded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from rgft_edge.artifact import Artifact, ArtifactError
from rgft_edge.backend import Batch, EvalOutput, ProgramBackendTraits

from .executorch_program import environment, logits_metrics, open_program, pad_batch
from .stage_chain import StageChain, StageSpec


class ExecuTorchStageBackend(StageChain, ProgramBackendTraits):
    name = "executorch"

    def __init__(self, artifact: Artifact, threads: int, runtime: str | None = None):
        self.artifact, self.table, self.threads = artifact, artifact.table, threads
        info = artifact.manifest["backend_info"]
        self.task, self.data_inputs = info["task"], info["data_inputs"]
        self.context_outputs, self.methods = info["context_outputs"], info["methods"]
        self.batch_size = self.eval_batch_size = artifact.manifest["input_spec"]["batch_size"]
        self._load_stages(artifact, info["stages"])
        # each method's inputs as (kind, key) pairs and its saved outputs, parsed once: _run is per call
        self._inputs = {m: [(*d.partition(":")[::2], d) for d in spec["inputs"]] for m, spec in self.methods.items()}
        self._saved_names = {m: [o for o in spec["outputs"] if o.startswith("saved:")] for m, spec in self.methods.items()}
        self.program, self.runtime = open_program(artifact.path("executorch/train.pte"), threads, runtime)

    @property
    def recompute_activations(self) -> bool:
        return False  # no recomputing methods in this layout; a memory budget's request is ignored

    @recompute_activations.setter
    def recompute_activations(self, value: bool) -> None:
        pass

    def _bind(self, st: StageSpec, frozen: dict[str, np.ndarray]) -> None:
        for p in st.params:
            name, key = p["input"], p["key"]
            try:
                if p["role"] == "trainable":
                    st.feeds["w:" + name] = self.master[key]
                elif p["role"] == "int8":
                    st.feeds["q:" + name] = np.ascontiguousarray(frozen[key + "::qdata"])
                    st.feeds["s:" + name] = np.ascontiguousarray(frozen[key + "::scale"].reshape(-1), dtype=np.float32)
                    if key + "::zero_point" in frozen:
                        st.feeds["z:" + name] = frozen[key + "::zero_point"].reshape(-1).astype(np.int8)
                else:
                    st.feeds["f:" + name] = np.ascontiguousarray(frozen[key], dtype=np.float32)
            except KeyError as e:
                raise ArtifactError(f"{self.artifact.root}/weights: no tensor {e.args[0]!r} for stage {st.name}") from e

    # -- StageChain hooks -----------------------------------------------------------------------
    def _method(self, st: StageSpec | None, graph: str) -> str:
        name = f"train_{st.graphs}.{graph}" if st else f"train_{graph}"
        if name not in self.methods:
            raise ArtifactError(f"{self.artifact.root}/manifest.json: no method {name!r}")
        return name

    def _run(self, st: StageSpec, graph: str, x, ctx: dict, gy=None, saved: dict | None = None) -> list[np.ndarray]:
        name = self._method(st, graph)
        inputs = []
        for kind, key, desc in self._inputs[name]:
            if desc == "x":
                inputs.append(x)
            elif desc == "gy":
                inputs.append(gy)
            elif kind == "data":
                inputs.append(x[key])
            elif kind == "ctx":
                inputs.append(ctx[key])
            elif kind == "saved":
                inputs.append(saved[desc])
            else:  # a weight: w / f / q / s / z
                inputs.append(st.feeds[desc])
        return self.program.run(name, inputs)

    def _graphs_for(self, st: StageSpec, variant: str) -> tuple[str | None, str]:
        return (None if st.head else "save_" + variant), variant

    def _saved(self, st: StageSpec, graph: str, extra: list[np.ndarray]) -> dict:
        return dict(zip(self._saved_names[self._method(st, graph)], extra))

    def _context(self, batch: Batch) -> tuple[dict, dict]:
        data = {n: np.ascontiguousarray(batch[n], dtype=np.int64) for n in self.data_inputs}
        ctx = {}
        if self.context_outputs:
            outs = self.program.run(self._method(None, "context"), [data[n] for n in self.data_inputs])
            ctx = {name.removeprefix("ctx:"): a for name, a in zip(self.methods["train_context"]["outputs"], outs)}
        if "labels" not in ctx:
            ctx["labels"] = np.ascontiguousarray(batch["labels"], dtype=np.int64)
        return data, ctx

    # -- Backend interface --------------------------------------------------------------------
    def evaluate(self, batches: Iterable[Batch]) -> EvalOutput:
        """The forward chain on each (padded) batch; metrics from the real rows' logits."""
        parts = []
        for batch in batches:
            real = len(batch["labels"])
            data, ctx = self._context({k: pad_batch(np.asarray(v), self.batch_size) for k, v in batch.items()})
            _, logits, _ = self._forward(data, ctx, {})
            parts.append((logits[:real], ctx["labels"][:real]))
        return logits_metrics(parts, self.task)

    def environment(self) -> dict:
        return {**environment(self.runtime, self.program), "threads": self.threads, "layout": "stages"}

    def export_adapted(self, out: Path) -> dict:
        """The adapted weights as safetensors; the artifact's `fwd` methods run them for inference."""
        from safetensors.numpy import save_file

        out.mkdir(parents=True, exist_ok=True)
        save_file(self.trainable_state(), str(out / "trainable.safetensors"), {"format": "rgft-edge trainable"})
        return {"safetensors": str(out / "trainable.safetensors"), "program": str(self.artifact.path("executorch/train.pte")),
                "inference": "the train_<kind>.fwd methods chained over the stages (no single forward method in this layout)"}

    def close(self) -> None:
        self.program.close()
