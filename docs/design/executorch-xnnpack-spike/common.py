import os, time, copy, warnings
warnings.filterwarnings("ignore")
import torch, torch.nn as nn
torch.manual_seed(0)
torch.set_num_threads(2)
from torch.export import export
from torch.export.experimental import _export_forward_backward

B, S, H, F, C = 8, 128, 384, 1536, 2   # MiniLM-ish: tokens=1024

class MLP(nn.Module):
    def __init__(s):
        super().__init__()
        s.l1 = nn.Linear(H, F); s.l2 = nn.Linear(F, H); s.ln = nn.LayerNorm(H); s.head = nn.Linear(H, C)
    def forward(s, x, y):
        h = s.ln(x + s.l2(nn.functional.gelu(s.l1(x))))
        logits = s.head(h[:, 0])
        return nn.functional.cross_entropy(logits, y), logits.detach()

def _linear_as_mm(x, w, b=None):
    y = torch.matmul(x, w.t()); return y if b is None else y + b

def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, S, H, generator=g), torch.randint(0, C, (B,), generator=g)

def joint(model, ex, linear_as_mm=False):
    ep = export(model, ex, strict=False)
    if linear_as_mm:
        ep = ep.run_decompositions({torch.ops.aten.linear.default: _linear_as_mm})
    return _export_forward_backward(ep)

def eager_step(model, ex):
    model.zero_grad(set_to_none=True)
    loss, _ = model(*ex); loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

def timeit(fn, n=10, warm=2):
    for _ in range(warm): fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    ts.sort(); return 1000 * ts[len(ts)//2], 1000 * ts[0]

def ops(gm):
    from collections import Counter
    return Counter(str(n.target).split('.')[-2] if 'aten' in str(n.target) else str(n.target) for n in gm.graph.nodes if n.op == 'call_function')
