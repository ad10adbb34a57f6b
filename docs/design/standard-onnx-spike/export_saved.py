import os, sys, torch, onnx
from collections import Counter
from blocks import *
from blocks_saved import *
from export_all import export_fn, OUT

torch.manual_seed(0)
emb, layers = load_weights()
aw, fw = layers[0]
B, T = 3, 37  # must not coincide with any static dim (HD=32!) or duck-sizing specialises T
x = torch.randn(B, T, H); gy = torch.randn(B, T, H)
madd = mask_additive(torch.ones(B, T))
Bd, Td = torch.export.Dim("B", min=1, max=1024), torch.export.Dim("T", min=2, max=512)
bt = {0: Bd, 1: Td}; b_t = {0: Bd, 2: Td}; ptt = {0: Bd, 2: Td, 3: Td}
export_fn(lambda x, m, *w: attn_fwd_saved(x, m, *w), [x, madd, *aw], ["x", "madd"] + ATTN_NAMES,
          ["y", "q", "k", "v", "p", "c", "s"], [bt, {0: Bd, 3: Td}] + [None] * 10, f"{OUT}/attn_fwds.onnx")
export_fn(lambda x, *w: ffn_fwd_saved(x, *w), [x, *fw], ["x"] + FFN_NAMES, ["y", "a", "s"],
          [bt] + [None] * 6, f"{OUT}/ffn_fwds.onnx")
with torch.no_grad():
    _, q, k, v, p, c, s = attn_fwd_saved(x, madd, *aw)
    _, a, s2 = ffn_fwd_saved(x, *fw)
for tag, wx, ww in [("x", True, False), ("w", False, True), ("xw", True, True)]:
    export_fn(make_attn_bwd_saved(wx, ww), [x, q, k, v, p, c, s, gy, *aw],
              ["x", "q", "k", "v", "p", "c", "s", "gy"] + ATTN_NAMES,
              (["gx"] if wx else []) + (["g_" + n for n in ATTN_NAMES] if ww else []),
              [bt, b_t, b_t, b_t, ptt, bt, bt, bt] + [None] * 10, f"{OUT}/attn_bwds_{tag}.onnx")
    export_fn(make_ffn_bwd_saved(wx, ww), [x, a, s2, gy, *fw], ["x", "a", "s", "gy"] + FFN_NAMES,
              (["gx"] if wx else []) + (["g_" + n for n in FFN_NAMES] if ww else []),
              [bt, bt, bt, bt] + [None] * 6, f"{OUT}/ffn_bwds_{tag}.onnx")
for n in ["attn_bwd_xw", "attn_bwds_xw", "ffn_bwd_xw", "ffn_bwds_xw", "attn_bwd_x", "attn_bwds_x", "ffn_bwd_x", "ffn_bwds_x"]:
    cnt = Counter(nd.op_type for nd in onnx.load(f"{OUT}/{n}.onnx").graph.node)
    print(f"{n:14s} MatMul={cnt['MatMul']} Gemm={cnt['Gemm']} Softmax={cnt['Softmax']} LayerNormalization={cnt['LayerNormalization']} total={sum(cnt.values())}")
