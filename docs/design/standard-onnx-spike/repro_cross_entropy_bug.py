import torch, numpy as np, onnxruntime as ort
from torch.fx.experimental.proxy_tensor import make_fx
import torch.nn.functional as F
def f(logits, labels):
    with torch.enable_grad():
        l = logits.detach().requires_grad_()
        loss = F.cross_entropy(l, labels)
        return torch.autograd.grad(loss, [l])[0]
lg = torch.randn(8,3); lb = torch.randint(0,3,(8,))
gm = make_fx(f, tracing_mode="symbolic")(lg, lb)
print(gm.code)
print("eager", f(lg,lb)[0], "gm", gm(lg,lb)[0])
B = torch.export.Dim("B")
p = torch.onnx.export(gm, (lg,lb), dynamic_shapes=({0:B},{0:B}), dynamo=True, input_names=["l","y"])
p.save("repro_ce.onnx")
s = ort.InferenceSession("repro_ce.onnx")
print("ort", s.run(None, {"l":lg.numpy(),"y":lb.numpy()})[0][0])
p2 = torch.onnx.export(gm, (lg,lb), dynamo=True, input_names=["l","y"])
p2.save("repro_ces.onnx"); s = ort.InferenceSession("repro_ces.onnx")
print("ort static", s.run(None, {"l":lg.numpy(),"y":lb.numpy()})[0][0])
import onnx
for n in onnx.load("repro_ce.onnx").graph.node: print(n.op_type, list(n.input), list(n.output), [ (a.name, onnx.helper.get_attribute_value(a)) for a in n.attribute if a.type!=4])
