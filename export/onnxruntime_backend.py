"""ONNX Runtime training artifacts: one ONNX graph, one artifact set per backprop cut depth.

Recipe (verified on onnxruntime-training-cpu 1.19.2; docs/artifacts.md): legacy exporter at opset 14
in training mode with dynamic batch/sequence axes; frozen int8 weights rewritten as int8 tensors +
DequantizeLinear; `generate_artifacts` once per cut with that cut's trainable set.

Every frozen tensor (int8 weights, scales, float embeddings, norms) becomes a graph *input* instead
of an initializer: the runner loads the frozen base once (weights/frozen.safetensors, int8 kept
int8) and feeds the same arrays to whichever cut's program runs. So the programs share one copy
of the base in memory, checkpoints hold only trainable parameters (nominal for every cut but the
bottom one), and ORT cannot constant-fold the int8 weights back to float. The runner owns the
optimizer, so no ORT optimizer graph is generated.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .prepare import PreparedModel, example_inputs
from .weights import is_int8_tensor

PREFIX = "m."  # the wrapper's attribute: ONNX names are "m." + model parameter names
OPSET = 14


class _LossAndLogits(nn.Module):
    """Loss first (the training graph's output 0), logits second; labels as the last input."""

    def __init__(self, model: nn.Module, task: str, input_names: list[str]):
        super().__init__()
        self.m = model
        self.task, self.input_names = task, input_names

    def forward(self, *args):
        inputs = dict(zip(self.input_names, args[:-1]))
        labels = args[-1]
        if self.task == "causal-lm":
            out = self.m(**inputs, labels=labels)
            return out.loss, out.logits
        logits = self.m(**inputs).logits
        return nn.functional.cross_entropy(logits, labels), logits


def float_copy(model: nn.Module) -> tuple[nn.Module, dict[str, tuple]]:
    """A copy whose int8 weights are plain float tensors; returns their (qdata, scale, zp)."""
    model = copy.deepcopy(model)
    quant = {}
    for name, p in list(model.named_parameters()):
        if is_int8_tensor(p):
            zp = p.zero_point
            quant[name] = (p.qdata.numpy().copy(), p.scale.float().numpy().reshape(-1).copy(),
                           None if zp is None else zp.numpy().reshape(-1).astype(np.int8))
            owner, attr = name.rsplit(".", 1)
            setattr(model.get_submodule(owner), attr, nn.Parameter(p.dequantize().float(), requires_grad=False))
    return model, quant


def int8_rewrite(mp, quant: dict[str, tuple]) -> list[str]:
    """Frozen float initializers -> int8 + per-row scale + DequantizeLinear; the int8 values are
    the host quantizer's, so every backend trains the same int8 model."""
    import onnx
    from onnx import helper, numpy_helper

    g = mp.graph
    inits = {i.name: i for i in g.initializer}
    added, new_nodes = [], []
    for tname, (q, scale, zp) in quant.items():
        name = PREFIX + tname
        if name not in inits:
            continue
        g.initializer.remove(inits[name])
        zp = np.zeros_like(scale, dtype=np.int8) if zp is None else zp
        g.initializer.extend([numpy_helper.from_array(q.astype(np.int8), name + ".int8"),
                              numpy_helper.from_array(scale.astype(np.float32), name + ".scale"),
                              numpy_helper.from_array(zp.astype(np.int8), name + ".zp")])
        out = name + ".dq"
        for node in g.node:
            for k, i in enumerate(node.input):
                if i == name:
                    node.input[k] = out
        new_nodes.append(helper.make_node("DequantizeLinear", [name + ".int8", name + ".scale", name + ".zp"],
                                          [out], axis=0, name=name + "/DequantizeLinear"))
        added += [name + ".int8", name + ".scale", name + ".zp"]
    nodes = new_nodes + list(g.node)  # dequantize first keeps the graph topologically sorted
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(mp)
    return added


@contextlib.contextmanager
def quiet_stderr():
    """Silence the C++ runtime's stderr (fd 2) for a block; replay it if the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", "replace")[-4000:])
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def externalize_frozen(mp, trainable: set[str]) -> dict[str, dict]:
    """Turn every non-trainable initializer into a graph input of the same name, type and shape;
    returns {input name: {key in weights/frozen.safetensors, shape, dtype}}."""
    from onnx import helper, numpy_helper

    g = mp.graph
    moved = {}
    for init in list(g.initializer):
        if init.name in trainable:
            continue
        dtype = str(numpy_helper.to_array(init).dtype)
        g.initializer.remove(init)
        g.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        moved[init.name] = {"key": _frozen_key(init.name), "shape": list(init.dims), "dtype": dtype}
    return moved


def export_programs(prep: PreparedModel, out: Path, cuts: list[int]) -> tuple[list[dict], dict]:
    import onnx
    import onnxruntime as ort
    from onnxruntime.training import artifacts

    ort.set_default_logger_severity(3)
    model, quant = float_copy(prep.model)
    model.eval()
    ex = example_inputs(model, prep.options)
    names = list(ex)
    labels = (ex["input_ids"] if prep.options.task == "causal-lm"
              else torch.zeros(ex["input_ids"].shape[0], dtype=torch.long))
    wrapper = _LossAndLogits(model, prep.options.task, names)
    dyn = {n: {0: "batch", 1: "seq"} for n in names}
    dyn["labels"] = {0: "batch", 1: "seq"} if prep.options.task == "causal-lm" else {0: "batch"}
    dyn["logits"] = {0: "batch"}
    odir = out / "onnxruntime"
    odir.mkdir(parents=True, exist_ok=True)
    tmp = odir / "model.onnx.tmp"
    torch.onnx.export(wrapper, tuple(ex.values()) + (labels,), str(tmp), dynamo=False,
                      opset_version=OPSET, do_constant_folding=False,
                      training=torch.onnx.TrainingMode.TRAINING, input_names=names + ["labels"],
                      output_names=["loss", "logits"], dynamic_axes=dyn)
    mp = onnx.load(str(tmp))
    tmp.unlink()
    int8_names = int8_rewrite(mp, quant)
    table = prep.table
    all_trainable = {PREFIX + n for n in table.param_names()}
    frozen_inputs = externalize_frozen(mp, all_trainable)
    all_params = [i.name for i in mp.graph.initializer]
    programs = []
    for j, d in enumerate(cuts):
        members = [i for i, c in enumerate(table) if c.depth >= d]
        req = sorted(PREFIX + n for n in table.param_names(members))
        missing = [n for n in req if n not in all_params]
        if missing:
            raise RuntimeError(f"ONNX export lost trainable parameters: {missing[:3]}")
        frozen = [n for n in all_params if n not in req]
        prefix = f"d{d}_"
        with quiet_stderr():  # the gradient builder logs every graph transform at info level
            artifacts.generate_artifacts(mp, requires_grad=req, frozen_params=frozen, loss=None,
                                         optimizer=None, artifact_directory=str(odir), prefix=prefix,
                                         nominal_checkpoint=j > 0)
        if j == 0:
            files = {k: f"onnxruntime/{prefix}{k}" for k in ("training_model.onnx", "eval_model.onnx", "checkpoint")}
        else:  # weights come from the bottom cut's checkpoint; its eval graph serves every cut
            (odir / f"{prefix}checkpoint").unlink()
            (odir / f"{prefix}eval_model.onnx").unlink()
            files = {"training_model.onnx": f"onnxruntime/{prefix}training_model.onnx",
                     "checkpoint": f"onnxruntime/{prefix}nominal_checkpoint"}
        for f in files.values():
            if not (out / f).exists():
                raise RuntimeError(f"generate_artifacts did not write {f}")
        programs.append({"name": f"train_d{d}", "kind": "train", "min_depth": d, "files": files,
                         "nominal_checkpoint": j > 0, "components": members,
                         "trainable_params": [n[len(PREFIX):] for n in req]})
    (out / "weights" / "trainable.safetensors").unlink()  # the bottom cut's checkpoint holds them
    info = {"opset": OPSET, "param_prefix": PREFIX, "int8_weights": len(int8_names) // 3,
            "data_inputs": names, "label_input": "labels", "outputs": ["loss", "logits"],
            "dynamic_axes": True, "weights_source": programs[0]["files"]["checkpoint"],
            "frozen_inputs": frozen_inputs}
    return programs, info


def _frozen_key(onnx_name: str) -> str:
    """weights/frozen.safetensors key of a frozen graph input (see export/weights.py)."""
    name = onnx_name[len(PREFIX):] if onnx_name.startswith(PREFIX) else onnx_name
    for suffix, key in ((".int8", "::qdata"), (".scale", "::scale"), (".zp", "::zero_point")):
        if name.endswith(suffix):
            return name[: -len(suffix)] + key
    return name

