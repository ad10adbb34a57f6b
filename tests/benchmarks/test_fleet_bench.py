"""The fleet benchmark's analysis on hand-made runs: target, uplink to it, the paired verdicts."""

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import fleet  # noqa: E402


def run(method, seed, accs, up):
    hist = [{"round": 0, "accuracy": accs[0], "uplink_bytes": 0, "downlink_bytes": 0}]
    for r, a in enumerate(accs[1:], 1):
        client = {"components": ["c"], "uplink_bytes": up, "energy_source": "estimated:tdp",
                  "metrics": {"median-step-s": 0.1, "train-time-s": 1.0, "energy-j": 2.0, "components": 1}}
        hist.append({"round": r, "accuracy": a, "uplink_bytes": up, "downlink_bytes": 10 * up,
                     "refused": [], "clients": [client]})
    return {"method": method, "seed": seed, "history": hist}


def test_uplink_to_target_and_verdicts():
    runs = []
    for seed in (0, 1, 2):
        runs += [run("fedavg-full", seed, [0.2, 0.8, 0.95, 1.0], 1000),   # target 0.99, reached in round 3
                 run("rgft", seed, [0.2, 0.5, 0.9, 0.99, 0.99], 50),      # round 3: 150 bytes
                 run("fedavg-lora", seed, [0.2, 0.6, 0.7, 0.8], 10)]      # never reaches it
    rows, verdicts = fleet.analyse(runs, ["fedavg-full", "rgft", "fedavg-lora"])
    by = {r["method"]: r for r in rows}
    assert by["fedavg-full"]["uplink_to_target"][0] == 3000 and by["fedavg-full"]["ratio_to_full"][0] == 1.0
    assert by["rgft"]["rounds_to_target"][0] == 3 and math.isclose(by["rgft"]["ratio_to_full"][0], 0.05)
    assert by["fedavg-lora"]["reached"] == 0
    assert math.isclose(by["rgft"]["min_acc_after_target"][0], 0.99) and by["fedavg-lora"]["min_acc_after_target"][2] == 0
    assert math.isclose(by["rgft"]["last5_acc"][0], (0.5 + 0.9 + 0.99 + 0.99) / 4)
    assert verdicts["rgft vs fedavg-full"]["word"] == "better"
    assert verdicts["rgft vs fedavg-lora"]["word"] == "better"  # lora never reaches it: behind in every seed
    assert verdicts["fedavg-lora vs fedavg-full"]["word"] == "worse"
    text = fleet.markdown({"args": {"clients": 1, "alpha": 0.3, "data": "d", "rounds": 4, "local_steps": 1,
                                    "batch_size": 2, "held_out": 3, "upload_budget": 0.1, "lr_factors": [1, 3], "choose_rounds": 2},
                           "seeds": [0, 1, 2], "verdicts": verdicts,
                           "chosen": {"rgft": {"lr": 1e-4, "val_accuracy": 0.9, "grid": [(1e-4, 0.9), (3e-4, 0.8)]}},
                           "lrs": {"fedavg-full": 1e-4, "rgft": 1e-4, "fedavg-lora": 1e-3}, "parallel": 2,
                           "environment": {"cpu": "x", "date": "d", "flwr": "1.41.0", "torch": "t"},
                           "energy_note": "estimated:tdp."}, rows)
    assert "| rgft | 0.0001 | 0.1 |" in text and "| fedavg-full | 0.0001 | all |" in text and "**better**" in text and "- rgft: **0.0001** (0.0001: 0.9000" in text


def test_the_lr_is_chosen_on_validation_not_test():
    a = run("rgft", 0, [0.2, 0.5, 0.9], 5)
    b = run("rgft", 0, [0.2, 0.6, 0.95], 5)  # better on test...
    for r, lr, val in ((a, 1e-4, 0.8), (b, 3e-4, 0.7)):  # ...worse on validation
        r.update(phase="choose", lr=lr)
        for h in r["history"]:
            h["val_accuracy"] = val
    assert fleet.choose_lrs([a, b], ["rgft"])["rgft"]["lr"] == 1e-4


def test_runs_that_shared_the_machine_leave_the_time_columns_only():
    runs = [run("fedavg-full", seed, [0.2, 0.9, 1.0], 1000) for seed in (0, 1)]
    runs[1]["history"][1]["clients"][0]["metrics"]["median-step-s"] = 9.0  # seed 1 ran beside other work
    rows, _ = fleet.analyse(runs, ["fedavg-full"], shared_runs=["*:1"])
    assert rows[0]["client_step_s"] == (0.1, 0.0, 1)  # seed 0 alone
    assert rows[0]["final_acc"][2] == 2 and rows[0]["uplink_to_target"][2] == 2  # bytes, accuracy: both seeds
    assert fleet.shared("rgft", 3, ["rgft:*"]) and not fleet.shared("rgft", 3, ["fedavg-full:3"])
