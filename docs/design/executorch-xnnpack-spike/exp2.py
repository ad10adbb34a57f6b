# Q2: lower the joint training graph to XNNPACK
import sys, traceback; sys.path.insert(0, '/tmp/et-spike')
from common import *
from executorch.exir import to_edge_transform_and_lower, EdgeCompileConfig
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer, _unsafe_reset_threadpool
_unsafe_reset_threadpool(2)
model = MLP().eval(); ex = inputs()
loss_e, grads_e = eager_step(model, ex)
pn = [n for n,_ in model.named_parameters()]
# (linear rewritten as mm+add?, XNNPACK delegates matmuls whose weights are activations?)
for lam, dynamic in [(True, False), (False, False), (True, True)]:
    name = "xnnpack " + ("linear->mm+add" if lam else "default") + (" non-static weights" if dynamic else "")
    try:
        j = joint(model, ex, lam)
        part = XnnpackPartitioner(force_non_static_weights_for_f32_linear=True) if dynamic else XnnpackPartitioner()
        edge = to_edge_transform_and_lower(j, partitioner=[part],
                                           compile_config=EdgeCompileConfig(_check_ir_validity=False))
        gm = edge.exported_program().graph_module
        print(name, "remaining ops:", {k: v for k, v in ops(gm).items()})
        # which ops got delegated
        for n in gm.graph.nodes:
            if n.op == 'get_attr' and 'lowered_module' in n.name:
                lm = getattr(gm, n.target)
                print("  delegate", n.name, dict(ops(lm.original_module.graph_module)))
        prog = edge.to_executorch()
        m = _load_for_executorch_from_buffer(prog.buffer)
        outs = m.forward(ex)
        print(name, "loss diff", float((outs[0]-loss_e).abs()))
        print(name, "max grad abs diff", max(float((g - grads_e[n]).abs().max()) for g, n in zip(outs[2:], pn)))
        print(name, "ET fwd+bwd ms (median,min)", timeit(lambda: m.forward(ex)))
    except Exception as e:
        print(name, "FAILED:", type(e).__name__, str(e)[:2000]); traceback.print_exc(limit=3)
