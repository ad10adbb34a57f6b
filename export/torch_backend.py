"""The `torch` backend has no programs: the device rebuilds the model from the manifest's config,
the adapter settings and the safetensors weights (device_runners/torch_artifact.py)."""

from __future__ import annotations

from pathlib import Path

from .prepare import PreparedModel


def export_programs(prep: PreparedModel, out: Path, cuts: list[int]) -> tuple[list[dict], dict]:
    if prep.source is not None:  # an image classifier (export/image.py)
        return [], {"rebuild": "rgft_edge.vision config + peft LoRA config + safetensors weights and buffers"}
    return [], {"rebuild": "transformers config + peft LoRA config + safetensors weights"}
