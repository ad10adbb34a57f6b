"""Step time: eager torch autograd vs design-(b) ORT runner, full vs top-2 selection, 2 threads."""
import sys
import time

import numpy as np
import torch

exec(open("/tmp/onnx-spike/parity.py").read().split("# ---------- 1)")[0])
exec("def torch_ref" + open("/tmp/onnx-spike/parity.py").read().split("def torch_ref")[1].split("B, T = 8, 40")[0])

B, T = int(sys.argv[1]) if len(sys.argv) > 1 else 8, int(sys.argv[2]) if len(sys.argv) > 2 else 128
REP = 5
import os
THR = int(os.environ.get("THR", "2")); torch.set_num_threads(THR)
ids = torch.randint(1000, 30000, (B, T))
mask = torch.ones(B, T, dtype=torch.long); mask[0, T // 2:] = 0
labels = torch.randint(0, CLS_N, (B,))
ew, lw, cw = np_w()
R = Runner(ew, lw, cw, threads=THR)
Rq = Runner(ew, lw, cw, threads=THR, q8_frozen=True)
Rs = Runner(ew, lw, cw, threads=THR, saved=True)
idsn, maskn, labn = ids.numpy(), mask.numpy().astype(np.float32), labels.numpy()


def tm(f):
    f()
    ts = []
    for _ in range(REP):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return np.median(ts) * 1000, np.min(ts) * 1000


def torch_fwd():
    with torch.no_grad():
        out = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        cls_head_ref(out, mask.float(), labels, cls_w, cls_b)


print(f"B={B} T={T} threads={THR} (torch.set_num_threads, ORT intra_op), configs interleaved, median/min of {REP} ms")
cfgs = [("eager torch  forward only (no_grad)", torch_fwd),
        ("ORT runner   forward only (S=empty)", lambda: R.step(idsn, maskn, labn, set()))]
for name, S in [("full 13 comps", set(comps())), ("top-2 ffn5+cls", {("ffn", 5), ("cls", 0)}),
                ("cls only", {("cls", 0)}), ("{attn0} (deepest)", {("attn", 0)})]:
    cfgs.append((f"eager torch  fwd+bwd {name}", lambda S=S: torch_ref(ids, mask, labels, S)))
    cfgs.append((f"ORT runner   fwd+bwd {name} (recompute)", lambda S=S: R.step(idsn, maskn, labn, S)))
    cfgs.append((f"ORT runner   fwd+bwd {name} (saved act.)", lambda S=S: Rs.step(idsn, maskn, labn, S)))
    if name.startswith("top-2") or name.startswith("{attn0"):
        cfgs.append((f"ORT runner   fwd+bwd {name} int8-frozen", lambda S=S: Rq.step(idsn, maskn, labn, S)))
ONLY = sys.argv[3] if len(sys.argv) > 3 else ''
cfgs = [c for c in cfgs if ONLY in c[0]]
times = {n: [] for n, _ in cfgs}
for n, f in cfgs:
    f()
for r in range(REP):
    for n, f in cfgs:
        t0 = time.perf_counter(); f(); times[n].append((time.perf_counter() - t0) * 1000)
for n, _ in cfgs:
    print(f"  {n:50s} {np.median(times[n]):8.1f} {np.min(times[n]):8.1f}")
