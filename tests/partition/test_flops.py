"""The forward-FLOP profile: torch-function-level counting equals torch's FlopCounterMode per module
on every model family (it replaced FlopCounterMode to keep dynamo and sympy out of the process)."""

import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from rgft_edge.partition.flops import call_model, profile_forward
from tests.conftest import text_batch, tiny_bert, tiny_cnn, tiny_gpt2, tiny_llama, tiny_llama_lm


class ConvMix(nn.Module):
    """Grouped, transposed and 1-D / 3-D convolutions plus explicit matmuls."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(4, 8, 3, padding=1, groups=2)
        self.ct = nn.ConvTranspose2d(8, 6, 3, stride=2, groups=2)
        self.c3 = nn.Conv3d(1, 2, 2)
        self.w = nn.Parameter(torch.randn(6, 5))

    def forward(self, x):
        y = self.c1(x)  # (n, 8, 16)
        z = self.ct(y.view(-1, 8, 4, 4))
        v = self.c3(z.unsqueeze(1)[:, :, :4])
        a = z.flatten(2).transpose(1, 2) @ self.w  # 3-D @ 2-D (mm after a fold)
        b = torch.bmm(a.transpose(1, 2), a) + torch.addmm(torch.zeros(5, 5), self.w.t(), self.w)
        return v.sum() + b.sum() + torch.baddbmm(b, b, b).sum() + (self.w @ torch.randn(5)).sum()


def torch_counts(model, inputs):
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        call_model(model.eval(), inputs)
    n = next(iter(inputs.values())).shape[0] if isinstance(inputs, dict) else inputs.shape[0]
    out = {}
    for key, ops in fc.get_flop_counts().items():
        path = key.split(".", 1)[1] if "." in key else ("" if key != "Global" else "Global")
        out[path] = sum(ops.values()) / n
    return out


CASES = {
    "bert": (tiny_bert, lambda: {"input_ids": text_batch(n=3, t=10)["input_ids"]}),
    "llama": (tiny_llama, lambda: {"input_ids": text_batch(n=3, t=10)["input_ids"]}),
    "llama-lm": (tiny_llama_lm, lambda: {"input_ids": text_batch(n=3, t=10)["input_ids"]}),
    "gpt2": (tiny_gpt2, lambda: {"input_ids": text_batch(n=3, t=10)["input_ids"]}),
    "cnn": (tiny_cnn, lambda: torch.randn(3, 3, 32, 32)),
    "conv-mix": (ConvMix, lambda: torch.randn(2, 4, 16)),
}


@pytest.mark.parametrize("family", sorted(CASES))
def test_flops_per_module_equal_torch_flop_counter(family):
    make, inputs = CASES[family]
    torch.manual_seed(0)
    model, x = make(), inputs()
    expected = torch_counts(model, x)
    paths = [p for p, _ in model.named_modules() if p]
    prof = profile_forward(model, x, paths)
    assert prof.total == pytest.approx(expected.pop("Global"), rel=1e-9)
    assert prof.total > 0
    expected.pop("", None)
    assert prof.flops == pytest.approx(expected, rel=1e-9)


def test_profiling_imports_nothing():
    # a fresh interpreter: torch's FlopCounterMode (any dispatch mode) would import dynamo and sympy
    code = ("import sys, torch, torch.nn as nn;"
            "from rgft_edge.partition.flops import profile_forward;"
            "m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2)); m(torch.randn(1, 3, 8, 8));"
            "before = set(sys.modules);"
            "p = profile_forward(m, torch.randn(2, 3, 8, 8), ['0', '2']);"
            "print(p.total > 0, sorted(set(sys.modules) - before))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "[]"], out.stdout + out.stderr
