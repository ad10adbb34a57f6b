"""The evidence harness under the equal-time protocol: the analysis on hand-made records (time to
target, the paired rule, the LR choice), the scheduler with a fake child, and real runs on a tiny
model (equal-time budgets, validation curves, calibrated budget-matched methods)."""

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import compare  # noqa: E402
from compare_analysis import (choose_lr, compare_pair, cost_check, derive, paired_rule,  # noqa: E402
                              select_main, time_to_target)
from compare_report import markdown  # noqa: E402
from compare_setup import (METHODS, Task, config_for, eval_every_for, is_budget_matched, lr_grid,  # noqa: E402
                           run_one)


def rec(method, seed, final, time_s, curve, *, step_s=0.5, lr=1e-4, factor=1.0, task="t", calibrated=None):
    cal = is_budget_matched(method) if calibrated is None else calibrated
    return {"task": task, "method": method, "seed": seed, "final": final, "curve": curve,
            "val_final": curve[-1][2] if curve else None, "lr": lr, "lr_factor": factor, "steps": 10,
            "train_time_s": time_s, "energy_j": 10 * time_s, "energy_source": "estimated:tdp",
            "median_step_s": step_s, "peak_rss_mb": 100.0, "backward_gflops_est": 1.0, "cost_fraction": 0.5,
            "step_cost_unit": "seconds (measured)" if cal else "FLOPs (modelled)",
            "outside_meter_s": 5.0 if cal else 2.0,
            "components_per_step": 3.0, "components": 6, "tracking_pct": 0.5,
            "config": {"calibrate_cost": cal}}


def test_time_to_target_interpolates_between_evaluations():
    # accuracy: 0.70 at 2 s, 0.80 at 4 s; target 0.792 -> 2 + 0.92 * 2
    assert time_to_target([(1, 2.0, 0.70), (2, 4.0, 0.80), (3, 6.0, 0.81)], 0.792, True) == pytest.approx(3.84)
    # perplexity (lower is better): 30 at 2 s, 20 at 4 s; target 25 -> halfway
    assert time_to_target([(1, 2.0, 30.0), (2, 4.0, 20.0)], 25.0, False) == pytest.approx(3.0)
    # reached at the first evaluation: no point before it to interpolate from
    assert time_to_target([(1, 2.0, 0.9), (2, 4.0, 0.95)], 0.8, True) == 2.0
    assert time_to_target([(1, 2.0, 0.5)], 0.9, True) is None
    # a dip after reaching does not matter: the first crossing counts
    assert time_to_target([(1, 1.0, 0.5), (2, 2.0, 0.9), (3, 3.0, 0.6)], 0.7, True) == pytest.approx(1.5)


def test_paired_rule_is_the_same_for_wins_and_losses():
    assert paired_rule([-0.02, -0.01, -0.03])["word"] == "worse"  # a 3-of-3 paired loss is a loss
    assert paired_rule([0.02, 0.01, 0.03])["word"] == "better"
    assert paired_rule([0.02, 0.01, -0.001])["word"] == "better"  # 2 of 3 ahead, mean favours it
    assert paired_rule([-0.02, -0.01, 0.001])["word"] == "worse"  # symmetric
    assert paired_rule([0.001, 0.001, -0.05])["word"] == "tie"  # ahead in 2/3 but the mean is against it
    assert paired_rule([0.05, -0.01, 0.0])["word"] == "tie"  # mean favours it, ahead in only 1/3
    r = paired_rule([0.1, 0.2])
    assert r["need"] == 2 and r["word"] == "better"
    assert paired_rule([0.1, -0.05])["word"] == "tie"  # n = 2 needs both seeds
    assert paired_rule([-0.1])["word"] == "worse" and paired_rule([])["word"] == "not run"
    # time to target: a seed that never reaches the target counts as behind
    assert paired_rule([math.inf, 1.0, -0.5])["word"] == "better"
    assert paired_rule([-math.inf, -math.inf, 3.0])["word"] == "worse"
    assert paired_rule([math.inf, -math.inf, 0.0])["word"] == "tie"  # no mean: no side


def test_lr_grid_choice_on_validation_and_inheritance():
    t = Task("t", "x", "accuracy", {"batch_size": 8}, lr=1e-4, lora_lr=1e-3, sizes={})
    assert [lr for _, lr in lr_grid(t, "full", [1 / 3, 1, 3])] == pytest.approx([1e-4 / 3, 1e-4, 3e-4])
    assert [lr for _, lr in lr_grid(t, "lora", [1 / 3, 1, 3])] == pytest.approx([1e-3 / 3, 1e-3, 3e-3])
    assert lr_grid(t, "rgft-budget@onnxruntime", [1])[0][1] == 1e-4
    c = lambda v: [(1, 1.0, v)]  # noqa: E731
    grid = [rec("full", 0, 0.90, 10, c(0.80), lr=1e-4 / 3, factor=1 / 3),  # test is best but is not used
            rec("full", 0, 0.70, 10, c(0.85), lr=1e-4, factor=1.0),
            rec("full", 0, 0.70, 10, c(0.85), lr=3e-4, factor=3.0)]  # tie on validation: the default wins
    assert choose_lr(grid, True)["lr"] == 1e-4
    assert choose_lr(grid[:1] + grid[2:], True)["lr"] == 3e-4
    ppl = [rec("full", 0, 30, 10, c(30.0), lr=1, factor=1.0), rec("full", 0, 31, 10, c(25.0), lr=3, factor=3.0)]
    assert choose_lr(ppl, False)["lr"] == 3  # perplexity: lower wins
    records = grid + [rec("full", 1, 0.71, 11, c(0.8), lr=1e-4, factor=1.0),
                      rec("full", 1, 0.72, 11, c(0.8), lr=3e-4, factor=3.0),  # a stray run at a non-chosen LR
                      rec("full@onnxruntime", 0, 0.7, 12, c(0.8), lr=1e-4, factor=1.0),
                      {"task": "t", "method": "lora", "seed": 0, "lr": 1e-3, "lr_factor": 1.0, "error": "boom"}]
    main, info = select_main(records, {"t": True}, grid_seed=0)
    assert sorted((r["method"], r["seed"], r["lr"]) for r in main) == [
        ("full", 0, 1e-4), ("full", 1, 1e-4), ("full@onnxruntime", 0, 1e-4)]
    assert info["t"]["full"]["chosen_lr"] == 1e-4 and len(info["t"]["full"]["runs"]) == 3
    assert info["t"]["full@onnxruntime"]["inherited_from"] == "full"


def _three_seeds():
    """full, rgft-budget (3-of-3 behind full at equal time), random-budget, top-blocks over 3 seeds."""
    rs = []
    for s in range(3):
        T = 10.0 + s
        rs += [rec("full", s, 0.80, T, [(1, T / 2, 0.70), (2, T, 0.80)], step_s=0.5),
               rec("rgft-budget", s, 0.78 - 0.01 * s, T + 0.1, [(1, T / 2, 0.75), (2, T, 0.795)], step_s=0.26),
               rec("random-budget", s, 0.70, T + 0.1, [(1, T / 2, 0.6), (2, T, 0.7)], step_s=0.25),
               rec("top-blocks", s, 0.78, T + 0.1, [(1, T / 2, 0.792), (2, T, 0.80)], step_s=0.35)]
    return rs


def test_derived_numbers_verdicts_and_markdown():
    records = _three_seeds()
    d = derive(records, {"t": True})["t"]
    rows = d["rows"]
    assert d["equal_time"] == {"full": {0: 10.0, 1: 11.0, 2: 12.0}}
    r = rows["rgft-budget"]
    assert r["paired"] == 3 and r["reached"] == 3  # target 0.792 on validation
    # seed 0: full reaches 0.792 at 5 + (0.092 / 0.1) * 5 = 9.6 s; rgft-budget at 5 + (0.042 / 0.045) * 5
    assert time_to_target(records[1]["curve"], 0.792, True) == pytest.approx(5 + 0.042 / 0.045 * 5)
    assert r["step_time_ratio"][0] == pytest.approx(0.52) and r["calibration_s_est"][0] == pytest.approx(3.0)
    assert rows["random-budget"]["reached"] == 0
    cc = cost_check(rows)
    assert not cc["within"] and cc["outside"] == ["top-blocks"]  # 0.70 vs 0.50-0.52
    c = compare_pair(records, "t", "rgft-budget", "full", True)
    assert c["test"]["word"] == "worse" and c["test"]["behind"] == 3
    c = compare_pair(records, "t", "rgft-budget", "random-budget", True)
    assert c["test"]["word"] == "better" and c["ttt_verdict"]["word"] == "better"  # random never reaches
    c = compare_pair(records, "t", "rgft-budget", "top-blocks", True)
    assert c["ttt_verdict"]["word"] == "worse"  # top-blocks reaches at its first evaluation
    meta = {"mode": "quick", "seeds": [0, 1, 2], "threads": 2, "date": "d", "lr_factors": [1.0]}
    methods = {m: METHODS[m][1] for m in ("full", "random-budget", "top-blocks", "rgft-budget")}
    main, grid = select_main(records, {"t": True})
    text = markdown(meta, main, derive(main, {"t": True}), {"t": True}, methods, grid)
    assert "worse than full" in text and "nowhere" not in text
    assert "| rgft-budget | full | -3.00 ± 1.00 | s0: -2.00, s1: -3.00, s2: -4.00 | **worse** [0/3 of 3] |" in text
    assert "outside: top-blocks" in text
    assert "evaluated **once per run, at the end**" in text
    assert "Equal training time T per seed: full: s0 10.0 s, s1 11.0 s, s2 12.0 s." in text


def test_scheduler_runs_full_first_and_hands_its_time_to_the_rest(tmp_path, monkeypatch):
    calls = []

    def fake_child(argv, env=None, timeout=None):
        spec = json.loads(argv[-1])
        calls.append(spec)
        full = spec["method"].startswith("full")
        best = abs(math.log(spec["lr"] / (1e-3 if spec["method"] == "lora" else 1e-4) / 3)) < 1e-6  # x3 wins
        v = 0.8 + (0.05 if best else 0.0)
        t = 10.0 + spec["seed"] + (0.5 if best else 0.0) if full else spec["ref_time_s"] + 0.1
        return {"final": v, "val_final": v, "curve": [(1, t / 2, v - 0.1), (2, t, v)], "train_time_s": t, "steps": 4}

    monkeypatch.setattr(compare, "run_child", fake_child)
    args = SimpleNamespace(tasks=["rotten-tomatoes"], methods=["full", "lora", "rgft-budget", "full@onnxruntime",
                                                                 "rgft-budget@onnxruntime"],
                           mode="quick", work=str(tmp_path), threads=1, grid_seed=0)
    records = []
    h = compare.Harness(args, [0, 1], records, tmp_path / "log.jsonl", [1 / 3, 1.0, 3.0])
    h.go()
    order = [(c["method"], c["seed"], round(c["lr"] / (1e-3 if c["method"] == "lora" else 1e-4), 3)) for c in calls]
    assert order[:3] == [("full", 0, 0.333), ("full", 0, 1.0), ("full", 0, 3.0)]  # full's grid first
    assert order[3] == ("full@onnxruntime", 0, 3.0)  # inherits full's LR, then sets T for its row
    # the others' grids interleaved, the inheriting method last
    assert [m for m, _, _ in order[4:10]] == ["lora", "rgft-budget"] * 3
    assert order[10] == ("rgft-budget@onnxruntime", 0, 3.0)
    seed1 = [o for o in order if o[1] == 1]
    assert seed1[0] == ("full", 1, 3.0) and len(seed1) == 5 and {o[2] for o in seed1} == {3.0}
    for c in calls:
        if c["method"] in ("lora", "rgft-budget"):
            assert c["ref_time_s"] == 10.5 + c["seed"]  # the chosen full run's training time, same seed
        elif c["method"] == "rgft-budget@onnxruntime":
            assert c["ref_time_s"] == 10.5 + c["seed"]
        else:
            assert c["ref_time_s"] is None
    assert len(h.records) == h.total == 16
    n = len(calls)
    h.go()  # everything present: nothing re-runs
    assert len(calls) == n
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 16


def test_harness_runs_equal_time_on_a_tiny_model(tiny_model_dir, sentiment_csv, tmp_path):
    task = Task("tiny", str(sentiment_csv), "accuracy",
                dict(model=str(tiny_model_dir), text_column="review", label_column="sentiment",
                     max_length=12, batch_size=8), lr=1e-3, lora_lr=1e-2,
                sizes={"quick": dict(train=64, validation=16, held_out=24, epochs=2)},
                budget=0.95)  # measured: on a tiny model the forward pass alone is about half a full step
    assert eval_every_for(16) == 1 and eval_every_for(160) == 16 and eval_every_for(60) == 6
    with pytest.raises(ValueError, match="reference"):
        config_for(task, "rgft-budget", 0, "quick", tmp_path / "x")
    full = run_one(task, "full", 0, "quick", tmp_path / "full", threads=1)
    T = full["train_time_s"]
    assert full["steps"] == 16 and full["stop_reason"] == "completed" and len(full["curve"]) == 16
    assert full["curve"][-1][1] == pytest.approx(T) and full["val_final"] == full["curve"][-1][2]
    assert full["validation_examples"] == 16 and full["held_out_examples"] == 24
    assert full["config"]["max_train_seconds"] is None and full["config"]["eval_every"] == 1
    records = [full]
    for method in ("lora", "rgft-budget", "top-blocks", "elastic"):
        r = run_one(task, method, 0, "quick", tmp_path / method, threads=1, ref_time_s=T)
        cfg = r["config"]
        assert cfg["max_train_seconds"] == T and cfg["eval_every_seconds"] == pytest.approx(T / 10, rel=1e-5)
        assert cfg["epochs"] == 50 and cfg["validation_examples"] == 16
        assert r["stop_reason"] == "training time reached" and r["train_time_s"] >= T
        times = [t for _, t, _ in r["curve"]]
        assert len(times) >= 5 and times == sorted(times) and times[-1] >= T * (1 - 1e-6)
        assert 0.0 <= r["final"] <= 1.0 and r["energy_source"].startswith(("estimated", "measured"))
        assert cfg["calibrate_cost"] == is_budget_matched(method)
        if is_budget_matched(method):
            assert r["step_cost_unit"].startswith("seconds") and r["cost_calibration"]["step_s"]
        records.append(r)
    by = {r["method"]: r for r in records}
    assert by["lora"]["config"]["lr"] == 1e-2 and by["elastic"]["config"]["probe_every"] == 4
    assert by["top-blocks"]["config"]["policy"] == "top-blocks"
    d = derive(records, {"tiny": True})["tiny"]
    assert d["rows"]["full"]["ttt_ratio"][0] == pytest.approx(1.0) and d["equal_time"]["full"] == {0: T}
    assert d["rows"]["rgft-budget"]["paired"] == 1


def test_exported_backend_rows_take_the_time_of_full_through_that_backend(compile_tiny, sentiment_csv, tmp_path,
                                                                          monkeypatch):
    import compare_setup

    art, _ = compile_tiny("onnxruntime", batch_size=8)
    monkeypatch.setattr(compare_setup, "artifact_for", lambda *a: art)
    task = Task("tiny", str(sentiment_csv), "accuracy",
                dict(text_column="review", label_column="sentiment", max_length=12, batch_size=8),
                lr=1e-3, lora_lr=1e-2, sizes={"quick": dict(train=64, validation=16, held_out=24, epochs=2)},
                budget=0.95)
    full = run_one(task, "full@onnxruntime", 0, "quick", tmp_path / "full", threads=1)
    assert full["steps"] == 16 and full["config"]["max_train_seconds"] is None and len(full["curve"]) == 16
    r = run_one(task, "rgft-budget@onnxruntime", 0, "quick", tmp_path / "rgft", threads=1,
                ref_time_s=full["train_time_s"])
    assert r["stop_reason"] == "training time reached" and r["train_time_s"] >= full["train_time_s"]
    assert r["step_cost_unit"].startswith("seconds") and r["curve"]
    d = derive([full, r], {"tiny": True})["tiny"]
    assert d["equal_time"] == {"full@onnxruntime": {0: full["train_time_s"]}}
    assert d["rows"]["rgft-budget@onnxruntime"]["paired"] == 1


def test_scheduler_without_the_grid_seed_runs_nothing_it_cannot_price(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(compare, "run_child", lambda argv, env=None, timeout=None: calls.append(argv) or {})
    args = SimpleNamespace(tasks=["rotten-tomatoes"], methods=["full", "rgft-budget"], mode="quick",
                           work=str(tmp_path), threads=1, grid_seed=0)
    h = compare.Harness(args, [1], [], tmp_path / "log.jsonl", [1 / 3, 1.0, 3.0])
    h.go()
    assert calls == [] and [r["method"] for r in h.records] == ["full", "rgft-budget"]
    assert all("LR grid on seed 0" in r["error"] for r in h.records)
