"""The autograd engine over a stage chain (standard ONNX graphs, ExecuTorch stage methods).

An artifact of this layout holds per stage kind a forward, and gradient graphs for the stage's
input (`x`), its trainable weights (`w`) or both (`xw`), each with a forward that saves the
activations it reads (`save_x`...). A step that trains the components S runs every stage forward —
from the lowest member of S upward through the saving forwards, keeping what they save — then walks
back from the head to that lowest stage only: selected stages return their weight gradients, the
stages between only pass the input gradient down. So a step's cost follows its selection inside one
artifact. A backend supplies `_run`, `_graphs_for`, `_saved` and `_context`.
"""

from __future__ import annotations

import numpy as np

from rgft_edge.backend import Batch, StepOutput


class StageSpec:
    """One stage of the manifest's `stages` list."""

    def __init__(self, spec: dict, index: int):
        self.name, self.graphs, self.index = spec["name"], spec["graphs"], index
        self.head, self.first = bool(spec["head"]), bool(spec["first"])
        self.params = spec["params"]
        self.trainable = [p for p in self.params if p["role"] == "trainable"]
        self.feeds: dict[str, np.ndarray] = {}  # graph input name -> weight array (master or frozen)


class StageChain:
    stages: list[StageSpec]
    stage_of: np.ndarray  # component -> stage index
    master: dict[str, np.ndarray]  # trainable weights: every graph reads these arrays as inputs
    joint_head = True  # the head's gradient graphs return the loss and logits too

    def _load_stages(self, artifact, stages: list[dict]) -> None:
        """The master trainable arrays, the frozen base (loaded once; int8 kept int8) bound to each
        stage by `_bind`, and which stage owns each component."""
        from safetensors.numpy import load_file

        from rgft_edge.artifact import ArtifactError

        self.master = {k: np.ascontiguousarray(v, dtype=np.float32)
                       for k, v in load_file(str(artifact.path("weights/trainable.safetensors"))).items()}
        frozen = load_file(str(artifact.path("weights/frozen.safetensors")))
        if "weights/buffers.safetensors" in artifact.manifest["files"]:  # a CNN's BatchNorm statistics
            frozen.update(load_file(str(artifact.path("weights/buffers.safetensors"))))
        self.stages = [StageSpec(s, i) for i, s in enumerate(stages)]
        self.stage_of = np.full(len(artifact.table), -1, dtype=np.int64)
        for st, spec in zip(self.stages, stages):
            self._bind(st, frozen)
            self.stage_of[spec["components"]] = st.index
        if (self.stage_of < 0).any():
            raise ArtifactError(f"{artifact.root}/manifest.json: components without a stage")

    def parameters(self) -> dict[str, np.ndarray]:
        return self.master

    def commit(self, touched: list[str]) -> None:
        pass  # the graphs read the master arrays directly: nothing to copy

    def trainable_state(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.master.items()}

    def _forward(self, data: dict, ctx: dict, variants: dict[int, str]) -> tuple[float | None, np.ndarray | None, dict]:
        """Every stage forward; a stage that will run gradient graph `variants[i]` keeps its input
        and what that graph reads (its saving forward's outputs). A head whose gradient graph is
        joint (it returns the loss too) is left to the backward: (None, None, saved)."""
        h, saved = data, {}
        for st in self.stages:
            v = variants.get(st.index)
            if v is None:
                out = self._run(st, "fwd", h, ctx)
            elif st.head and self.joint_head:
                saved[st.index] = (h, {})
                return None, None, saved
            else:
                graph = self._graphs_for(st, v)[0]
                out = self._run(st, graph or "fwd", h, ctx)
                saved[st.index] = (h, self._saved(st, graph, out[1:]) if graph else {})
            h = out if st.head else out[0]
        return float(h[0]), h[1], saved

    def train_step(self, batch: Batch, trainable: np.ndarray, measure_activations: bool) -> StepOutput:
        chosen = np.flatnonzero(trainable)
        selected = set(self.stage_of[chosen].tolist())
        lowest = min(selected)
        data, ctx = self._context(batch)
        variants = {}
        for st in self.stages[lowest:]:
            need_x, need_w = st.index > lowest, st.index in selected
            variants[st.index] = "xw" if need_x and need_w else ("x" if need_x else "w")
        loss, _, saved = self._forward(data, ctx, variants)
        want = self.table.param_names(chosen)
        grads, gy, ran = {}, None, []
        for st in reversed(self.stages[lowest:]):
            need_x, need_w = st.index > lowest, st.index in selected
            variant = variants[st.index]
            x, acts = saved.pop(st.index)
            outs = self._run(st, self._graphs_for(st, variant)[1], x, ctx, gy, acts)
            ran.append(variant)
            if st.head and self.joint_head:  # the joint head graph: loss and logits first
                loss, outs = float(outs[0]), outs[2:]
            if need_x:
                gy, outs = outs[0], outs[1:]
            if need_w:
                grads.update({p["key"]: g for p, g in zip(st.trainable, outs) if p["key"] in want})
        return StepOutput(loss, grads, None, {"program": f"stages {self.stages[lowest].name}..head",
                                              "cut_depth": int(min(self.table.depths[i] for i in chosen)),
                                              "lowest_stage": lowest, "gradient_graphs": len(ran),
                                              "activations": "recompute" if self.recompute_activations else "saved"})

