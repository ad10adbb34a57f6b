"""Recipe: fine-tune an HF sequence classifier or causal LM, or an image classifier (a shipped CNN or
an HF vision model), with RGFT in eager torch, end to end.

Loads the model and data, builds the component table and hands the eager backend to the shared
session (loop, evaluation, run directory). `finetune(FinetuneConfig())` is exactly what
`rgft-edge finetune` runs with no flags.
"""

from __future__ import annotations

import time

from ..budgets.allocator import settle_heap
from ..config import FinetuneConfig
from ..models import resolve_model
from ..session import Session
from ..splits import data_summary, load_splits
from ..text import TextEncoder


def add_adapter(model, cfg: FinetuneConfig):
    """`--adapter lora`: peft LoRA (fp32, the family's default targets) plus the task head;
    otherwise the model's own weights train (embeddings frozen unless --train-embeddings)."""
    from ..partition import freeze_embeddings

    if cfg.model.adapter == "lora":
        from rgft_edge.export.prepare import PrepareOptions, add_lora
        from ..partition.layouts import find_layout

        found = find_layout(model)
        opts = PrepareOptions(task=cfg.model.task, lora_r=cfg.model.lora_r, lora_alpha=2 * cfg.model.lora_r)
        model, _ = add_lora(model, found[0].family if found else "generic", opts)
    elif not cfg.model.train_embeddings:
        freeze_embeddings(model)
    return model


def _environment() -> dict:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "threads": torch.get_num_threads()}


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process


def _image_model(cfg: FinetuneConfig, labels: list[str]):
    """(model, ImageEncoder, model name) for `--task image-classification`."""
    from ..vision import add_image_lora, load_image_classifier

    name = cfg.model.path or "efficientnet-lite0"
    model, encoder = load_image_classifier(name, len(labels), cfg.data.image_size, cfg.training.seed)
    if cfg.model.adapter == "lora":
        model = add_image_lora(model, cfg.model.lora_r, 2 * cfg.model.lora_r)
    return model, encoder, name


def finetune(cfg: FinetuneConfig, progress: bool = True, resume: bool = False) -> dict:
    import torch

    from rgft_edge.device_runners.torch_eager import (TorchEagerBackend, causal_lm_loss,
                                                      classification_loss)
    from ..partition import build_component_table

    cfg = cfg.resolved()
    budgeted = cfg.limits.memory_budget is not None
    if budgeted:
        settle_heap()  # before anything is loaded: the heap stays bounded from the start
    set_threads(cfg.training.threads)
    torch.manual_seed(cfg.training.seed)
    t0 = time.perf_counter()
    splits = load_splits(cfg)
    print(data_summary(splits), flush=True)  # before any model loads: what will train
    lm = cfg.model.task == "causal-lm"
    if cfg.model.task == "image-classification":
        model, encoder, model_dir = _image_model(cfg, splits.full.label_names)
    else:
        from rgft_edge.export.prepare import load_hf

        model_dir = resolve_model(cfg.model.path)
        model = add_adapter(load_hf(model_dir, cfg.model.task, splits.full.label_names, attn_implementation=None),
                            cfg)
        types = getattr(model.config, "type_vocab_size", 0) > 0 and not lm
        encoder = TextEncoder(model_dir, cfg.data.max_length, ("input_ids", "attention_mask")
                              + (("token_type_ids",) if types else ()), pad_multiple=16 if budgeted else 1)
    example = {k: torch.as_tensor(v) for k, v in encoder.encode(splits.train.texts[:4]).items()}
    table = build_component_table(model, cfg.model.granularity, example)
    backend = TorchEagerBackend(model, table, causal_lm_loss if lm else classification_loss)
    meta = {"model_dir": model_dir, "environment": _environment(), "load_time_s": time.perf_counter() - t0}
    try:
        return Session(cfg, backend, encoder, splits, meta, progress).run(resume)
    finally:
        backend.close()
