"""The three runners on one compiled tiny model: same gradients, same loss curve, same programs."""

import numpy as np
import pytest
import torch

from rgft_edge.artifact import load_artifact
from rgft_edge.error_map import ErrorMap
from rgft_edge.loop import LoopSettings, train
from rgft_edge.optim import ComponentAdamW
from rgft_edge.backend import open_backend
from tests.device_runners.test_onnxruntime_runner import batch
from tests.device_runners.test_torch_eager import Fixed

BACKENDS = ("torch", "onnxruntime", "executorch")


@pytest.fixture(scope="module")
def backends(tiny_artifacts):
    return {b: open_backend(load_artifact(tiny_artifacts[b]), 1) for b in BACKENDS}


def to_np(x):
    return x.detach().numpy() if hasattr(x, "detach") else np.asarray(x)


@pytest.mark.parametrize("backend", ["onnxruntime", "executorch"])
def test_exported_gradients_equal_eager_for_every_program(backends, backend):
    ref, exp = backends["torch"], backends[backend]
    depths = np.array(exp.table.depths)
    cuts = sorted({p["min_depth"] if isinstance(p, dict) else p.min_depth for p in exp.programs})
    assert len(cuts) >= 2
    for d in cuts:
        mask = depths >= d
        o, t = exp.train_step(batch(), mask, False), ref.train_step(batch(), mask, False)
        assert o.info["cut_depth"] == d
        assert o.loss == pytest.approx(t.loss, abs=1e-6)
        for n, g in t.grads.items():
            np.testing.assert_allclose(to_np(o.grads[n]), to_np(g), atol=1e-6, rtol=1e-5)
        ref.commit([]), exp.commit([])


class Schedule(Fixed):
    """A fixed selection schedule that moves between deep and shallow cuts, so programs must see
    weights that other programs updated."""

    def __init__(self, masks):
        self.masks = masks

    def select(self, scores, step, forced):
        from rgft_edge.policies import Selection

        return Selection.of(self.masks[step % len(self.masks)])


def test_three_runners_give_the_same_loss_curve_for_20_steps(tiny_artifacts):
    curves, programs = {}, {}
    for b in BACKENDS:
        backend = open_backend(load_artifact(tiny_artifacts[b]), 1)  # fresh weights per backend
        k = len(backend.table)
        full, top, mid = np.ones(k, bool), np.zeros(k, bool), np.zeros(k, bool)
        top[k - 1] = True
        mid[[k // 2, k - 1]] = True
        records = []
        res = train(backend, Schedule([full, top, mid, top]), ErrorMap(k), ComponentAdamW(backend.table, 1e-2),
                    [batch(s % 5) for s in range(20)], LoopSettings(), on_step=records.append)
        curves[b] = np.array(res.losses)
        programs[b] = [r.get("cut_depth") for r in records]
    # stated tolerance: 1e-4 absolute on every step's loss (float32 kernels differ slightly)
    np.testing.assert_allclose(curves["onnxruntime"], curves["torch"], atol=1e-4)
    np.testing.assert_allclose(curves["executorch"], curves["torch"], atol=1e-4)
    assert curves["torch"][15] < curves["torch"][0]
    for b in ("onnxruntime", "executorch"):  # shallow programs really ran on the shallow steps
        assert len(set(programs[b])) >= 2 and programs[b][1] > programs[b][0], programs[b]


def test_executorch_adapted_weights_run_in_the_inference_program(backends, tmp_path):
    from executorch.runtime import Runtime

    et = backends["executorch"]
    k = len(et.table)
    train(et, Fixed(np.ones(k)), ErrorMap(k), ComponentAdamW(et.table, 1e-2), [batch()] * 3, LoopSettings())
    out = et.export_adapted(tmp_path / "adapted")
    method = Runtime.get().load_program(out["program"], data_path=out["ptd"]).load_method(out["method"])
    b = batch(4)
    logits = method.execute([torch.as_tensor(b[n]) for n in et.data_inputs])[0]
    _, ref, _ = et._step(et.programs[-1], b)
    torch.testing.assert_close(logits, torch.from_numpy(ref), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["onnxruntime", "executorch"])
def test_activation_scores_are_refused_clearly_on_exported_backends(backends, backend):
    from rgft_edge.errors import UserError

    b = backends[backend]
    with pytest.raises(UserError, match="--estimator grad-norm"):
        train(b, Fixed(np.ones(len(b.table))), ErrorMap(len(b.table)), ComponentAdamW(b.table, 1e-2),
              [batch()], LoopSettings("activation"))
