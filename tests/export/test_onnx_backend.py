"""The standard-ONNX backend: per-stage graphs chained by a numpy runner.

Two families, both quantisation paths: the tiny BERT-like classifier compiled int8 + LoRA (the
session's shared artifact) and a tiny tied-embedding Llama-like causal LM compiled fp32 with full
weights. Gradients must equal eager torch on the same model for any selection, a step must run
gradient graphs only down to its lowest selected stage, and every graph must use default-domain
ONNX operators only.
"""

import json

import numpy as np
import onnx
import pytest

from rgft_edge.artifact import ArtifactError, load_artifact, write_manifest
from rgft_edge.backend import open_backend
from rgft_edge.export.compile import compile_artifact
from tests.conftest import save_tiny_model_dir, tiny_llama_lm, tiny_opts


@pytest.fixture(scope="module")
def llama_artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-llama")
    model_dir = save_tiny_model_dir(root / "model", model=tiny_llama_lm())
    opts = tiny_opts(task="causal-lm", adapter="full", quantize="none")
    return {b: compile_artifact(str(model_dir), root / b, b, opts, force=True) and root / b
            for b in ("torch", "onnx")}


def pair(artifacts):
    return (open_backend(load_artifact(artifacts["onnx"]), 1), open_backend(load_artifact(artifacts["torch"]), 1))


def text(n=4, t=12, labels=True, seed=0):
    g = np.random.default_rng(seed)
    b = {"input_ids": g.integers(5, 25, (n, t)), "attention_mask": np.ones((n, t), np.int64),
         "token_type_ids": np.zeros((n, t), np.int64)}
    b["attention_mask"][min(1, n - 1), t - 4:] = 0  # a padded row: the masks' padded branch must match too
    if labels:
        b["labels"] = g.integers(0, 2, n)
    return b


def selections(k: int, seed: int = 0):
    eye = np.eye(k, dtype=bool)
    g = np.random.default_rng(seed)
    yield "all", np.ones(k, bool)
    yield "only the lowest", eye[0]
    yield "only the head", eye[k - 1]
    for j in range(3):
        yield f"random {j}", g.random(k) < 0.4 if j else eye[1] | eye[k - 2]


def assert_same_gradients(exp, ref, batch):
    for label, mask in selections(len(exp.table)):
        if not mask.any():
            continue
        o, t = exp.train_step(batch, mask, False), ref.train_step(batch, mask, False)
        assert o.loss == pytest.approx(t.loss, abs=1e-5), label
        assert set(o.grads) == set(t.grads), label
        for n, g in t.grads.items():
            np.testing.assert_allclose(np.asarray(o.grads[n]), g.detach().numpy(), atol=1e-5, rtol=1e-4,
                                       err_msg=f"{label}: {n}")


def test_bert_int8_lora_gradients_equal_eager(tiny_artifacts):
    exp, ref = pair(tiny_artifacts)
    art = load_artifact(tiny_artifacts["onnx"])
    assert any(p["role"] == "int8" for s in art.manifest["backend_info"]["stages"] for p in s["params"])
    batch = {k: v for k, v in text().items() if k in art.manifest["input_spec"]["names"] + ["labels"]}
    assert_same_gradients(exp, ref, batch)


def test_llama_causal_lm_gradients_and_perplexity_equal_eager(llama_artifacts):
    exp, ref = pair(llama_artifacts)
    batch = text(labels=False)
    del batch["token_type_ids"]
    assert_same_gradients(exp, ref, batch)
    e, r = exp.evaluate([batch]), ref.evaluate([batch])
    assert e.metrics["perplexity"] == pytest.approx(r.metrics["perplexity"], rel=1e-5)


def test_recomputing_gradient_graphs_give_the_same_gradients(tiny_artifacts, llama_artifacts):
    """The lean mode a memory budget switches on: gradient graphs that recompute their forward."""
    for artifacts, drop in ((tiny_artifacts, ()), (llama_artifacts, ("labels", "token_type_ids"))):
        exp, ref = pair(artifacts)
        exp.recompute_activations = True
        batch = {k: v for k, v in text(labels=not drop).items() if k not in drop}
        if artifacts is tiny_artifacts:
            names = load_artifact(artifacts["onnx"]).manifest["input_spec"]["names"]
            batch = {k: v for k, v in batch.items() if k in names + ["labels"]}
        assert_same_gradients(exp, ref, batch)
        assert exp.train_step(batch, np.ones(len(exp.table), bool), False).info["activations"] == "recompute"


def test_dynamic_batch_and_sequence(tiny_artifacts):
    exp, ref = pair(tiny_artifacts)
    for n, t in ((1, 5), (6, 12)):
        batch = text(n=n, t=t)
        assert exp.evaluate([batch]).loss == pytest.approx(ref.evaluate([batch]).loss, abs=1e-5)


def test_cost_follows_the_selection(tiny_artifacts):
    """The backward walks from the head down to the lowest selected stage and no further."""
    exp, _ = pair(tiny_artifacts)
    batch = text()
    k = len(exp.table)
    head = exp.train_step(batch, np.eye(k, dtype=bool)[k - 1], False).info
    low = exp.train_step(batch, np.eye(k, dtype=bool)[0], False).info
    assert head["gradient_graphs"] == 1
    assert low["gradient_graphs"] == len(exp.stages) - low["lowest_stage"] > head["gradient_graphs"]


def test_graphs_use_default_domain_operators_only(tiny_artifacts, llama_artifacts):
    for root in (tiny_artifacts["onnx"], llama_artifacts["onnx"]):
        files = sorted(root.glob("onnx/*.onnx"))
        assert files
        for f in files:
            m = onnx.load(str(f))
            assert {n.domain for n in m.graph.node} <= {"", "ai.onnx"}, f.name
            assert all(o.domain in ("", "ai.onnx") for o in m.opset_import), f.name


def test_an_operator_the_runtime_lacks_is_refused_at_load(tiny_artifacts, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_artifacts["onnx"], bad)
    path = bad / "onnx" / "classifier.fwd.onnx"
    m = onnx.load(str(path))
    m.graph.node[-1].op_type = "NoSuchOperator"
    onnx.save(m, str(path))
    manifest = json.loads((bad / "manifest.json").read_text())
    write_manifest(bad, {k: v for k, v in manifest.items() if k not in ("schema", "schema_version", "files")})
    with pytest.raises(ArtifactError, match="NoSuchOperator"):
        open_backend(load_artifact(bad), 1)


def test_gradient_graphs_read_saved_activations_instead_of_recomputing(tiny_artifacts, llama_artifacts):
    """Each non-head gradient graph has a saving forward; it reads what that forward saved and runs
    no forward op of its own (no Softmax: attention's backward is written from the saved probabilities)."""
    for root in (tiny_artifacts["onnx"], llama_artifacts["onnx"]):
        info = load_artifact(root).manifest["backend_info"]
        assert info["saved_activations"]
        heads = {s["graphs"] for s in info["stages"] if s["head"]}
        for kind, files in info["graphs"].items():
            for v in ("x", "w", "xw"):
                if v not in files:
                    continue
                if kind not in heads:  # and the lean variant that recomputes: no saved inputs
                    lean = onnx.load(str(root / files["rc_" + v])).graph
                    assert not any(i.name.startswith("saved.") for i in lean.input), (kind, v)
                grad = onnx.load(str(root / files[v])).graph
                if kind in heads:  # joint: loss and logits come out of the gradient graph too
                    assert [o.name for o in grad.output][:2] == ["loss", "logits"]
                    continue
                assert "save_" + v in files, (kind, v)
                assert any(i.name.startswith("saved.") for i in grad.input), (kind, v)
                if kind.startswith("attention"):
                    assert "Softmax" not in {n.op_type for n in grad.node}, (kind, v)
