"""`rgft-edge train` on an `onnx` artifact in a device-like venv: the `device-onnx` extra only
(stock onnxruntime, numpy, tokenizers; no torch, no training build), as `scripts/setup.sh` builds
it in `.venv-device-onnx`."""

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import write_sentiment_csv
from tests.test_vision import write_two_class_folder

VENV = Path(__file__).resolve().parents[2] / ".venv-device-onnx"
pytestmark = pytest.mark.skipif(not (VENV / "bin" / "rgft-edge").exists(),
                                reason="no .venv-device-onnx (scripts/setup.sh builds it)")


def run(*argv, **kw):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600, **kw)


def test_the_device_venv_has_stock_onnxruntime_and_no_torch():
    probe = run(VENV / "bin" / "python", "-c",
                "import importlib.util as u, onnxruntime as o; "
                "print(o.__version__, u.find_spec('torch') is None, u.find_spec('onnxruntime.training') is None)")
    assert probe.returncode == 0, probe.stderr
    version, no_torch, stock = probe.stdout.split()
    assert no_torch == "True" and stock == "True", probe.stdout


def test_train_an_onnx_artifact_without_torch(tiny_artifacts, tmp_path):
    data = write_sentiment_csv(tmp_path / "reviews.csv", n=40)
    out = tmp_path / "run"
    res = run(VENV / "bin" / "rgft-edge", "train", tiny_artifacts["onnx"], "--data", data,
              "--text-column", "review", "--label-column", "sentiment", "--policy", "budget",
              "--max-steps", "6", "--eval-examples", "8", "--no-progress", "--out", out,
              env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6
    env = json.loads((out / "config.json").read_text())["environment"]
    assert env["onnxruntime_build"] == "stock"
    assert (out / "adapted" / "trainable.safetensors").is_file()


def test_train_a_cnn_artifact_on_an_image_folder_without_torch(cnn_artifacts, tmp_path):
    data = write_two_class_folder(tmp_path / "imgs", n=12, size=20)  # resized to the artifact's 16 px
    out = tmp_path / "run"
    res = run(VENV / "bin" / "rgft-edge", "train", cnn_artifacts["onnx"], "--data", data, "--policy", "paced",
              "--max-steps", "5", "--eval-examples", "8", "--no-progress", "--no-report", "--out", out,
              env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 5 and 0.0 <= summary["held_out_accuracy"] <= 1.0
    assert json.loads((out / "config.json").read_text())["environment"]["onnxruntime_build"] == "stock"
    assert (out / "adapted" / "trainable.safetensors").is_file()
