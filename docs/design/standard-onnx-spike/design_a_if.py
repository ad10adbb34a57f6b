"""Design (a) feasibility: wrap a gradient subgraph in ONNX If gated by a bool graph input.
Builds: outer graph(flag, inputs...) -> If(flag){ffn_bwds_xw body} else {zeros-like outputs}."""
import time, numpy as np, onnx, onnxruntime as ort
from onnx import helper, TensorProto
from onnx.shape_inference import infer_shapes

inner = onnx.load("graphs/ffn_bwds_xw.onnx")
g = inner.graph
# then-branch: same nodes/initializers, no inputs (captures outer-scope values by name)
then_outs = list(g.output)
then_g = helper.make_graph(list(g.node), "then_grads", [], then_outs, initializer=list(g.initializer))
# else-branch: zeros shaped like each output's "reference" input (gx~x, g_w~w)
ref = {"gx": "x", "g_wi": "wi", "g_bi": "bi", "g_wo": "wo", "g_bo": "bo", "g_g": "g", "g_b": "b"}
else_nodes, else_outs = [], []
for o in g.output:
    r = ref[o.name]
    else_nodes += [helper.make_node("Shape", [r], [f"shp_{o.name}"]),
                   helper.make_node("ConstantOfShape", [f"shp_{o.name}"], [f"z_{o.name}"],
                                    value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]))]
    vi = onnx.ValueInfoProto(); vi.CopyFrom(o); vi.name = f"z_{o.name}"; else_outs.append(vi)
else_g = helper.make_graph(else_nodes, "else_zeros", [], else_outs)
flag = helper.make_tensor_value_info("train_ffn", TensorProto.BOOL, [])
outer_outs = list(g.output)
ifn = helper.make_node("If", ["train_ffn"], [o.name for o in g.output], then_branch=then_g, else_branch=else_g)
outer = helper.make_graph([ifn], "gated", [flag] + list(g.input), outer_outs)
m = helper.make_model(outer, opset_imports=list(inner.opset_import))
m.ir_version = inner.ir_version
onnx.checker.check_model(m)
onnx.save(m, "graphs/ffn_bwds_xw_if.onnx")
print("ops outer:", [n.op_type for n in m.graph.node], " then-branch ops:", sorted({n.op_type for n in then_g.node}))

so = ort.SessionOptions(); so.intra_op_num_threads = 1
sd = ort.InferenceSession("graphs/ffn_bwds_xw.onnx", so, providers=["CPUExecutionProvider"])
si = ort.InferenceSession("graphs/ffn_bwds_xw_if.onnx", so, providers=["CPUExecutionProvider"])
B, T = 8, 128
rng = np.random.default_rng(0)
feeds = {i.name: rng.standard_normal([B if d.dim_param == "B" else T if d.dim_param == "T" else d.dim_value
                                      for d in i.type.tensor_type.shape.dim]).astype(np.float32) * 0.05
         for i in g.input}
ref_out = sd.run(None, feeds)
on = si.run(None, dict(feeds, train_ffn=np.array(True)))
off = si.run(None, dict(feeds, train_ffn=np.array(False)))
print("If(True) max diff vs plain graph:", max(float(np.abs(a - b).max()) for a, b in zip(on, ref_out)))
print("If(False) all zeros:", all(float(np.abs(a).max()) == 0 for a in off), [a.shape for a in off][:3])
def tm(f, n=10):
    f(); ts = []
    for _ in range(n):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return np.median(ts) * 1000
print(f"B={B} T={T} 1 thread: plain {tm(lambda: sd.run(None, feeds)):.2f} ms, "
      f"If(True) {tm(lambda: si.run(None, dict(feeds, train_ffn=np.array(True)))):.2f} ms, "
      f"If(False) {tm(lambda: si.run(None, dict(feeds, train_ffn=np.array(False)))):.2f} ms")
