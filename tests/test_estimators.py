import numpy as np
import pytest
import torch

from rgft_edge.device_runners.torch_eager import TorchEagerBackend
from rgft_edge.estimators import compute_scores, grad_norm_scores, lp_norm, squared_norms
from rgft_edge.partition import build_component_table
from tests.conftest import text_batch, tiny_bert, tiny_llama


def np_batch(b):
    return {k: v.numpy() for k, v in b.items()}


def test_lp_norms_match_numpy():
    x = np.array([[3.0, -4.0], [1.0, -1.0]])
    assert lp_norm(x, 2) == pytest.approx(np.sqrt(27))
    assert lp_norm(x, 1) == pytest.approx(9.0)
    assert lp_norm(torch.tensor(x), 2) == pytest.approx(np.sqrt(27))
    assert lp_norm(x.astype(np.float32)[:, :1], 2) == pytest.approx(np.sqrt(10))  # a strided view


def test_squared_norms_serve_the_scores_and_catch_nan_and_inf():
    model = tiny_llama()
    batch = text_batch()
    table = build_component_table(model, "block", {"input_ids": batch["input_ids"]})
    out = TorchEagerBackend(model, table).train_step(np_batch(batch), np.ones(len(table), bool), False)
    for grads in (out.grads, {k: v.numpy() for k, v in out.grads.items()}):  # eager tensors, runner arrays
        squared = squared_norms(grads)
        assert set(squared) == set(grads)
        for name, g in grads.items():
            assert squared[name] == pytest.approx(float((np.asarray(g, np.float64) ** 2).sum()), rel=1e-5)
        np.testing.assert_allclose(grad_norm_scores(table, grads, 2.0, squared)[0],
                                   grad_norm_scores(table, grads, 2.0)[0], rtol=1e-6)
    for bad in (np.nan, np.inf, -np.inf):
        g = np.ones((3, 4), np.float32)
        g[1, 2] = bad
        assert not np.isfinite(squared_norms({"w": g})["w"])
        assert not np.isfinite(squared_norms({"w": torch.from_numpy(g)})["w"])


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_grad_norm_equals_hand_computed(p):
    model = tiny_bert()
    batch = text_batch()
    table = build_component_table(model, "head", {"input_ids": batch["input_ids"]})
    backend = TorchEagerBackend(model, table)
    out = backend.train_step(np_batch(batch), np.ones(len(table), bool), False)
    scores, measured = grad_norm_scores(table, out.grads, p)
    assert measured.all()
    named = dict(model.named_parameters())
    for i, c in enumerate(table):
        parts = [named[r.name].grad[r.index(named[r.name].dim())].flatten() for r in c.params]
        expected = torch.linalg.vector_norm(torch.cat(parts), ord=p).item()
        assert scores[i] == pytest.approx(expected, rel=1e-5), c.name


@pytest.mark.parametrize("make,granularity", [(tiny_bert, "block"), (tiny_bert, "head"), (tiny_llama, "block")])
def test_activation_attribution_equals_hand_computed(make, granularity):
    model = make()
    batch = text_batch()
    table = build_component_table(model, granularity, {"input_ids": batch["input_ids"]})
    backend = TorchEagerBackend(model, table)
    out = backend.train_step(np_batch(batch), np.ones(len(table), bool), True)
    backend.close()
    # Hand computation: capture every hooked tensor, then autograd.grad of the loss w.r.t. it.
    captured = {}
    handles = []
    for i, c in enumerate(table):
        mod = model.get_submodule(c.hook.module)
        if c.hook.mode == "input":
            handles.append(mod.register_forward_pre_hook(lambda m, a, i=i: captured.__setitem__(i, a[0])))
        else:
            handles.append(mod.register_forward_hook(
                lambda m, a, o, i=i: captured.__setitem__(i, o[0] if isinstance(o, tuple) else
                                                          getattr(o, "logits", o))))
    model.train()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = torch.nn.functional.cross_entropy(logits, batch["labels"])
    idx = sorted(captured)
    grads = torch.autograd.grad(loss, [captured[i] for i in idx], allow_unused=True)
    scores, measured = compute_scores("activation", table, out.grads, out.hook_norms)
    for i, g in zip(idx, grads):
        h = captured[i]
        hook = table[i].hook
        if hook.stop > 0:
            h, g = h[..., hook.start:hook.stop], g[..., hook.start:hook.stop]
        expected = torch.linalg.vector_norm(g).item() * torch.linalg.vector_norm(h).item()
        assert measured[i]
        assert scores[i] == pytest.approx(expected, rel=1e-4), table[i].name
    for h in handles:
        h.remove()


def test_activation_scores_cover_everything_above_the_cut_only():
    model = tiny_bert()
    batch = text_batch()
    table = build_component_table(model, "block", {"input_ids": batch["input_ids"]})
    backend = TorchEagerBackend(model, table)
    mask = np.zeros(len(table), bool)
    mask[table.index("layer.1.attention")] = True
    out = backend.train_step(np_batch(batch), mask, True)
    _, measured = compute_scores("activation", table, out.grads, out.hook_norms)
    cut = table[table.index("layer.1.attention")].depth
    assert measured.tolist() == [c.depth >= cut for c in table]
    _, gmeasured = compute_scores("grad-norm", table, out.grads, None)
    assert gmeasured.tolist() == mask.tolist()


def test_unknown_estimator():
    with pytest.raises(ValueError, match="unknown estimator"):
        compute_scores("fisher", None, {}, None)
