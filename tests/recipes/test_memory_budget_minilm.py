"""A memory budget on the real default model (MiniLM on Rotten Tomatoes): swept over three budgets
from the stated minimum up, the whole process's peak RSS (model load and evaluations included)
stays at or under the budget every time. Each run is a subprocess, so its peak is its own. Slow."""

import json
import re
import subprocess
import sys

import pytest


def finetune(out, budget: str, steps: int = 25):
    return subprocess.run(
        [sys.executable, "-m", "rgft_edge.cli", "finetune", "--no-progress", "--max-train-examples", "640",
         "--eval-examples", "100", "--validation-examples", "50", "--eval-every", "12",
         "--max-steps", str(steps), "--threads", "2", "--memory-budget", budget, "--out", str(out)],
        capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_minilm_peak_rss_stays_under_every_budget(tmp_path):
    refused = finetune(tmp_path / "refused", "1MB", steps=2)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    minimum = float(re.search(r"at least ([0-9.]+) GB", refused.stderr).group(1)) * 1e9
    for i, extra in enumerate((0.02, 0.15, 0.40)):
        budget = int(minimum * (1 + extra))
        r = finetune(tmp_path / f"b{i}", str(budget))
        assert r.returncode in (0, 6), r.stderr[-2000:]  # 6: stopped itself, memory budget reached
        s = json.loads((tmp_path / f"b{i}" / "summary.json").read_text())
        assert s["peak_rss_bytes"] <= budget, (extra, s["peak_rss_bytes"], budget)
        assert s["memory_source"].startswith("measured")
        if r.returncode == 6:
            assert s["stop_reason"] == "memory budget reached" and s["checkpoint"]
