"""Where attention, FFN and heads live in each transformer family (found by structure, not class).

A layout names, relative to one layer module, the attention and FFN sub-modules, the q/k/v/o
projections and how their weights split per head. Adding a family is adding one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn


@dataclass(frozen=True)
class Proj:
    """A projection module and the weight dim that indexes heads (Linear: rows out, cols in)."""

    path: str
    weight_dim: int  # dim of .weight that indexes head features
    bias_split: bool  # whether .bias is split per head as well
    fused: int = 1  # fused q|k|v projections (GPT-2 c_attn): number of equal segments


@dataclass(frozen=True)
class Layout:
    family: str
    layer_list: str  # attribute name of the ModuleList holding the layers
    attention: tuple[str, ...]  # sub-modules whose params form the attention block
    ffn: tuple[str, ...]  # sub-modules whose params form the FFN block
    attn_hook: str  # module whose output is the attention block's h
    ffn_hook: str  # module whose output is the FFN block's h
    q: tuple[Proj, ...]  # per-head output projections (q, k, v or one fused)
    o: Proj  # output projection: per-head input features
    kv_heads_attr: tuple[str, ...] = field(default=("num_key_value_heads",))
    heads_attr: tuple[str, ...] = field(default=("num_attention_heads", "n_head"))


def _lin(path: str, out: bool) -> Proj:
    return Proj(path, 0 if out else 1, out)


LAYOUTS = (
    Layout("bert", "layer", ("attention",), ("intermediate", "output"), "attention", "output",
           (_lin("attention.self.query", True), _lin("attention.self.key", True),
            _lin("attention.self.value", True)), _lin("attention.output.dense", False)),
    Layout("llama", "layers", ("input_layernorm", "self_attn"), ("post_attention_layernorm", "mlp"),
           "self_attn", "mlp",
           (_lin("self_attn.q_proj", True), _lin("self_attn.k_proj", True),
            _lin("self_attn.v_proj", True)), _lin("self_attn.o_proj", False)),
    # GPT-2 uses Conv1D (weight is [in, out]): heads index columns of c_attn, rows of c_proj.
    Layout("gpt2", "h", ("ln_1", "attn"), ("ln_2", "mlp"), "attn", "mlp",
           (Proj("attn.c_attn", 1, True, fused=3),), Proj("attn.c_proj", 0, False)),
)


def _get(module: nn.Module, path: str) -> nn.Module | None:
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


def find_layout(model: nn.Module) -> tuple[Layout, str, nn.ModuleList] | None:
    """(layout, qualified name of the layer list, the list) for the first family that fits."""
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0:
            continue
        for lay in LAYOUTS:
            if name.split(".")[-1] != lay.layer_list:
                continue
            first = mod[0]
            if all(_get(first, p.path) is not None for p in lay.q + (lay.o,)) and all(
                _get(first, m) is not None for m in lay.attention + lay.ffn
            ):
                return lay, name, mod
    return None


def head_counts(model: nn.Module, layout: Layout) -> tuple[int, int]:
    """(query heads, key/value heads) from the model config."""
    cfg = getattr(model, "config", None)
    heads = next((getattr(cfg, a) for a in layout.heads_attr if getattr(cfg, a, None)), None)
    if heads is None:
        raise ValueError("head granularity needs the number of attention heads in model.config")
    kv = next((getattr(cfg, a) for a in layout.kv_heads_attr if getattr(cfg, a, None)), heads)
    return int(heads), int(kv)
