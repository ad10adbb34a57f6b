"""The evidence harness: RGFT against full fine-tuning, LoRA, head-only, random, static and an
ElasticTrainer-style selector, on three tasks, side by side in one run.

    .venv/bin/python benchmarks/compare.py --mode quick   # 1 seed, small sizes: a few minutes
    .venv/bin/python benchmarks/compare.py --mode full    # 3 seeds: the README table (~75 min, 2 cores)

One child process per (task, method, seed) — same data split, seed and thread count for every
method; methods run interleaved per seed so machine drift hits all alike. Each finished run is
appended to OUT/compare_runs.jsonl at once (`--resume` skips the runs already there), then the
harness writes OUT/compare.json (records + derived numbers + environment), compare.md (tables and
plain answers) and compare.html (metric-vs-time curves). Run directories go under --work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, run_child  # noqa: E402
from compare_analysis import derive, html_plots, markdown  # noqa: E402
from compare_setup import EXPORTED_TASKS, METHODS, MODES, TASKS, backend_of, run_one  # noqa: E402


def child(spec: dict) -> dict:
    task = TASKS[spec["task"]]
    return run_one(task, spec["method"], spec["seed"], spec["mode"], spec["run_dir"], spec["threads"])


def plan(tasks: list[str], methods: list[str], seeds: list[int]) -> list[tuple[str, str, int]]:
    out = []
    for seed in seeds:
        for task in tasks:
            ms = [m for m in methods if m not in TASKS[task].skip
                  and (backend_of(m) is None or task in EXPORTED_TASKS)]
            shift = seed % len(ms)  # rotate the order per seed: no method always runs first
            out += [(task, m, seed) for m in ms[shift:] + ms[:shift]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=sorted(MODES), default="quick")
    ap.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--seeds", nargs="*", type=int, default=None, help="default: the mode's seeds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="results directory (default benchmarks/results/<mode>)")
    ap.add_argument("--work", default="/tmp/rgft-compare", help="where the run directories go")
    ap.add_argument("--resume", action="store_true", help="keep the runs already in compare_runs.jsonl")
    ap.add_argument("--report-only", action="store_true",
                    help="no runs: re-derive the tables and plots from OUT/compare_runs.jsonl")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return
    seeds = args.seeds if args.seeds is not None else MODES[args.mode]["seeds"]
    out = Path(args.out or f"benchmarks/results/{args.mode}")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "compare_runs.jsonl"
    if args.report_only:
        if not log.is_file():
            sys.exit(f"{log}: no runs recorded; run the harness first")
        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        prev = out / "compare.json"
        wall = json.loads(prev.read_text())["meta"].get("harness_wall_s", 0.0) if prev.is_file() else 0.0
        write(out, args, seeds, records, wall)
        return
    done = [json.loads(l) for l in log.read_text().splitlines() if l.strip()] if args.resume and log.exists() else []
    if not args.resume:
        log.write_text("")
    have = {(r["task"], r["method"], r["seed"]) for r in done if "error" not in r}
    records = [r for r in done if "error" not in r]
    todo = [p for p in plan(args.tasks, args.methods, seeds) if p not in have]
    t_start = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    for i, (task, method, seed) in enumerate(todo):
        spec = dict(task=task, method=method, seed=seed, mode=args.mode, threads=args.threads,
                    run_dir=str(Path(args.work) / args.mode / f"{task}-{method}-s{seed}"))
        t0 = time.perf_counter()
        res = run_child([sys.executable, __file__, "--child", json.dumps(spec)], env=env)
        rec = {"task": task, "method": method, "seed": seed, **res}
        records.append(rec)
        with log.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        shown = res.get("final", res.get("error", "")[-200:])
        print(f"[{i + 1}/{len(todo)}] {task} {method} seed {seed}: {shown} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    write(out, args, seeds, records, time.perf_counter() - t_start)


def write(out: Path, args, seeds: list[int], records: list[dict], wall_s: float) -> None:
    import rgft_edge

    higher = {t: TASKS[t].higher_is_better for t in TASKS}
    methods = {m: METHODS[m][1] for m in args.methods}
    meta = environment(mode=args.mode, seeds=seeds, threads=args.threads, harness_wall_s=wall_s,
                       rgft_edge=getattr(rgft_edge, "__version__", "dev"), cpu_count=os.cpu_count(),
                       tasks={t: {"data": TASKS[t].data, "metric": TASKS[t].metric, **TASKS[t].base,
                                  **TASKS[t].sizes[args.mode], "lr": TASKS[t].lr, "lora_lr": TASKS[t].lora_lr,
                                  "skipped": TASKS[t].skip} for t in args.tasks})
    derived = derive(records, higher)
    (out / "compare.json").write_text(json.dumps({"meta": meta, "derived": derived, "runs": records}, indent=1))
    text = markdown(meta, records, derived, higher, methods)
    (out / "compare.md").write_text(text)
    (out / "compare.html").write_text(html_plots(records, higher, list(methods)), encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
