"""A CNN through the standard-ONNX backend: an EfficientNet-Lite network (the shipped Lite0's
structure at a tiny width, so the test exports in seconds) compiled with LoRA on its pointwise
convs. Gradients must equal eager torch for any selection (BatchNorm statistics included: they are
not the defaults here), a step must run gradient graphs only down to its lowest selected stage,
every graph must use default-domain ONNX operators, and an image model without an ONNX stage
plan is refused in one line."""

import numpy as np
import onnx
import pytest
import torch

from rgft_edge import vision
from rgft_edge.artifact import load_artifact
from rgft_edge.backend import open_backend
from rgft_edge.errors import UserError
from rgft_edge.export.compile import compile_artifact
from tests.export.test_compile_image import image_opts, resnet_dir  # noqa: F401 - fixture
from tests.export.test_onnx_backend import selections

# (repeats, kernel, stride, expand, in, out) as LITE0_STAGES: a skip block, a strided block, a 5x5 one
TINY_STAGES = ((1, 3, 1, 1, 8, 8), (1, 3, 2, 2, 8, 12), (2, 5, 1, 2, 12, 12))
SIZE = 16


def tiny_lite(num_labels: int, image_size=None, seed: int = 0):
    torch.manual_seed(seed)
    model = vision.EfficientNetLite0(num_labels, dropout=0.0, stages=TINY_STAGES, head_channels=24)
    for m in model.modules():  # statistics a rebuild must carry, not BatchNorm's defaults
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model, vision.ImageEncoder(image_size or SIZE, mean=(0.5,) * 3, std=(0.25,) * 3)


def pixels(n=3, seed=0):
    g = np.random.default_rng(seed)
    return {"pixel_values": g.standard_normal((n, 3, SIZE, SIZE)).astype(np.float32), "labels": g.integers(0, 2, n)}


def test_the_manifest_rebuilds_the_tiny_network(cnn_artifacts):
    m = load_artifact(cnn_artifacts["onnx"]).manifest
    assert m["source_model"]["config"]["stages"] == [list(s) for s in TINY_STAGES]
    assert m["input_spec"]["kind"] == "image" and m["backend_info"]["data_dtypes"]["pixel_values"] == "float32"
    assert "weights/buffers.safetensors" in m["files"]


def test_gradients_equal_eager_torch_for_any_selection(cnn_artifacts):
    exp = open_backend(load_artifact(cnn_artifacts["onnx"]), 1)
    ref = open_backend(load_artifact(cnn_artifacts["torch"]), 1)
    assert [c.name for c in exp.table] == [c.name for c in ref.table]
    batch = pixels()
    for label, mask in selections(len(exp.table)):
        if not mask.any():
            continue
        o, t = exp.train_step(batch, mask, False), ref.train_step(batch, mask, False)
        assert o.loss == pytest.approx(t.loss, abs=1e-5), label
        assert set(o.grads) == set(t.grads), label
        for name, g in t.grads.items():
            np.testing.assert_allclose(np.asarray(o.grads[name]), g.detach().numpy(), atol=2e-5, rtol=1e-4,
                                       err_msg=f"{label}: {name}")
    held = [pixels(4, seed=1)]
    assert exp.evaluate(held).loss == pytest.approx(ref.evaluate(held).loss, abs=1e-5)
    assert exp.evaluate(held).metrics["accuracy"] == ref.evaluate(held).metrics["accuracy"]


def test_a_step_runs_gradient_graphs_only_down_to_its_lowest_stage(cnn_artifacts):
    exp = open_backend(load_artifact(cnn_artifacts["onnx"]), 1)
    k, batch = len(exp.table), pixels()
    eye = np.eye(k, dtype=bool)
    head = exp.train_step(batch, eye[k - 1], False).info
    low = exp.train_step(batch, eye[0], False).info
    assert head["gradient_graphs"] == 1
    assert low["gradient_graphs"] == len(exp.stages) - low["lowest_stage"] > head["gradient_graphs"]


def test_every_graph_uses_default_domain_operators(cnn_artifacts):
    graphs = sorted((cnn_artifacts["onnx"] / "onnx").glob("*.onnx"))
    assert graphs
    for path in graphs:
        model = onnx.load(str(path))
        assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}, path.name
        assert all(o.domain in ("", "ai.onnx") for o in model.opset_import), path.name


def test_an_image_model_without_an_onnx_plan_is_refused_in_one_line(resnet_dir, tmp_path):  # noqa: F811
    with pytest.raises(UserError, match="--backend torch") as e:
        compile_artifact(str(resnet_dir), tmp_path / "art", "onnx", image_opts(), force=True)
    assert "\n" not in str(e.value)
    assert not list(tmp_path.iterdir())  # nothing half-written left behind
