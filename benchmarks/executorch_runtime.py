"""`rgft-edge train` on one ExecuTorch artifact through each ExecuTorch runtime, side by side.

- native, device venv: ExecuTorch's C++ runtime through the runner's shim, in a venv with only what
  `device-executorch` installs (+ executorch --no-deps): no torch, no codecarbon — what a Pi runs;
- native, host venv: the same runtime in the full host venv (torch installed but not imported);
- bindings, host venv: ExecuTorch's Python extension, which links libtorch.

Each run is the CLI as a user types it (its own process, so peak RSS is that run's, evaluation and
report included), on Rotten Tomatoes (a CSV written from the shipped corpus), interleaved per
repeat. Recorded: peak RSS (the CLI's own measurement), median step time, held-out accuracy, the
runtime the run reports, and the 1-minute load average before each run (other work on the machine
inflates step times, never RSS).

    python benchmarks/executorch_runtime.py --artifact DIR [--steps 60] [--eval-examples 500]
        [--repeats 2] [--threads 2] [--device-venv .venv-device-executorch]

Writes benchmarks/results/executorch-runtime/executorch_runtime.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def write_csv(path: Path) -> Path:
    from rgft_edge.data import rotten_tomatoes

    ds = rotten_tomatoes()
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for text, label in zip(ds.texts, ds.labels):
            w.writerow([text, ds.label_names[label]])
    return path


def run(venv: Path, runtime: str, args, data: Path, out: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RGFT_EDGE_EXECUTORCH_RUNTIME": runtime}
    cmd = [str(venv / "bin" / "rgft-edge"), "train", args.artifact, "--data", str(data), "--max-steps", str(args.steps),
           "--eval-examples", str(args.eval_examples), "--threads", str(args.threads), "--seed", "0",
           "--no-progress", "--out", str(out)]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr[-1500:], "load_1min_before": load}
    s = json.loads((out / "summary.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    return {"peak_rss_mb": s["peak_rss_bytes"] / 1e6, "memory_source": s["memory_source"],
            "median_step_ms": 1e3 * s["median_step_time_s"] if s.get("median_step_time_s") else None,
            "held_out_accuracy": s["held_out_accuracy"], "steps": s["steps"], "wall_s": wall,
            "runtime": cfg["environment"].get("executorch_runtime"), "torch": cfg["environment"].get("torch"),
            "load_1min_before": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifact")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--eval-examples", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device-venv", default=str(REPO / ".venv-device-executorch"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "executorch-runtime"))
    ap.add_argument("--render-only", action="store_true", help="rewrite the markdown from the saved JSON")
    args = ap.parse_args()
    if args.render_only:
        saved = json.loads((Path(args.out) / "executorch_runtime.json").read_text())
        return write_results(args.out, "executorch_runtime", saved["meta"], saved["results"], markdown)
    if not args.artifact:
        ap.error("--artifact is required")
    host = Path(sys.executable).parent.parent
    configs = [("native", "device venv (no torch)", Path(args.device_venv)), ("native", "host venv", host),
               ("bindings", "host venv", host)]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_csv(Path(tmp) / "rotten_tomatoes.csv")
        for rep in range(args.repeats):
            for runtime, where, venv in configs:
                r = run(venv, runtime, args, data, Path(tmp) / f"{runtime}-{where[:6]}-{rep}")
                runs.append({"runtime": runtime, "venv": where, "repeat": rep, **r})
                print(json.dumps(runs[-1]), flush=True)
    rows = []
    for runtime, where, _ in configs:
        rs = [r for r in runs if r["runtime"] == runtime and r["venv"] == where and "error" not in r]
        if not rs:
            rows.append({"runtime": runtime, "venv": where, "error": next(r["error"] for r in runs
                                                                           if r["runtime"] == runtime and r["venv"] == where)})
            continue
        steps = [r["median_step_ms"] for r in rs if r["median_step_ms"] is not None]
        rows.append({"runtime": runtime, "venv": where, "reported_runtime": rs[0]["runtime"], "torch": rs[0]["torch"],
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "peak_rss_mb_runs": [r["peak_rss_mb"] for r in rs],
                     "median_step_ms": statistics.median(steps) if steps else None,
                     "held_out_accuracy": [r["held_out_accuracy"] for r in rs],
                     "load_1min_before": [r["load_1min_before"] for r in rs]})
    manifest = json.loads((Path(args.artifact) / "manifest.json").read_text())
    meta = {"artifact": args.artifact, "artifact_created": manifest.get("created"),
            "kernels": manifest.get("backend_info", {}).get("kernels"), "steps": args.steps, "eval_examples": args.eval_examples, "repeats": args.repeats,
            "threads": args.threads, "seed": 0, "environment": environment(threads=args.threads), "runs": runs}
    write_results(args.out, "executorch_runtime", meta, rows, markdown)


def markdown(meta: dict, rows: list[dict]) -> str:
    e = meta["environment"]
    lines = ["# `rgft-edge train` through each ExecuTorch runtime\n",
             f"Artifact `{Path(meta['artifact']).name}` (kernels: {meta['kernels']}, compiled {meta['artifact_created']}); "
             f"{meta['steps']} steps, {meta['eval_examples']} held out, "
             f"{meta['threads']} threads, seed 0, {meta['repeats']} repeats interleaved; {e['cpu']}, {e['date']}. "
             "Peak RSS: the CLI's own measurement of the whole process (model load, evaluation, report); the "
             "largest over repeats. Step times are medians over repeats of each run's median; the load average "
             "before each run says whether other work shared the machine (it inflates step times, not RSS). The host "
             "venv's native run also loads codecarbon (and pandas) for the CO2 figure, which the device extra leaves "
             "out; with torch installed the run imports it at the very end, to write the adapted .ptd.\n",
             "| runtime | venv | runtime links torch | peak RSS (MB) | median step (ms) | held-out accuracy | load before runs |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['runtime']} | {r['venv']} | — | failed: {r['error'][-200:]!r} | | | |")
            continue
        step = f"{r['median_step_ms']:.0f}" if r["median_step_ms"] else "—"
        lines.append(f"| {r['runtime']} | {r['venv']} | {'yes, ' + r['torch'] if r['torch'] else 'no'} | {r['peak_rss_mb']:.0f} | {step} | "
                     f"{', '.join(f'{a:.3f}' for a in r['held_out_accuracy'])} | "
                     f"{', '.join(f'{x:.1f}' for x in r['load_1min_before'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
