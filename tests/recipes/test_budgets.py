"""Budgets on real runs (subprocesses, so peak RSS is the run's own): memory holds, energy and time
stop cleanly with a checkpoint, a report and the documented exit status."""

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import save_tiny_model_dir


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "rgft_edge.cli", "finetune", "--no-progress", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory):
    """BERT-like, wide enough that activations (not the runtime) decide what a step costs."""
    from transformers import BertConfig, BertForSequenceClassification

    from tests.conftest import VOCAB

    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=1024, max_position_embeddings=128, num_labels=2)
    return save_tiny_model_dir(tmp_path_factory.mktemp("wide") / "m", model=BertForSequenceClassification(cfg))


def common(model_dir, csv, out, *extra):
    return ["--model", str(model_dir), "--data", str(csv), "--text-column", "review", "--label-column",
            "sentiment", "--eval-examples", "24", "--batch-size", "48", "--max-length", "64", "--threads", "1",
            "--policy", "full", "--out", str(out), *extra]


def test_memory_budget_just_above_minimum_shrinks_selections_and_holds(wide_model_dir, sentiment_csv, tmp_path):
    long_csv = tmp_path / "long.csv"
    rows = sentiment_csv.read_text().splitlines()
    long_csv.write_text("\n".join([rows[0]] + [r.replace('"', "") + " the movie the film" * 12 for r in rows[1:]]))
    refused = run_cli(*common(wide_model_dir, long_csv, tmp_path / "r0", "--memory-budget", "1MB"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    minimum = float(re.search(r"at least ([0-9.]+) GB", refused.stderr).group(1)) * 1e9
    budget = int(minimum + 40e6)  # room for a few top components, not for full backprop
    done = run_cli(*common(wide_model_dir, long_csv, tmp_path / "r1", "--memory-budget", str(budget), "--epochs", "3"))
    assert done.returncode == 0, done.stderr[-2000:]
    s = json.loads((tmp_path / "r1" / "summary.json").read_text())
    assert s["memory_guard_shrunk_steps"] > 0
    assert s["mean_components_updated_per_step"] < s["components"]  # 'full' was asked for
    assert s["peak_rss_bytes"] <= budget, (s["peak_rss_bytes"], budget)


def test_energy_budget_stops_with_checkpoint_report_and_status(tiny_model_dir, sentiment_csv, tmp_path):
    out = tmp_path / "run"
    r = run_cli(*common(tiny_model_dir, sentiment_csv, out, "--energy-budget", "0.5J", "--epochs", "50",
                        "--batch-size", "8"))
    assert r.returncode == 3, r.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["stop_reason"] == "energy budget spent" and s["steps"] < 50 * 12
    assert s["energy_j"] >= 0.5 and s["energy_source"].startswith(("measured:", "estimated:"))
    ck = out / "checkpoint"
    assert {p.name for p in ck.iterdir()} == {"trainable.safetensors", "optimizer.safetensors", "state.json"}
    assert json.loads((ck / "state.json").read_text())["step"] == s["steps"]
    assert "checkpoint" in r.stdout and "energy per run" in r.stdout


def test_time_budget_stops_with_status_4(tiny_model_dir, sentiment_csv, tmp_path):
    r = run_cli(*common(tiny_model_dir, sentiment_csv, tmp_path / "t", "--time-budget", "1s", "--epochs", "500",
                        "--batch-size", "8"))
    assert r.returncode == 4, r.stderr[-2000:]
    s = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert s["stop_reason"] == "time budget spent" and (tmp_path / "t" / "checkpoint").is_dir()


@pytest.mark.parametrize("flag,value,message", [("--energy-budget", "lots", "as an energy"),
                                                 ("--time-budget", "5 weeks", "as a duration"),
                                                 ("--memory-budget", "big", "as a size")])
def test_unreadable_budgets_are_clear_errors(tiny_model_dir, sentiment_csv, tmp_path, flag, value, message):
    r = run_cli(*common(tiny_model_dir, sentiment_csv, tmp_path / "x", flag, value))
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
