"""The drift task: a phased training stream, evaluations on the new distribution only."""

import json

import pytest

from rgft_edge.config import FinetuneConfig
from rgft_edge.data import load_dataset
from rgft_edge.drift import PhasedStream, drift_label_ids, keep_labels
from rgft_edge.errors import UserError
from rgft_edge.recipes.finetune import finetune
from rgft_edge.text import TextEncoder


def test_drift_labels_by_name_or_index_and_refusals():
    names = ["business", "entertainment", "politics", "sport", "tech"]
    assert drift_label_ids("sport, tech", names) == [3, 4] == drift_label_ids("3,4", names)
    with pytest.raises(UserError, match="not one of the labels"):
        drift_label_ids("weather", names)
    with pytest.raises(UserError, match="some but not all"):
        drift_label_ids(",".join(names), names)


def test_stream_switches_once_and_replays_from_the_recorded_step(tiny_model_dir, sentiment_csv):
    ds = load_dataset(str(sentiment_csv), text_column="review", label_column="sentiment")
    ids = drift_label_ids("pos", ds.label_names)
    enc = TextEncoder(tiny_model_dir, 16, ("input_ids", "attention_mask"))
    old, new = keep_labels(ds, ids, keep=False), keep_labels(ds, ids)
    stream = PhasedStream(enc, old, new, 8, seed=1, switched=lambda step: step >= 5)
    got = [b for _, b in zip(range(12), stream)]
    before = set(range(len(ds.label_names))) - set(ids)
    assert [set(b["labels"].tolist()) for b in got] == [before] * 5 + [set(ids)] * 7
    assert stream.drift_step == 5
    # resumed: the switch step comes from the checkpoint, whatever the clock says now
    again = PhasedStream(enc, old, new, 8, seed=1, switched=lambda step: True, drift_step=5)
    assert all((a["input_ids"] == b["input_ids"]).all() for a, b in zip(got, again))


def test_drift_run_evaluates_the_new_distribution(tiny_model_dir, sentiment_csv, tmp_path):
    out = tmp_path / "run"
    cfg = FinetuneConfig.of(model=str(tiny_model_dir), data=str(sentiment_csv), text_column="review",
                            label_column="sentiment", eval_examples=20, validation_examples=16, batch_size=8,
                            epochs=2, threads=1, drift_labels="pos", drift_at=0.5, eval_every=4,
                            checkpoint_every=0, report=False, out=str(out), policy="top-p")
    s = finetune(cfg, progress=False)
    # only the drift label is evaluated: the held-out and validation sets are the 'pos' rows of theirs
    assert 0 < s["held_out_examples"] < 20 and 0 < s["validation_examples"] < 16
    assert json.loads((out / "config.json").read_text())["config"]["drift_labels"] == "pos"
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(e["type"] == "eval" and e["split"] == "validation" for e in evals)
