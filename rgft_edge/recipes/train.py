"""Recipe: train a compiled artifact on the device, through the backend its manifest names.

Validates the artifact (hashes, schema) before anything else, encodes the data as the artifact
says — its own tokenizer files (`tokenizers`, no transformers) for text, its recorded image size,
mean, std and crop for images — runs the shared session, then exports the adapted weights
(safetensors, and back into the backend's own format for on-device inference).
"""

from __future__ import annotations

import time
from pathlib import Path

from ..artifact import Artifact, load_artifact
from ..backend import open_backend
from ..budgets.allocator import settle_heap
from ..config import FinetuneConfig
from ..errors import UserError
from ..images import ImageEncoder, is_image_source
from ..session import Session
from ..splits import data_summary, load_splits
from ..text import TextEncoder

IMAGE_TASK = "image-classification"


def train_artifact(artifact_dir: str, cfg: FinetuneConfig, progress: bool = True, resume: bool = False) -> dict:
    cfg = cfg.resolved()
    if cfg.limits.memory_budget is not None:
        settle_heap()  # before the runtime loads: the heap stays bounded from the start
    t0 = time.perf_counter()
    artifact = load_artifact(artifact_dir)
    cfg, encoder = _fixed_by_artifact(artifact, cfg)
    splits = load_splits(cfg, artifact.manifest.get("labels"))
    print(data_summary(splits), flush=True)  # before any model loads: what will train
    backend = open_backend(artifact, cfg.training.threads)
    if cfg.limits.memory_budget is not None:
        backend.recompute_activations = True  # the lean path, where a runner has one
    meta = {"artifact": str(Path(artifact_dir).resolve()), "environment": backend.environment(),
            "load_time_s": time.perf_counter() - t0}
    try:
        summary = Session(cfg, backend, encoder, splits, meta, progress, drop_last=True).run(resume)
        summary["exported"] = backend.export_adapted(Path(summary["run_dir"]) / "adapted")
    finally:
        backend.close()
    return summary


def _fixed_by_artifact(artifact: Artifact, cfg: FinetuneConfig) -> tuple[FinetuneConfig, ImageEncoder | TextEncoder]:
    """The settings the artifact fixes (task, shapes) and its encoder; refuses data of the other kind."""
    m, spec = artifact.manifest, artifact.manifest["input_spec"]
    task = m["source_model"].get("task") or cfg.model.task
    if task != cfg.model.task:
        cfg.model.task = task
        cfg = cfg.resolved()  # the task's own defaults (the image task's shipped data)
    cfg.data.batch_size = spec["batch_size"]  # exported programs have a fixed batch
    image = spec.get("kind") == "image"
    for flag, source in (("--data", cfg.data.source), ("--eval-data", cfg.data.eval_data)):
        if source is not None and is_image_source(source) != image:
            raise UserError(f"{artifact.root} is {'an image' if image else 'a text'} model; {flag} {source} is "
                            + ("not image data (a folder of class subfolders or a .npz)" if image else
                               "image data (a folder or .npz): pass a .csv/.tsv/.jsonl file or a shipped text dataset"))
    if image:
        if artifact.backend not in ("torch", "onnx"):
            raise UserError(f"{artifact.root}: image artifacts train on the torch and onnx backends, "
                            f"not {artifact.backend}")
        cfg.data.image_size = spec["image_size"]
        return cfg, ImageEncoder.from_spec(spec)
    cfg.data.max_length = spec["max_length"]
    return cfg, TextEncoder(artifact.root / "tokenizer", spec["max_length"], spec["names"], pad_to_max=True)
