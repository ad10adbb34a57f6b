import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from rgft_edge.device_runners.torch_eager import TorchEagerBackend, causal_lm_loss, tensor_loss
from rgft_edge.error_map import ErrorMap
from rgft_edge.loop import LoopSettings, train
from rgft_edge.optim import ComponentAdamW
from rgft_edge.partition import build_component_table
from rgft_edge.policies import Policy, Selection
from tests.conftest import text_batch, tiny_bert, tiny_cnn, tiny_gpt2, tiny_llama


def np_batch(b):
    return {k: v.numpy() for k, v in b.items()}


class Fixed(Policy):
    def __init__(self, mask):
        self.mask = np.asarray(mask, bool)

    @property
    def uses_scores(self):
        return False

    def select(self, scores, step, forced):
        return Selection.of(self.mask)

    def tighten(self):
        return None


@pytest.mark.parametrize("granularity", ["block", "head"])
def test_unselected_components_get_no_gradient_and_keep_weights_bit_for_bit(granularity):
    model = tiny_bert()
    batch = text_batch()
    table = build_component_table(model, granularity, {"input_ids": batch["input_ids"]})
    backend = TorchEagerBackend(model, table)
    before = {n: t.clone() for n, t in backend.parameters().items()}
    mask = np.zeros(len(table), bool)
    picks = [table.index("layer.1.ffn"), table.index("classifier")]
    if granularity == "head":
        picks.append(table.index("layer.1.head.2"))  # one head: its slices move, its siblings must not
    mask[picks] = True
    out = backend.train_step(np_batch(batch), mask, False)
    on = table.param_names(np.flatnonzero(mask))
    for n, p in dict(model.named_parameters()).items():
        if n in table.param_names() and n not in on:
            assert p.grad is None, f"{n} received a gradient"
    opt = ComponentAdamW(table, lr=1e-2)
    for step in range(3):
        out = backend.train_step(np_batch(text_batch(seed=step)), mask, False)
        opt.step(backend.parameters(), out.grads, mask.astype(float), step)
        backend.commit([])
    after = backend.parameters()
    for i, c in enumerate(table):
        for r in c.params:
            same = torch.equal(before[r.name][r.index(before[r.name].dim())], after[r.name][r.index(after[r.name].dim())])
            assert same != bool(mask[i]), f"{c.name} {r.name} moved={not same} selected={mask[i]}"


def backward_flops(model, table, mask, batch):
    backend = TorchEagerBackend(model, table)
    backend.set_trainable(mask)
    loss, _ = backend.loss_fn(model, batch)
    with FlopCounterMode(display=False) as fc:
        loss.backward()
    backend.close()
    return fc.get_total_flops()


@pytest.mark.parametrize("make", [tiny_bert, tiny_llama])
def test_backward_flops_drop_with_few_high_components(make):
    model = make()
    batch = text_batch(n=8, t=16)
    table = build_component_table(model, "block", {"input_ids": batch["input_ids"]})
    full = backward_flops(model, table, np.ones(len(table), bool), batch)
    top = np.zeros(len(table), bool)
    top[len(table) - 1] = True  # the classifier alone
    top_ffn = top.copy()
    top_ffn[table.index("layer.1.ffn")] = True
    low = np.zeros(len(table), bool)
    low[table.index("layer.0.attention")] = True
    f_top, f_ffn, f_low = (backward_flops(model, table, m, batch) for m in (top, top_ffn, low))
    assert f_top < f_ffn < f_low < full
    assert f_top < 0.05 * full  # head only: no backprop into the encoder at all


def test_cnn_and_causal_lm_backends_train():
    cnn = tiny_cnn()
    x = torch.randn(6, 3, 8, 8)
    table = build_component_table(cnn, "layer", x)
    backend = TorchEagerBackend(cnn, table, tensor_loss)
    out = backend.train_step({"inputs": x.numpy(), "labels": np.array([0, 1, 2, 0, 1, 2])},
                             np.ones(len(table), bool), True)
    assert np.isfinite(out.loss) and set(out.grads) == table.param_names()
    assert len(out.hook_norms) == len(table)
    gpt = tiny_gpt2()
    b = text_batch()
    table = build_component_table(gpt, "block", {"input_ids": b["input_ids"]})
    backend = TorchEagerBackend(gpt, table, causal_lm_loss)
    out = backend.train_step({"input_ids": b["input_ids"].numpy(), "attention_mask": b["attention_mask"].numpy()},
                             np.ones(len(table), bool), False)
    assert np.isfinite(out.loss)
    ev = backend.evaluate([{"input_ids": b["input_ids"].numpy(), "attention_mask": b["attention_mask"].numpy()}])
    assert "perplexity" in ev.metrics


def run_loop(make, policy_name, estimator="grad-norm", steps=30, granularity="block", **kw):
    from rgft_edge.policies import make_policy
    from rgft_edge.costs import CostModel

    torch.manual_seed(0)
    model = make()
    batch0 = text_batch(n=16, t=10)
    table = build_component_table(model, granularity, {"input_ids": batch0["input_ids"]})
    backend = TorchEagerBackend(model, table)
    cost = CostModel(table, 16)
    policy = make_policy(policy_name, table, top_p=0.3, budget=0.7, seed=0, **kw)
    records = []
    # A learnable rule: label = whether token 5 appears in the sequence.
    def data():
        g = torch.Generator().manual_seed(1)
        while True:
            ids = torch.randint(5, 20, (16, 10), generator=g)
            yield {"input_ids": ids.numpy(), "attention_mask": np.ones((16, 10), np.int64),
                   "labels": (ids == 5).any(1).long().numpy()}
    res = train(backend, policy, ErrorMap(len(table), 0.9, 10), ComponentAdamW(table, 3e-3), data(),
                LoopSettings(estimator, max_steps=steps), cost=cost, on_step=records.append)
    return res, records, table


@pytest.mark.parametrize("policy", ["top-p", "scale", "clip", "rank", "budget", "full", "random", "static", "head-only"])
def test_every_policy_trains_through_the_loop(policy):
    res, records, table = run_loop(tiny_bert, policy)
    assert res.steps == 30 and res.skipped_steps == 0
    assert np.mean(res.losses[-10:]) < np.mean(res.losses[:5])
    assert all(r["params_updated"] > 0 for r in records)
    if policy == "budget":  # probe and forced exploration aside, the budget holds every step
        free = [r for r in records[1:] if not r["forced"]]
        assert free and all(r["cost_fraction"] <= 0.7 + 1e-9 for r in free)


@pytest.mark.parametrize("make", [tiny_bert, tiny_llama])
def test_activation_estimator_through_the_loop(make):
    res, records, table = run_loop(make, "top-p", "activation")
    assert np.mean(res.losses[-10:]) < np.mean(res.losses[:5])
    assert all(len(r["measured"]) >= len(r["selected"]) for r in records)


def tiny_backend():
    """A tiny BERT in the eager backend, block granularity, with one batch."""
    model = tiny_bert()
    b = text_batch()
    table = build_component_table(model, "block", {"input_ids": b["input_ids"]})
    return TorchEagerBackend(model, table), table, b


def test_non_finite_loss_skips_the_update():
    backend, table, b = tiny_backend()
    real_loss = backend.loss_fn
    backend.loss_fn = lambda m, t: (real_loss(m, t)[0] * float("nan"), None)
    before = {n: t.clone() for n, t in backend.parameters().items()}
    batches = [np_batch(b)] * 3
    res = train(backend, Fixed(np.ones(len(table))), ErrorMap(len(table)), ComponentAdamW(table, 1e-2),
                batches, LoopSettings())
    assert res.skipped_steps == 3
    assert all(torch.equal(before[n], t) for n, t in backend.parameters().items())


def test_out_of_memory_shrinks_the_selection_and_retries():
    backend, table, b = tiny_backend()
    real = backend.train_step
    seen = []

    def limited(batch, mask, measure):  # pretend only 2 components fit in memory
        seen.append(int(mask.sum()))
        if mask.sum() > 2:
            raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate; out of memory")
        return real(batch, mask, measure)

    backend.train_step = limited
    records = []
    res = train(backend, Fixed(np.ones(len(table))), ErrorMap(len(table)), ComponentAdamW(table, 1e-2),
                [np_batch(b)] * 2, LoopSettings(), on_step=records.append)
    assert res.steps == 2 and all(len(r["selected"]) == 2 for r in records)
    assert seen[:len(table) - 1] == list(range(len(table), 1, -1))  # dropped one at a time
    top2 = sorted(range(len(table)), key=lambda i: table[i].depth)[-2:]
    assert sorted(records[0]["selected"]) == sorted(top2)  # the lowest went first


def test_errors_that_are_not_oom_propagate():
    backend, table, b = tiny_backend()

    def broken(batch, mask, measure):
        raise RuntimeError("shape mismatch")

    backend.train_step = broken
    with pytest.raises(RuntimeError, match="shape mismatch"):
        train(backend, Fixed(np.ones(len(table))), ErrorMap(len(table)), ComponentAdamW(table, 1e-2),
              [np_batch(b)], LoopSettings())
