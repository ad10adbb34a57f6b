"""What every stage-chain exporter (standard ONNX, ExecuTorch stages) needs before it exports a
graph: the model's stages in order with their example inputs, which of their tensors are trainable,
frozen or int8, which stages share one set of graphs (same kind and layout: weights are graph
inputs, so one graph serves every layer of a kind), and which components each stage owns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn

from rgft_edge.components import ComponentTable
from rgft_edge.errors import UserError

from .onnx_stages import Plan, Stage, stage_tensors


@dataclass
class StageWalk:
    stage: Stage
    index: int
    kind: str  # the graphs' name (stages of one kind and layout share them)
    new_kind: bool  # the first stage of its kind: its graphs are exported here
    first: bool  # takes the data inputs (token ids, pixels): no input gradient
    x: object  # example input: dict of data tensors (first stage) or one hidden state
    y: torch.Tensor  # example output (the head: the logits' loss pair's first element)
    full: dict[str, torch.Tensor]  # the stage's tensors by name relative to its root
    gname: dict[str, str]  # stage name -> model-wide name
    train: list[str]
    frozen: list[str]
    int8: dict[str, bool]  # frozen int8 tensors -> whether they carry a zero point
    members: list[int]  # components the stage owns

    def spec(self) -> dict:
        """The manifest's entry for this stage."""
        return {"name": self.stage.name, "graphs": self.kind, "head": self.stage.head, "first": self.first,
                "params": [{"input": n, "key": self.gname[n],
                            "role": "trainable" if n in self.train else ("int8" if n in self.int8 else "frozen")}
                           for n in self.stage.params],
                "components": self.members}


def walk(model: nn.Module, quant: dict[str, tuple], p: Plan, table: ComponentTable, ex: dict,
         ctx: dict) -> Iterator[StageWalk]:
    """The stages of `p` in order, each with its example input computed from the one before;
    refuses a component spread over two stages or left out of every stage."""
    trainable = table.param_names()
    canonical: dict[int, str] = {}  # a tied tensor goes by its first name, as named_parameters() says
    for n, t in stage_tensors(model).items():
        canonical.setdefault(id(t), n)
    keys: dict[tuple, str] = {}
    comp_stage: dict[int, int] = {}
    h = ex
    for si, st in enumerate(p.stages):
        tensors = stage_tensors(st.root)
        full = {n: tensors[n] for n in st.params}
        gname = {n: canonical[id(t)] for n, t in full.items()}
        train = [n for n in st.params if gname[n] in trainable]
        frozen = [n for n in st.params if gname[n] not in trainable]
        int8 = {n: quant[gname[n]][2] is not None for n in frozen if gname[n] in quant}
        first = st.x_dims == ("data",)
        # static dims of the input are part of a graph's identity (a CNN's spatial size)
        x_static = () if first else tuple(int(s) for s, d in zip(h.shape, st.x_dims) if d is None)
        key = (st.kind, x_static, tuple((n, tuple(full[n].shape), n in train, n in int8) for n in st.params))
        new_kind = key not in keys
        if new_kind:
            keys[key] = f"{st.kind}{sum(1 for k in keys if k[0] == st.kind) or ''}"
        with torch.no_grad():
            y = st.body(st.root, h, ctx)
        names = {gname[n] for n in st.params}
        members = [i for i, c in enumerate(table) if any(r.name in names for r in c.params)]
        for i in members:
            if i in comp_stage:
                raise UserError(f"component {table[i].name} spans stages {p.stages[comp_stage[i]].name} and {st.name}")
            comp_stage[i] = si
        yield StageWalk(st, si, keys[key], new_kind, first, h, y[0] if st.head else y, full, gname, train, frozen,
                        int8, members)
        h = y[0] if st.head else y
    missing = [table[i].name for i in range(len(table)) if i not in comp_stage]
    if missing:
        raise UserError(f"the stage plan does not cover components {missing[:3]}")


def stage_variants(w: StageWalk) -> list[str]:
    """Graphs a stage kind needs: a forward, and gradients for its input (`x`), its trainable
    weights (`w`) or both (`xw`); the first stage's inputs are token ids: no input gradient."""
    if w.first:
        return ["fwd"] + (["w"] if w.train else [])
    return ["fwd", "x"] + (["w", "xw"] if w.train else [])
