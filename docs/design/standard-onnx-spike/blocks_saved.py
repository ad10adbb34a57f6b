"""No-recompute variant: forward returns the activations backward needs; backward is built
piecewise with torch.autograd.grad where each piece's *inputs* are saved tensors, so the
piece's forward value is dead code (DCE'd by the exporter) and no matmul is recomputed."""
import math

import torch
import torch.nn.functional as F

from blocks import H, NH, HD, layer_norm, mask_additive

SCALE = 1.0 / math.sqrt(HD)


def _g(out, ins, gout):
    return torch.autograd.grad(out, ins, gout, allow_unused=True)


def _leaf(t, req=True):
    return t.detach().requires_grad_(req)


def attn_fwd_saved(x, madd, wq, bq, wk, bk, wv, bv, wo, bo, g, b):
    B, T, _ = x.shape
    q = F.linear(x, wq, bq).view(B, T, NH, HD).transpose(1, 2)
    k = F.linear(x, wk, bk).view(B, T, NH, HD).transpose(1, 2)
    v = F.linear(x, wv, bv).view(B, T, NH, HD).transpose(1, 2)
    p = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * SCALE + madd, dim=-1)
    c = torch.matmul(p, v).transpose(1, 2).reshape(B, T, H)
    s = F.linear(c, wo, bo) + x
    return layer_norm(s, g, b), q, k, v, p, c, s


def make_attn_bwd_saved(want_x, want_w):
    def f(x, q, k, v, p, c, s, gy, wq, bq, wk, bk, wv, bv, wo, bo, g, b):
        B, T, _ = x.shape
        with torch.enable_grad():
            # LN
            s_ = _leaf(s); g_, b_ = _leaf(g, want_w), _leaf(b, want_w)
            r = _g(layer_norm(s_, g_, b_), [s_] + ([g_, b_] if want_w else []), gy)
            gs = r[0]; gg, gb = (r[1], r[2]) if want_w else (None, None)
            # output projection + residual (value DCE'd; only VJP kept)
            c_ = _leaf(c); wo_, bo_ = _leaf(wo, want_w), _leaf(bo, want_w)
            r = _g(F.linear(c_, wo_, bo_), [c_] + ([wo_, bo_] if want_w else []), gs)
            gc = r[0]; gwo, gbo = (r[1], r[2]) if want_w else (None, None)
            gc = gc.view(B, T, NH, HD).transpose(1, 2)
            # context = p @ v
            gp = torch.matmul(gc, v.transpose(-1, -2))
            gv = torch.matmul(p.transpose(-1, -2), gc)
            # softmax backward (manual: uses saved probs)
            gsc = p * (gp - (gp * p).sum(-1, keepdim=True)) * SCALE
            gq = torch.matmul(gsc, k)
            gk = torch.matmul(gsc.transpose(-1, -2), q)
            # q/k/v projections
            x_ = _leaf(x, want_x)
            ws = [_leaf(t, want_w) for t in (wq, bq, wk, bk, wv, bv)]
            outs = [F.linear(x_, ws[0], ws[1]), F.linear(x_, ws[2], ws[3]), F.linear(x_, ws[4], ws[5])]
            gouts = [t.transpose(1, 2).reshape(B, T, H) for t in (gq, gk, gv)]
            ins = ([x_] if want_x else []) + (ws if want_w else [])
            r = torch.autograd.grad(outs, ins, gouts)
        res = []
        if want_x:
            res.append(r[0] + gs)  # + residual path
        if want_w:
            wg = r[1:] if want_x else r
            res += list(wg) + [gwo, gbo, gg, gb]
        return tuple(res)
    return f


def ffn_fwd_saved(x, wi, bi, wo, bo, g, b):
    a = F.linear(x, wi, bi)
    s = F.linear(F.gelu(a), wo, bo) + x
    return layer_norm(s, g, b), a, s


def make_ffn_bwd_saved(want_x, want_w):
    def f(x, a, s, gy, wi, bi, wo, bo, g, b):
        with torch.enable_grad():
            s_ = _leaf(s); g_, b_ = _leaf(g, want_w), _leaf(b, want_w)
            r = _g(layer_norm(s_, g_, b_), [s_] + ([g_, b_] if want_w else []), gy)
            gs = r[0]; gg, gb = (r[1], r[2]) if want_w else (None, None)
            a_ = _leaf(a); wo_, bo_ = _leaf(wo, want_w), _leaf(bo, want_w)
            r = _g(F.linear(F.gelu(a_), wo_, bo_), [a_] + ([wo_, bo_] if want_w else []), gs)
            ga = r[0]; gwo, gbo = (r[1], r[2]) if want_w else (None, None)
            x_ = _leaf(x, want_x); wi_, bi_ = _leaf(wi, want_w), _leaf(bi, want_w)
            ins = ([x_] if want_x else []) + ([wi_, bi_] if want_w else [])
            r = _g(F.linear(x_, wi_, bi_), ins, ga)
        res = []
        if want_x:
            res.append(r[0] + gs)
        if want_w:
            wg = r[1:] if want_x else r
            res += list(wg) + [gwo, gbo, gg, gb]
        return tuple(res)
    return f
