import subprocess
import sys

import numpy as np
import pytest

from rgft_edge.artifact import load_artifact
from rgft_edge.error_map import ErrorMap
from rgft_edge.loop import LoopSettings, train
from rgft_edge.optim import ComponentAdamW
from tests.device_runners.test_torch_eager import Fixed


def batch(seed=0, n=4, t=12):
    g = np.random.default_rng(seed)
    return {"input_ids": g.integers(5, 20, (n, t)), "attention_mask": np.ones((n, t), np.int64),
            "token_type_ids": np.zeros((n, t), np.int64), "labels": g.integers(0, 2, n)}


@pytest.fixture
def ort_and_torch(compile_tiny):
    from rgft_edge.device_runners.onnxruntime_runner import OrtBackend
    from rgft_edge.device_runners.torch_artifact import open_torch_artifact

    ort_dir, _ = compile_tiny("onnxruntime")
    torch_dir, _ = compile_tiny("torch")
    return OrtBackend(load_artifact(ort_dir), 1), open_torch_artifact(load_artifact(torch_dir), 1)


def test_gradients_equal_eager_for_every_program(ort_and_torch):
    ort_b, torch_b = ort_and_torch
    k = len(ort_b.table)
    depths = np.array(ort_b.table.depths)
    assert len(ort_b.programs) >= 2
    for prog in ort_b.programs:
        mask = depths >= prog.min_depth
        assert ort_b.program_for(mask) is prog
        o = ort_b.train_step(batch(), mask, False)
        t = torch_b.train_step(batch(), mask, False)
        assert o.info["cut_depth"] == prog.min_depth
        assert o.loss == pytest.approx(t.loss, abs=1e-6)
        for n, g in t.grads.items():
            np.testing.assert_allclose(o.grads[n], g.numpy(), atol=1e-6, rtol=1e-5)
    # a selection high in the network runs the shallowest program that covers it
    top = np.zeros(k, bool)
    top[k - 1] = True
    assert ort_b.program_for(top).min_depth == max(p.min_depth for p in ort_b.programs)


def test_loss_curve_matches_eager_over_20_steps_with_fixed_selection(ort_and_torch):
    ort_b, torch_b = ort_and_torch
    k = len(ort_b.table)
    mask = np.zeros(k, bool)
    mask[[1, k - 2, k - 1]] = True  # a fixed mixed selection, same for both
    curves = []
    for b in (ort_b, torch_b):
        res = train(b, Fixed(mask), ErrorMap(k), ComponentAdamW(b.table, 1e-2), [batch(s % 5) for s in range(20)],
                    LoopSettings())
        curves.append(res.losses)
    np.testing.assert_allclose(curves[0], curves[1], atol=1e-4)
    assert curves[0][15] < curves[0][0]  # the same batch, three passes later


def test_adapted_model_exports_to_a_runnable_inference_onnx(ort_and_torch, tmp_path):
    import onnxruntime as ort

    ort_b, _ = ort_and_torch
    k = len(ort_b.table)
    train(ort_b, Fixed(np.ones(k)), ErrorMap(k), ComponentAdamW(ort_b.table, 1e-2), [batch()] * 5, LoopSettings())
    out = ort_b.export_adapted(tmp_path / "adapted")
    sess = ort.InferenceSession(out["onnx"], providers=["CPUExecutionProvider"])
    b = batch(3)
    feed = {i.name: b[i.name] for i in sess.get_inputs()}
    logits = sess.run(["logits"], feed)[0]
    prog = ort_b.programs[0]
    prog.module.eval()
    _, ref = prog.module(*ort_b._feed(prog, b, prog.module.input_names()))
    np.testing.assert_allclose(logits, ref, atol=1e-5)


def test_runner_path_works_with_torch_transformers_and_peft_unimportable(compile_tiny, tmp_path, sentiment_csv):
    """Simulates a device without the host stack: importing any of these modules fails."""
    art, _ = compile_tiny("onnxruntime")
    code = f"""
import sys
for name in ("torch", "transformers", "peft", "torchao", "executorch", "optimum"):
    sys.modules[name] = None  # import of these now raises ImportError
from rgft_edge.recipes.train import train_artifact
from rgft_edge.config import FinetuneConfig
cfg = FinetuneConfig.of(data={str(sentiment_csv)!r}, text_column="review", label_column="sentiment",
                     eval_examples=24, out={str(tmp_path / 'run')!r}, threads=1, budget=None, max_steps=6)
s = train_artifact({str(art)!r}, cfg, progress=False)
print("STEPS", s["steps"], sorted(s["exported"]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "STEPS 6 ['onnx', 'safetensors']" in out.stdout, out.stdout + out.stderr[-2000:]
