"""Does a memory budget hold? Peak RSS of the whole process against `--memory-budget`, swept.

Per backend: ask the runner for its minimum (a budget far too small is refused with the minimum and
its breakdown), then sweep budgets from that minimum to +50% in equal steps, each run long enough
to reach steady state (`--steps`, with validation evaluations), one child process per run. Records
budget, peak RSS (VmHWM of the whole process: model load and evaluations included), stop reason,
steps shrunk, heap trims, mean components trained and held-out accuracy; plus one run without a
budget for reference.

    python benchmarks/memory_budget.py [--backends torch onnxruntime] [--steps 150] [--points 5]
    python benchmarks/memory_budget.py --backends onnx --name memory_budget_onnx   # stock onnxruntime venv
    python benchmarks/memory_budget.py --backends executorch --name memory_budget_executorch

`onnx` is the standard-ONNX runner as a device runs it: the MiniLM int8 + LoRA artifact trained by
`.venv-device-onnx` (stock onnxruntime, no torch, no data packages: Rotten Tomatoes is handed over
as a CSV).

Writes benchmarks/results/memory-budget/NAME.json and .md (NAME: memory_budget).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, write_results  # noqa: E402

SEED = 0
COMMON = ["--max-train-examples", "1280", "--eval-examples", "500", "--validation-examples", "200",
          "--batch-size", "16", "--max-length", "64", "--seed", str(SEED), "--checkpoint-every", "0",
          "--epochs", "3"]  # 80 batches per epoch: --max-steps, not the data, ends each run


DEVICE_VENV = Path(".venv-device-onnx")


def command(backend: str, artifact: Path | None, out: Path, steps: int, threads: int,
            budget_mb: int | None) -> list[str]:
    exe = [sys.executable, "-m", "rgft_edge.cli"]
    head = exe + ["finetune"] if backend == "torch" else exe + ["train", str(artifact)]
    if backend == "onnx":  # the device venv's CLI on the CSV written next to the artifact
        head = [str(DEVICE_VENV / "bin" / "rgft-edge"), "train", str(artifact), "--data",
                str(artifact.parent / "rotten-tomatoes.csv"), "--text-column", "review", "--label-column", "sentiment"]
    argv = head + COMMON + ["--max-steps", str(steps), "--eval-every", str(max(1, steps // 3)),
                            "--threads", str(threads), "--out", str(out)]
    if budget_mb is not None:
        argv += ["--memory-budget", f"{budget_mb}MB"]
    if backend != "torch":  # exported programs have a fixed batch and length: take the artifact's
        argv = [a for i, a in enumerate(argv) if a not in ("--batch-size", "--max-length")
                and argv[i - 1] not in ("--batch-size", "--max-length")]
    return argv


def run(argv: list[str], env: dict) -> tuple[int, str]:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    return proc.returncode, proc.stdout + proc.stderr


def minimum_mb(backend: str, artifact: Path | None, work: Path, threads: int, env: dict) -> tuple[int, str]:
    """The runner's stated minimum, from its refusal of a 1 MB budget."""
    code, text = run(command(backend, artifact, work / f"{backend}-refused", 5, threads, 1), env)
    m = re.search(r"at least ([0-9.]+) GB \((.*)\)", text)
    if code == 0 or m is None:
        raise SystemExit(f"{backend}: a 1 MB budget was not refused with a minimum:\n{text[-1500:]}")
    return int(float(m.group(1)) * 1000 + 0.999), m.group(2)  # GB with 3 decimals: MB


def one(backend: str, artifact: Path | None, work: Path, steps: int, threads: int, budget_mb: int | None,
        env: dict) -> dict:
    out = work / f"{backend}-{budget_mb or 'none'}"
    t0 = time.perf_counter()
    code, text = run(command(backend, artifact, out, steps, threads, budget_mb), env)
    row = {"backend": backend, "budget_mb": budget_mb, "exit_code": code, "wall_s": time.perf_counter() - t0}
    summary = out / "summary.json"
    if not summary.is_file():
        return {**row, "error": text[-1500:]}
    s = json.loads(summary.read_text())
    return {**row, "peak_rss_mb": s["peak_rss_bytes"] / 1e6, "memory_source": s["memory_source"],
            "within_budget": None if budget_mb is None else s["peak_rss_bytes"] <= budget_mb * 1e6,
            "stop_reason": s["stop_reason"], "steps": s["steps"],
            "shrunk_steps": s["memory_guard_shrunk_steps"], "heap_trims": s.get("memory_heap_trims", 0),
            "mean_components": s["mean_components_updated_per_step"], "components": s["components"],
            "held_out_accuracy": s.get("held_out_accuracy"), "median_step_s": s["median_step_time_s"]}


def compile_onnx(work: Path) -> Path:
    from rgft_edge.data import load_dataset
    from rgft_edge.export.compile import compile_artifact
    from rgft_edge.export.prepare import PrepareOptions
    from rgft_edge.models import resolve_model

    out = work / "artifact-onnxruntime"
    if not (out / "manifest.json").is_file():
        opts = PrepareOptions(task="sequence-classification", labels=load_dataset("rotten-tomatoes").label_names,
                              adapter="full", quantize="none", max_length=64, batch_size=16)
        compile_artifact(resolve_model(None), out, "onnxruntime", opts, force=True)
    return out


def compile_standard_onnx(work: Path) -> Path:
    """The default device artifact (int8 frozen base + LoRA) for the `onnx` backend, and the data as CSV."""
    from device_train import write_csv
    from rgft_edge.export.compile import compile_artifact
    from rgft_edge.export.prepare import PrepareOptions
    from rgft_edge.models import resolve_model

    out = work / "artifact-onnx"
    if not (out / "manifest.json").is_file():
        compile_artifact(resolve_model(None), out, "onnx", PrepareOptions(max_length=64, batch_size=16), force=True)
    write_csv(work / "rotten-tomatoes.csv", 100_000)
    return out


def compile_executorch(work: Path) -> Path:
    """The default device artifact (int8 frozen base + LoRA; XNNPACK-lowered training methods)."""
    from rgft_edge.export.compile import compile_artifact
    from rgft_edge.export.prepare import PrepareOptions
    from rgft_edge.models import resolve_model

    out = work / "artifact-executorch"
    if not (out / "manifest.json").is_file():
        compile_artifact(resolve_model(None), out, "executorch", PrepareOptions(max_length=64, batch_size=16, executorch_layout="cuts"),
                         force=True)
    return out


ARTIFACTS = {"onnxruntime": compile_onnx, "onnx": compile_standard_onnx, "executorch": compile_executorch}


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"Memory budget sweep: MiniLM on Rotten Tomatoes, {meta['steps']} steps per run (validation "
             f"every {max(1, meta['steps'] // 3)}), seed {SEED}, {meta['threads']} threads, torch "
             f"{meta['torch']}, {meta['date']}. Peak RSS is the whole process's VmHWM (model load and "
             "evaluations included), measured. Budgets run from each backend's stated minimum (+1%: the "
             "minimum moves by a few MB between runs) to +50%.", ""]
    if meta.get("note"):
        lines += [f"Note: {meta['note']}.", ""]
    for b, m in meta["minimum"].items():
        lines.append(f"- `{b}` stated minimum {m['mb']} MB: {m['breakdown']}")
    lines += ["", "| backend | budget (MB) | peak RSS (MB) | within budget | stop | steps | steps shrunk | "
              "heap trims | components/step | held-out accuracy |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            m = re.search(r"at least ([0-9.]+) GB", r["error"])
            what = (f"refused: needs at least {float(m.group(1)) * 1000:.0f} MB on this run" if m
                    else f"error: {r['error'][-120:]!r}")
            lines.append(f"| {r['backend']} | {r['budget_mb'] or 'none'} | {what} | — | — | — | — | — | — | — |")
            continue
        ok = "—" if r["within_budget"] is None else ("yes" if r["within_budget"] else "**NO**")
        acc = "—" if r["held_out_accuracy"] is None else f"{r['held_out_accuracy']:.3f}"
        lines.append(f"| {r['backend']} | {r['budget_mb'] or 'none'} | {r['peak_rss_mb']:.0f} | {ok} | "
                     f"{r['stop_reason']} | {r['steps']} | {r['shrunk_steps']} | {r['heap_trims']} | "
                     f"{r['mean_components']:.1f}/{r['components']} | {acc} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backends", nargs="*", default=["torch", "onnxruntime"], choices=["torch", "onnxruntime", "onnx", "executorch"])
    ap.add_argument("--name", default="memory_budget", help="results file name")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--points", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/rgft-memory-budget")
    ap.add_argument("--out", default="benchmarks/results/memory-budget")
    ap.add_argument("--report-only", action="store_true", help="re-render the markdown from the JSON")
    args = ap.parse_args()
    if args.report_only:
        saved = json.loads((Path(args.out) / f"{args.name}.json").read_text())
        write_results(args.out, args.name, saved["meta"], saved["results"], markdown)
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    rows, minimum = [], {}
    for backend in args.backends:
        artifact = ARTIFACTS[backend](work) if backend in ARTIFACTS else None
        low, parts = minimum_mb(backend, artifact, work, args.threads, env)
        minimum[backend] = {"mb": low, "breakdown": parts}
        # the minimum moves by a few MB from run to run (what loading leaves resident): start 1% above
        low1 = int(low * 1.01 + 0.5)
        step = 0.5 * low / max(1, args.points - 1)
        for budget in [None] + [int(low1 + i * step + 0.5) for i in range(args.points)]:
            row = one(backend, artifact, work, args.steps, args.threads, budget, env)
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = environment(steps=args.steps, threads=args.threads, seed=SEED, minimum=minimum)
    write_results(args.out, args.name, meta, rows, markdown)


if __name__ == "__main__":
    main()
