"""finetune beyond the default: a causal LM (Llama-like, next-token loss, perplexity) and peft LoRA."""

import math

import numpy as np
import pytest

from rgft_edge.config import FinetuneConfig
from rgft_edge.errors import UserError
from rgft_edge.recipes.finetune import finetune
from tests.conftest import VOCAB, save_tiny_model_dir


@pytest.fixture(scope="module")
def tiny_llama_lm_dir(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64, pad_token_id=0)
    return save_tiny_model_dir(tmp_path_factory.mktemp("lm") / "llama", model=LlamaForCausalLM(cfg))


def cfg(model_dir, csv, out, **kw):
    base = dict(model=str(model_dir), data=str(csv), text_column="review", label_column="sentiment",
                max_length=12, batch_size=8, eval_examples=24, threads=1, out=str(out), report=False,
                checkpoint_every=0, lr=1e-3)
    base.update(kw)
    return FinetuneConfig.of(**base)


def test_causal_lm_trains_and_reports_perplexity(tiny_llama_lm_dir, sentiment_csv, tmp_path):
    s = finetune(cfg(tiny_llama_lm_dir, sentiment_csv, tmp_path / "lm", task="causal-lm", policy="budget",
                     epochs=3, eval_every=10), progress=False)
    assert "held_out_accuracy" not in s
    assert s["held_out_perplexity"] == pytest.approx(math.exp(s["held_out_loss"]), rel=1e-6)
    losses = [r for r in (tmp_path / "lm" / "metrics.jsonl").read_text().splitlines() if '"eval"' in r]
    assert len(losses) >= 2
    # a random-init LM on a 30-word vocabulary: training must cut perplexity well below uniform
    assert s["held_out_perplexity"] < 0.8 * len(VOCAB)


def test_lora_adapter_trains_only_adapters_and_head(tiny_model_dir, sentiment_csv, tmp_path):
    from safetensors.numpy import load_file

    s = finetune(cfg(tiny_model_dir, sentiment_csv, tmp_path / "lora", adapter="lora", lora_r=4,
                     policy="full"), progress=False)
    names = list(load_file(str(tmp_path / "lora" / "trainable.safetensors")))
    assert names and all("lora_" in n or "modules_to_save" in n for n in names)
    assert any("classifier" in n for n in names)
    assert s["trainable_params"] < 0.2 * 15_000  # the tiny BERT has ~15 K weights outside embeddings


def test_bad_task_and_adapter_are_refused(tiny_model_dir, sentiment_csv, tmp_path):
    with pytest.raises(UserError, match="--task"):
        cfg(tiny_model_dir, sentiment_csv, tmp_path, task="translation").validate()
    with pytest.raises(UserError, match="--adapter"):
        cfg(tiny_model_dir, sentiment_csv, tmp_path, adapter="ia3").validate()


def test_elastic_policy_runs_in_the_loop_with_probes(tiny_model_dir, sentiment_csv, tmp_path):
    import json

    finetune(cfg(tiny_model_dir, sentiment_csv, tmp_path / "el", policy="elastic", probe_every=4,
                 budget=0.8), progress=False)
    steps = [json.loads(r) for r in (tmp_path / "el" / "metrics.jsonl").read_text().splitlines()
             if '"step"' in r and '"type": "step"' in r]
    k = len(json.loads((tmp_path / "el" / "components.json").read_text())["components"])
    full = [r["step"] for r in steps if len(r["selected"]) == k]
    assert full[:3] == [0, 4, 8]
    between = [r for r in steps if r["step"] % 4]
    assert between and all(r["cost_fraction"] <= 0.8 + 1e-9 for r in between)
    assert np.isfinite([r["loss"] for r in steps]).all()


def test_a_fresh_run_into_a_used_directory_starts_clean(tiny_model_dir, sentiment_csv, tmp_path):
    """An earlier run's metrics must not mix into the new run's curves, nor its checkpoint be left
    for a later --resume."""
    out = tmp_path / "run"
    finetune(cfg(tiny_model_dir, sentiment_csv, out, max_steps=6, checkpoint_every=2), progress=False)
    assert (out / "checkpoint" / "state.json").is_file()
    s = finetune(cfg(tiny_model_dir, sentiment_csv, out, max_steps=3), progress=False)
    records = [r for r in (out / "metrics.jsonl").read_text().splitlines() if '"type": "step"' in r]
    assert len(records) == s["steps"] == 3
    assert not (out / "checkpoint").exists()
