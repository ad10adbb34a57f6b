"""Budgets on real runs (subprocesses, so peak RSS is the run's own): memory holds, energy and time
stop cleanly with a checkpoint, a report and the documented exit status."""

import json
import re
import subprocess
import sys

import pytest

from rgft_edge.policies import policy_names
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
    for attempt in range(2):
        minimum = float(re.search(r"at least ([0-9.]+) GB", refused.stderr).group(1)) * 1e9
        budget = int(minimum + 10e6)  # room for a few top components, not for full backprop
        done = run_cli(*common(wide_model_dir, long_csv, tmp_path / f"r{attempt + 1}", "--memory-budget",
                               str(budget), "--epochs", "3"))
        if done.returncode != 2:
            break
        # the minimum is measured (resident file-backed pages of the loaded libraries vary with the
        # page cache), so a later process may need a little more: a refusal that says so is allowed
        refused = done
    out = tmp_path / f"r{attempt + 1}"
    # 6: the run stopped itself when resident memory (optimizer state, caches) left no room
    assert done.returncode in (0, 6), done.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["memory_guard_shrunk_steps"] > 0 and s["steps"] > 0
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


@pytest.fixture(scope="module")
def one_watt_profile(tmp_path_factory):
    """A profile whose power model is a constant 1 W (idle = max), so an energy budget in joules is
    that many seconds of the run on any machine without a readable power sensor."""
    path = tmp_path_factory.mktemp("profile") / "one-watt.yaml"
    path.write_text("name: one-watt\ndescription: constant 1 W (tests)\nmatch: {}\nram_gb: 8\n"
                    "usable_memory_gb: 6\ncores: 2\ndefault_threads: 1\nidle_power_w: 1.0\nmax_power_w: 1.0\n"
                    "power_sensor: {kind: none}\npreferred_backend: torch\ndefaults: {}\n")
    return path


@pytest.mark.parametrize("policy", policy_names())
def test_every_policy_under_energy_and_memory_budgets(policy, tiny_model_dir, sentiment_csv, tmp_path,
                                                      one_watt_profile, capsys):
    """Through the CLI entry point: the energy projection asks the policy to tighten (or it declares
    it cannot), the memory guard constrains every selection, and the run stops on the energy budget
    with exit status 3 and a checkpoint. No traceback for any registered policy."""
    import psutil

    from rgft_edge.cli import main

    out = tmp_path / policy
    memory = int(psutil.Process().memory_info().rss * 1.3 + 150e6)  # above this process's floor
    code = main(["finetune", "--no-progress", "--no-report", "--model", str(tiny_model_dir), "--data",
                 str(sentiment_csv), "--text-column", "review", "--label-column", "sentiment",
                 "--eval-examples", "24", "--batch-size", "8", "--threads", "1", "--epochs", "400",
                 "--policy", policy, "--static-warmup-steps", "3", "--probe-every", "5",
                 "--profile", str(one_watt_profile), "--energy-budget", "2J", "--memory-budget", str(memory),
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 3, err[-2000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["stop_reason"] == "energy budget spent" and s["memory_budget_bytes"] == memory
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == s["steps"]
    if policy in ("full", "head-only"):
        assert s["budget_adjustments"] == []  # declared: no smaller step
    else:
        assert s["budget_adjustments"], "the projection broke the budget but the policy never tightened"


@pytest.mark.parametrize("layout", ["cuts", "stages"])
def test_memory_budget_holds_on_an_executorch_artifact(tiny_artifacts, et_stage_artifacts, sentiment_csv, tmp_path,
                                                       layout):
    """The promise on a compiled program runner: refused below its stated minimum, held above it."""
    artifact = tiny_artifacts["executorch"] if layout == "cuts" else et_stage_artifacts["int8-lora"]

    def train(out, budget):
        return subprocess.run([sys.executable, "-m", "rgft_edge.cli", "train", str(artifact),
                               "--no-progress", "--data", str(sentiment_csv), "--text-column", "review",
                               "--label-column", "sentiment", "--eval-examples", "24", "--threads", "1",
                               "--epochs", "2", "--memory-budget", str(budget), "--out", str(out)],
                              capture_output=True, text=True, timeout=600)

    refused = train(tmp_path / "r0", "1MB")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-1500:]
    minimum = float(re.search(r"at least ([0-9.]+) GB", refused.stderr).group(1)) * 1e9
    budget = int(minimum + 60e6)
    done = train(tmp_path / "r1", budget)
    assert done.returncode in (0, 6), done.stderr[-2000:]
    s = json.loads((tmp_path / "r1" / "summary.json").read_text())
    assert s["steps"] > 0 and s["peak_rss_bytes"] <= budget, (s["peak_rss_bytes"], budget)
