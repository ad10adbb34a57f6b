"""Split a joint forward+backward ONNX graph into a forward that saves activations and a backward
that reads them (no recompute), by graph surgery on the exported ONNX.

The joint graph (x, context, gy, weights) -> (y, gradients) is what the exporter gives for a stage
whose forward and `torch.autograd.grad` were traced together. Its nodes fall in two parts:

- forward: every node that does not depend on `gy`;
- backward: the nodes the gradients need, walking back from them and stopping at the tensors the
  forward computed *from the data* (`x`): those are the saved activations, the forward graph's
  extra outputs and the backward graph's inputs.

Tensors that depend only on weights and context (a dequantized int8 weight, a transposed weight,
a mask) are recomputed by the backward from its own inputs instead of saved: saving them would
copy every weight above the cut each step. The split is done on ONNX rather than on the FX graph so
that sizes stay tensors (`Shape` ops), which ONNX handles dynamically, instead of symbolic ints.
"""

from __future__ import annotations

from pathlib import Path


def _subgraph_attrs(node) -> bool:
    from onnx import AttributeProto

    return any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute)


_VIEWS = {"Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"}  # free in ONNX Runtime
_FROM_SHAPE = {"ConstantOfShape", "Shape"}  # made from a shape alone


def _rematerialisable(node, available: set[str]) -> bool:
    """Whether the backward should recompute this forward node's output instead of reading it:
    views and shape-made tensors always; an Expand or a Transpose when its data input is read
    anyway (saved, or a graph input) — recomputing it then costs one copy, saving it a second one."""
    if node.op_type in _VIEWS | _FROM_SHAPE:
        return True
    return node.op_type in ("Transpose", "Expand") and node.input[0] in available


def _closure(producer: dict, outputs: list[str], stop: set[str]) -> tuple[set[int], set[str]]:
    """Walking back from `outputs`: the ids of the nodes they need, and the tensors where the walk
    ended (a name in `stop`, a graph input or an initializer)."""
    nodes, reached, todo, seen = set(), set(), list(outputs), set()
    while todo:
        t = todo.pop()
        if t in seen or not t:
            continue
        seen.add(t)
        if t in stop or t not in producer:
            reached.add(t)
            continue
        n = producer[t]
        nodes.add(id(n))
        todo.extend(n.input)
    return nodes, reached


def _sizes_not_from(g, gy: str) -> None:
    """The exporter reads a dynamic size from whichever input carries it, sometimes `gy` (the batch
    size of a forward reshape from Shape(gy)), which would tie the forward to the backward's input.
    Such a Shape node is pointed at another input with the same named dimension instead."""
    from onnx import helper

    where = {}
    for i in g.input:
        if i.name != gy:
            for axis, d in enumerate(i.type.tensor_type.shape.dim):
                if d.dim_param:
                    where.setdefault(d.dim_param, (i.name, axis))
    dims = next(i.type.tensor_type.shape.dim for i in g.input if i.name == gy)
    for n in g.node:
        if n.op_type != "Shape" or list(n.input) != [gy]:
            continue
        attrs = {a.name: a.i for a in n.attribute}
        start, end = attrs.get("start", 0), attrs.get("end", len(dims))
        if end - start != 1 or dims[start].dim_param not in where:
            continue  # left as is: the split then refuses this graph, naming it
        name, axis = where[dims[start].dim_param]
        n.input[0] = name
        del n.attribute[:]
        n.attribute.extend([helper.make_attribute("start", axis), helper.make_attribute("end", axis + 1)])


def split_saved(joint_path: Path, fwd_path: Path, bwd_path: Path, x_inputs: list[str], gy: str,
                y_outputs: list[str]) -> list[str]:
    """Write the saving forward (graph inputs minus gy -> y_outputs + saved) and the backward
    (saved + gy + the graph inputs it reads -> the joint graph's other outputs). Returns the saved
    tensor names (renamed `saved.<i>`)."""
    import onnx
    from onnx import helper

    mp = onnx.load(str(joint_path))
    _sizes_not_from(mp.graph, gy)
    mp = onnx.shape_inference.infer_shapes(mp, data_prop=True)
    g = mp.graph
    if any(_subgraph_attrs(n) for n in g.node):
        raise RuntimeError(f"{joint_path.name}: control-flow subgraphs cannot be split")
    graph_inputs = {i.name for i in g.input} | {t.name for t in g.initializer}
    # held for the whole function: node identity below is id() of these protobuf wrappers
    producer = {o: n for n in g.node for o in n.output}
    from_x, from_gy = set(x_inputs), {gy}
    for n in g.node:  # nodes are in topological order
        ins = set(n.input)
        if ins & from_x:
            from_x |= set(n.output)
        if ins & from_gy:
            from_gy |= set(n.output)
    saveable = (from_x - from_gy) - graph_inputs
    grads = [o.name for o in g.output if o.name not in y_outputs]

    def closure(outputs: list[str], stop: set[str]) -> tuple[set[int], set[str]]:
        return _closure(producer, outputs, stop)

    # Rematerialise, rather than save, what a layout op makes from a tensor the backward reads
    # anyway (or could read as cheaply): a reshape of x, the transposed copy of the saved attention
    # probabilities, a zero tensor of the batch's shape.
    remat: set[str] = set()
    while True:
        bwd_nodes, bwd_reads = closure(grads, (saveable - remat) | graph_inputs)
        saved = sorted(bwd_reads & saveable)
        more = {t for t in saved if _rematerialisable(producer[t], set(saved) | graph_inputs | remat)}
        if not more:
            break
        remat |= more
    fwd_nodes, _ = closure(list(y_outputs) + saved, graph_inputs)
    # nodes on weights and context alone (a dequantize, a transposed weight) may run in both graphs,
    # and the rematerialised layout ops; no other node that reads the data may
    shared = [n for n in g.node if id(n) in fwd_nodes & bwd_nodes and set(n.output) & from_x]
    if any(not set(n.output) & remat for n in shared):
        raise RuntimeError(f"{joint_path.name}: the split would recompute data-dependent nodes")
    rename = {t: f"saved.{i}" for i, t in enumerate(saved)}
    info = {v.name: v for v in list(g.value_info) + list(g.input) + list(g.output)}
    missing = [t for t in saved if t not in info]
    if missing:
        raise RuntimeError(f"{joint_path.name}: no type for saved tensors {missing[:3]}")

    def typed(name: str, as_name: str):
        v = onnx.ValueInfoProto()
        v.CopyFrom(info[name])
        v.name = as_name
        return v

    def build(node_ids: set[int], inputs: list, outputs: list, path: Path, renames: dict[str, str],
              extra: list = ()) -> None:
        nodes = []
        for n in g.node:
            if id(n) in node_ids:
                c = onnx.NodeProto()
                c.CopyFrom(n)
                c.input[:] = [renames.get(t, t) for t in c.input]
                c.output[:] = [renames.get(t, t) for t in c.output]
                nodes.append(c)
        nodes += list(extra)
        used = {t for n in nodes for t in n.input}
        inits = [t for t in g.initializer if t.name in used]
        graph = helper.make_graph(nodes, g.name, inputs, outputs, inits)
        out = helper.make_model(graph, opset_imports=mp.opset_import, ir_version=mp.ir_version)
        onnx.checker.check_model(out)
        onnx.save(out, str(path))

    fwd_reads = {t for n in g.node if id(n) in fwd_nodes for t in n.input}
    fwd_in = [i for i in g.input if i.name != gy and i.name in fwd_reads]
    outs = {o.name: o for o in g.output}
    # a saved tensor may also be a forward output (y): the backward reads it under its saved name
    fwd_out = [outs[y] for y in y_outputs] + [typed(t, rename[t]) for t in saved]
    fwd_renames = {t: rename[t] for t in saved if t not in y_outputs}
    twice = [helper.make_node("Identity", [t], [rename[t]]) for t in saved if t in y_outputs]
    build(fwd_nodes, fwd_in, fwd_out, fwd_path, fwd_renames, twice)
    bwd_in = [typed(t, rename[t]) for t in saved] + [i for i in g.input if i.name in bwd_reads]
    build(bwd_nodes, bwd_in, [outs[o] for o in grads], bwd_path, rename)
    return [rename[t] for t in saved]


def without_outputs(joint_path: Path, out_path: Path, drop: list[str]) -> None:
    """The joint graph less the forward's outputs: a gradient graph that recomputes its stage's
    forward from x (the lean choice when a memory budget is set: only x is kept per stage)."""
    import onnx

    mp = onnx.load(str(joint_path))
    g = mp.graph
    keep = [o for o in g.output if o.name not in drop]
    nodes = list(g.node)  # held: the ids below are of these wrapper objects
    needed, _ = _closure({o: n for n in nodes for o in n.output}, [o.name for o in keep], set())
    nodes = [n for n in nodes if id(n) in needed]
    del g.output[:]
    g.output.extend(keep)
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(mp)
    onnx.save(mp, str(out_path))
