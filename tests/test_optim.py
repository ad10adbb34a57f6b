import numpy as np
import pytest
import torch

from rgft_edge.components import Component, ComponentTable, ParamRef
from rgft_edge.optim import ComponentAdamW


def two_component_table(shapes):
    comps = [Component(n, "layer", i, [ParamRef(n)], int(np.prod(s))) for i, (n, s) in enumerate(shapes.items())]
    return ComponentTable(comps, "layer")


def test_matches_torch_adamw_with_param_groups():
    torch.manual_seed(0)
    shapes = {"a": (4, 3), "b": (5,)}
    ours = {n: torch.randn(s) for n, s in shapes.items()}
    ref = {n: torch.nn.Parameter(t.clone()) for n, t in ours.items()}
    mult = np.array([1.0, 0.5])
    opt_ref = torch.optim.AdamW([{"params": [ref["a"]], "lr": 1e-2 * mult[0]},
                                 {"params": [ref["b"]], "lr": 1e-2 * mult[1]}], weight_decay=0.01)
    opt = ComponentAdamW(two_component_table(shapes), lr=1e-2, weight_decay=0.01)
    for step in range(10):
        grads = {n: torch.randn(s) for n, s in shapes.items()}
        for n in shapes:
            ref[n].grad = grads[n].clone()
        opt_ref.step()
        opt.step(ours, grads, mult, step)
    for n in shapes:
        torch.testing.assert_close(ours[n], ref[n].detach(), rtol=1e-6, atol=1e-7)


def test_numpy_arrays_match_torch_adamw_too():
    """The numpy update (the device runners' buffers) is the same AdamW as torch's."""
    g = np.random.default_rng(1)
    shapes = {"a": (4, 3), "b": (5,)}
    ours = {n: g.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    ref = {n: torch.nn.Parameter(torch.from_numpy(a.copy())) for n, a in ours.items()}
    opt_ref = torch.optim.AdamW(list(ref.values()), lr=1e-2, weight_decay=0.01)
    opt = ComponentAdamW(two_component_table(shapes), lr=1e-2, weight_decay=0.01)
    for step in range(10):
        grads = {n: g.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
        for n in shapes:
            ref[n].grad = torch.from_numpy(grads[n].copy())
        opt_ref.step()
        opt.step(ours, grads, np.ones(2), step)
    for n in shapes:
        np.testing.assert_allclose(ours[n], ref[n].detach().numpy(), rtol=1e-5, atol=1e-6)


def test_numpy_buffers_and_slices_leave_unselected_slices_bit_identical():
    w = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    before = w.copy()
    comps = [Component("h0", "head", 0, [ParamRef("w", 0, 0, 3)], 12),
             Component("h1", "head", 0, [ParamRef("w", 0, 3, 6)], 12)]
    opt = ComponentAdamW(ComponentTable(comps, "head"), lr=0.1)
    params = {"w": w}
    for step in range(5):
        opt.step(params, {"w": np.ones_like(w)}, np.array([1.0, 0.0]), step)
    assert np.array_equal(w[3:], before[3:])  # bit-for-bit
    assert not np.allclose(w[:3], before[:3])


def test_cold_state_is_evicted_and_capped():
    shapes = {f"p{i}": (3,) for i in range(4)}
    params = {n: np.zeros(s) for n, s in shapes.items()}
    grads = {n: np.ones(s) for n, s in shapes.items()}
    opt = ComponentAdamW(two_component_table(shapes), lr=0.1, evict_after=3, max_state_components=2)
    opt.step(params, grads, np.array([1, 1, 1, 0.0]), 0)
    assert len(opt.state) == 2  # capped at 2, least recently updated first
    for step in range(1, 5):
        opt.step(params, grads, np.array([1, 0, 0, 0.0]), step)
    assert set(opt.state) == {0}  # components idle for 3 steps lost their m/v
    assert opt.evictions >= 2 and opt.state_numel() == 6


def test_bad_lr_and_missing_gradient():
    table = two_component_table({"a": (2,)})
    with pytest.raises(ValueError):
        ComponentAdamW(table, lr=0.0)
    opt = ComponentAdamW(table, lr=0.1)
    with pytest.raises(RuntimeError, match="no gradient"):
        opt.step({"a": np.zeros(2)}, {}, np.array([1.0]), 0)


def test_tracked_gain_is_first_order_loss_decrease_per_component():
    from rgft_edge.components import Component, ComponentTable, ParamRef

    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    grads = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    table = ComponentTable([Component("rows01", "layer", 0, [ParamRef("w", 0, 0, 2)], 6),
                            Component("rest", "layer", 1, [ParamRef("w", 0, 2, 4), ParamRef("b")], 9)],
                           "block")
    before = {k: v.copy() for k, v in params.items()}
    opt = ComponentAdamW(table, lr=0.1)
    opt.step(params, grads, np.array([1.0, 0.5]), 0, track_gain=True)
    delta = {k: before[k] - params[k] for k in params}
    expect = [float((grads["w"][:2] * delta["w"][:2]).sum()),
              float((grads["w"][2:] * delta["w"][2:]).sum() + (grads["b"] * delta["b"]).sum())]
    np.testing.assert_allclose(opt.last_gain, expect, rtol=1e-12)
    assert (opt.last_gain > 0).all()  # an Adam step on a fresh state moves against the gradient
    opt.step(params, grads, np.array([1.0, 0.5]), 1)
    assert opt.last_gain is None
