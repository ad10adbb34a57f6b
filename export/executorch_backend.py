"""ExecuTorch training programs: one joint forward/backward method per backprop cut depth.

Recipe (verified on executorch 1.5.1 / torch 2.13): `torch.export` (strict=False) of a module
returning (loss, logits) -> decompose `new_empty_strided` (no out-variant in the portable library,
needed with torchao int8) -> `_export_forward_backward` -> `to_edge` with IR checks off ->
`to_executorch`. All cut methods go into one `train.pte`; frozen constants (the int8 base) are
stored once and shared by every method.

Kernels (`PrepareOptions.executorch_kernels`), measured on MiniLM in benchmarks/runners.py:
- `xnnpack` (default): the training methods are lowered with XNNPACK's partitioner, weights
  treated as runtime values (they are method inputs and change every step), so the matmuls of
  forward *and* backward and most elementwise / layout ops run as XNNPACK subgraphs.
  Clone / dim-order-copy configs are left out: XNNPACK refuses a subgraph whose output is one of
  its inputs, which those no-op copies create in joint graphs (softmax and tanh outputs saved for
  backward).
- `optimized`: `linear` decomposed to `matmul + add`, so matmuls reach the optimized kernel
  library's BLAS `mm`; everything else on the kernels the runtime registers.
- `portable`: ExecuTorch's default lowering (`linear` as `addmm`, which only has a portable,
  naive kernel) — the baseline the other two are measured against.

The trainable parameters are *inputs* of every method (through `torch.func.functional_call`), in
one fixed order; a method marks only its cut's share as requiring grad and returns
(loss, logits, gradients of those inputs). So no method holds a private copy of a weight another
method trains: the runner's master tensors are the only copy, and a shallow cut always sees what a
deep cut just updated. A forward-only `forward` method in the same train.pte (sharing the frozen
constants) reads the *adapted* weights from a `.ptd` the
device writes after training. Dropout is off in exported programs (eval-mode export).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn

from .executorch_lowering import _decompositions, _to_edge
from .prepare import PreparedModel, example_inputs

PREFIX = "model."  # wrapper attribute: ExecuTorch FQNs are "model." + parameter names
PTD_TAG = "_default_external_constant"


class _WithLoss(nn.Module):
    """(data inputs..., labels, trainable params...) -> (loss, logits)."""

    def __init__(self, model: nn.Module, task: str, input_names: list[str], param_names: list[str]):
        super().__init__()
        self.model, self.task = model, task
        self.input_names, self.param_names = input_names, param_names

    def forward(self, *args):
        k = len(self.input_names)
        inputs = dict(zip(self.input_names, args[:k]))
        labels, params = args[k], dict(zip(self.param_names, args[k + 1:]))
        if self.task == "causal-lm":
            out = torch.func.functional_call(self.model, params, args=(), kwargs={**inputs, "labels": labels})
            return out.loss, out.logits.detach()
        logits = torch.func.functional_call(self.model, params, args=(), kwargs=inputs).logits
        return nn.functional.cross_entropy(logits, labels), logits.detach()


class _Logits(nn.Module):
    def __init__(self, model: nn.Module, input_names: list[str]):
        super().__init__()
        self.model, self.input_names = model, input_names

    def forward(self, *args):
        return self.model(**dict(zip(self.input_names, args))).logits


def _joint(module: nn.Module, inputs: tuple, kernels: str = "optimized"):
    from torch.export import export
    from torch.export.experimental import _export_forward_backward

    ep = export(module, inputs, strict=False).run_decompositions(_decompositions(kernels))
    joint = _export_forward_backward(ep)
    # the backward graph brings its own ops (e.g. empty_permuted from Llama's attention)
    return joint.run_decompositions(_decompositions(kernels))


def exportable_copy(prep: PreparedModel) -> nn.Module:
    """Eval-mode copy with torchao tensor subclasses unwrapped into plain parametrizations."""
    model = copy.deepcopy(prep.model).eval()
    if prep.quantized:
        from torchao.utils import unwrap_tensor_subclass

        unwrap_tensor_subclass(model)
    trainable = prep.table.param_names()
    for n, p in model.named_parameters():
        p.requires_grad_(n in trainable)
    return model


def export_programs(prep: PreparedModel, out: Path, cuts: list[int]) -> tuple[list[dict], dict]:
    from executorch.exir import ExecutorchBackendConfig

    from .executorch_stages import export_stage_programs, layout_for

    if layout_for(prep) == "stages":
        return export_stage_programs(prep, out)
    kernels = prep.options.executorch_kernels
    model = exportable_copy(prep)
    ex = example_inputs(model, prep.options)
    names = list(ex)
    labels = (ex["input_ids"] if prep.options.task == "causal-lm"
              else torch.zeros(ex["input_ids"].shape[0], dtype=torch.long))
    table = prep.table
    trainable = sorted(table.param_names())
    named = dict(model.named_parameters())
    wrapper = _WithLoss(model, prep.options.task, names, trainable)
    for p in model.parameters():
        p.requires_grad_(False)  # the trainable ones arrive as inputs
    eps, programs = {}, []
    for d in cuts:
        members = [i for i, c in enumerate(table) if c.depth >= d]
        on = table.param_names(members)
        params = tuple(named[n].detach().clone().requires_grad_(n in on) for n in trainable)
        eps[f"train_d{d}"] = _joint(wrapper, tuple(ex.values()) + (labels,) + params, kernels)
        programs.append({"name": f"train_d{d}", "kind": "train", "min_depth": d,
                         "files": {"program": "executorch/train.pte"}, "components": members,
                         "trainable_params": [n for n in trainable if n in on]})
    for n in trainable:
        named[n].requires_grad_(True)
    # Forward-only method for inference, in the same program so it shares the frozen constants;
    # its trainable weights are external, read from a .ptd (the adapted one after training).
    from torch.export import export

    infer = _Logits(model, names).eval()
    eps["forward"] = export(infer, tuple(ex.values()), strict=False).run_decompositions(_decompositions(kernels))
    edge = _to_edge(eps, kernels)
    ph2fqn = dict(edge.exported_program("forward").graph_signature.inputs_to_parameters)
    ext = {PREFIX + n for n in trainable}
    prog = edge.to_executorch(ExecutorchBackendConfig(
        external_constants=lambda node: PTD_TAG if ph2fqn.get(node.target) in ext else None))
    edir = out / "executorch"
    edir.mkdir(parents=True, exist_ok=True)
    (edir / "train.pte").write_bytes(prog.buffer)
    prog.write_tensor_data_to_file(str(edir))  # the initial trainable weights, as a .ptd
    if not (edir / f"{PTD_TAG}.ptd").is_file():
        raise RuntimeError("ExecuTorch wrote no external weight file for the inference method")
    (out / "weights" / "frozen.safetensors").unlink()  # the frozen base lives in train.pte
    programs.append({"name": "forward", "kind": "inference", "min_depth": None,
                     "files": {"program": "executorch/train.pte", "weights": f"executorch/{PTD_TAG}.ptd"}})
    info = {"param_prefix": PREFIX, "data_inputs": names, "label_input": "labels",
            "param_inputs": trainable, "outputs": ["loss", "logits", "grads of trainable inputs"],
            "dynamic_axes": False, "dropout": "off (eval-mode export)", "weights_tag": PTD_TAG,
            "kernels": kernels, "layout": "cuts"}
    return programs, info
