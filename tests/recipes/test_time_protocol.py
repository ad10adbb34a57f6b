"""Training-time protocol: a validation split for evaluations during training, evaluations evenly
spaced in training time, a training-time limit (a completed run), and step costs calibrated in
measured seconds."""

import json

from rgft_edge.config import FinetuneConfig
from rgft_edge.data import load_dataset, split
from rgft_edge.recipes.finetune import finetune


def test_validation_split_leaves_the_held_out_set_unchanged(sentiment_csv):
    ds = load_dataset(str(sentiment_csv), text_column="review", label_column="sentiment")
    train, test = split(ds, 20, seed=3)
    train_v, test_v, val = split(ds, 20, seed=3, validation=15)
    assert test_v.texts == test.texts and len(val) == 15 and len(train_v) == len(train) - 15
    assert not set(val.texts) & set(test_v.texts)


def test_time_limited_run_evaluates_on_validation_by_the_clock(tiny_model_dir, sentiment_csv, tmp_path):
    out = tmp_path / "run"
    cfg = FinetuneConfig.of(model=str(tiny_model_dir), data=str(sentiment_csv), text_column="review",
                            label_column="sentiment", eval_examples=20, validation_examples=16,
                            batch_size=8, epochs=200, threads=1, max_train_seconds=0.6,
                            eval_every_seconds=0.15, calibrate_cost=True, policy="budget", budget=0.6,
                            checkpoint_every=0, report=False, out=str(out))
    s = finetune(cfg, progress=False)
    assert s["stop_reason"] == "training time reached" and s["exit_code"] == 0
    assert 0.6 <= s["train_clock_s"] < 0.6 + 10 * s["median_step_time_s"] + 0.5
    assert not (out / "checkpoint").exists()  # a completed run
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e["type"] == "eval"]
    during, final = evals[:-1], evals[-1]
    assert len(during) >= 3 and {e["split"] for e in during} == {"validation"}
    times = [e["train_time_s"] for e in during]
    assert times == sorted(times) and all(t >= 0.15 * (i + 1) - 1e-9 for i, t in enumerate(times))
    assert final["split"] == "held_out" and s["held_out_examples"] == 20 and s["validation_examples"] == 16
    assert s["step_cost_unit"].startswith("seconds") and len(s["cost_calibration"]["step_s"]) >= 2
    assert s["mean_estimated_step_cost_fraction"] <= 0.6 + 0.05
