"""`rgft-edge train` of an `onnx` artifact (device-onnx extra), a `torch` artifact (device-torch
extra: CPU-only torch 2.10.0, transformers, peft, torchao) and an `executorch` artifact
(device-executorch extra + executorch without its exporter dependencies, no torch: the runner's C++
shim built by the host's aarch64 cross compiler) on
linux aarch64 (Debian 12 arm64 userland, the extras' aarch64 wheels) under qemu user-mode
emulation, through `scripts/emulate_aarch64.sh`. Opt-in (RGFT_EMULATE_AARCH64=1): the first run downloads an arm64
Debian userland and the wheels (~560 MB), and needs root for the host tools."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import write_sentiment_csv

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "emulate_aarch64.sh"


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("RGFT_EMULATE_AARCH64") != "1", reason="opt-in: RGFT_EMULATE_AARCH64=1")
@pytest.mark.parametrize("backend, extra", [
    ("onnx", "device-onnx"),
    ("torch", "device-torch"),  # CPU-only torch 2.10.0 for aarch64 (environment markers in the extra)
    ("executorch", "device-executorch")])  # ExecuTorch's C++ runtime, no torch
def test_train_an_artifact_on_emulated_aarch64(tiny_artifacts, tmp_path, backend, extra):
    data = write_sentiment_csv(tmp_path / "reviews.csv", n=40)
    out = tmp_path / "run" / "out"
    res = subprocess.run(["bash", str(SCRIPT), str(tiny_artifacts[backend]), str(data)], capture_output=True,
                         text=True, timeout=3600, env={**os.environ, "OUTDIR": str(out), "EXTRA": extra})
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((out.parent / "emulation.json").read_text())
    assert report["machine"] == "aarch64" and report["extra"] == extra
    assert report["steps"] == 6 and report["stop_reason"] == "completed"
    if backend == "executorch":
        assert report["torch_installed"] is False and report["native_library"].startswith("librgft_et-")
