#!/usr/bin/env bash
# Prove a device runner installs and trains on linux aarch64 (Raspberry Pi OS bookworm = Debian 12
# arm64, Python 3.11) by running it under qemu user-mode emulation on an x86_64 host.
#
#   scripts/emulate_aarch64.sh ARTIFACT CSV          (run as root; WORK=/tmp/rgft-aarch64 by default)
#   EXTRA=device-executorch scripts/emulate_aarch64.sh ARTIFACT CSV    (an executorch artifact)
#
# No binfmt_misc is assumed: every arm64 binary is started explicitly through qemu-aarch64-static -L ROOT.
# Env: EXTRA (the device extra, default device-onnx), WORK (cache dir), OUTDIR (run dir, default
# WORK/run/out).
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 ARTIFACT CSV   (an artifact compiled with --backend onnx; a CSV with review,sentiment columns)" >&2
  exit 2
fi
EXTRA=${EXTRA:-device-onnx}
ARTIFACT=$(realpath "$1")
CSV=$(realpath "$2")
WORK=${WORK:-/tmp/rgft-aarch64}
OUTDIR=${OUTDIR:-$WORK/run/out}
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=$WORK/root      # arm64 Debian userland
SITE=$WORK/site-$EXTRA   # third-party aarch64 wheels (cached per requirement list)
APP=$WORK/app        # this project, rebuilt every run (pure Python)
NICE=(nice -n 19)    # keep CPU use low: this may share a machine with benchmarks
# -P: do not put the cwd on sys.path (from the repo, its bare rgft_edge/ would shadow the install)
QEMU=(qemu-aarch64-static -L "$ROOT" "$ROOT/usr/bin/python3.11" -P)
mkdir -p "$WORK"

now() { date +%s.%N; }
secs() { python3 -c "print(round($2 - $1, 2))"; }
log() { printf '\n== %s\n' "$*" >&2; }

# 1. Host tools (Debian packages).
if ! command -v debootstrap >/dev/null || ! command -v qemu-aarch64-static >/dev/null; then
  log "installing debootstrap, qemu-user-static"
  apt-get update -q && "${NICE[@]}" apt-get install -y -q debootstrap qemu-user-static
fi

# The ExecuTorch runner compiles its C++ shim on first use; under emulation the host's cross
# compiler does it (an x86 binary the emulated Python starts runs natively).
if [[ "$EXTRA" == device-executorch ]] && ! command -v aarch64-linux-gnu-g++ >/dev/null; then
  log "installing g++-aarch64-linux-gnu"
  apt-get update -q && "${NICE[@]}" apt-get install -y -q g++-aarch64-linux-gnu
fi

# 2. arm64 bookworm userland. --foreign only downloads (the second stage would need to execute arm64
#    binaries), so the .debs are unpacked with dpkg-deb -x; no maintainer scripts run, none are needed.
#    libstdc++6/libgcc-s1/libgomp1/zlib1g: shared libraries onnxruntime's and tokenizers' wheels link.
t0=$(now); cached_root=true
if [ ! -e "$ROOT/.rgft-extracted" ]; then
  cached_root=false; log "debootstrap arm64 bookworm -> $ROOT"
  rm -rf "$ROOT"
  "${NICE[@]}" debootstrap --foreign --arch=arm64 --variant=minbase \
    --include=python3.11,python3.11-venv,libpython3.11-stdlib,ca-certificates,libstdc++6,libgcc-s1,libgomp1,zlib1g \
    bookworm "$ROOT" http://deb.debian.org/debian
  for d in "$ROOT"/var/cache/apt/archives/*.deb; do "${NICE[@]}" dpkg-deb -x "$d" "$ROOT"; done
  touch "$ROOT/.rgft-extracted"
fi
t_root=$(secs "$t0" "$(now)")
"${QEMU[@]}" -c 'import sys, ssl; print("emulated python", sys.version.split()[0], ssl.OPENSSL_VERSION)'

# 3. Wheels: the core dependencies + the extra, as aarch64 / cp311 / manylinux binaries chosen by
#    the host's pip (no pip, no compiler inside the emulator). scripts/check_device_install.py
#    evaluates the environment markers for aarch64 (host pip would evaluate them for x86_64) and
#    adds what the extra installs with --no-deps (executorch).
REQS=$(python3 - "$REPO/pyproject.toml" "$EXTRA" <<'EOF'
import sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))["project"]
print(" ".join(p["dependencies"] + p["optional-dependencies"][sys.argv[2]]))
EOF
)
t0=$(now); cached_site=true
if [ "$(cat "$SITE/.rgft-reqs" 2>/dev/null)" != "$REQS" ]; then
  cached_site=false; log "aarch64 wheels for $EXTRA: $REQS"
  rm -rf "$SITE" "$WORK/wheels-$EXTRA"
  "${NICE[@]}" python3 "$REPO/scripts/check_device_install.py" --extra "$EXTRA" --python 3.11 \
    --wheelhouse "$WORK/wheels-$EXTRA"
  "${NICE[@]}" python3 -m pip install -q --target "$SITE" --no-deps --no-index --only-binary=:all: \
    --implementation cp --python-version 3.11 --platform manylinux_2_28_aarch64 \
    --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 "$WORK/wheels-$EXTRA"/*.whl
  echo "$REQS" > "$SITE/.rgft-reqs"
fi
# The project itself (package-dir assembles rgft_edge from four folders): build its pure-Python wheel
# from a copy, so that setuptools writes build/ and egg-info outside the repository.
rm -rf "$APP" "$WORK/src" && mkdir -p "$WORK/src"
cp -r "$REPO"/{pyproject.toml,README.md,rgft_edge,export,device_runners,profiles} "$WORK/src/"
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
"${NICE[@]}" python3 -m pip install -q --target "$APP" --no-deps "$WORK/src"
t_wheels=$(secs "$t0" "$(now)")

# 4. Under emulation: the interpreter's view of the machine, and the import of the runtime.
export PYTHONPATH=$APP:$SITE HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
case "$EXTRA" in
  device-executorch) export CXX=aarch64-linux-gnu-g++ RGFT_EDGE_NATIVE_DIR=$WORK/native-cache
    PROBE_PY='import importlib.util
import rgft_edge.device_runners.executorch_runner
import rgft_edge.device_runners.executorch_native as r
lib = r.library_path()  # builds the shim (cross compiler) unless cached
rt = {"executorch": r.executorch_version(r.executorch_root()), "torch_installed": importlib.util.find_spec("torch") is not None,
      "native_library": lib.name}' ;;
  device-torch) PROBE_PY='import torch
import rgft_edge.device_runners.torch_artifact as r
rt = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available()}' ;;
  *) PROBE_PY='import onnxruntime as ort
import rgft_edge.device_runners.onnx_runner as r
rt = {"onnxruntime": ort.__version__}' ;;
esac
t0=$(now)
PROBE=$("${NICE[@]}" "${QEMU[@]}" -c "import json, platform, sys
$PROBE_PY
print(json.dumps({'machine': platform.machine(), 'python': sys.version.split()[0], 'extra': '$EXTRA',
                  **rt, 'runner': r.__file__}))")
t_import=$(secs "$t0" "$(now)")
echo "probe: $PROBE"

# 5. The training run (the CLI module calls main() under __main__).
rm -rf "$OUTDIR"; mkdir -p "$(dirname "$OUTDIR")"
CMD=("${QEMU[@]}" -m rgft_edge.cli train "$ARTIFACT" --data "$CSV" --text-column review
     --label-column sentiment --policy budget --max-steps 6 --eval-examples 8 --no-progress --out "$OUTDIR")
log "${CMD[*]}"
t0=$(now); rc=0
"${NICE[@]}" "${CMD[@]}" || rc=$?
t_train=$(secs "$t0" "$(now)")

# 6. Report: stdout and OUTDIR/../emulation.json.
REPORT=$(dirname "$OUTDIR")/emulation.json
python3 - "$OUTDIR" "$REPORT" "$PROBE" "$rc" "$t_root" "$cached_root" "$t_wheels" "$cached_site" \
  "$t_import" "$t_train" "$(qemu-aarch64-static --version | head -1)" "${CMD[*]}" <<'EOF'
import json, sys
from pathlib import Path
out, report, probe, rc = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
doc = {**probe, "qemu": sys.argv[11], "train_exit_code": rc, "command": sys.argv[12],
       "seconds": {"debootstrap": float(sys.argv[5]), "debootstrap_cached": sys.argv[6] == "true",
                   "wheel_install": float(sys.argv[7]), "wheels_cached": sys.argv[8] == "true",
                   "import_runtime_emulated": float(sys.argv[9]), "train_emulated": float(sys.argv[10])},
       "steps": summary.get("steps"), "stop_reason": summary.get("stop_reason")}
Path(report).write_text(json.dumps(doc, indent=1) + "\n")
print(json.dumps(doc, indent=1))
ok = rc == 0 and probe["machine"] == "aarch64" and bool(summary)
print(("OK" if ok else "FAILED") + f": emulation report in {report}")
sys.exit(0 if ok else 1)
EOF
