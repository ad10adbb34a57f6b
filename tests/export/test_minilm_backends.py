"""The real default model through every backend (slow: exporting MiniLM takes minutes on 2 cores):
gradients equal eager torch on the same int8+LoRA model and batch — every cut-depth program of
ONNX Runtime, and full, head-only and sparse selections through ExecuTorch's default stage layout.
Compiled with dropout 0 so the comparison is exact (dropout masks are random per runtime)."""

import numpy as np
import pytest

from rgft_edge.artifact import load_artifact
from rgft_edge.export.compile import compile_artifact
from rgft_edge.export.prepare import PrepareOptions
from rgft_edge.models import resolve_model
from rgft_edge.backend import open_backend


@pytest.fixture(scope="module")
def minilm_artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("minilm")
    # ExecuTorch in its default layout on this model (stages); ONNX Runtime has cut-depth programs
    opts = PrepareOptions(max_length=32, batch_size=4, dropout=0.0)
    return {b: compile_artifact(resolve_model(None), root / b, b, opts, force=True, max_programs=2) and root / b
            for b in ("torch", "onnxruntime", "executorch")}


def to_np(x):
    return x.detach().numpy() if hasattr(x, "detach") else np.asarray(x)


def train_depths(backend):
    return sorted({p["min_depth"] if isinstance(p, dict) else p.min_depth for p in backend.programs})


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "executorch"])
def test_minilm_gradients_equal_eager(minilm_artifacts, backend):
    ref = open_backend(load_artifact(minilm_artifacts["torch"]), 2)
    exp = open_backend(load_artifact(minilm_artifacts[backend]), 2)
    g = np.random.default_rng(0)
    batch = {"input_ids": g.integers(1000, 5000, (4, 32)), "attention_mask": np.ones((4, 32), np.int64),
             "token_type_ids": np.zeros((4, 32), np.int64), "labels": np.array([0, 1, 1, 0])}
    depths = np.array(exp.table.depths)
    if backend == "executorch":  # stage layout: any selection, weight gradients for it only
        assert exp.artifact.manifest["backend_info"]["layout"] == "stages"
        k = len(depths)
        masks = [np.ones(k, bool), np.arange(k) == k - 1, np.isin(np.arange(k), [0, k // 2, k - 1])]
    else:
        cuts = train_depths(exp)
        assert len(cuts) == 2  # the bottom cut (every component) and the head alone
        masks = [depths >= d for d in cuts]
    for mask in masks:
        o, t = exp.train_step(batch, mask, False), ref.train_step(batch, mask, False)
        assert o.loss == pytest.approx(t.loss, abs=1e-4)
        assert set(o.grads) == set(t.grads)
        for n, grad in t.grads.items():
            np.testing.assert_allclose(to_np(o.grads[n]), to_np(grad), atol=2e-5, rtol=1e-3)
