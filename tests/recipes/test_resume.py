"""Kill a run with SIGKILL at random points, resume each time: the final trainable weights equal
an uninterrupted run with the same seed, bit for bit (CPU, one thread)."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
from safetensors.numpy import load_file

ARGS = ["--text-column", "review", "--label-column", "sentiment", "--eval-examples", "24",
        "--batch-size", "8", "--epochs", "40", "--threads", "1", "--checkpoint-every", "7",
        "--policy", "budget", "--budget", "0.7", "--lr", "0.003", "--no-progress"]


def cli(*args):
    return [sys.executable, "-m", "rgft_edge.cli", "finetune", *args]


def steps_logged(run):
    path = run / "metrics.jsonl"
    return sum(1 for _ in path.open()) if path.is_file() else 0


def test_sigkill_and_resume_gives_the_same_weights(tiny_model_dir, sentiment_csv, tmp_path):
    base = ["--model", str(tiny_model_dir), "--data", str(sentiment_csv), *ARGS]
    ref = tmp_path / "uninterrupted"
    done = subprocess.run(cli(*base, "--out", str(ref)), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    run = tmp_path / "killed"
    rnd = random.Random(1)
    kills = 0
    proc = subprocess.Popen(cli(*base, "--out", str(run)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while kills < 3:
        deadline = time.time() + 120
        while not (run / "checkpoint" / "state.json").is_file() or steps_logged(run) < 10 * (kills + 1):
            assert proc.poll() is None, "the run finished before it could be killed; make it longer"
            assert time.time() < deadline
            time.sleep(0.05)
        time.sleep(rnd.uniform(0.0, 0.6))
        if proc.poll() is not None:
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        proc = subprocess.Popen(cli("--resume", str(run), "--no-progress"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert kills == 3

    a = load_file(str(ref / "trainable.safetensors"))
    b = load_file(str(run / "trainable.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name  # bit for bit
    s_ref = json.loads((ref / "summary.json").read_text())
    s = json.loads((run / "summary.json").read_text())
    assert s["steps"] == s_ref["steps"] == 40 * 12 and s["resumed_from_step"] > 0
    records = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    step_ids = [r["step"] for r in records if r["type"] == "step"]
    assert step_ids == list(range(40 * 12))  # every step logged exactly once across the restarts
    assert np.load(run / "error_map.npy").shape[0] == 40 * 12
    assert s["energy_j_including_earlier_sessions"] > s["energy_j"] > 0
