"""The public Python API: RGFT in a plain PyTorch loop, on several model families."""

import numpy as np
import pytest
import torch

import rgft_edge
from rgft_edge import RGFT
from tests.conftest import text_batch, tiny_bert, tiny_cnn, tiny_llama


def _inputs(batch):
    return {k: v for k, v in batch.items() if k != "labels"}


def _loop(model, rgft, opt, steps, seed=0):
    selections = []
    for s in range(steps):
        b = text_batch(8, 12, seed=seed + s)
        with rgft.step() as sel:
            model(**b).loss.backward()
        selections.append(sel.mask.copy())
        opt.step()
        opt.zero_grad()
    return selections


def test_public_names_are_listed_and_typed():
    assert {"RGFT", "RGFTOptimizer", "__version__"} <= set(rgft_edge.__all__)
    assert rgft_edge.RGFT.__init__.__annotations__ and rgft_edge.RGFT.__doc__


@pytest.mark.parametrize("make", [tiny_bert, tiny_llama])
def test_only_selected_components_get_gradients_and_move(make):
    model = make()
    model.get_input_embeddings().requires_grad_(False)
    rgft = RGFT(model, policy="top-p", top_p=0.3, example_inputs=_inputs(text_batch(2, 12)))
    opt = rgft.optimizer(lr=1e-2)
    _loop(model, rgft, opt, 1)  # step 0 measures every component
    for s in range(1, 5):
        before = {n: p.detach().clone() for n, p in rgft._params.items()}
        b = text_batch(8, 12, seed=s)
        with rgft.step() as sel:
            model(**b).loss.backward()
            trained = {n for i in np.flatnonzero(sel.mask) for n in rgft._comp_params[i]}
            assert {n for n, p in rgft._params.items() if p.grad is not None} == trained
        opt.step()
        opt.zero_grad()
        moved = {n for n, p in rgft._params.items() if not torch.equal(p.detach(), before[n])}
        assert moved == trained and 0 < sel.mask.sum() < len(rgft.table)
    assert (rgft.scores > 0).all()  # every component has been scored


def test_full_policy_equals_torch_adamw():
    a, b = tiny_bert(), tiny_bert()
    rgft = RGFT(a, policy="full", example_inputs=_inputs(text_batch(2, 12)))
    opt = rgft.optimizer(lr=1e-3, weight_decay=0.01)
    names = set(rgft._params)
    ref = torch.optim.AdamW([p for n, p in b.named_parameters() if n in names], lr=1e-3, weight_decay=0.01)
    _loop(a, rgft, opt, 3)
    for s in range(3):
        b(**text_batch(8, 12, seed=s)).loss.backward()
        ref.step()
        ref.zero_grad()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        if n in names:
            torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_cnn_with_automatic_partition():
    model = tiny_cnn()
    x = torch.randn(4, 3, 16, 16)
    rgft = RGFT(model, policy="budget", budget=0.7, example_inputs=x, batch_size=4)
    assert len(rgft.table) >= 3
    opt = rgft.optimizer(lr=1e-2)
    for s in range(4):
        with rgft.step():
            torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
        opt.step()
        opt.zero_grad()
    assert rgft.step_count == 4


def test_a_users_own_cnn_and_dataloader_learn_in_a_few_lines():
    """The issue's acceptance case: not a shipped model, a plain torch DataLoader, the user's loop."""
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (96,), generator=g)
    x = torch.randn(96, 3, 16, 16, generator=g) + torch.nn.functional.one_hot(y, 3)[:, :, None, None]  # brightest channel
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=g)
    model = tiny_cnn()
    rgft = RGFT(model, policy="top-p", top_p=0.5, example_inputs=x[:16])
    opt = rgft.optimizer(lr=1e-2)
    losses, trained = [], []
    for _ in range(12):
        for xb, yb in loader:
            with rgft.step() as sel:
                loss = torch.nn.functional.cross_entropy(model(xb), yb)
                loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(float(loss.detach()))
            trained.append(sel.mask.copy())
    assert np.mean(losses[-6:]) < 0.7 * np.mean(losses[:6])
    counts = np.sum(trained, axis=0)
    assert counts.min() < len(trained) and counts.max() > 0  # selective: not every component every step


def test_checkpoint_resume_continues_identically(tmp_path):
    def fresh():
        m = tiny_bert()
        r = RGFT(m, policy="paced", budget=0.7, example_inputs=_inputs(text_batch(2, 12)))
        return m, r, r.optimizer(lr=1e-2)

    m1, r1, o1 = fresh()
    _loop(m1, r1, o1, 4)
    r1.save_checkpoint(tmp_path)
    sel1 = _loop(m1, r1, o1, 4, seed=100)
    m2, r2, o2 = fresh()
    assert r2.load_checkpoint(tmp_path) == 4
    sel2 = _loop(m2, r2, o2, 4, seed=100)
    assert all(np.array_equal(x, y) for x, y in zip(sel1, sel2))
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p1, p2)


def test_misuse_is_refused_clearly():
    model = tiny_bert()
    rgft = RGFT(model, policy="top-p", example_inputs=_inputs(text_batch(2, 12)))
    opt = rgft.optimizer()
    with pytest.raises(RuntimeError, match="outside an RGFT step"):
        opt.step()
    with pytest.raises(ValueError, match="budget"):
        RGFT(model, policy="budget", budget=2.0)


def test_run_directory_meters_budgets_and_report_from_code(tmp_path):
    import json

    model = tiny_cnn()
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 3, (8,))
    run = tmp_path / "run"
    rgft = RGFT(model, policy="budget", budget=0.6, example_inputs=x, run_dir=run, time_budget=3600,
                profile="raspberry-pi-5")
    opt = rgft.optimizer(lr=1e-2)
    for _ in range(4):
        with rgft.step():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            rgft.log(loss=loss)
        opt.step()
        opt.zero_grad()
        assert rgft.should_stop() is None
    rgft.log_eval(accuracy=0.5)
    s = rgft.finish(report=True)
    assert s["steps"] == 4 and s["stop_reason"] == "completed" and s["power_profile"] == "raspberry-pi-5"
    assert s["energy_source"] and s["peak_rss_bytes"] > 0
    steps = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["type"] for r in steps] == ["step"] * 4 + ["eval"] and all("loss" in r for r in steps[:4])
    assert np.load(run / "error_map.npy").shape == (4, len(rgft.table))
    assert "error map" in (run / "report.html").read_text()
    # a spent budget says so, like the CLI's stop reasons
    spent = RGFT(tiny_cnn(), policy="full", example_inputs=x, time_budget=1e-6)
    assert spent.should_stop() == "time budget reached"
    spent.finish(report=False)
    with pytest.raises(rgft_edge.errors.UserError, match="positive"):
        RGFT(tiny_cnn(), example_inputs=x, energy_budget=-1.0)
