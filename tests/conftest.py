"""Tiny random-init models of several families, so nothing is tuned to one architecture."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from rgft_edge.export.compile import compile_artifact
from rgft_edge.export.prepare import PrepareOptions
import torch.nn as nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
    w for w in "good bad great awful movie film fun dull love hate plot actor story boring fine "
    "excellent terrible the a is was not very".split()]


def tiny_bert(num_labels: int = 2, layers: int = 2, seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=layers,
                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                     num_labels=num_labels, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg)


def tiny_llama(num_labels: int = 2, seed: int = 0):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                      max_position_embeddings=64, num_labels=num_labels, pad_token_id=0)
    return LlamaForSequenceClassification(cfg)


def tiny_llama_lm(seed: int = 0):
    """A tied-embedding Llama-like causal LM (SmolLM2's layout)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                      max_position_embeddings=64, pad_token_id=0, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def tiny_gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(VOCAB), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                     bos_token_id=2, eos_token_id=3)
    return GPT2LMHeadModel(cfg)


class TinyCNN(nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.stages = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


def tiny_cnn(seed: int = 0):
    torch.manual_seed(seed)
    return TinyCNN()


def text_batch(n: int = 4, t: int = 12, seed: int = 0, labels: int = 2):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, len(VOCAB), (n, t), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "labels": torch.randint(0, labels, (n,), generator=g)}


def save_tiny_model_dir(path: Path, num_labels: int = 2, model=None) -> Path:
    """A loadable HF model directory with a real tokenizer.json (WordPiece over VOCAB)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    model = model if model is not None else tiny_bert(num_labels)
    model.save_pretrained(path)
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"pad_token": "[PAD]"}))
    return path


def write_sentiment_csv(path: Path, n: int = 120, seed: int = 0) -> Path:
    import csv
    import random

    rnd = random.Random(seed)
    pos, neg = ["good", "great", "fun", "love", "excellent", "fine"], ["bad", "awful", "dull", "hate", "boring", "terrible"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        for i in range(n):
            lab = i % 2
            words = rnd.sample(pos if lab else neg, 3) + rnd.sample(["movie", "film", "plot", "the", "story"], 2)
            rnd.shuffle(words)
            w.writerow([" ".join(words), "pos" if lab else "neg"])
    return path


@pytest.fixture
def tiny_model_dir(tmp_path):
    return save_tiny_model_dir(tmp_path / "tiny-bert")


@pytest.fixture
def sentiment_csv(tmp_path):
    return write_sentiment_csv(tmp_path / "reviews.csv")
def tiny_opts(**kw) -> PrepareOptions:
    # ExecuTorch: the cut-depth layout unless a test asks for stages (tests/device_runners/test_executorch_stages.py)
    base = dict(labels=["neg", "pos"], max_length=12, batch_size=4, lora_r=4, executorch_layout="cuts")
    base.update(kw)
    return PrepareOptions(**base)


@pytest.fixture
def compile_tiny(tmp_path, tiny_model_dir):
    def make(backend="torch", name=None, **kw):
        out = tmp_path / (name or f"art-{backend}")
        report = compile_artifact(str(tiny_model_dir), out, backend, tiny_opts(**kw), force=True)
        return out, report
    return make


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory):
    """One tiny int8+LoRA model compiled for every backend, once per test session
    (ExecuTorch export takes ~30 s even for a tiny model)."""
    root = tmp_path_factory.mktemp("tiny-artifacts")
    model_dir = save_tiny_model_dir(root / "tiny-bert")
    return {b: compile_artifact(str(model_dir), root / b, b, tiny_opts(), force=True) and root / b
            for b in ("torch", "onnxruntime", "executorch", "onnx")}


@pytest.fixture(scope="session")
def et_stage_artifacts(tiny_artifacts, tmp_path_factory):
    """ExecuTorch stage-layout artifacts, once per session: the tiny BERT of `tiny_artifacts`
    (int8 + LoRA on XNNPACK, the defaults) and a tiny Llama-like causal LM (fp32 full fine-tuning
    on the portable kernels: a faster compile; XNNPACK's fp32 paths are the MiniLM benchmark's),
    with a torch reference for the LM."""
    root = tmp_path_factory.mktemp("et-stages")
    bert_dir = tiny_artifacts["torch"].parent / "tiny-bert"
    out = {"int8-lora": root / "bert-int8-lora", "lm-fp32-full": root / "llama-fp32-full",
           "torch-lm-fp32-full": root / "torch-llama-fp32-full"}
    compile_artifact(str(bert_dir), out["int8-lora"], "executorch", tiny_opts(executorch_layout="stages"), force=True)
    lm_dir = save_tiny_model_dir(root / "tiny-llama", model=tiny_llama_lm())
    lm = dict(task="causal-lm", labels=None, adapter="full", quantize="none")
    compile_artifact(str(lm_dir), out["lm-fp32-full"], "executorch",
                     tiny_opts(executorch_layout="stages", executorch_kernels="portable", **lm), force=True)
    compile_artifact(str(lm_dir), out["torch-lm-fp32-full"], "torch", tiny_opts(**lm), force=True)
    return out


@pytest.fixture(scope="session")
def cnn_artifacts(tmp_path_factory):
    """A tiny EfficientNet-Lite compiled for torch and onnx, once per session (two test modules
    train from it; compiling it takes ~50 s on 2 cores)."""
    from rgft_edge import vision
    from tests.export.test_compile_image import image_opts
    from tests.export.test_onnx_cnn import SIZE, tiny_lite

    root = tmp_path_factory.mktemp("tiny-lite")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vision, "load_image_classifier", lambda name, n, size=None, seed=0: tiny_lite(n, size, seed))
        opts = image_opts(image_size=SIZE)  # bright, dark
        for b in ("torch", "onnx"):
            compile_artifact("efficientnet-lite0", root / b, b, opts, force=True)
    return {b: root / b for b in ("torch", "onnx")}
