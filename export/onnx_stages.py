"""Stage plans for the standard-ONNX backend: a model as a chain of stages, one per component.

A stage maps one hidden state (plus context tensors every stage may read: the attention mask,
rotary cos/sin, the labels) to the next hidden state; the last stage returns (loss, logits). The
runner is the autograd engine over this chain, so each stage's module calls must be exactly the
ones the model's own forward makes between two component boundaries. That is family knowledge,
like `rgft_edge/partition/layouts.py`: BERT-like encoders and Llama-like decoders are described
here; any other model is refused with its family named.

Dims are named per tensor ("B" batch, "T" sequence, None a constant) so the exporter can keep
batch and sequence dynamic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from rgft_edge.errors import UserError
from rgft_edge.partition.layouts import find_layout

NEG = torch.finfo(torch.float32).min


@dataclass
class Stage:
    name: str
    kind: str  # stages of one kind (same module class and parameter layout) share graphs
    root: nn.Module  # every parameter the stage reads lives under it
    root_name: str  # its qualified name in the model ("" for the model itself)
    paths: tuple[str, ...]  # sub-modules of root whose parameters the stage owns
    body: Callable  # body(root, x, ctx: dict) -> y (the head: (loss, logits))
    x_dims: tuple  # dims of the stage input ("data" for the first stage: the token inputs)
    y_dims: tuple
    head: bool = False
    params: list[str] = field(default_factory=list)  # names relative to root (+ float buffers), by `plan`


@dataclass
class Plan:
    family: str
    stages: list[Stage]
    context: Callable  # context(data: dict[str, Tensor]) -> dict[str, Tensor]
    context_dims: dict[str, tuple]  # dims of each context tensor (labels included)
    label_dims: tuple
    # dims of the model's data inputs (token ids by default; images keep their spatial size static)
    data_dims: dict[str, tuple] = field(default_factory=lambda: {"input_ids": ("B", "T"),
                                                                 "attention_mask": ("B", "T"),
                                                                 "token_type_ids": ("B", "T")})


def _base(model: nn.Module) -> nn.Module:
    get = getattr(model, "get_base_model", None)
    return get() if get is not None else model


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy ignoring label -100, written with gather: the exporter turns
    `F.cross_entropy`'s backward into a gradient batch-size times too large (see docs/onnx.md)."""
    valid = labels != -100
    logp = F.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(picked * valid).sum() / valid.sum().clamp(min=1)


def _bert(model: nn.Module, task: str) -> Plan:
    base = _base(model)
    if task != "sequence-classification" or not hasattr(base, "classifier"):
        raise UserError("the onnx backend trains BERT-like models for sequence classification only")
    enc = getattr(base, base.base_model_prefix)
    found = find_layout(model)
    lay, list_name, layers = found

    def context(data):
        mask = data["attention_mask"].to(torch.float32)
        return {"mask": (1.0 - mask)[:, None, None, :] * NEG}

    def embed(root, x, ctx):
        return root(input_ids=x["input_ids"], token_type_ids=x.get("token_type_ids"))

    def attention(root, x, ctx):
        return root(x, ctx["mask"])[0]

    def ffn(root, x, ctx):
        return root.output(root.intermediate(x), x)

    def pooler(root, x, ctx):
        return root(x)

    def head(root, x, ctx):
        logits = root(x) if getattr(enc, "pooler", None) is not None else root(x[:, 0])
        return _cross_entropy(logits, ctx["labels"]), logits

    bt, b = ("B", "T", None), ("B", None)
    stages = [Stage("embeddings", "embeddings", enc.embeddings, "", ("",), embed, ("data",), bt)]
    for i, layer in enumerate(layers):
        stages.append(Stage(f"layer.{i}.attention", "attention", layer.attention, "", ("",), attention, bt, bt))
        stages.append(Stage(f"layer.{i}.ffn", "ffn", layer, "", ("intermediate", "output"), ffn, bt, bt))
    if getattr(enc, "pooler", None) is not None:
        stages.append(Stage("pooler", "pooler", enc.pooler, "", ("",), pooler, bt, b))
        stages.append(Stage("classifier", "classifier", base.classifier, "", ("",), head, b, (), head=True))
    else:
        stages.append(Stage("classifier", "classifier", base.classifier, "", ("",), head, bt, (), head=True))
    return Plan("bert", stages, context, {"mask": ("B", None, None, "T"), "labels": ("B",)}, ("B",))


def _llama(model: nn.Module, task: str) -> Plan:
    base = _base(model)
    if task != "causal-lm":
        raise UserError("the onnx backend trains Llama-like models as causal LMs only")
    inner = base.model
    _, _, layers = find_layout(model)

    def context(data):
        ids, mask = data["input_ids"], data["attention_mask"]
        t = ids.shape[1]
        pos = torch.arange(t).unsqueeze(0)
        cos, sin = inner.rotary_emb(torch.zeros(1, dtype=torch.float32), pos)
        i = torch.arange(t)
        blocked = (i[None, :] > i[:, None])[None, None] | (mask[:, None, None, :] == 0)
        add = torch.where(blocked, torch.tensor(NEG), torch.tensor(0.0))
        labels = ids.masked_fill(mask == 0, -100)
        return {"mask": add, "cos": cos, "sin": sin, "labels": labels}

    def embed(root, x, ctx):
        return root(x["input_ids"])

    def attention(root, x, ctx):
        h = root.self_attn(hidden_states=root.input_layernorm(x), attention_mask=ctx["mask"],
                           position_embeddings=(ctx["cos"], ctx["sin"]))[0]
        return x + h

    def mlp(root, x, ctx):
        return x + root.mlp(root.post_attention_layernorm(x))

    def head(root, x, ctx):
        logits = root.lm_head(root.model.norm(x))
        return _cross_entropy(logits[:, :-1], ctx["labels"][:, 1:]), logits

    bt = ("B", "T", None)
    stages = [Stage("embeddings", "embeddings", inner.embed_tokens, "", ("",), embed, ("data",), bt)]
    for i, layer in enumerate(layers):
        stages.append(Stage(f"layer.{i}.attention", "attention", layer, "", ("input_layernorm", "self_attn"),
                            attention, bt, bt))
        stages.append(Stage(f"layer.{i}.ffn", "ffn", layer, "", ("post_attention_layernorm", "mlp"), mlp, bt, bt))
    # the head reads lm_head's weight as an input (often tied to the frozen embeddings), never
    # as a constant baked into the graph
    stages.append(Stage("norm", "norm", base, "", ("model.norm", "lm_head"), head, bt, (), head=True))
    dims = {"mask": ("B", None, "T", "T"), "cos": (None, "T", None), "sin": (None, "T", None),
            "labels": ("B", "T")}
    return Plan("llama", stages, context, dims, ("B", "T"))


def _efficientnet_lite(model: nn.Module, task: str) -> Plan:
    """EfficientNet-Lite0 (`rgft_edge.vision`): stem, one stage per MBConv block, the 1x1 head
    conv with pooling, and the classifier. BatchNorm runs on its frozen statistics (eval mode), as
    the eager runner trains it; dropout is off like every exported graph."""
    if task != "image-classification":
        raise UserError("the onnx backend trains EfficientNet-Lite models for image classification only")
    net = _base(model)

    def stem(root, x, ctx):
        return F.relu6(root._bn0(root._conv_stem(x["pixel_values"])))

    def block(root, x, ctx):
        return root(x)

    def conv_head(root, x, ctx):
        return F.relu6(root._bn1(root._conv_head(x))).mean((2, 3))

    def head(root, x, ctx):
        logits = root(x)
        return _cross_entropy(logits, ctx["labels"]), logits

    img, b = ("B", None, None, None), ("B", None)
    stages = [Stage("stem", "stem", net, "", ("_conv_stem", "_bn0"), stem, ("data",), img)]
    for i, blk in enumerate(net._blocks):
        # blocks of one kind share graphs only when their shapes match (see export_programs)
        stages.append(Stage(f"blocks.{i}", "block", blk, "", ("",), block, img, img))
    stages.append(Stage("conv_head", "conv_head", net, "", ("_conv_head", "_bn1"), conv_head, img, b))
    stages.append(Stage("fc", "fc", net._fc, "", ("",), head, b, (), head=True))
    return Plan("efficientnet-lite", stages, lambda data: {}, {"labels": ("B",)}, ("B",),
                data_dims={"pixel_values": img})


PLANS = {"bert": _bert, "llama": _llama, "efficientnet-lite": _efficientnet_lite}


def _family(model: nn.Module) -> str:
    from rgft_edge.vision import EfficientNetLite0

    if isinstance(_base(model), EfficientNetLite0):
        return "efficientnet-lite"
    found = find_layout(model)
    return found[0].family if found else "generic"


def plan(model: nn.Module, task: str) -> Plan:
    """The stage chain of a prepared model; a clear refusal for families without a plan."""
    family = _family(model)
    if family not in PLANS:
        other = "torch" if task == "image-classification" else "torch, executorch or onnxruntime"
        raise UserError(f"the onnx backend has stage plans for {', '.join(PLANS)} models; this is a "
                        f"{family} model (use --backend {other})")
    p = PLANS[family](model, task)
    names = {id(m): n for n, m in model.named_modules()}
    for s in p.stages:
        s.root_name = names[id(s.root)]
        s.params = [n for n in stage_tensors(s.root)
                    if any(path == "" or n.startswith(path + ".") for path in s.paths)]
    return p


def stage_tensors(root: nn.Module) -> dict[str, torch.Tensor]:
    """What a stage's graphs read as inputs: its parameters, and its floating buffers (BatchNorm
    statistics: blocks that share a graph have their own), never baked in as constants."""
    out = dict(root.named_parameters(remove_duplicate=False))
    out.update((n, b) for n, b in root.named_buffers(remove_duplicate=False) if b.is_floating_point())
    return out
