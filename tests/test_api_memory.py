"""`RGFT(..., memory_budget=...)` in a user's own loop: refused below the measured minimum with its
breakdown, and held (whole-process peak RSS) just above it. Each run is its own process, so its
peak RSS is its own."""

import json
import re
import subprocess
import sys

import pytest
import torch

from rgft_edge.api_memory import stand_in_loss

SCRIPT = r'''
import json, sys
import torch
from torch import nn
from rgft_edge import RGFT
from rgft_edge.errors import UserError

torch.manual_seed(0)
torch.set_num_threads(1)
# wide enough that activations, gradients and AdamW state (not the runtime) decide a step's memory
model = nn.Sequential(*[nn.Sequential(nn.Linear(512, 2048), nn.GELU(), nn.Linear(2048, 512)) for _ in range(6)],
                      nn.Linear(512, 4))
x, y = torch.randn(512, 512), torch.randint(0, 4, (512,))
try:
    rgft = RGFT(model, policy="full", example_inputs=x, memory_budget=float(sys.argv[1]))
except UserError as e:
    print("REFUSED", e)
    sys.exit(2)
opt = rgft.optimizer(lr=1e-3)
for _ in range(12):
    with rgft.step():
        nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    opt.zero_grad()
    if rgft.should_stop():
        break
print("RESULT " + json.dumps(rgft.finish(report=False)))
'''


def run(tmp_path, budget: float) -> subprocess.CompletedProcess:
    script = tmp_path / "loop.py"
    script.write_text(SCRIPT)
    return subprocess.run([sys.executable, str(script), str(budget)], capture_output=True, text=True, timeout=600)


def test_memory_budget_from_code_is_refused_below_minimum_and_holds_above(tmp_path):
    refused = run(tmp_path, 1e6)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "at least" in refused.stdout and "activations" in refused.stdout  # the breakdown
    for attempt in range(2):
        minimum = float(re.search(r"at least ([0-9.]+) GB", refused.stdout).group(1)) * 1e9
        budget = minimum + 40e6  # room for the top blocks, not for full backprop (~200 MB more)
        done = run(tmp_path, budget)
        if done.returncode != 2:
            break
        refused = done  # the minimum is measured and moves by a few MB between processes
    assert done.returncode == 0, done.stderr[-2000:]
    s = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert s["steps"] > 0 and s["memory_budget_bytes"] == budget
    assert s["memory_guard_shrunk_steps"] > 0  # "full" was asked for
    assert s["mean_components_updated_per_step"] < s["components"]
    assert s["peak_rss_bytes"] <= budget, (s["peak_rss_bytes"], budget)


def test_memory_budget_needs_example_inputs():
    from rgft_edge import RGFT

    with pytest.raises(ValueError, match="example_inputs"):
        RGFT(torch.nn.Linear(4, 2), policy="full", memory_budget="1GB")


def test_stand_in_loss_reaches_every_floating_output():
    w = torch.ones(3, requires_grad=True)
    stand_in_loss({"logits": w * 2, "ids": torch.arange(3)}).backward()
    assert torch.equal(w.grad, torch.full((3,), 2.0))
    with pytest.raises(ValueError, match="no tensor"):
        stand_in_loss((torch.ones(2),))
