# project-style: trainable params as method inputs (functional_call), XNNPACK-lowered joint graph;
# check parity after changing the params (no stale packed weights), MLP and one BertLayer.
import sys, traceback; sys.path.insert(0, '/tmp/et-spike')
from common import *
from executorch.exir import to_edge_transform_and_lower, to_edge, EdgeCompileConfig
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer, _unsafe_reset_threadpool
_unsafe_reset_threadpool(2)
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertLayer

class Bert1(nn.Module):
    def __init__(s):
        super().__init__()
        cfg = BertConfig(hidden_size=384, num_attention_heads=12, intermediate_size=1536, hidden_dropout_prob=0, attention_probs_dropout_prob=0)
        cfg._attn_implementation = "eager"
        s.layer = BertLayer(cfg); s.head = nn.Linear(384, 2)
    def forward(s, x, y):
        h = s.layer(x)
        h = h[0] if isinstance(h, tuple) else h
        logits = s.head(h[:, 0])
        return nn.functional.cross_entropy(logits, y), logits.detach()

class W(nn.Module):
    def __init__(s, m, names): super().__init__(); s.m, s.names = m, names
    def forward(s, x, y, *params):
        return torch.func.functional_call(s.m, dict(zip(s.names, params)), (x, y))

def run(model, tag):
    ex = inputs()
    names = [n for n, _ in model.named_parameters()]
    for p in model.parameters(): p.requires_grad_(False)
    w = W(model, names)
    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())
    j = joint(w, ex + params, True)
    for lower in ["portable+optimized", "xnnpack"]:
        try:
            cc = EdgeCompileConfig(_check_ir_validity=False)
            if lower == "xnnpack":
                edge = to_edge_transform_and_lower(j, partitioner=[XnnpackPartitioner(force_non_static_weights_for_f32_linear=True)], compile_config=cc)
            else:
                edge = to_edge(j, compile_config=cc)
            c = ops(edge.exported_program().graph_module)
            print(tag, lower, "non-delegated mm/addmm/bmm:", {k: c[k] for k in ("mm", "addmm", "bmm") if k in c}, "delegates:", c.get("executorch_call_delegate", 0))
            m = _load_for_executorch_from_buffer(edge.to_executorch().buffer)
            for trial in range(2):
                with torch.no_grad():
                    for p in params: p.add_(0.01 * trial * torch.randn_like(p))   # in-place, same tensors (like the runner)
                ps = tuple(p.detach() for p in params)
                outs = m.forward(ex + ps)
                pe = tuple(p.clone().requires_grad_(True) for p in ps)
                le, _ = w(*ex, *pe); ge = torch.autograd.grad(le, pe)
                md = max(float((a - b).abs().max()) for a, b in zip(outs[2:], ge))
                print(tag, lower, f"trial{trial} loss diff {float((outs[0]-le).abs()):.2e} max grad diff {md:.2e} n_grads {len(outs)-2}/{len(ge)}")
            print(tag, lower, "ET ms (median,min)", timeit(lambda: m.forward(ex + params), n=8))
        except Exception as e:
            print(tag, lower, "FAILED:", type(e).__name__, str(e)[:1500]); traceback.print_exc(limit=4)
    pe = tuple(p.detach().clone().requires_grad_(True) for p in params)
    def eg():
        l, _ = w(*ex, *pe); torch.autograd.grad(l, pe)
    print(tag, "eager ms (median,min)", timeit(eg, n=8))

run(MLP().eval(), "MLP")
run(Bert1().eval(), "BertLayer")
