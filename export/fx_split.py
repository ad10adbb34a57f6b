"""Split a traced joint forward+backward FX graph into a forward that saves activations and a
backward that reads them (no recompute) — the ExecuTorch twin of `onnx_saved.split_saved`.

The joint graph (x..., context..., gy, weights...) -> (y, gradients...) is `make_fx` of a stage's
forward and `torch.autograd.grad` traced together, with static shapes. Its nodes fall in two parts:

- forward: every node that does not depend on `gy`;
- backward: the nodes the gradients need, walking back from them and stopping at the tensors the
  forward computed from the data (`x`): those are the saved activations, the forward's extra
  outputs and the backward's inputs.

Tensors made from weights and context alone (a dequantized int8 weight, a transposed weight) are
recomputed by the backward from its own inputs instead of saved, and so are views of what the
backward reads anyway: saving them would copy every weight above the cut each step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx

aten = torch.ops.aten
_VIEWS = {aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.t.default,
          aten.transpose.int, aten.permute.default, aten.expand.default, aten.unsqueeze.default,
          aten.squeeze.dim, aten.squeeze.dims, aten.slice.Tensor, aten.select.int, aten.alias.default,
          aten.detach.default, aten.clone.default}


@dataclass
class Split:
    forward: fx.GraphModule  # (inputs named in forward_inputs) -> (y..., saved...)
    backward: fx.GraphModule  # (saved..., inputs named in backward_inputs) -> gradients
    forward_inputs: list[int]  # positions of the joint graph's arguments, in call order
    backward_inputs: list[int]  # after the saved tensors
    saved: int  # how many saved tensors
    n_y: int


def _users_closure(start: set[fx.Node], nodes: list[fx.Node]) -> set[fx.Node]:
    out = set(start)
    for n in nodes:  # topological order
        if n.op != "placeholder" and any(a in out for a in n.all_input_nodes):
            out.add(n)
    return out


def _needed(outputs: list[fx.Node], stop: set[fx.Node]) -> tuple[set[fx.Node], set[fx.Node]]:
    """Walking back from `outputs`: the nodes they need, and where the walk ended (stop or inputs)."""
    nodes, reached, todo, seen = set(), set(), list(outputs), set()
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if n in stop or n.op == "placeholder":
            reached.add(n)
            continue
        nodes.add(n)
        todo.extend(n.all_input_nodes)
    return nodes, reached


def _copy(graph: fx.Graph, joint: fx.Graph, keep: set[fx.Node], inputs: list[tuple[fx.Node, str]],
          outputs: list[fx.Node]) -> None:
    env: dict[fx.Node, fx.Node] = {}
    for node, name in inputs:
        env[node] = graph.placeholder(name)
        env[node].meta = dict(node.meta)
    for n in joint.nodes:
        if n in keep and n not in env:
            env[n] = graph.node_copy(n, lambda a: env[a])
    graph.output(tuple(env[o] for o in outputs))


def split_joint(gm: fx.GraphModule, x_args: list[int], gy_arg: int, n_y: int) -> Split:
    """`x_args` / `gy_arg`: positions of the data input(s) and of the output gradient among the
    joint graph's arguments; its outputs are (y... (`n_y` of them), gradients...)."""
    nodes = list(gm.graph.nodes)
    ph = dict(enumerate(n for n in nodes if n.op == "placeholder"))
    out_node = next(n for n in nodes if n.op == "output")
    outs = list(out_node.args[0])
    ys, grads = outs[:n_y], outs[n_y:]
    from_x = _users_closure({ph[i] for i in x_args}, nodes)
    from_gy = _users_closure({ph[gy_arg]}, nodes)
    saveable = {n for n in from_x - from_gy if n.op != "placeholder"}
    remat: set[fx.Node] = set()
    while True:
        bwd_nodes, bwd_reads = _needed(grads, saveable - remat)
        saved = [n for n in nodes if n in bwd_reads and n in saveable]
        avail = set(saved) | set(ph.values()) | remat
        more = {n for n in saved if n.op == "call_function" and n.target in _VIEWS
                and isinstance(n.args[0], fx.Node) and n.args[0] in avail}
        if not more:
            break
        remat |= more
    fwd_nodes, fwd_reads = _needed(ys + saved, set())
    shared = (fwd_nodes & bwd_nodes) & from_x
    if shared - remat:
        raise RuntimeError(f"the split would recompute data-dependent nodes: {sorted(str(n) for n in shared - remat)[:3]}")
    f_in = [i for i, n in ph.items() if n in fwd_reads and i != gy_arg]
    b_in = [i for i, n in ph.items() if n in bwd_reads]
    fwd = fx.Graph()
    _copy(fwd, gm.graph, fwd_nodes, [(ph[i], f"in_{i}") for i in f_in], ys + saved)
    bwd = fx.Graph()
    _copy(bwd, gm.graph, bwd_nodes, [(n, f"saved_{i}") for i, n in enumerate(saved)]
          + [(ph[i], f"in_{i}") for i in b_in], grads)
    return Split(fx.GraphModule(gm, fwd), fx.GraphModule(gm, bwd), f_in, b_in, len(saved), n_y)
