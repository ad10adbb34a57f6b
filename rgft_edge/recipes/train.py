"""Recipe: train a compiled artifact on the device, through the backend its manifest names.

Validates the artifact (hashes, schema) before anything else, tokenizes with the artifact's own
tokenizer files (`tokenizers`, no transformers), runs the shared session, then exports the adapted
weights (safetensors, and back into the backend's own format for on-device inference).
"""

from __future__ import annotations

import time
from pathlib import Path

from ..artifact import Artifact, ArtifactError, load_artifact
from ..config import FinetuneConfig
from ..session import load_splits, run_session
from ..text import TextEncoder


def open_backend(artifact: Artifact, threads: int):
    """The adapter for the artifact's backend; only that backend's runtime is imported."""
    if artifact.backend == "torch":
        from rgft_edge.device_runners.torch_artifact import TorchArtifactBackend

        return TorchArtifactBackend(artifact, threads)
    if artifact.backend == "executorch":
        from rgft_edge.device_runners.executorch_runner import ExecuTorchBackend

        return ExecuTorchBackend(artifact, threads)
    if artifact.backend == "onnxruntime":
        from rgft_edge.device_runners.onnxruntime_runner import OrtBackend

        return OrtBackend(artifact, threads)
    raise ArtifactError(f"{artifact.root}: unknown backend {artifact.backend!r}")


def train_artifact(artifact_dir: str, cfg: FinetuneConfig, progress: bool = True, resume: bool = False) -> dict:
    cfg = cfg.resolved()
    t0 = time.perf_counter()
    artifact = load_artifact(artifact_dir)
    spec = artifact.manifest["input_spec"]
    labels = artifact.manifest.get("labels")
    data, train_ds, test_ds = load_splits(cfg, labels)
    encoder = TextEncoder(artifact.root / "tokenizer", spec["max_length"], spec["names"], pad_to_max=True)
    cfg.batch_size = spec["batch_size"]  # exported programs have a fixed batch
    cfg.max_length = spec["max_length"]
    backend = open_backend(artifact, cfg.threads)
    meta = {"artifact": str(Path(artifact_dir).resolve()), "environment": backend.environment(),
            "load_time_s": time.perf_counter() - t0}
    try:
        summary = run_session(cfg, backend, encoder, data, train_ds, test_ds, meta, progress, drop_last=True,
                              resume=resume)
        summary["exported"] = backend.export_adapted(Path(summary["run_dir"]) / "adapted")
    finally:
        backend.close()
    return summary
