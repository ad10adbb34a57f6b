"""The time-to-target decomposition on hand-made runs: steps x step time, the floor, lower bounds."""

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import time_target_bound as ttb  # noqa: E402


def record(method, seed, curve, steps, train_time, step_s=None, val_final=None):
    r = {"task": "t", "metric": "accuracy", "method": method, "seed": seed, "lr": 1e-4, "lr_factor": 1.0,
         "curve": curve, "steps": steps, "train_time_s": train_time, "final": curve[-1][2],
         "val_final": curve[-1][2] if val_final is None else val_final}
    if step_s:
        r["cost_calibration"] = {"step_s": step_s}
    return r


def test_steps_and_time_ratios_multiply_and_a_miss_is_a_lower_bound():
    full = record("full", 0, [[10, 10.0, 0.5], [20, 20.0, 0.9], [30, 30.0, 1.0]], 30, 30.0)
    # target 0.99: full gets there at step 29 (interpolated), 29 s
    half = record("sel", 0, [[20, 10.0, 0.5], [40, 20.0, 0.8], [60, 30.0, 1.0]], 60, 30.0,
                  step_s=[1.0, 0.8, 0.6, 0.4])  # two cut depths: cheapest 0.4 of the full step
    never = record("miss", 0, [[30, 10.0, 0.5], [60, 20.0, 0.6], [90, 30.0, 0.7]], 90, 30.0)
    rows = {r["method"]: r for r in ttb.bound_rows([full, half, never], goal=0.5, lm_goal=0.6)}
    sel = rows["sel"]["per_seed"][0]
    assert math.isclose(sel["steps_ratio"], 59 / 29) and math.isclose(sel["step_time_ratio"], 0.5)
    assert math.isclose(sel["time_ratio"], sel["steps_ratio"] * sel["step_time_ratio"])
    assert math.isclose(sel["steps_ratio_needed"], 1.0)  # at half the step time: full's own step count
    assert math.isclose(rows["sel"]["cost_floor"][0], 0.4)
    assert math.isclose(rows["sel"]["steps_ratio_needed_at_floor"], 0.5 / 0.4)
    miss = rows["miss"]["per_seed"][0]
    assert not miss["reached"] and miss["steps_ratio"] is None and math.isclose(miss["steps_ratio_at_least"], 90 / 29)
    assert "full" not in rows
    assert "| sel | 1/1 |" in ttb.markdown({"runs": ["x"], "goal": 0.5, "lm_goal": 0.6}, list(rows.values()))
