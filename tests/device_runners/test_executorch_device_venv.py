"""The ExecuTorch runner as a device installs it: `device-executorch` plus executorch without its
exporter's dependencies, in a venv with no torch. It trains an executorch artifact end to end on
ExecuTorch's C++ runtime (the shim is compiled on first use)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import write_sentiment_csv

VENV = Path(__file__).resolve().parents[2] / ".venv-device-executorch"
pytestmark = [pytest.mark.skipif(not (VENV / "bin" / "rgft-edge").exists(),
                                 reason="no .venv-device-executorch (scripts/setup.sh builds it)"),
              pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ to build the ExecuTorch shim")]


def run(*argv, **kw):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600, **kw)


@pytest.mark.parametrize("layout", ["cuts", "stages"])
def test_train_an_executorch_artifact_without_torch(tiny_artifacts, et_stage_artifacts, tmp_path, layout):
    artifact = tiny_artifacts["executorch"] if layout == "cuts" else et_stage_artifacts["int8-lora"]
    probe = run(VENV / "bin" / "python", "-c", "import importlib.util as u; print(u.find_spec('torch') is None)")
    assert probe.stdout.strip() == "True", probe.stdout + probe.stderr
    data = write_sentiment_csv(tmp_path / "reviews.csv", n=40)
    out = tmp_path / "run"
    res = run(VENV / "bin" / "rgft-edge", "train", artifact, "--data", data,
              "--text-column", "review", "--label-column", "sentiment", "--policy", "budget",
              "--max-steps", "6", "--eval-examples", "8", "--no-progress", "--out", out,
              env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["steps"] == 6
    env = json.loads((out / "config.json").read_text())["environment"]
    assert env["executorch_runtime"] == "native" and "torch" not in env
    assert env.get("layout", "cuts") == layout
    assert (out / "adapted" / "trainable.safetensors").is_file()
    assert any((tmp_path / ".cache" / "rgft-edge" / "native").glob("librgft_et-*.so"))  # built on first use
