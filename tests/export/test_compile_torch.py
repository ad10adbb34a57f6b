import numpy as np
import pytest
import torch
from safetensors import safe_open

from rgft_edge.artifact import load_artifact
from rgft_edge.device_runners.torch_artifact import build_model
from rgft_edge.export.compile import cut_depth_plan
from rgft_edge.export.prepare import example_inputs, prepare
from tests.conftest import tiny_opts


def test_int8_lora_artifact_is_int8_on_disk_and_in_memory(compile_tiny, tiny_model_dir):
    out, report = compile_tiny("torch")
    art = load_artifact(out)
    assert art.manifest["quantization"]["scheme"] == "int8-weight-only"
    with safe_open(str(out / "weights/frozen.safetensors"), framework="numpy") as f:
        int8 = [k for k in f.keys() if k.endswith("::qdata")]
        assert int8 and all(f.get_tensor(k).dtype == np.int8 for k in int8)
    assert report["weights_vs_fp32"] < 1.0 and (out / "export_report.json").is_file()
    model = build_model(art)
    q = [p for n, p in model.named_parameters() if hasattr(p, "qdata")]
    assert len(q) == len(int8) and all(p.qdata.dtype == torch.int8 for p in q)
    # the rebuilt model computes exactly what the host model computed
    host = prepare(str(tiny_model_dir), tiny_opts()).model.eval()
    x = example_inputs(host, tiny_opts())
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(**x).logits, host(**x).logits, rtol=0, atol=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(art.manifest["trainable"]) and all("lora_" in n or "modules_to_save" in n for n in trainable)


def test_training_through_the_int8_base_reduces_loss(compile_tiny):
    from rgft_edge.device_runners.torch_artifact import open_torch_artifact
    from rgft_edge.error_map import ErrorMap
    from rgft_edge.loop import LoopSettings, train
    from rgft_edge.optim import ComponentAdamW
    from rgft_edge.policies import make_policy

    out, _ = compile_tiny("torch")
    backend = open_torch_artifact(load_artifact(out), threads=1)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 20, (4, 12), generator=g)
    batch = {"input_ids": ids.numpy(), "attention_mask": np.ones((4, 12), np.int64),
             "token_type_ids": np.zeros((4, 12), np.int64), "labels": np.array([0, 1, 0, 1])}
    res = train(backend, make_policy("full", backend.table), ErrorMap(len(backend.table)),
                ComponentAdamW(backend.table, 1e-2), [batch] * 25, LoopSettings())
    assert res.losses[-1] < 0.5 * res.losses[0]


def test_full_adapter_without_quantization(compile_tiny):
    out, report = compile_tiny("torch", name="full", adapter="full", quantize="none")
    art = load_artifact(out)
    assert art.manifest["adapter"]["kind"] == "full" and art.manifest["quantization"]["scheme"] == "none"
    assert art.table.granularity == "block"
    assert not any("embeddings" in n for n in art.manifest["trainable"])


def test_bad_option_combinations(tiny_model_dir, tmp_path):
    from rgft_edge.errors import UserError
    from rgft_edge.export.compile import compile_artifact

    with pytest.raises(UserError, match="--quantize none"):
        compile_artifact(str(tiny_model_dir), tmp_path / "a", "torch", tiny_opts(adapter="full"))
    with pytest.raises(UserError, match="--backend"):
        compile_artifact(str(tiny_model_dir), tmp_path / "b", "tflite", tiny_opts())
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("keep me")
    with pytest.raises(UserError, match="--force"):
        compile_artifact(str(tiny_model_dir), tmp_path / "c", "torch", tiny_opts())
    assert (tmp_path / "c" / "x").read_text() == "keep me"


def test_cut_depth_plan_spans_bottom_to_head():
    from rgft_edge.components import Component, ComponentTable, ParamRef

    table = ComponentTable([Component(f"c{i}", "lora", i, [ParamRef(f"p{i}")], 1) for i in range(13)], "lora")
    plan = cut_depth_plan(table, 4)
    assert plan[0] == 0 and plan[-1] == 12 and len(plan) == 4 and plan == sorted(plan)


def test_a_failed_forced_compile_keeps_the_old_artifact(tiny_model_dir, tmp_path, monkeypatch):
    from rgft_edge.artifact import load_artifact
    from rgft_edge.export import compile as compile_mod

    out = tmp_path / "arts" / "art"
    compile_mod.compile_artifact(str(tiny_model_dir), out, "torch", tiny_opts(quantize="none"))
    before = load_artifact(out).manifest["files"]

    def broken(*a, **k):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(compile_mod, "_export_backend", broken)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        compile_mod.compile_artifact(str(tiny_model_dir), out, "torch", tiny_opts(quantize="none"), force=True)
    assert load_artifact(out).manifest["files"] == before  # still whole and valid
    assert [p.name for p in out.parent.iterdir()] == ["art"]  # no partial folder left
