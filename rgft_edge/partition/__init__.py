"""Partition a torch model into RGFT components (layer / block / head / lora granularity).

Transformer families (BERT-like, Llama-like, GPT-2) are found by structure (`layouts.py`); any
other module is split by its children, with Sequential/ModuleList containers expanded one level
(CNN stages, custom layer stacks) and modules holding over 1/16 of the parameters expanded further. Depth is the order in which components first run in a sample
forward pass; FLOPs come from `torch.utils.flop_counter` on that same pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..components import GRANULARITIES, Component, ComponentTable, HookSpec, ParamRef
from .flops import profile_forward
from .layouts import Layout, find_layout, head_counts


@dataclass
class _Group:
    name: str
    kind: str
    params: list[ParamRef]
    modules: list[str]  # modules whose forward work belongs to the group (anchor: first to run)
    hook: HookSpec | None
    share: float = 1.0  # fraction of the modules' FLOPs owned by this group (heads split them)
    wgrad_modules: list[str] = field(default_factory=list)


def _own(model: nn.Module, prefix: str, trainable: dict[str, torch.Tensor]) -> list[ParamRef]:
    pre = prefix + "." if prefix else ""
    return [ParamRef(n) for n in trainable if n.startswith(pre)]


def _layer_groups(model, lay: Layout, list_name: str, layers: nn.ModuleList, granularity: str,
                  trainable: dict[str, torch.Tensor]) -> list[_Group]:
    groups: list[_Group] = []
    for i, _layer in enumerate(layers):
        pre = f"{list_name}.{i}"
        attn_mods = [f"{pre}.{m}" for m in lay.attention]
        ffn_mods = [f"{pre}.{m}" for m in lay.ffn]
        attn_params = [p for m in attn_mods for p in _own(model, m, trainable)]
        ffn_params = [p for m in ffn_mods for p in _own(model, m, trainable)]
        rest = [p for p in _own(model, pre, trainable) if p not in attn_params + ffn_params]
        ffn_params += rest  # anything else in the layer rides with the FFN block
        if granularity == "layer":
            groups.append(_Group(f"layer.{i}", "layer", attn_params + ffn_params,
                                 attn_mods + ffn_mods, HookSpec(pre)))
            continue
        if granularity == "block":
            groups.append(_Group(f"layer.{i}.attention", "attention", attn_params, attn_mods,
                                 HookSpec(f"{pre}.{lay.attn_hook}")))
        else:  # head
            groups += _head_groups(model, lay, pre, i, attn_params, attn_mods, trainable)
        groups.append(_Group(f"layer.{i}.ffn", "ffn", ffn_params, ffn_mods,
                             HookSpec(f"{pre}.{lay.ffn_hook}")))
    return [g for g in groups if g.params]


def _head_groups(model, lay: Layout, pre: str, i: int, attn_params: list[ParamRef],
                 attn_mods: list[str], trainable) -> list[_Group]:
    heads, kv = head_counts(model, lay)
    n = kv  # one component per key/value group (= per head when heads == kv)
    per_head: list[list[ParamRef]] = [[] for _ in range(n)]
    split = set()
    for proj in lay.q + (lay.o,):
        mod = model.get_submodule(f"{pre}.{proj.path}")
        for pname, tensor in (("weight", mod.weight), ("bias", getattr(mod, "bias", None))):
            full = f"{pre}.{proj.path}.{pname}"
            if tensor is None or full not in trainable or (pname == "bias" and not proj.bias_split):
                continue
            dim = proj.weight_dim if pname == "weight" else 0
            seg = tensor.shape[dim] // proj.fused
            span = seg // n
            if span * n != seg:
                raise ValueError(f"{full}: {seg} features do not split into {n} head groups")
            for g in range(n):
                for s in range(proj.fused):
                    a = s * seg + g * span
                    per_head[g].append(ParamRef(full, dim, a, a + span))
            split.add(full)
    o_mod = model.get_submodule(f"{pre}.{lay.o.path}")
    in_feats = o_mod.weight.shape[lay.o.weight_dim]
    span = in_feats // n
    label = "head" if n == heads else "kv_group"
    groups = [
        _Group(f"layer.{i}.{label}.{g}", "head", per_head[g], attn_mods,
               HookSpec(f"{pre}.{lay.o.path}", "input", g * span, (g + 1) * span), share=1.0 / n,
               wgrad_modules=[f"{pre}.{p.path}" for p in lay.q + (lay.o,)])
        for g in range(n)
    ]
    rest = [p for p in attn_params if p.name not in split]
    groups.append(_Group(f"layer.{i}.attn_out", "norm", rest, attn_mods,
                         HookSpec(f"{pre}.{lay.attn_hook}"), share=0.0))
    return groups


UNITS_TARGET = 16  # a generic module is split until no unit holds more than 1/16 of the parameters


def _unit_groups(model: nn.Module, taken: set[str], trainable: dict[str, torch.Tensor]) -> list[_Group]:
    """Generic split: the largest sub-modules holding no parameter already taken by a layer or LoRA
    component; Sequential/ModuleList containers expand one level (CNN stages, layer stacks), and in
    a model with no known layout a module holding more than 1/UNITS_TARGET of the parameters expands
    into its children (a backbone wrapped in one module becomes its stages and blocks)."""
    free = {n for n in trainable if n not in taken}
    generic = not taken  # a found transformer layout keeps its embeddings and head as single units
    limit = max(1, sum(trainable[n].numel() for n in free) // UNITS_TARGET)
    units: list[str] = []
    owners: list[str] = []  # expanded modules whose own (direct) parameters form a group

    def size(path: str) -> int:
        pre = path + "."
        return sum(trainable[n].numel() for n in free if n.startswith(pre))

    def walk(mod: nn.Module, prefix: str) -> None:
        for name, child in mod.named_children():
            path = f"{prefix}{name}"
            names = {f"{path}.{n}" for n, _ in child.named_parameters()}
            has_children = any(True for _ in child.children())
            if names & taken:
                owners.append(path)
                walk(child, path + ".")
            elif isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child) > 1:
                units.extend(f"{path}.{j}" for j in range(len(child)))  # a stack: its elements are blocks
            elif generic and has_children and size(path) > limit and not _peft_wrapper(child):
                owners.append(path)
                walk(child, path + ".")
            else:
                units.append(path)

    walk(model, "")
    groups = []
    for u in units:
        params = [p for p in _own(model, u, trainable) if p.name not in taken]
        if params:
            groups.append(_Group(u, _unit_kind(model.get_submodule(u), u), params, [u], HookSpec(u)))
    for o in owners:
        own = [ParamRef(f"{o}.{n}") for n, _ in model.get_submodule(o).named_parameters(recurse=False)
               if f"{o}.{n}" in free]
        if own:  # e.g. a class token: placed at its module's depth, its FLOPs left to the children
            groups.append(_Group(o, "module", own, [o], None, share=0.0))
    root_own = [ParamRef(n) for n, _ in model.named_parameters(recurse=False) if n in trainable]
    if root_own:
        groups.append(_Group("root", "module", root_own, [], None))
    return groups


def _peft_wrapper(mod: nn.Module) -> bool:
    """A peft LoRA layer or a modules_to_save copy: one unit (its ModuleDicts never run themselves,
    so split they would have no depth)."""
    return any(isinstance(getattr(mod, a, None), nn.ModuleDict) for a in ("lora_A", "modules_to_save"))


def _unit_kind(mod: nn.Module, path: str) -> str:
    if any(isinstance(m, nn.Embedding) for m in mod.modules()):
        return "embedding"
    if "pooler" in path or path.split(".")[-1].lstrip("_") in ("classifier", "score", "lm_head", "fc", "head"):
        return "classifier"
    if "norm" in type(mod).__name__.lower() or "norm" in path.split(".")[-1].lower():
        return "norm"
    return "module"


def _lora_groups(model: nn.Module, trainable) -> tuple[list[_Group], set[str]]:
    groups, taken = [], set()
    for path, mod in model.named_modules():
        if not isinstance(getattr(mod, "lora_A", None), nn.ModuleDict) or not len(mod.lora_A):
            continue
        adapter = next(iter(mod.lora_A.keys()))
        params = [ParamRef(n) for n in trainable if n.startswith(path + ".lora_")]
        if not params:
            continue
        taken.update(p.name for p in params)
        groups.append(_Group(f"lora.{path}", "lora", params, [path],
                             HookSpec(f"{path}.lora_B.{adapter}"),
                             wgrad_modules=[f"{path}.lora_A.{adapter}", f"{path}.lora_B.{adapter}"]))
    if not groups:
        raise ValueError("granularity 'lora' needs a model with LoRA adapters (peft); none found")
    return groups, taken


def build_component_table(model: nn.Module, granularity: str = "layer",
                          example_inputs: Any = None) -> ComponentTable:
    """Component table over the model's trainable (requires_grad) parameters.

    `example_inputs` (a dict of keyword tensors, a tensor, or a tuple) runs one forward pass to
    order components and estimate FLOPs per sample; without it depths follow registration order
    and FLOPs are zero.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; choose one of {GRANULARITIES}")
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    found = find_layout(model)
    groups: list[_Group] = []
    taken: set[str] = set()
    if granularity == "lora":
        groups, taken = _lora_groups(model, trainable)
    elif found is None and granularity == "head":
        raise ValueError("granularity 'head' needs a known transformer family (BERT, Llama, GPT-2)")
    elif found is not None:
        lay, list_name, layers = found
        groups = _layer_groups(model, lay, list_name, layers, granularity, trainable)
        taken = {p.name for g in groups for p in g.params}
    groups += _unit_groups(model, taken, trainable)

    prof = profile_forward(model, example_inputs, [m for g in groups for m in g.modules + g.wgrad_modules])
    order = {id(g): (min((prof.first_call.get(m, 1 << 30) for m in g.modules), default=1 << 30), k)
             for k, g in enumerate(groups)}
    groups.sort(key=lambda g: order[id(g)])
    anchors = sorted({order[id(g)][0] for g in groups})
    rank = {a: d for d, a in enumerate(anchors)}
    shapes = {n: tuple(p.shape) for n, p in trainable.items()}
    depth_of = {id(g): rank[order[id(g)][0]] for g in groups}
    igrad = _input_grad_flops(groups, depth_of, prof)
    comps, tracked = [], 0.0
    for g in groups:
        fwd = g.share * sum(prof.flops.get(m, 0.0) for m in g.modules)
        wgrad = g.share * sum(prof.flops.get(m, 0.0) for m in g.wgrad_modules or _param_modules(g))
        tracked += fwd
        comps.append(Component(
            name=g.name, kind=g.kind, depth=depth_of[id(g)], params=g.params,
            num_params=sum(p.numel(shapes[p.name]) for p in g.params), hook=g.hook,
            fwd_flops=fwd, wgrad_flops=wgrad, igrad_flops=igrad[id(g)]))
    if comps and not any(c.kind == "classifier" for c in comps) and comps[-1].kind == "module":
        last = model.get_submodule(groups[-1].modules[0]) if groups[-1].modules else None
        if last is not None and any(isinstance(m, nn.Linear) for m in last.modules()):
            comps[-1].kind = "classifier"  # generic models: the last linear unit is the task head
    # A module listed by several groups (heads share attention) is counted once via `share`.
    notes = {"family": found[0].family if found else "generic",
             "untracked_fwd_flops": max(0.0, prof.total - tracked),
             "flops_per": "sample",
             "flops_note": "igrad_k: forward FLOPs of everything run after the component below k "
                           "ended, up to the end of k (backprop passes through it when k is above "
                           "the cut); attention-core matmuls count only where the FLOP counter sees them"}
    table = ComponentTable(comps, granularity, notes)
    table.check_coverage(shapes)
    return table


def _input_grad_flops(groups: list[_Group], depth_of: dict[int, int], prof) -> dict[int, float]:
    """Input-gradient work per group: the forward FLOPs of its backprop segment, so frozen layers
    between components (FFN under a q/v-only LoRA, say) are priced where backprop crosses them."""
    def end(g: _Group) -> int:
        mods = g.modules + g.wgrad_modules + _param_modules(g)
        calls = [o for m, o in prof.first_call.items()
                 if any(m == x or m.startswith(x + ".") for x in mods)]
        return max(calls, default=-1)

    by_depth: dict[int, list[_Group]] = {}
    for g in groups:
        by_depth.setdefault(depth_of[id(g)], []).append(g)
    out, prev_end = {}, -1
    for d in sorted(by_depth):
        members = by_depth[d]
        last = max(end(g) for g in members)
        seg = prof.segment_flops(prev_end, last) if last > prev_end else 0.0
        weight = sum(g.share for g in members) or 1.0
        for g in members:
            out[id(g)] = seg * g.share / weight
        prev_end = max(prev_end, last)
    return out


def _param_modules(g: _Group) -> list[str]:
    """Modules that directly own the group's parameters (their FLOPs are weight-gradient work)."""
    return sorted({p.name.rsplit(".", 1)[0] for p in g.params})


def freeze_embeddings(model) -> None:
    """Freeze the input embedding block (lookup tables and their norm): on MiniLM that is half the
    parameters, and training it forces every backward pass down to the bottom of the network."""
    for name, mod in list(model.named_modules()):
        if isinstance(mod, torch.nn.Embedding):
            mod.requires_grad_(False)
            parent = name.rsplit(".", 1)[0] if "." in name else ""
            if parent and "embed" in parent.rsplit(".", 1)[-1].lower():  # e.g. bert.embeddings
                model.get_submodule(parent).requires_grad_(False)
