"""Host side for image classifiers (`compile --task image-classification`, torch and onnx backends).

The model is what `finetune` trains: the shipped EfficientNet-Lite0 or an HF image-classification
folder with a new head (`rgft_edge.vision`), with peft LoRA on its dense layers (`--adapter lora`)
or all its own weights trainable (`--adapter full`); BatchNorm statistics stay frozen either way.
The artifact records the preprocessing (`ImageEncoder`'s size, mean, std, crop) so the device
feeds the model exactly what it saw here, and the BatchNorm running statistics (buffers, not
parameters) so the rebuilt model normalises as the pretrained one did.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.numpy import save_file

from rgft_edge.errors import UserError
from rgft_edge.images import ImageEncoder
from rgft_edge.partition import build_component_table

from .prepare import PreparedModel, PrepareOptions, check_options, set_dropout

IMAGE_TASK = "image-classification"
BUFFERS_FILE = "buffers.safetensors"


IMAGE_BACKENDS = ("torch", "onnx")  # the torch runner rebuilds the model; onnx has a CNN stage plan


def check_image_backend(backend: str) -> None:
    """Image models compile for the torch runner and (EfficientNet-Lite) the standard-ONNX one;
    the ExecuTorch and ONNX Runtime training exporters trace text models only."""
    if backend not in IMAGE_BACKENDS:
        raise UserError(f"--task {IMAGE_TASK} compiles for --backend {' or '.join(IMAGE_BACKENDS)}; "
                        f"the {backend} exporter handles text models")


def prepare_image(name_or_dir: str, opts: PrepareOptions) -> PreparedModel:
    """`prepare` for an image classifier (the shipped efficientnet-lite0 or an HF folder)."""
    from rgft_edge.vision import (HFImageClassifier, add_image_lora, image_lora_targets, image_source,
                                  load_image_classifier)

    check_options(opts)
    if opts.quantize != "none":
        raise UserError("--quantize int8 quantizes frozen nn.Linear layers of text models; an image model "
                        "compiles with --quantize none")
    if len(set(opts.labels)) < 2 or len(set(opts.labels)) != len(opts.labels):
        raise UserError(f"--labels needs two or more distinct names, got {opts.labels}")
    if opts.image_size is not None and opts.image_size < 8:
        raise UserError(f"--image-size must be >= 8, got {opts.image_size}")
    model, encoder = load_image_classifier(name_or_dir, len(opts.labels), opts.image_size, opts.seed)
    if opts.dropout is not None:  # the inner HF model owns the config a device rebuilds from
        set_dropout(model.model if isinstance(model, HFImageClassifier) else model, opts.dropout)
    source = image_source(model, name_or_dir)
    targets: list[str] = []
    if opts.adapter == "lora":
        try:
            model = add_image_lora(model, opts.lora_r, opts.lora_alpha, opts.lora_targets)
        except ValueError as e:  # peft: targets that match no module
            raise UserError(f"LoRA targets {opts.lora_targets} do not match the model: {e}") from e
        targets = image_lora_targets(model)
    opts = dataclasses.replace(opts, image_size=encoder.size)
    example = image_example_inputs(opts.batch_size, encoder.size)
    try:
        table = build_component_table(model.eval(), opts.granularity or "block", {k: v[:1] for k, v in example.items()})
    except ValueError as e:
        raise UserError(f"--granularity {opts.granularity}: {e}") from e
    return PreparedModel(model, table, source["family"], opts, [], targets, encoder=encoder, source=source)


def image_example_inputs(batch_size: int, size: int) -> dict[str, torch.Tensor]:
    """Fixed-shape example batch: (batch, 3, size, size) float32."""
    g = torch.Generator().manual_seed(0)
    return {"pixel_values": torch.randn(batch_size, 3, size, size, generator=g)}


def image_input_spec(encoder: ImageEncoder, batch_size: int) -> dict:
    """The manifest's input_spec: names, dtype and shape, plus what rebuilds the encoder."""
    return {"kind": "image", "names": ["pixel_values"], "dtype": "float32", "layout": "NCHW", "channels": 3,
            "batch_size": batch_size, **encoder.spec()}


def save_buffers(model: nn.Module, out: Path) -> dict:
    """Persistent buffers (BatchNorm running statistics) as `weights/buffers.safetensors`: a
    rebuild from the config would otherwise normalise with fresh statistics (mean 0, var 1)."""
    params = {n for n, _ in model.named_parameters()}
    buffers = {n: t.detach().cpu().contiguous().numpy().copy() for n, t in model.state_dict().items()
               if n not in params}  # .copy() keeps 0-d counters 0-d (ascontiguousarray makes them 1-d)
    save_file(buffers, str(out / BUFFERS_FILE), {"format": "rgft-edge buffers"})
    return {"buffers": len(buffers), "buffer_bytes": int(sum(v.nbytes for v in buffers.values()))}
