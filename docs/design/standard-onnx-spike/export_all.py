"""Export per-component training graphs (design b) as standard ONNX.

Recipe: build a pure function (inputs..., grad_out, weights...) -> grads with
torch.autograd.grad, trace it to an ATen FX graph with make_fx(tracing_mode="symbolic")
(keeps B/T symbolic), then hand the GraphModule to torch.onnx.export(dynamo=True)
with dynamic_shapes.  Weights are graph inputs.
"""
import os
import sys
import time

import onnx
import torch
from onnx import helper, TensorProto
from torch.fx.experimental.proxy_tensor import make_fx

from blocks import *

OUT = os.environ.get("OUT_DIR", "/tmp/onnx-spike/graphs")
os.makedirs(OUT, exist_ok=True)
CLS_N = 3


def _grad_fn(block, n_nondiff, want_x, want_w):
    """block(x, *nondiff, *w) -> y.  returns f(x, *nondiff, gy, *w) -> grads."""
    def f(x, *rest):
        nondiff = rest[:n_nondiff]
        gy = rest[n_nondiff]
        w = rest[n_nondiff + 1:]
        with torch.enable_grad():
            x_ = x.detach().requires_grad_(want_x)
            w_ = [t.detach().requires_grad_(want_w) for t in w]
            y = block(x_, *nondiff, *w_)
            targets = ([x_] if want_x else []) + (list(w_) if want_w else [])
            return tuple(torch.autograd.grad(y, targets, gy))
    return f


def export_fn(fn, args, in_names, out_names, dyn, path):
    t0 = time.time()
    gm = make_fx(fn, tracing_mode="symbolic")(*args)
    onnx_prog = torch.onnx.export(gm, tuple(args), dynamic_shapes=tuple(dyn), input_names=in_names,
                                  output_names=out_names, dynamo=True, optimize=True, verbose=False)
    onnx_prog.save(path)
    m = onnx.load(path)
    ops = sorted({(n.domain or "ai.onnx", n.op_type) for n in m.graph.node})
    print(f"{os.path.basename(path)}: {time.time()-t0:.1f}s nodes={len(m.graph.node)} "
          f"opset={[ (o.domain or 'ai.onnx', o.version) for o in m.opset_import]} "
          f"inputs={[i.name for i in m.graph.input]}\n    ops={[o for _, o in ops]}", flush=True)
    assert all(d == "ai.onnx" for d, _ in ops), ops
    return m


def quantize_inputs(path_in, path_out, names):
    """Graph surgery: replace float weight input `n` with DequantizeLinear(n_q int8, n_s, axis=0)."""
    m = onnx.load(path_in)
    g = m.graph
    new_inputs, new_nodes = [], []
    for inp in g.input:
        if inp.name in names:
            dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
            new_inputs.append(helper.make_tensor_value_info(inp.name + "_q", TensorProto.INT8, dims))
            new_inputs.append(helper.make_tensor_value_info(inp.name + "_s", TensorProto.FLOAT, [dims[0]]))
            new_nodes.append(helper.make_node("DequantizeLinear", [inp.name + "_q", inp.name + "_s"],
                                              [inp.name], axis=0, name="dq_" + inp.name))
        else:
            new_inputs.append(inp)
    del g.input[:]
    g.input.extend(new_inputs)
    nodes = new_nodes + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(m)
    onnx.save(m, path_out)


def main():
    torch.manual_seed(0)
    emb, layers = load_weights()
    aw, fw = layers[0]
    B, T = 4, 32
    x = torch.randn(B, T, H)
    gy = torch.randn(B, T, H)
    mask = torch.ones(B, T)
    madd = mask_additive(mask)
    Bd, Td = torch.export.Dim("B", min=1, max=1024), torch.export.Dim("T", min=2, max=512)
    bt = {0: Bd, 1: Td}
    nw_a = [None] * len(aw)
    nw_f = [None] * len(fw)
    cls_w = torch.randn(CLS_N, H) * 0.02
    cls_b = torch.zeros(CLS_N)
    labels = torch.randint(0, CLS_N, (B,))

    # ---- embeddings forward (frozen) ----
    ids = torch.randint(0, 30522, (B, T))
    ew = [emb["embeddings.word_embeddings.weight"], emb["embeddings.position_embeddings.weight"],
          emb["embeddings.token_type_embeddings.weight"], emb["embeddings.LayerNorm.weight"],
          emb["embeddings.LayerNorm.bias"]]

    def embed_fn(ids, we, pe, te, g, b):
        Tn = ids.shape[1]
        xx = we[ids] + pe[:Tn][None] + te[0][None, None]
        return F.layer_norm(xx, (H,), g, b, EPS)
    export_fn(embed_fn, [ids, *ew], ["ids", "we", "pe", "te", "g", "b"], ["y"],
              [bt] + [None] * 5, f"{OUT}/embed_fwd.onnx")

    # ---- forward graphs ----
    export_fn(lambda x, m, *w: attn_block(x, m, *w), [x, madd, *aw], ["x", "madd"] + ATTN_NAMES, ["y"],
              [bt, {0: Bd, 3: Td}] + nw_a, f"{OUT}/attn_fwd.onnx")
    export_fn(lambda x, *w: ffn_block(x, *w), [x, *fw], ["x"] + FFN_NAMES, ["y"],
              [bt] + nw_f, f"{OUT}/ffn_fwd.onnx")

    # ---- backward graphs (recompute forward from block input x) ----
    for tag, wx, ww in [("x", True, False), ("w", False, True), ("xw", True, True)]:
        outs_a = (["gx"] if wx else []) + (["g_" + n for n in ATTN_NAMES] if ww else [])
        outs_f = (["gx"] if wx else []) + (["g_" + n for n in FFN_NAMES] if ww else [])
        export_fn(_grad_fn(attn_block, 1, wx, ww), [x, madd, gy, *aw], ["x", "madd", "gy"] + ATTN_NAMES, outs_a,
                  [bt, {0: Bd, 3: Td}, bt] + nw_a, f"{OUT}/attn_bwd_{tag}.onnx")
        export_fn(_grad_fn(ffn_block, 0, wx, ww), [x, gy, *fw], ["x", "gy"] + FFN_NAMES, outs_f,
                  [bt, bt] + nw_f, f"{OUT}/ffn_bwd_{tag}.onnx")

        # classifier: loss + logits + grads in one graph
        def make_cls(wx, ww):
          def cls_fn(x, mask, labels, w, b):
            with torch.enable_grad():
                x_ = x.detach().requires_grad_(wx)
                w_ = w.detach().requires_grad_(ww)
                b_ = b.detach().requires_grad_(ww)
                loss, logits = cls_head(x_, mask, labels, w_, b_)
                targets = ([x_] if wx else []) + ([w_, b_] if ww else [])
                grads = torch.autograd.grad(loss, targets)
            return (loss.detach(), logits.detach()) + tuple(grads)
          return cls_fn
        export_fn(make_cls(wx, ww), [x, mask, labels, cls_w, cls_b], ["x", "mask", "labels", "w", "b"],
                  ["loss", "logits"] + (["gx"] if wx else []) + (["g_w", "g_b"] if ww else []),
                  [bt, bt, {0: Bd}, None, None], f"{OUT}/cls_{tag}.onnx")

    # ---- int8 frozen-weight variants: DequantizeLinear -> MatMul ----
    qa = ["wq", "wk", "wv", "wo"]
    qf = ["wi", "wo"]
    quantize_inputs(f"{OUT}/attn_fwd.onnx", f"{OUT}/attn_fwd_q8.onnx", qa)
    quantize_inputs(f"{OUT}/ffn_fwd.onnx", f"{OUT}/ffn_fwd_q8.onnx", qf)
    quantize_inputs(f"{OUT}/attn_bwd_x.onnx", f"{OUT}/attn_bwd_x_q8.onnx", qa)
    quantize_inputs(f"{OUT}/ffn_bwd_x.onnx", f"{OUT}/ffn_bwd_x_q8.onnx", qf)
    print("done")


if __name__ == "__main__":
    main()
