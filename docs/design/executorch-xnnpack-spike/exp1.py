# Q1/Q3: kernel library, addmm vs mm, linear preserved; timings vs eager
import sys; sys.path.insert(0, '/tmp/et-spike')
from common import *
from executorch.exir import to_edge, EdgeCompileConfig, ExecutorchBackendConfig
from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer, _unsafe_reset_threadpool, _threadpool_get_thread_count
print("threadpool default", _threadpool_get_thread_count()); _unsafe_reset_threadpool(2); print("threadpool now", _threadpool_get_thread_count())
model = MLP().eval(); ex = inputs()
loss_e, grads_e = eager_step(model, ex)
print("eager fwd+bwd ms (median,min)", timeit(lambda: eager_step(model, ex)))
res = {}
for name, lam, ecc in [("default(addmm)", False, EdgeCompileConfig(_check_ir_validity=False)),
                       ("linear->mm+add", True, EdgeCompileConfig(_check_ir_validity=False))]:
    j = joint(model, ex, lam)
    edge = to_edge(j, compile_config=ecc)
    print(name, "edge ops:", dict(ops(edge.exported_program().graph_module)))
    prog = edge.to_executorch()
    m = _load_for_executorch_from_buffer(prog.buffer)
    outs = m.forward(ex)
    sig = edge.exported_program().graph_signature
    print(name, "loss diff", float((outs[0]-loss_e).abs()), "n outs", len(outs))
    # outputs: loss, logits, grads in order of params
    gnames = list(sig.gradients_to_parameters.values()) if hasattr(sig, "gradients_to_parameters") else None
    gout = outs[2:]
    pn = [n for n,_ in model.named_parameters()]
    md = max(float((g - grads_e[n]).abs().max()) for g, n in zip(gout, pn))
    print(name, "max grad abs diff", md)
    print(name, "ET fwd+bwd ms (median,min)", timeit(lambda: m.forward(ex)))
