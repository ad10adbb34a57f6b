"""Where an ExecuTorch training step spends its time: XNNPACK subgraphs vs the ops left on the
kernel library. The pip wheel's runtime records no per-operator events (ETDump holds only load
events), so this samples the CPU with Linux `perf` and attributes samples to shared objects and
symbols.

    python benchmarks/executorch_profile.py ARTIFACT [--method train_d0] [--steps 40] [--threads 2]

A child process loads the artifact's program, warms the method up and runs it `--steps` times on a
fixed batch; `perf record` starts after `--delay-ms` (imports, load and warm-up excluded). Writes
benchmarks/results/executorch-profile.{json,md}. Needs `perf` (Debian's linux-perf).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, write_results  # noqa: E402

CHILD = r"""
import json, sys, time, torch
from executorch.extension.pybindings import _C as et
art, method, steps, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
et._unsafe_reset_threadpool(threads); torch.set_num_threads(threads)
from safetensors.torch import load_file
man = json.load(open(art + "/manifest.json"))
spec, info = man["input_spec"], man["backend_info"]
b, t = spec["batch_size"], spec["max_length"]
g = torch.Generator().manual_seed(0)
data = [torch.randint(5, 1000, (b, t), generator=g) if n == "input_ids" else
        (torch.ones if n == "attention_mask" else torch.zeros)(b, t, dtype=torch.long) for n in info["data_inputs"]]
w = load_file(art + "/weights/trainable.safetensors")
x = tuple(data) + (torch.zeros(b, dtype=torch.long),) + tuple(w[n] for n in info["param_inputs"])
prog = et._load_program(art + "/executorch/train.pte", enable_etdump=False, debug_buffer_size=0,
                        data_path=None, program_verification=et.Verification.Minimal)
m = prog.load_method(method)
for _ in range(3):
    m(x)
print("READY", flush=True)
t0 = time.perf_counter()
for _ in range(steps):
    m(x)
print("STEP_MS", (time.perf_counter() - t0) / steps * 1000, flush=True)
"""

GROUPS = [("XNNPACK subgraphs", "libexecutorch_backend_xnnpack"),
          ("kernel library (portable / optimized ops)", "libexecutorch_kernels"),
          ("libm (erf, exp, ... called by those kernels)", "libm.so"),
          ("libc (memory copies)", "libc.so"),
          ("thread pool", "libexecutorch_threadpool")]


def profile(artifact: str, method: str, steps: int, threads: int, delay_ms: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "perf.data"
        child = [sys.executable, "-c", CHILD, artifact, method, str(steps), str(threads)]
        rec = subprocess.run(["perf", "record", "-q", "-F", "499", "-D", str(delay_ms), "-o", str(data), *child],
                             capture_output=True, text=True)
        step_ms = float(re.search(r"STEP_MS ([0-9.]+)", rec.stdout).group(1))
        rep = subprocess.run(["perf", "report", "-i", str(data), "--sort", "dso,sym", "--stdio", "--no-children",
                              "-g", "none"], capture_output=True, text=True).stdout
    rows = []
    for line in rep.splitlines():
        m = re.match(r"\s*([0-9.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)", line)
        if m:
            rows.append({"percent": float(m.group(1)), "dso": m.group(2), "symbol": m.group(3).strip()})
    groups = {name: round(sum(r["percent"] for r in rows if key in r["dso"]), 2) for name, key in GROUPS}
    groups["other (Python, kernel, torch)"] = round(100 - sum(groups.values()), 2)
    outside = [r for r in rows if "xnnpack" not in r["dso"] and "[k]" not in r["symbol"]][:15]
    return {"artifact": Path(artifact).name, "method": method, "step_ms": step_ms, "groups": groups,
            "top_outside_xnnpack": outside}


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"CPU samples (`perf record -F 499`, after imports, load and 3 warm-up calls) of {meta['steps']} "
             f"calls of one training method, {meta['threads']} threads, {meta['date']}.", ""]
    for r in rows:
        lines += [f"## {r['artifact']} / {r['method']} ({r['step_ms']:.0f} ms per call)", "",
                  "| where | share of samples (%) |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in r["groups"].items()]
        lines += ["", "Largest symbols outside XNNPACK:", "", "| share (%) | library | symbol |", "|---|---|---|"]
        lines += [f"| {o['percent']:.2f} | {o['dso']} | `{o['symbol'][:90]}` |" for o in r["top_outside_xnnpack"]]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("artifacts", nargs="+")
    ap.add_argument("--method", default="train_d0")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--delay-ms", type=int, default=8000)
    ap.add_argument("--name", default="executorch-profile")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    if shutil.which("perf") is None:
        raise SystemExit("needs `perf` (Debian: apt-get install linux-perf)")
    rows = [profile(a, args.method, args.steps, args.threads, args.delay_ms) for a in args.artifacts]
    for r in rows:
        print(r["artifact"], f"{r['step_ms']:.0f} ms", r["groups"])
    write_results(args.out, args.name, environment(steps=args.steps, threads=args.threads, method=args.method),
                  rows, markdown)


if __name__ == "__main__":
    main()
