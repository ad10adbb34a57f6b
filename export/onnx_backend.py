"""Standard-ONNX training graphs: per stage a forward graph and input-/weight-gradient graphs.

Any stock ONNX Runtime (`onnxruntime.InferenceSession`, no training build, no torch) runs them; the
device runner (`device_runners/onnx_runner.py`) is the autograd engine that chains them only as
deep as a step's selection reaches. Per stage kind (`export/onnx_stages.py`) up to four graphs:

- `fwd`  (x, context, weights) -> y                       every stage below the lowest selected one,
                                                          and evaluation
- `save_v` (x, context, weights) -> y, saved activations  stages from the lowest selected one up
- `x`    (saved, context, gy, weights) -> dL/dx           stages above the lowest selected one
- `w`    (saved, context, gy, weights) -> dL/dW_train     the lowest selected stage
- `xw`   both                                             selected stages above the lowest
- `rc_v` (x, context, gy, weights) -> what `v` returns    `v` recomputing its forward from x: the
                                                          runner's lean mode (under a memory budget)

Each gradient variant is traced jointly with its forward and cut in two by `onnx_saved.split_saved`
(the forward keeps what the backward reads: no recompute). The head's gradient graphs stay joint:
(x, context, weights) -> loss, logits, gradients, so a step runs the head once.

Recipe (docs/onnx.md): the gradient function is traced to ATen with `make_fx(tracing_mode=
"symbolic")` around `torch.autograd.grad`, then exported with `torch.onnx.export(dynamo=True)` and
named dynamic dims. Weights are graph inputs, so one graph serves every layer of a kind and the
runner owns the weights and the optimizer. Frozen int8 weights (torchao, per row) become int8
inputs + `DequantizeLinear`. Every graph is checked to use only default-domain operators.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn

from .onnx_saved import split_saved, without_outputs
from .onnx_stages import Stage, plan
from .onnxruntime_backend import float_copy
from .prepare import PreparedModel, example_inputs
from .stage_walk import stage_variants, walk

EXAMPLE = {"B": 7, "T": 37}  # example sizes equal to no model constant, so no dim gets specialised
OPSET = 18
VARIANTS = ("fwd", "x", "w", "xw")


def _backward_decompositions() -> dict:
    """Backward ops the ONNX exporter has no translation for (SiLU's in Llama's MLP; a CNN's
    convolutions, BatchNorm and ReLU6), written as the forward ops they are made of."""
    from torch._decomp import get_decompositions

    from .onnx_conv import DECOMPOSITIONS

    aten = torch.ops.aten
    table = get_decompositions([aten.silu_backward, aten.sigmoid_backward, aten.tanh_backward,
                                aten.threshold_backward, aten.hardswish_backward, aten.hardsigmoid_backward,
                                aten.hardtanh_backward, aten.native_batch_norm_backward])
    return {**table, **DECOMPOSITIONS}  # CNNs: ReLU6, frozen BatchNorm, convolutions


_BACKWARD_DECOMPOSITIONS = _backward_decompositions()


class _StageModule(nn.Module):
    def __init__(self, stage: Stage):
        super().__init__()
        self.root, self.stage = stage.root, stage

    def forward(self, x, ctx):
        return self.stage.body(self.root, x, ctx)


def _graph_fn(stage: Stage, variant: str, data_names: list[str], ctx_names: list[str],
              train: list[str], frozen: list[str]):
    """Flat-argument function of one graph: (x..., ctx..., [gy], trainable..., frozen...)."""
    mod = _StageModule(stage)
    first = stage.x_dims == ("data",)
    nx = len(data_names) if first else 1
    takes_gy = variant != "fwd" and not stage.head

    def call(x, ctx, wt, wf):
        params = {"root." + n: t for n, t in zip(train + frozen, list(wt) + list(wf))}
        return torch.func.functional_call(mod, params, (x, ctx))

    def f(*args):
        xs, rest = args[:nx], args[nx:]
        ctx, rest = dict(zip(ctx_names, rest[:len(ctx_names)])), rest[len(ctx_names):]
        gy, rest = (rest[0], rest[1:]) if takes_gy else (None, rest)
        wt, wf = rest[:len(train)], rest[len(train):]
        x = dict(zip(data_names, xs)) if first else xs[0]
        if variant == "fwd":
            return call(x, ctx, wt, wf)
        want_x, want_w = variant in ("x", "xw"), variant in ("w", "xw")
        with torch.enable_grad():
            if want_x:
                x = x.detach().requires_grad_(True)
            wt = [t.detach().requires_grad_(want_w) for t in wt]
            out = call(x, ctx, wt, wf)
            y = out[0] if stage.head else out
            targets = ([x] if want_x else []) + (list(wt) if want_w else [])
            grads = tuple(torch.autograd.grad(y, targets, gy, allow_unused=True, materialize_grads=True))
            # the forward's outputs too: split_saved cuts this joint graph into a forward that
            # saves activations and a backward that reads them (the head's stays joint)
            return (tuple(out) if stage.head else (out,)) + tuple(g.detach() for g in grads)

    return f


def _dims(dims: tuple, Dim: dict) -> dict | None:
    spec = {i: Dim[d] for i, d in enumerate(dims) if d is not None}
    return spec or None


def _export(fn, args: list, names: list[str], dims: list, outputs: list[str], path: Path, Dim: dict) -> list[str]:
    import onnx
    from torch.fx.experimental.proxy_tensor import make_fx

    gm = make_fx(fn, tracing_mode="symbolic", decomposition_table=_BACKWARD_DECOMPOSITIONS,
                 _allow_non_fake_inputs=True)(*args)
    for node in gm.graph.nodes:  # tensor constants (e.g. position-id buffers) as real buffers, so
        if node.op == "get_attr":  # torch.export lifts them instead of meeting them unfaked
            value = getattr(gm, node.target)
            if isinstance(value, torch.Tensor) and node.target not in dict(gm.named_buffers()):
                delattr(gm, node.target)
                gm.register_buffer(node.target, value)
    prog = torch.onnx.export(gm, tuple(args), dynamic_shapes=tuple(_dims(d, Dim) for d in dims),
                             input_names=names, output_names=outputs, dynamo=True, optimize=True,
                             opset_version=OPSET, verbose=False)
    prog.save(str(path))
    mp = onnx.load(str(path))
    foreign = sorted({f"{n.domain}:{n.op_type}" for n in mp.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        raise RuntimeError(f"{path.name}: exported operators outside the default ONNX domain: {foreign}")
    return sorted({n.op_type for n in mp.graph.node})


def _int8_inputs(path: Path, int8: dict[str, bool]) -> None:
    """Float weight input `w` -> int8 input `w.int8` + per-row `w.scale` (+ `w.zp`) + DequantizeLinear."""
    import onnx
    from onnx import TensorProto, helper

    mp = onnx.load(str(path))
    g = mp.graph
    nodes, keep = [], []
    for inp in g.input:
        if inp.name not in int8:
            keep.append(inp)
            continue
        shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        n = inp.name
        keep += [helper.make_tensor_value_info(n + ".int8", TensorProto.INT8, shape),
                 helper.make_tensor_value_info(n + ".scale", TensorProto.FLOAT, [shape[0]])]
        ins = [n + ".int8", n + ".scale"]
        if int8[n]:
            keep.append(helper.make_tensor_value_info(n + ".zp", TensorProto.INT8, [shape[0]]))
            ins.append(n + ".zp")
        nodes.append(helper.make_node("DequantizeLinear", ins, [n], axis=0, name=n + "/dequantize"))
    del g.input[:]
    g.input.extend(keep)
    rest = list(g.node)
    del g.node[:]
    g.node.extend(nodes + rest)
    onnx.checker.check_model(mp)
    onnx.save(mp, str(path))


def _examples(model: nn.Module, prep: PreparedModel) -> dict[str, torch.Tensor]:
    """Token inputs of the tracing size, some rows padded (the masks' padded branch is traced);
    images of the artifact's fixed size."""
    if prep.options.task == "image-classification":
        size = prep.options.image_size
        g = torch.Generator().manual_seed(0)
        return {"pixel_values": torch.randn(EXAMPLE["B"], 3, size, size, generator=g)}
    names = list(example_inputs(model, prep.options))
    b, t = EXAMPLE["B"], EXAMPLE["T"]
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 100))
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1:3, t - 9:] = 0
    out = {"input_ids": torch.randint(1, max(2, vocab), (b, t), generator=g), "attention_mask": mask}
    if "token_type_ids" in names:
        out["token_type_ids"] = torch.zeros(b, t, dtype=torch.long)
    return {n: out[n] for n in names}


def export_programs(prep: PreparedModel, out: Path, cuts: list[int]) -> tuple[list[dict], dict]:
    del cuts  # cost follows each step's selection: no cut-depth programs
    model, quant = float_copy(prep.model)
    model.eval()
    task = prep.options.task
    p = plan(model, task)
    ex = _examples(model, prep)
    data_names = list(ex)
    Dim = {k: torch.export.Dim(k, min=1 if k == "B" else 2, max=4096) for k in EXAMPLE}
    gdir = out / "onnx"
    gdir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        ctx = p.context(ex)
    ctx_out = list(ctx)  # what the context graph returns (the LM plan includes the labels; a CNN: nothing)
    labels = (torch.randint(0, max(2, len(prep.options.labels)), (EXAMPLE["B"],))
              if task != "causal-lm" else ctx["labels"])
    ctx["labels"] = labels
    ctx_names = list(p.context_dims)
    graphs: dict[str, dict] = {}
    stages, ops = [], set()
    t0 = time.perf_counter()
    for w in walk(model, quant, p, prep.table, ex, ctx):
        st, train, frozen = w.stage, w.train, w.frozen
        if w.new_kind:  # the first stage of its kind and layout: export its graphs
            files = {}
            x_args = [w.x[n] for n in data_names] if w.first else [w.x]
            x_names = data_names if w.first else ["x"]
            x_dims = [p.data_dims[n] for n in data_names] if w.first else [st.x_dims]
            for v in stage_variants(w):
                fn = _graph_fn(st, v, data_names, ctx_names, train, frozen)
                gy = [] if v == "fwd" or st.head else [torch.randn_like(w.y)]
                gy_dims = [] if v == "fwd" or st.head else [st.y_dims]
                args = x_args + [ctx[n] for n in ctx_names] + gy + [w.full[n].detach() for n in train + frozen]
                names = x_names + ctx_names + (["gy"] if gy else []) + train + frozen
                dims = x_dims + [p.context_dims[n] for n in ctx_names] + gy_dims + [()] * (len(train) + len(frozen))
                y_names = ["loss", "logits"] if st.head else ["y"]
                outputs = y_names + ([] if v == "fwd" else
                                     (["gx"] if v in ("x", "xw") else []) + (["g." + n for n in train] if v in ("w", "xw") else []))
                rel = f"onnx/{w.kind}.{v}.onnx"
                ops |= set(_export(fn, args, names, dims, outputs, out / rel, Dim))
                rels = {v: rel}
                if v != "fwd" and not st.head:  # forward saving activations + backward reading them
                    rels["rc_" + v] = f"onnx/{w.kind}.rc_{v}.onnx"  # and one that recomputes instead
                    without_outputs(out / rel, out / rels["rc_" + v], y_names)
                    rels["save_" + v] = f"onnx/{w.kind}.save_{v}.onnx"
                    split_saved(out / rel, out / rels["save_" + v], out / rel, x_names, "gy", y_names)
                for name, r in rels.items():
                    if w.int8:
                        _int8_inputs(out / r, w.int8)
                    files[name] = r
            graphs[w.kind] = {"kind": st.kind, "files": files}
        stages.append(w.spec())
    programs = [{"name": f"{k}.{v}", "kind": "graph", "files": {"onnx": f}}
                for k, g in graphs.items() for v, f in g["files"].items()]
    if ctx_out:  # a CNN needs no context (its labels come with the batch)
        ctx_fn = lambda *a: tuple(p.context(dict(zip(data_names, a))).values())  # noqa: E731
        ops |= set(_export(ctx_fn, list(ex.values()), data_names, [p.data_dims[n] for n in data_names],
                           ctx_out, out / "onnx/context.onnx", Dim))
        programs.append({"name": "context", "kind": "graph", "files": {"onnx": "onnx/context.onnx"}})
    info = {"opset": OPSET, "family": p.family, "task": task, "data_inputs": data_names,
            "data_dtypes": {n: str(t.dtype).removeprefix("torch.") for n, t in ex.items()},
            "context_outputs": ctx_out, "context_inputs": ctx_names, "stages": stages,
            "graphs": {k: g["files"] for k, g in graphs.items()}, "operators": sorted(ops),
            "saved_activations": True, "dynamic_axes": True, "dropout": "off (graphs traced in eval mode)",
            "export_graphs_s": round(time.perf_counter() - t0, 1)}
    return programs, info
