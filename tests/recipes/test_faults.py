"""Repeated NaN steps: restore the last good checkpoint and halve the LR; persistent NaN: stop
cleanly with exit status 5."""

import json
import math

import pytest

from rgft_edge.backend import StepOutput
from rgft_edge.config import FinetuneConfig
from rgft_edge.device_runners.torch_eager import TorchEagerBackend
from rgft_edge.recipes.finetune import finetune


def poison(monkeypatch, bad_calls):
    real = TorchEagerBackend.train_step
    calls = {"n": 0}

    def train_step(self, batch, trainable, measure):
        calls["n"] += 1
        if bad_calls(calls["n"]):
            return StepOutput(math.nan, {}, None)
        return real(self, batch, trainable, measure)

    monkeypatch.setattr(TorchEagerBackend, "train_step", train_step)


def cfg(tiny_model_dir, sentiment_csv, out):
    return FinetuneConfig.of(model=str(tiny_model_dir), data=str(sentiment_csv), text_column="review",
                          label_column="sentiment", eval_examples=24, batch_size=8, epochs=3, threads=1,
                          checkpoint_every=5, out=str(out), lr=0.003)


def test_repeated_nan_restores_checkpoint_and_lowers_lr(monkeypatch, tiny_model_dir, sentiment_csv, tmp_path):
    poison(monkeypatch, lambda n: 12 <= n <= 15)  # four bad steps in a row after a checkpoint at 10
    s = finetune(cfg(tiny_model_dir, sentiment_csv, tmp_path / "r"), progress=False)
    assert s["stop_reason"] == "completed" and s["skipped_steps"] == 4
    assert len(s["fault_recoveries"]) == 1 and s["fault_recoveries"][0]["lr"] == pytest.approx(0.0015)
    faults = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
              if '"fault"' in l]
    assert faults and "restored" in faults[0]["action"]


def test_persistent_nan_stops_with_status_5(monkeypatch, tiny_model_dir, sentiment_csv, tmp_path):
    poison(monkeypatch, lambda n: n >= 3)
    s = finetune(cfg(tiny_model_dir, sentiment_csv, tmp_path / "r"), progress=False)
    assert s["stop_reason"] == "non-finite loss" and s["exit_code"] == 5
    assert len(s["fault_recoveries"]) == 3
    assert (tmp_path / "r" / "checkpoint" / "state.json").is_file()


def test_time_based_checkpoints(tiny_model_dir, sentiment_csv, tmp_path):
    c = cfg(tiny_model_dir, sentiment_csv, tmp_path / "r")
    c.update(checkpoint_every=0, checkpoint_seconds=1e-9)  # every step, by the clock
    s = finetune(c, progress=False)
    state = json.loads((tmp_path / "r" / "checkpoint" / "state.json").read_text())
    assert state["step"] == s["steps"]
