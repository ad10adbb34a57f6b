"""The evidence harness end to end on a tiny model, and its derived numbers on hand-made records."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
from compare_analysis import derive, markdown, time_to_target  # noqa: E402
from compare_setup import METHODS, Task, run_one  # noqa: E402


def rec(method, seed, final, time_s, curve, energy=None):
    return {"task": "t", "method": method, "seed": seed, "final": final, "curve": curve,
            "train_time_s": time_s, "energy_j": energy or 10 * time_s, "energy_source": "estimated:tdp",
            "peak_rss_mb": 100.0, "backward_gflops_est": 1.0, "cost_fraction": 0.5,
            "components_per_step": 3.0, "components": 6, "tracking_pct": 0.5}


def test_time_to_target_and_paired_ratios():
    assert time_to_target([(1, 2.0, 0.5), (2, 4.0, 0.79), (3, 6.0, 0.8)], 0.792, True) == 6.0
    assert time_to_target([(1, 2.0, 30.0), (2, 4.0, 20.0)], 25.0, False) == 4.0
    assert time_to_target([(1, 2.0, 0.5)], 0.9, True) is None
    records = [rec("full", 0, 0.80, 10.0, [(1, 5.0, 0.75), (2, 10.0, 0.80)]),
               rec("full", 1, 0.70, 20.0, [(1, 10.0, 0.70), (2, 20.0, 0.70)]),
               rec("rgft-budget", 0, 0.80, 5.0, [(1, 2.5, 0.792), (2, 5.0, 0.80)]),
               rec("rgft-budget", 1, 0.60, 10.0, [(1, 5.0, 0.5), (2, 10.0, 0.6)]),
               rec("random-budget", 0, 0.70, 5.0, [(1, 2.5, 0.6), (2, 5.0, 0.7)]),
               rec("random-budget", 1, 0.65, 10.0, [(1, 5.0, 0.6), (2, 10.0, 0.65)])]
    d = derive(records, {"t": True})["t"]
    r = d["rgft-budget"]
    assert r["time_ratio"][:2] == pytest.approx((0.5, 0.0))
    assert r["reached"] == 1 and r["paired"] == 2
    # seed 0: target 0.792 reached at 2.5 s vs full's own 10 s
    assert r["ttt_ratio"][0] == pytest.approx(0.25)
    assert r["final"][0] == pytest.approx(0.70)
    text = markdown({"mode": "quick", "seeds": [0, 1], "threads": 2, "date": "d"}, records,
                    {"t": d}, {"t": True}, {m: METHODS[m][1] for m in ("full", "rgft-budget", "random-budget")})
    assert ("rgft-budget vs random-budget (equal cost; est. step cost 0.50 vs 0.50): +2.50 ± 10.61 accuracy "
            "points — within noise (1/2 seeds better)") in text
    assert "| rgft-budget | 70.00 ± 14.14 |" in text


def test_harness_runs_each_method_on_a_tiny_model(tiny_model_dir, sentiment_csv, tmp_path):
    task = Task("tiny", str(sentiment_csv), "accuracy",
                dict(model=str(tiny_model_dir), text_column="review", label_column="sentiment",
                     max_length=12, batch_size=8), lr=1e-3, lora_lr=1e-2,
                sizes={"quick": dict(train=64, held_out=24, evals=2)})
    records = []
    for method in ("full", "lora", "head-only", "elastic", "rgft-budget", "random-budget", "rgft-clip"):
        r = run_one(task, method, 0, "quick", tmp_path / method, threads=1)
        assert r["steps"] == 8 and len(r["curve"]) == 2 and r["curve"][-1][0] == 8
        assert r["curve"][0][1] < r["curve"][1][1] == pytest.approx(r["train_time_s"])
        assert 0.0 <= r["final"] <= 1.0 and r["energy_source"].startswith(("estimated", "measured"))
        records.append(r)
    by = {r["method"]: r for r in records}
    assert by["full"]["cost_fraction"] == pytest.approx(1.0)
    assert by["rgft-budget"]["backward_gflops_est"] < by["full"]["backward_gflops_est"]
    assert by["head-only"]["components_per_step"] <= 2.0  # pooler + classifier
    assert by["lora"]["config"]["lr"] == 1e-2 and by["elastic"]["config"]["probe_every"] == 2
    d = derive(records, {"tiny": True})["tiny"]
    assert d["full"]["time_ratio"][0] == pytest.approx(1.0)
