"""A Llama-like decoder (GQA, RMSNorm, rotary) through every backend: gradients equal eager."""

import numpy as np
import pytest
import torch

from rgft_edge.artifact import load_artifact
from rgft_edge.export.compile import compile_artifact
from rgft_edge.backend import open_backend
from tests.conftest import save_tiny_model_dir, tiny_llama, tiny_opts


@pytest.fixture(scope="module")
def llama_artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("llama")
    model_dir = save_tiny_model_dir(root / "tiny-llama", model=tiny_llama())
    return {b: compile_artifact(str(model_dir), root / b, b, tiny_opts(), force=True) and root / b
            for b in ("torch", "onnxruntime", "executorch")}


def llama_batch(seed=0):
    g = np.random.default_rng(seed)
    return {"input_ids": g.integers(5, 20, (4, 12)), "attention_mask": np.ones((4, 12), np.int64),
            "labels": g.integers(0, 2, 4)}


def to_np(x):
    return x.detach().numpy() if hasattr(x, "detach") else np.asarray(x)


@pytest.mark.parametrize("backend", ["onnxruntime", "executorch"])
def test_llama_gradients_equal_eager_for_every_program(llama_artifacts, backend):
    ref = open_backend(load_artifact(llama_artifacts["torch"]), 1)
    exp = open_backend(load_artifact(llama_artifacts[backend]), 1)
    assert load_artifact(llama_artifacts[backend]).manifest["source_model"]["family"] == "llama"
    assert "token_type_ids" not in load_artifact(llama_artifacts[backend]).manifest["input_spec"]["names"]
    depths = np.array(exp.table.depths)
    for d in sorted(set(depths)):
        mask = depths >= d
        o, t = exp.train_step(llama_batch(), mask, False), ref.train_step(llama_batch(), mask, False)
        assert o.loss == pytest.approx(t.loss, abs=1e-5)
        for n, g in t.grads.items():
            np.testing.assert_allclose(to_np(o.grads[n]), to_np(g), atol=1e-5, rtol=1e-4)
