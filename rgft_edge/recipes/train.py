"""Recipe: train a compiled artifact on the device, through the backend its manifest names.

Validates the artifact (hashes, schema) before anything else, tokenizes with the artifact's own
tokenizer files (`tokenizers`, no transformers), runs the shared session, then exports the adapted
weights (safetensors, and back into the backend's own format for on-device inference).
"""

from __future__ import annotations

import time
from pathlib import Path

from ..artifact import load_artifact
from ..backend import open_backend
from ..budgets.allocator import settle_heap
from ..config import FinetuneConfig
from ..session import Session
from ..splits import load_splits
from ..text import TextEncoder


def train_artifact(artifact_dir: str, cfg: FinetuneConfig, progress: bool = True, resume: bool = False) -> dict:
    cfg = cfg.resolved()
    if cfg.limits.memory_budget is not None:
        settle_heap()  # before the runtime loads: the heap stays bounded from the start
    t0 = time.perf_counter()
    artifact = load_artifact(artifact_dir)
    spec = artifact.manifest["input_spec"]
    splits = load_splits(cfg, artifact.manifest.get("labels"))
    encoder = TextEncoder(artifact.root / "tokenizer", spec["max_length"], spec["names"], pad_to_max=True)
    cfg.data.batch_size = spec["batch_size"]  # exported programs have a fixed batch
    cfg.data.max_length = spec["max_length"]
    backend = open_backend(artifact, cfg.training.threads)
    meta = {"artifact": str(Path(artifact_dir).resolve()), "environment": backend.environment(),
            "load_time_s": time.perf_counter() - t0}
    try:
        summary = Session(cfg, backend, encoder, splits, meta, progress, drop_last=True).run(resume)
        summary["exported"] = backend.export_adapted(Path(summary["run_dir"]) / "adapted")
    finally:
        backend.close()
    return summary
