"""Design (b): numpy runner acting as the autograd engine over per-component ONNX graphs."""
import numpy as np
import onnxruntime as ort

from blocks import ATTN_NAMES, FFN_NAMES

GDIR = "/tmp/onnx-spike/graphs"
NL = 6


def comps():
    out = []
    for i in range(NL):
        out += [("attn", i), ("ffn", i)]
    return out + [("cls", 0)]


def quantize_pc(w):
    """symmetric per-output-channel int8 (axis 0)."""
    s = np.abs(w).max(axis=1) / 127.0
    s = np.where(s == 0, 1.0, s).astype(np.float32)
    q = np.clip(np.round(w / s[:, None]), -127, 127).astype(np.int8)
    return q, s


class Runner:
    QA = ["wq", "wk", "wv", "wo"]
    QF = ["wi", "wo"]

    def __init__(self, emb_w, layers, cls_w, threads=2, q8_frozen=False, saved=False):
        self.saved_mode = saved
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # do not steal CPU from others
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        names = ["embed_fwd", "attn_fwd", "ffn_fwd", "attn_fwd_q8", "ffn_fwd_q8", "attn_bwd_x_q8", "ffn_bwd_x_q8"]
        names += [f"{b}_bwd_{t}" for b in ("attn", "ffn") for t in ("x", "w", "xw")]
        names += [f"cls_{t}" for t in ("x", "w", "xw")]
        if saved:
            names += ["attn_fwds", "ffn_fwds"] + [f"{b}_bwds_{t}" for b in ("attn", "ffn") for t in ("x", "w", "xw")]
        self.s = {n: ort.InferenceSession(f"{GDIR}/{n}.onnx", so, providers=["CPUExecutionProvider"]) for n in names}
        self.inames = {n: [i.name for i in s.get_inputs()] for n, s in self.s.items()}
        self.onames = {n: [o.name for o in s.get_outputs()] for n, s in self.s.items()}
        self.emb = dict(zip(["we", "pe", "te", "g", "b"], emb_w))
        self.w = {}
        for i, (aw, fw) in enumerate(layers):
            self.w[("attn", i)] = dict(zip(ATTN_NAMES, aw))
            self.w[("ffn", i)] = dict(zip(FFN_NAMES, fw))
        self.w[("cls", 0)] = dict(zip(["w", "b"], cls_w))
        self.q8_frozen = q8_frozen
        self.qw = {}
        if q8_frozen:
            for c, d in self.w.items():
                if c[0] == "cls":
                    continue
                qd = dict(d)
                for n in (self.QA if c[0] == "attn" else self.QF):
                    q, s = quantize_pc(d[n])
                    qd[n + "_q"], qd[n + "_s"] = q, s
                self.qw[c] = qd

    def _run(self, name, feeds):
        ins = self.inames[name]
        return dict(zip(self.onames[name], self.s[name].run(None, {k: feeds[k] for k in ins})))

    def _wfeed(self, c, trained):
        if self.q8_frozen and not trained and c[0] != "cls":
            return self.qw[c], "_q8"
        return self.w[c], ""

    def step(self, ids, mask, labels, S, lr=0.0):
        """S: set of components to train. Returns loss, logits, grads{comp: {name: g}}."""
        order = comps()
        idx = {c: k for k, c in enumerate(order)}
        lowest = min(idx[c] for c in S) if S else len(order)
        madd = ((1.0 - mask) * -10000.0)[:, None, None, :].astype(np.float32)
        x = self._run("embed_fwd", dict(ids=ids, **self.emb))["y"]
        saved = {}
        for c in order[:-1]:
            w, sfx = self._wfeed(c, c in S)
            f = dict(x=x, madd=madd, **w)
            if idx[c] >= lowest and self.saved_mode:
                o = self._run(f"{c[0]}_fwds", f)
                saved[c] = dict(o, x=x)  # activations for the no-recompute backward
                x = o.pop("y")
                continue
            if idx[c] >= lowest:
                saved[c] = dict(x=x)  # block input = the only activation backward needs (recompute)
            x = self._run(f"{c[0]}_fwd{sfx}", f)["y"]
        grads = {}
        # classifier: loss + logits + grads
        cc = ("cls", 0)
        tag = ("x" if lowest < idx[cc] else "") + ("w" if cc in S else "")
        if not tag:
            tag = "w"  # nothing trained: just evaluate
        o = self._run(f"cls_{tag}", dict(x=x, mask=mask, labels=labels, **self.w[cc]))
        loss, logits = o["loss"], o["logits"]
        if cc in S:
            grads[cc] = {"w": o["g_w"], "b": o["g_b"]}
        gy = o.get("gx")
        for c in reversed(order[:-1]):
            if idx[c] < lowest:
                break
            tr = c in S
            tag = ("x" if idx[c] > lowest else "") + ("w" if tr else "")
            w, sfx = self._wfeed(c, tr)
            bw = f"{c[0]}_bwds_{tag}" if self.saved_mode else f"{c[0]}_bwd_{tag}{sfx}"
            o = self._run(bw, dict(saved[c], madd=madd, gy=gy, **w))
            if tr:
                names = ATTN_NAMES if c[0] == "attn" else FFN_NAMES
                grads[c] = {n: o["g_" + n] for n in names}
            gy = o.get("gx")
        if lr:
            for c, g in grads.items():  # plain SGD owned by the runner
                for n, v in g.items():
                    self.w[c][n] -= lr * v
        return loss, logits, grads
