"""Rebuild a `torch` artifact on a device that has torch (+ transformers, peft, torchao).

The model is built from the manifest's config (no hub, no pickles), LoRA is re-attached with the
manifest's settings, int8 weights are rebuilt as torchao Int8Tensors straight from the stored int8
data and scales (bit-identical, never re-quantized), and every other tensor comes from safetensors.
An image classifier (`rgft_edge.vision`) is rebuilt from its recorded config the same way, plus its
BatchNorm running statistics from `weights/buffers.safetensors`.
"""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.numpy import load_file

from rgft_edge.artifact import Artifact, ArtifactError
from rgft_edge.quiet import quiet_third_party

from .torch_eager import TorchEagerBackend, causal_lm_loss, classification_loss

HEAD_NAMES = ("classifier", "score")
IMAGE_TASK = "image-classification"


def build_model(artifact: Artifact) -> nn.Module:
    quiet_third_party()
    m = artifact.manifest
    image = _is_image(m)
    model = _image_model(artifact) if image else _text_model(artifact)
    _load_weights(model, artifact)
    if image:
        _load_buffers(model, artifact)
    trainable = set(m["trainable"])
    for name, p in model.named_parameters():
        if not _is_int8(p):
            p.requires_grad_(name in trainable)
    return model


def _is_image(manifest: dict) -> bool:
    return manifest["source_model"].get("task") == IMAGE_TASK


def _image_model(artifact: Artifact) -> nn.Module:
    """The shipped CNN or an HF image classifier from its recorded config, LoRA re-attached on
    exactly the modules the manifest lists."""
    from rgft_edge.errors import ModelError
    from rgft_edge.vision import add_image_lora, image_classifier_from_source

    m = artifact.manifest
    try:
        model = image_classifier_from_source(m["source_model"])
    except (ModelError, KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{artifact.root}/manifest.json: source_model does not rebuild ({e})") from e
    adapter = m.get("adapter", {"kind": "full"})
    if adapter["kind"] == "lora":
        model = add_image_lora(model, adapter["r"], adapter["alpha"], adapter["targets"])
    return model


def _text_model(artifact: Artifact) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    m = artifact.manifest
    cfg_dict = dict(m["source_model"]["config"])
    model_type = cfg_dict.pop("model_type", None)
    if model_type is None:
        raise ArtifactError(f"{artifact.root}/manifest.json: source_model.config has no model_type")
    config = AutoConfig.for_model(model_type, **cfg_dict)
    config._attn_implementation = "eager"
    cls = AutoModelForCausalLM if m["source_model"]["task"] == "causal-lm" else AutoModelForSequenceClassification
    torch.manual_seed(0)
    model = cls.from_config(config)
    adapter = m.get("adapter", {"kind": "full"})
    if adapter["kind"] == "lora":
        from peft import LoraConfig, get_peft_model

        heads = [n for n in HEAD_NAMES if hasattr(model, n)]
        model = get_peft_model(model, LoraConfig(r=adapter["r"], lora_alpha=adapter["alpha"],
                                                 lora_dropout=0.0, target_modules=adapter["targets"],
                                                 modules_to_save=heads or None))
    return model


def _is_int8(p) -> bool:
    return hasattr(p, "qdata")


def _load_weights(model: nn.Module, artifact: Artifact) -> None:
    named = dict(model.named_parameters())
    frozen_path = artifact.path("weights/frozen.safetensors")
    with safe_open(str(frozen_path), framework="numpy") as f:
        meta = json.loads((f.metadata() or {}).get("int8", "{}"))
    tensors = {**load_file(str(frozen_path)), **load_file(str(artifact.path("weights/trainable.safetensors")))}
    if meta:
        from torchao.quantization.quantize_.workflows.int8.int8_tensor import Int8Tensor
    for name, info in meta.items():
        if name not in named:
            raise ArtifactError(f"{frozen_path}: int8 weight {name!r} has no place in the model")
        zp = tensors.get(f"{name}::zero_point")
        q = Int8Tensor(torch.from_numpy(tensors[f"{name}::qdata"]), torch.from_numpy(tensors[f"{name}::scale"]),
                       info["block_size"], torch.float32, None if zp is None else torch.from_numpy(zp))
        owner, attr = name.rsplit(".", 1)
        setattr(model.get_submodule(owner), attr, nn.Parameter(q, requires_grad=False))
    for name, p in model.named_parameters():
        if name in meta:
            continue
        if name not in tensors:
            raise ArtifactError(f"{artifact.root}/weights: no tensor for parameter {name!r}")
        arr = tensors[name]
        if tuple(arr.shape) != tuple(p.shape):
            raise ArtifactError(f"{artifact.root}/weights: {name!r} has shape {arr.shape}, "
                                f"the model expects {tuple(p.shape)}")
        with torch.no_grad():
            p.copy_(torch.from_numpy(np.ascontiguousarray(arr)))


def _load_buffers(model: nn.Module, artifact: Artifact) -> None:
    """BatchNorm running statistics (every persistent buffer), by name and shape, none missing."""
    path = artifact.path("weights/buffers.safetensors")  # refuses an image artifact without it
    tensors = load_file(str(path))
    params = {n for n, _ in model.named_parameters()}
    buffers = {n: t for n, t in model.state_dict(keep_vars=True).items() if n not in params}
    if set(tensors) != set(buffers):
        extra, missing = sorted(set(tensors) - set(buffers)), sorted(set(buffers) - set(tensors))
        raise ArtifactError(f"{path}: buffers do not match the model (unexpected {extra[:3]}, missing {missing[:3]})")
    for name, buf in buffers.items():
        arr = tensors[name]
        if tuple(arr.shape) != tuple(buf.shape):
            raise ArtifactError(f"{path}: {name!r} has shape {arr.shape}, the model expects {tuple(buf.shape)}")
        with torch.no_grad():
            buf.copy_(torch.from_numpy(np.array(arr)))  # np.array keeps 0-d counters 0-d


def open_torch_artifact(artifact: Artifact, threads: int) -> TorchEagerBackend:
    """The eager backend over a model rebuilt from a `torch` artifact (its registered runner)."""
    torch.set_num_threads(threads)
    spec = artifact.manifest["input_spec"]
    loss = causal_lm_loss if artifact.manifest["source_model"]["task"] == "causal-lm" else classification_loss
    return TorchEagerBackend(build_model(artifact), artifact.table, loss, eval_batch_size=spec["batch_size"])
