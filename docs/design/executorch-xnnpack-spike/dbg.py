import sys; sys.path.insert(0, '/tmp/et-spike')
from common import *
from executorch.exir import EdgeCompileConfig
from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer
class W(nn.Module):
    def __init__(s, m, names): super().__init__(); s.m, s.names = m, names
    def forward(s, x, y, *params):
        return torch.func.functional_call(s.m, dict(zip(s.names, params)), (x, y))
from executorch.exir import to_edge
model = MLP().eval(); ex = inputs()
names = [n for n, _ in model.named_parameters()]
for p in model.parameters(): p.requires_grad_(False)
w = W(model, names)
params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())
j = joint(w, ex + params, True)
from executorch.exir import ExecutorchBackendConfig
from executorch.exir.passes import MemoryPlanningPass
agi = os.environ.get("AGI", "1") == "1"
m = _load_for_executorch_from_buffer(to_edge(j, compile_config=EdgeCompileConfig(_check_ir_validity=False)).to_executorch(
    ExecutorchBackendConfig(memory_planning_pass=MemoryPlanningPass(alloc_graph_input=agi))).buffer)
mode = sys.argv[1]
keep = []
for t in range(3):
    if mode == "same": ps = params
    elif mode == "fresh_keep": ps = tuple(p.detach().clone() for p in params); keep.append(ps)
    elif mode == "fresh_nograd": ps = tuple(p.detach().clone() for p in params)
    elif mode == "fresh_reqgrad": ps = tuple(p.detach().clone().requires_grad_(True) for p in params)
    if mode == "eager_between":
        ps = params; pe = tuple(p.detach().clone().requires_grad_(True) for p in ps); le,_ = w(*ex, *pe); torch.autograd.grad(le, pe)
    if mode == "fresh_keepouts":
        ps = tuple(p.detach().clone() for p in params); keep.append(ps)
    outs = m.forward(ex + ps); print(mode, t, float(outs[0]), flush=True)
    if mode == "fresh_keepouts": keep.append(outs)
