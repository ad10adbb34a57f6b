"""ExecuTorch stage programs: the model as a chain of stages (one per component, the plans of
`export/onnx_stages.py`), each stage kind a few methods of one train.pte, so that a step which
trains the components S computes weight gradients for S only (`--executorch-layout stages`).

Per stage kind, methods named `train_<kind>.<graph>`:

- `fwd`     (x, context, weights) -> y                    stages below the lowest selected one, and
                                                          evaluation (the head: loss, logits)
- `save_v`  (x, context, weights) -> y, saved activations  stages from the lowest selected one up
- `v`       (saved, context, gy, weights) -> gradients     v = `x` (input gradient only: stages
                                                          between), `w` (the trainable weights':
                                                          the lowest selected stage), `xw` (both)
- the head's `x` / `w` / `xw` stay joint: (x, context, weights) -> loss, logits, gradients.

Each gradient graph is `make_fx` of the stage's forward and `torch.autograd.grad` traced together
(static shapes: ExecuTorch programs have a fixed batch), cut in two by `fx_split.split_joint`.
Every weight is a method input — trainable ones the runner's master arrays, frozen ones loaded
once from weights/frozen.safetensors, int8 kept int8 and dequantized inside the method — so one
method serves every layer of its kind, and graph inputs are not memory-planned: the runtime reads
the runner's arrays in place instead of copying them into its arena every call.

Against the cut-depth layout (export/executorch_backend.py) this trades one joint graph per cut for
more, smaller methods and saved activations copied across method boundaries; benchmarks/runners.py
measures both. There is no `forward` inference method: the `fwd` chain is the inference path.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn

from rgft_edge.errors import UserError

from .executorch_lowering import _decompositions, _to_edge
from .fx_split import split_joint
from .onnx_backend import _graph_fn
from .onnx_stages import plan
from .onnxruntime_backend import float_copy
from .prepare import PreparedModel, example_inputs
from .stage_walk import stage_variants, walk


class _Graph(nn.Module):
    def __init__(self, gm: torch.fx.GraphModule):
        super().__init__()
        self.gm = gm

    def forward(self, *args):
        out = self.gm(*args)
        return (out,) if isinstance(out, torch.Tensor) else tuple(out)


def _addmm_as_mm(bias, x, w, beta=1, alpha=1):
    """The portable addmm is ~15x slower than mm, and XNNPACK wants mm."""
    y = torch.mm(x, w)
    return (y if alpha == 1 else alpha * y) + (bias if beta == 1 else beta * bias)


def _trace(fn, args: list, kernels: str) -> torch.fx.GraphModule:
    from torch.fx.experimental.proxy_tensor import make_fx

    from torch._decomp import get_decompositions

    aten = torch.ops.aten
    table = dict(_decompositions(kernels))
    # activation backwards ExecuTorch's kernel libraries lack (silu_backward: Llama's MLP), as the
    # forward ops they are made of
    table.update(get_decompositions([aten.silu_backward, aten.sigmoid_backward, aten.tanh_backward,
                                     aten.threshold_backward, aten.hardtanh_backward]))
    if kernels != "portable":
        table[torch.ops.aten.addmm.default] = _addmm_as_mm
    return make_fx(fn, tracing_mode="real", decomposition_table=table)(*args)


def _dequantizing(fn, n_before: int, frozen: list[str], int8: dict[str, bool]):
    """`fn` with each int8 frozen weight taken as (int8 values, per-row scale[, zero point])."""
    def wrapped(*args):
        head, rest, weights = list(args[:n_before]), list(args[n_before:]), []
        for n in frozen:
            if n not in int8:
                weights.append(rest.pop(0))
                continue
            q, scale = rest.pop(0), rest.pop(0)
            shape = (-1,) + (1,) * (q.dim() - 1)  # per-row scale and zero point
            zp = rest.pop(0).to(torch.float32).reshape(shape) if int8[n] else 0.0
            weights.append((q.to(torch.float32) - zp) * scale.reshape(shape))
        return fn(*head, *weights)
    return wrapped


def layout_for(prep: PreparedModel) -> str:
    """`stages` or `cuts`: as asked, or with `auto`, stages where the model family has a stage plan."""
    layout = prep.options.executorch_layout
    if layout != "auto":
        return layout
    try:
        plan(prep.model, prep.options.task)
    except UserError:
        return "cuts"
    return "stages"


def export_stage_programs(prep: PreparedModel, out: Path) -> tuple[list[dict], dict]:
    from executorch.exir import ExecutorchBackendConfig
    from executorch.exir.passes import MemoryPlanningPass
    from torch.export import export

    kernels = prep.options.executorch_kernels
    model, quant = float_copy(prep.model)
    model.eval()
    task = prep.options.task
    p = plan(model, task)
    ex = example_inputs(model, prep.options)
    data_names = list(ex)
    with torch.no_grad():
        ctx = p.context(ex)
    ctx_out = list(ctx)  # what the context method returns (the LM plan includes the labels)
    if task != "causal-lm":
        ctx["labels"] = torch.zeros(ex["input_ids"].shape[0], dtype=torch.long)
    ctx_names = list(p.context_dims)
    eps, methods, stages = {}, {}, []
    t0 = time.perf_counter()

    def add(name: str, gm: torch.fx.GraphModule, args: list, inputs: list[str], outputs: list[str]) -> None:
        args = [a.contiguous() for a in args]  # the runner passes contiguous arrays (default dim order)
        eps[name] = export(_Graph(gm), tuple(args), strict=False)
        methods[name] = {"inputs": inputs, "outputs": outputs}

    for w in walk(model, quant, p, prep.table, ex, ctx):
        stages.append(w.spec())
        if not w.new_kind:
            continue
        st, train, frozen = w.stage, w.train, w.frozen
        x_args = [w.x[n] for n in data_names] if w.first else [w.x]
        x_desc = [f"data:{n}" for n in data_names] if w.first else ["x"]
        w_args, w_desc = [w.full[n].detach() for n in train], [f"w:{n}" for n in train]
        for n in frozen:
            if n in w.int8:
                q = quant[w.gname[n]]
                w_args += [torch.from_numpy(q[0]), torch.from_numpy(q[1])] + ([torch.from_numpy(q[2])] if w.int8[n] else [])
                w_desc += [f"q:{n}", f"s:{n}"] + ([f"z:{n}"] if w.int8[n] else [])
            else:
                w_args.append(w.full[n].detach())
                w_desc.append(f"f:{n}")
        y_desc = ["loss", "logits"] if st.head else ["y"]
        for v in stage_variants(w):
            gy = [] if v == "fwd" or st.head else [torch.randn_like(w.y)]
            lead = x_args + [ctx[n] for n in ctx_names] + gy
            desc = x_desc + [f"ctx:{n}" for n in ctx_names] + (["gy"] if gy else []) + w_desc
            fn = _dequantizing(_graph_fn(st, v, data_names, ctx_names, train, frozen), len(lead) + len(train),
                               frozen, w.int8)
            args = lead + w_args
            gm = _trace(fn, args, kernels)
            grads = ((["gx"] if v in ("x", "xw") else []) + ([f"g:{n}" for n in train] if v in ("w", "xw") else []))
            if v == "fwd" or st.head:  # one method: the forward, or the head's joint graph
                add(f"train_{w.kind}.{v}", gm, args, desc, y_desc + grads)
                continue
            sp = split_joint(gm, list(range(len(x_args))), len(x_args) + len(ctx_names), 1)
            with torch.no_grad():
                fwd_out = sp.forward(*[args[i] for i in sp.forward_inputs])
            saved = [f"saved:{i}" for i in range(sp.saved)]
            add(f"train_{w.kind}.save_{v}", sp.forward, [args[i] for i in sp.forward_inputs],
                [desc[i] for i in sp.forward_inputs], y_desc + saved)
            add(f"train_{w.kind}.{v}", sp.backward, list(fwd_out[1:]) + [args[i] for i in sp.backward_inputs],
                saved + [desc[i] for i in sp.backward_inputs], grads)
    if ctx_out:
        def context(*a):
            return tuple(p.context(dict(zip(data_names, a))).values())
        add("train_context", _trace(context, list(ex.values()), kernels), list(ex.values()),
            [f"data:{n}" for n in data_names], [f"ctx:{n}" for n in ctx_out])
    t_trace = time.perf_counter() - t0
    edge = _to_edge(eps, kernels)
    # graph inputs not memory-planned: the runtime reads the runner's arrays in place
    prog = edge.to_executorch(ExecutorchBackendConfig(memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False)))
    edir = out / "executorch"
    edir.mkdir(parents=True, exist_ok=True)
    (edir / "train.pte").write_bytes(prog.buffer)
    programs = [{"name": "train", "kind": "stage-methods", "files": {"program": "executorch/train.pte"},
                 "methods": sorted(methods)}]
    info = {"layout": "stages", "family": p.family, "task": task, "data_inputs": data_names,
            "context_outputs": ctx_out, "stages": stages, "methods": methods, "saved_activations": True,
            "dynamic_axes": False, "dropout": "off (graphs traced in eval mode)", "kernels": kernels,
            "trace_s": round(t_trace, 1), "lower_s": round(time.perf_counter() - t0 - t_trace, 1)}
    return programs, info
