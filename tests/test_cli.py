import json

import pytest

from rgft_edge.cli import build_parser, config_from_args, main
from rgft_edge.config import FinetuneConfig


def test_default_config_is_what_the_cli_runs():
    ns = build_parser().parse_args(["finetune"])
    assert config_from_args(ns) == FinetuneConfig()
    assert FinetuneConfig().data.source == "rotten-tomatoes" and FinetuneConfig().model.path is None


def test_every_config_field_has_a_flag():
    ns = build_parser().parse_args(["finetune", "--policy", "top-p", "--top-p", "0.5", "--granularity", "head",
                                    "--estimator", "activation", "--epochs", "2", "--batch-size", "8",
                                    "--lr", "0.001", "--seed", "3", "--threads", "1", "--out", "x",
                                    "--budget", "0.4", "--no-train-embeddings"])
    flat = config_from_args(ns).flat()
    assert (flat["policy"], flat["top_p"], flat["granularity"], flat["estimator"], flat["epochs"],
            flat["batch_size"], flat["lr"], flat["seed"], flat["threads"], flat["out"], flat["budget"]) == \
        ("top-p", 0.5, "head", "activation", 2, 8, 0.001, 3, 1, "x", 0.4)
    assert set(FinetuneConfig().flat()) <= set(vars(ns))  # every setting, policy options included


def run_cli(capsys, *args):
    code = main(["finetune", "--no-progress", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("args,message", [
    (["--data", "missing.csv"], "data file not found"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["--top-p", "0"], "--top-p must be in (0, 1]"),
    (["--policy", "nope"], "--policy must be one of"),
])
def test_bad_input_gives_one_clear_line(capsys, args, message):
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_bad_columns_empty_data_and_bad_model(capsys, tmp_path, sentiment_csv, tiny_model_dir):
    code, _, err = run_cli(capsys, "--data", str(sentiment_csv), "--text-column", "review",
                           "--label-column", "stars", "--model", str(tiny_model_dir))
    assert code == 2 and "no column 'stars'" in err
    empty = tmp_path / "empty.csv"
    empty.write_text("review,sentiment\n")
    code, _, err = run_cli(capsys, "--data", str(empty))
    assert code == 2 and "empty" in err
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    code, _, err = run_cli(capsys, "--data", str(sentiment_csv), "--text-column", "review",
                           "--label-column", "sentiment", "--model", str(broken))
    assert code == 2 and "does not load" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "--data", str(sentiment_csv), "--text-column", "review",
                           "--label-column", "sentiment", "--model", str(tmp_path / "nowhere"))
    assert code == 2 and "model directory not found" in err


def test_impossible_budget_is_refused(capsys, sentiment_csv, tiny_model_dir):
    code, _, err = run_cli(capsys, "--data", str(sentiment_csv), "--text-column", "review",
                           "--label-column", "sentiment", "--model", str(tiny_model_dir),
                           "--budget", "0.05")
    assert code == 2 and "cannot train any component" in err


def test_finetune_end_to_end_on_a_tiny_model_writes_the_run_directory(capsys, tmp_path, sentiment_csv, tiny_model_dir):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "--data", str(sentiment_csv), "--text-column", "review",
                                "--label-column", "sentiment", "--model", str(tiny_model_dir),
                                "--eval-examples", "24", "--epochs", "3", "--batch-size", "8",
                                "--lr", "0.003", "--budget", "0.8", "--out", str(out), "--threads", "1")
    assert code == 0, err
    assert "held-out accuracy" in stdout and "components" in stdout
    assert "120 rows read, 120 usable, 0 skipped" in stdout and "train 96, held-out 24" in stdout
    for name in ("config.json", "components.json", "metrics.jsonl", "error_map.npy", "selected.npy",
                 "eval.json", "trainable.safetensors", "summary.json"):
        assert (out / name).is_file(), name
    import numpy as np
    from safetensors.numpy import load_file

    summary = json.loads((out / "summary.json").read_text())
    steps = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["type"] == "step" for r in steps) == summary["steps"] == 3 * 12
    evals = [r for r in steps if r["type"] == "eval"]  # --eval-points 10 by default: a curve, then the end
    assert [r["step"] for r in evals] == [3 * k - 1 for k in range(1, 13)] + [35]
    assert {r["split"] for r in evals} == {"held_out"}  # 24 held out: the 200-example subset is all of it
    em = np.load(out / "error_map.npy", allow_pickle=False)
    assert em.shape == (summary["steps"], summary["components"])
    weights = load_file(str(out / "trainable.safetensors"))
    assert not any(k.startswith("bert.embeddings") for k in weights)  # embeddings frozen by default
    assert summary["held_out_accuracy"] >= 0.75  # the toy rule (positive vs negative words) is learnable
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["policy"] == "budget" and cfg["environment"]["threads"] == 1
