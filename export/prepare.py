"""Host side, step 1: load an HF model, add adapters, quantize the frozen base, partition.

LoRA targets are chosen per family (found by structure, like the partitioner) and overridable.
The int8 base is torchao weight-only int8 on frozen nn.Linear layers; adapters, norms, embeddings
and the task head stay float. `--adapter full` keeps the original weights trainable instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from rgft_edge.components import ComponentTable
from rgft_edge.errors import ModelError, UserError
from rgft_edge.partition import build_component_table, freeze_embeddings
from rgft_edge.partition.layouts import find_layout
from rgft_edge.quiet import without_optional_imports

LORA_TARGETS = {"bert": ["query", "value"], "llama": ["q_proj", "v_proj"], "gpt2": ["c_attn"]}
HEAD_NAMES = ("classifier", "score", "lm_head")
TASKS = ("sequence-classification", "causal-lm")  # HF text models; images: export/image.py
EXECUTORCH_KERNELS = ("xnnpack", "optimized", "portable")  # export/executorch_backend.py
EXECUTORCH_LAYOUTS = ("auto", "stages", "cuts")  # executorch_backend.py / executorch_stages.py


@dataclass
class PrepareOptions:
    task: str = "sequence-classification"
    labels: list[str] = field(default_factory=lambda: ["rotten", "fresh"])
    adapter: str = "lora"  # lora | full
    quantize: str = "int8"  # int8 | none
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: list[str] | None = None
    granularity: str | None = None  # default: lora for LoRA adapters, block for full
    max_length: int = 64
    batch_size: int = 16
    seed: int = 0  # initialises the new head and LoRA A matrices reproducibly
    dropout: float | None = None  # override every dropout rate (0: deterministic steps on device)
    image_size: int | None = None  # image-classification: pixels per side (None: the model's own)
    executorch_kernels: str = "xnnpack"  # executorch backend: xnnpack | optimized | portable
    # executorch backend: stages (per-stage methods: weight gradients for the selection only) | cuts
    # (one joint method per cut depth) | auto (stages where the model family has a stage plan)
    executorch_layout: str = "auto"


@dataclass
class PreparedModel:
    model: nn.Module
    table: ComponentTable
    family: str
    options: PrepareOptions
    quantized: list[str]  # names of the int8 weights
    lora_targets: list[str]
    encoder: Any = None  # image task: the ImageEncoder the model was prepared with
    source: dict | None = None  # image task: the manifest's source_model (how a device rebuilds it)


def load_hf(model_dir: str, task: str, labels: list[str], attn_implementation: str | None = "eager") -> nn.Module:
    """HF model from a local directory, offline; a clear error if it won't load. Exporters need
    eager attention (traceable, FLOP-countable); eager fine-tuning passes None (torch's SDPA)."""
    with without_optional_imports():
        return _load_hf(model_dir, task, labels, attn_implementation)


def _load_hf(model_dir: str, task: str, labels: list[str], attn_implementation: str | None) -> nn.Module:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if task not in TASKS:
        raise UserError(f"--task must be one of {TASKS}, got {task!r}")
    if not Path(model_dir).is_dir():
        raise ModelError(f"model directory not found: {model_dir}")
    try:
        if task == "causal-lm":
            model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True,
                                                         attn_implementation=attn_implementation)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                model_dir, num_labels=len(labels), local_files_only=True, attn_implementation=attn_implementation,
                id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    except Exception as e:
        raise ModelError(f"{model_dir} does not load as a {task} model: {type(e).__name__}: "
                         f"{str(e).splitlines()[0][:300]}") from e
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = 0
    return model.eval()


def _freeze_all_but_adapters_and_head(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name or "modules_to_save" in name)


def add_lora(model: nn.Module, family: str, opts: PrepareOptions) -> tuple[nn.Module, list[str]]:
    from peft import LoraConfig, get_peft_model

    targets = opts.lora_targets or LORA_TARGETS.get(family)
    if not targets:
        raise UserError(f"no default LoRA targets for a {family} model; pass --lora-targets")
    heads = [n for n in HEAD_NAMES if hasattr(model, n) and n != "lm_head"]
    cfg = LoraConfig(r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=0.0,
                     target_modules=targets, modules_to_save=heads or None)
    try:
        model = get_peft_model(model, cfg)
    except ValueError as e:
        raise UserError(f"LoRA targets {targets} do not match the model: {e}") from e
    _freeze_all_but_adapters_and_head(model)
    return model, targets


def quantize_frozen_int8(model: nn.Module) -> list[str]:
    """torchao int8 weight-only on every frozen nn.Linear (adapters and heads stay float)."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    chosen: list[str] = []

    def frozen_linear(mod: nn.Module, fqn: str) -> bool:
        ok = (isinstance(mod, nn.Linear) and not mod.weight.requires_grad and "lora_" not in fqn
              and not any(h in fqn.split(".") for h in HEAD_NAMES + ("modules_to_save",)))
        if ok:
            chosen.append(fqn + ".weight")
        return ok

    quantize_(model, Int8WeightOnlyConfig(), filter_fn=frozen_linear)
    return chosen


def check_options(opts: PrepareOptions) -> None:
    if opts.adapter not in ("lora", "full"):
        raise UserError(f"--adapter must be lora or full, got {opts.adapter!r}")
    if opts.quantize not in ("int8", "none"):
        raise UserError(f"--quantize must be int8 or none, got {opts.quantize!r}")
    if opts.executorch_kernels not in EXECUTORCH_KERNELS:
        raise UserError(f"--executorch-kernels must be one of {', '.join(EXECUTORCH_KERNELS)}, "
                        f"got {opts.executorch_kernels!r}")
    if opts.executorch_layout not in EXECUTORCH_LAYOUTS:
        raise UserError(f"--executorch-layout must be one of {', '.join(EXECUTORCH_LAYOUTS)}, "
                        f"got {opts.executorch_layout!r}")


def prepare(model_dir: str, opts: PrepareOptions) -> PreparedModel:
    """An HF text model (image classifiers: `export.image.prepare_image`)."""
    check_options(opts)
    if opts.quantize == "int8" and opts.adapter == "full":
        raise UserError("--quantize int8 quantizes the frozen base; with --adapter full the "
                        "weights are trained, so use --quantize none (or --adapter lora)")
    torch.manual_seed(opts.seed)
    model = load_hf(model_dir, opts.task, opts.labels)
    if opts.dropout is not None:
        set_dropout(model, opts.dropout)
    found = find_layout(model)
    family = found[0].family if found else "generic"
    targets: list[str] = []
    if opts.adapter == "lora":
        model, targets = add_lora(model, family, opts)
    else:
        freeze_embeddings(model)  # embeddings stay frozen: half of MiniLM, and the deepest backprop
    quantized = quantize_frozen_int8(model) if opts.quantize == "int8" else []
    granularity = opts.granularity or ("lora" if opts.adapter == "lora" else "block")
    example = example_inputs(model, opts)
    table = build_component_table(model, granularity, {k: v[:1] for k, v in example.items()})
    return PreparedModel(model, table, family, opts, quantized, targets)


def set_dropout(model: nn.Module, rate: float) -> None:
    """Every dropout in the modules and in the config (so a rebuild from the config matches)."""
    if not 0.0 <= rate < 1.0:
        raise UserError(f"--dropout must be in [0, 1), got {rate}")
    for mod in model.modules():
        if isinstance(mod, nn.Dropout):
            mod.p = rate
    cfg = getattr(model, "config", None)
    for key, value in (vars(cfg).items() if cfg is not None else []):
        if isinstance(value, float) and ("dropout" in key or "pdrop" in key):
            setattr(cfg, key, rate)


def example_inputs(model: nn.Module, opts: PrepareOptions) -> dict[str, torch.Tensor]:
    """Fixed-shape example batch (padding to max_length keeps exported programs static)."""
    b, t = opts.batch_size, opts.max_length
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 100))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, max(2, vocab), (b, t), generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones(b, t, dtype=torch.long)}
    if opts.task == "sequence-classification" and _takes_token_types(model):
        inputs["token_type_ids"] = torch.zeros(b, t, dtype=torch.long)
    return inputs


def _takes_token_types(model: nn.Module) -> bool:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "type_vocab_size", 0) > 0 and getattr(cfg, "model_type", "") in ("bert", "roberta")
