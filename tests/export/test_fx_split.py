"""Splitting a traced joint forward+backward graph into a saving forward and a backward."""

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from rgft_edge.export.fx_split import split_joint


def joint(x, gy, w1, w2):
    """y = tanh(x @ w1) @ w2 with gradients for x and w1 only (w2 frozen)."""
    with torch.enable_grad():
        x, w1 = x.detach().requires_grad_(True), w1.detach().requires_grad_(True)
        y = torch.tanh(x @ w1.t()) @ w2.t()
        gx, gw1 = torch.autograd.grad(y, [x, w1], gy)
        return y.detach(), gx, gw1


def args(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(5, 4, generator=g), torch.randn(5, 3, generator=g), torch.randn(6, 4, generator=g),
            torch.randn(3, 6, generator=g)]


def test_split_halves_reproduce_the_joint_graph_and_save_only_data_dependent_tensors():
    a = args()
    gm = make_fx(joint, tracing_mode="real")(*a)
    sp = split_joint(gm, [0], 1, 1)
    assert 1 not in sp.forward_inputs  # the forward never reads the output gradient
    fwd = sp.forward(*[a[i] for i in sp.forward_inputs])
    bwd = sp.backward(*fwd[1:], *[a[i] for i in sp.backward_inputs])
    ref = joint(*a)
    torch.testing.assert_close(fwd[0], ref[0])
    for got, want in zip(bwd, ref[1:]):
        torch.testing.assert_close(got, want)
    assert sp.saved == len(fwd) - 1 >= 1
    # the saved tensors are activations (batch-sized), not copies of a weight
    assert all(t.shape[0] == 5 for t in fwd[1:])
    # the backward recomputes nothing from x: its graph has no tanh
    assert not any(n.target == torch.ops.aten.tanh.default for n in sp.backward.graph.nodes)
    # another batch through the same halves
    b = args(1)
    fwd = sp.forward(*[b[i] for i in sp.forward_inputs])
    for got, want in zip(sp.backward(*fwd[1:], *[b[i] for i in sp.backward_inputs]), joint(*b)[1:]):
        torch.testing.assert_close(got, want)

