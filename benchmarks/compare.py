"""RGFT against the baselines at equal training time, side by side on real data.

    python benchmarks/compare.py --mode quick    # 1 seed, tiny sizes, default LR only: plumbing check
    python benchmarks/compare.py --mode full     # 3 seeds, LR grid on seed 0: the evidence tables

One child process per (task, method, seed, LR) — same data split, seed and thread count for every
method. Per (task, seed) full fine-tuning runs first; its training time T is then every other
method's training time (methods rotated per seed so machine drift hits all alike). On the grid
seed (0) each method first runs its LR grid (full's first: its chosen LR defines T) and keeps the LR
with the best final validation metric; the other seeds run with that LR. Each finished run is
appended to OUT/compare_runs.jsonl at once (`--resume` keeps the runs already there, grid runs
included), then the harness writes OUT/compare.json (records + derived numbers + environment),
compare.md (tables, verdicts, LR grid), compare.html (validation curves) and lr_grid.jsonl.
Run directories go under --work.
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
from compare_analysis import choose_lr, derive, select_main  # noqa: E402
from compare_report import html_plots, markdown  # noqa: E402
from compare_setup import (DEFAULT_METHODS, DEFAULT_TASKS, EQUAL_TIME_EPOCHS, EVAL_POINTS,  # noqa: E402
                           EXPORTED_TASKS, LR_FACTORS, METHODS, MODES, RESULTS_DIR, TASKS, backend_of, is_reference, lr_grid, lr_source, reference_of,
                           run_one)


def child(spec: dict) -> dict:
    task = TASKS[spec["task"]]
    return run_one(task, spec["method"], spec["seed"], spec["mode"], spec["run_dir"], spec["threads"],
                   lr=spec["lr"], ref_time_s=spec.get("ref_time_s"))


def fkey(f: float) -> float:
    return round(float(f), 6)


def applicable(task: str, methods: list[str]) -> list[str]:
    return [m for m in methods if m not in TASKS[task].skip
            and (backend_of(m) is None or task in EXPORTED_TASKS)]


def block_order(task: str, methods: list[str], seed: int, grid_seed: int) -> list[str]:
    """Order of one (task, seed) block: references first (full, then full@<backend>), the rest
    rotated by seed; on the grid seed, methods that inherit another's LR go after the rest."""
    ms = applicable(task, methods)
    refs = [m for m in ms if is_reference(m)]
    refs.sort(key=lambda m: (m != "full", m))
    others = [m for m in ms if not is_reference(m)]
    if others:
        shift = seed % len(others)  # no method always runs right after full
        others = others[shift:] + others[:shift]
    if seed == grid_seed:
        others = [m for m in others if lr_source(m) == m] + [m for m in others if lr_source(m) != m]
    return refs + others


class Harness:
    """Runs what is missing, in protocol order; `records` holds every run so far (grid runs too)."""

    def __init__(self, args, seeds: list[int], records: list[dict], log: Path, factors: list[float]):
        self.args, self.seeds, self.records, self.log, self.factors = args, seeds, records, log, factors
        self.grid_seed = args.grid_seed
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
        self.done = 0
        self.total = self.count()

    def find(self, task: str, method: str, seed: int, factor: float) -> dict | None:
        for r in reversed(self.records):
            if ((r["task"], r["method"], r["seed"]) == (task, method, seed)
                    and fkey(r.get("lr_factor", 1.0)) == fkey(factor)):
                return r
        return None

    def count(self) -> int:
        n = 0
        for seed in self.seeds:
            for task in self.args.tasks:
                for m in applicable(task, self.args.methods):
                    n += len(self.factors) if seed == self.grid_seed and lr_source(m) == m else 1
        return n

    def chosen_factor(self, task: str, method: str) -> float | None:
        """The LR factor the method keeps: the best of its LR source's grid on the grid seed (None
        while that grid is unfinished or every run of it failed)."""
        if len(self.factors) == 1:
            return self.factors[0]
        grid = [self.find(task, lr_source(method), self.grid_seed, f) for f in self.factors]
        if any(r is None for r in grid):
            return None
        best = choose_lr(grid, TASKS[task].higher_is_better)
        return None if best is None else best["lr_factor"]

    def run(self, task: str, method: str, seed: int, factor: float, ref_time_s: float | None, grid: bool) -> dict:
        have = self.find(task, method, seed, factor)
        if have is not None and "error" not in have:
            return have
        lr = lr_grid(TASKS[task], method, [factor])[0][1]
        run_dir = Path(self.args.work) / self.args.mode / f"{task}-{method}-s{seed}-lrx{factor:.3g}"
        spec = dict(task=task, method=method, seed=seed, mode=self.args.mode, threads=self.args.threads,
                    lr=lr, ref_time_s=ref_time_s, run_dir=str(run_dir))
        t0 = time.perf_counter()
        if not is_reference(method) and ref_time_s is None:
            res = {"error": f"no {reference_of(method)} run for this seed: no training time T to match"}
        else:
            res = run_child([sys.executable, __file__, "--child", json.dumps(spec)], env=self.env)
        rec = {"task": task, "method": method, "seed": seed, "lr_factor": factor, "lr": lr, "grid": grid,
               "ref_time_s": ref_time_s, **res}
        self.records.append(rec)
        with self.log.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        self.done += 1
        shown = (f"test {res['final']:.4g}, val {res.get('val_final')}, {res['train_time_s']:.1f} s training, "
                 f"{res['steps']} steps" if "error" not in res else res["error"][-200:])
        print(f"[{self.done}/{self.total}] {task} {method} seed {seed} lr {lr:.3g}: {shown} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        return rec

    def block(self, task: str, seed: int) -> None:
        order = block_order(task, self.args.methods, seed, self.grid_seed)
        on_grid = seed == self.grid_seed and len(self.factors) > 1
        ref_time: dict[str, float | None] = {}
        # the references (full first): their grid, then their chosen run defines T
        for m in [m for m in order if is_reference(m)]:
            own_grid = on_grid and lr_source(m) == m
            if own_grid:
                for f in self.factors:
                    self.run(task, m, seed, f, None, grid=True)
            f = self.chosen_factor(task, m)
            rec = self.run(task, m, seed, f, None, grid=own_grid) if f is not None else self.no_lr(task, m, seed)
            ref_time[m] = rec["train_time_s"] if "error" not in rec else None
        others = [m for m in order if not is_reference(m)]
        if on_grid:  # interleave the grid: every method's first LR, then every method's second, ...
            own = [m for m in others if lr_source(m) == m]
            for f in self.factors:
                for m in own:
                    self.run(task, m, seed, f, ref_time.get(reference_of(m)), grid=True)
            others = [m for m in others if lr_source(m) != m]
        for m in others:
            f = self.chosen_factor(task, m)
            if f is None:
                self.no_lr(task, m, seed)
                continue
            self.run(task, m, seed, f, ref_time.get(reference_of(m)), grid=False)

    def no_lr(self, task: str, method: str, seed: int) -> dict:
        """A run that cannot start: its LR grid (on the grid seed) is missing or failed throughout."""
        rec = {"task": task, "method": method, "seed": seed, "lr_factor": 1.0, "lr": None,
               "error": f"no LR chosen for {lr_source(method)}: its LR grid on seed {self.grid_seed} is "
                        "missing or failed (run that seed first)"}
        self.records.append(rec)
        print(f"{task} {method} seed {seed}: {rec['error']}", flush=True)
        return rec

    def go(self) -> None:
        # the grid seed first, whatever order --seeds gives: the other seeds need its LR choices
        for seed in sorted(self.seeds, key=lambda s: s != self.grid_seed):
            for task in self.args.tasks:
                self.block(task, seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=sorted(MODES), default="quick")
    ap.add_argument("--tasks", nargs="*", default=list(DEFAULT_TASKS), choices=list(TASKS))
    ap.add_argument("--methods", nargs="*", default=list(DEFAULT_METHODS), choices=list(METHODS))
    ap.add_argument("--seeds", nargs="*", type=int, default=None, help="default: the mode's seeds")
    ap.add_argument("--lr-factors", nargs="*", type=float, default=None,
                    help="LR grid as multiples of each method's default (default: the mode's: "
                         + "; ".join(f"{m} {f}" for m, f in LR_FACTORS.items()) + ")")
    ap.add_argument("--grid-seed", type=int, default=0, help="the seed the LR grid runs on")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="results directory (default: "
                    + ", ".join(f"{m}: {d}" for m, d in RESULTS_DIR.items()) + ")")
    ap.add_argument("--work", default="/tmp/rgft-compare", help="where the run directories go")
    ap.add_argument("--resume", action="store_true", help="keep the runs already in compare_runs.jsonl")
    ap.add_argument("--report-only", action="store_true",
                    help="no runs: re-derive the tables and plots from OUT/compare_runs.jsonl")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return
    if "full" not in args.methods:
        args.methods = ["full"] + list(args.methods)  # every other method's training time comes from it
    if any(backend_of(m) for m in args.methods):
        for b in {backend_of(m) for m in args.methods if backend_of(m)}:
            if f"full@{b}" in METHODS and f"full@{b}" not in args.methods:
                args.methods.append(f"full@{b}")
    args.methods = [m for m in METHODS if m in args.methods]  # METHODS order
    seeds = args.seeds if args.seeds is not None else MODES[args.mode]["seeds"]
    factors = args.lr_factors or LR_FACTORS[args.mode]
    if 1.0 not in [fkey(f) for f in factors]:
        factors = [1.0] + list(factors)
    out = Path(args.out or RESULTS_DIR[args.mode])
    out.mkdir(parents=True, exist_ok=True)
    log = out / "compare_runs.jsonl"
    if args.report_only:
        if not log.is_file():
            sys.exit(f"{log}: no runs recorded; run the harness first")
        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        if any("error" not in r and "val_final" not in r for r in records):
            sys.exit(f"{log}: recorded under the earlier equal-steps protocol (no validation curves); "
                     "its compare.md stays as it is")
        prev = out / "compare.json"
        meta = json.loads(prev.read_text())["meta"] if prev.is_file() else {}
        args.mode, args.threads = meta.get("mode", args.mode), meta.get("threads", args.threads)
        args.grid_seed = meta.get("grid_seed", args.grid_seed)
        write(out, args, meta.get("seeds", seeds), records, meta.get("harness_wall_s", 0.0),
              meta.get("lr_factors", factors))
        return
    done = [json.loads(l) for l in log.read_text().splitlines() if l.strip()] if args.resume and log.exists() else []
    if not args.resume:
        log.write_text("")
    prev_wall = 0.0
    if args.resume and (out / "compare.json").is_file():
        prev_wall = json.loads((out / "compare.json").read_text())["meta"].get("harness_wall_s", 0.0)
    records = [r for r in done if "error" not in r]
    t_start = time.perf_counter()
    Harness(args, seeds, records, log, factors).go()
    write(out, args, seeds, records, prev_wall + time.perf_counter() - t_start, factors)


def write(out: Path, args, seeds: list[int], records: list[dict], wall_s: float, factors: list[float]) -> None:
    import rgft_edge

    higher = {t: TASKS[t].higher_is_better for t in TASKS}
    present = {r["method"] for r in records} or set(args.methods)
    methods = {m: METHODS[m][1] for m in METHODS if m in present}
    main_records, grid = select_main(records, higher, args.grid_seed)
    tasks = list(dict.fromkeys(r["task"] for r in records)) or list(args.tasks)
    meta = environment(
        mode=args.mode, seeds=seeds, threads=args.threads, harness_wall_s=wall_s,
        rgft_edge=getattr(rgft_edge, "__version__", "dev"), cpu_count=os.cpu_count(),
        omp_num_threads=str(args.threads), lr_factors=[float(f) for f in factors], grid_seed=args.grid_seed,
        protocol={"equal_time": "non-full methods: max_train_seconds = full's train_clock_s (same task, seed)",
                  "eval_points": EVAL_POINTS, "equal_time_epochs_cap": EQUAL_TIME_EPOCHS,
                  "test": "held-out split, evaluated once, at the end",
                  "validation": "carved from the training data; curves, time to target, LR choice"},
        versions=_versions(), runs=len(records),
        errors=[{k: r.get(k) for k in ("task", "method", "seed", "lr", "error")} for r in records if "error" in r],
        tasks={t: {"data": TASKS[t].data, "metric": TASKS[t].metric, **TASKS[t].base,
                   **TASKS[t].sizes[args.mode], "default_lr": TASKS[t].lr, "default_lora_lr": TASKS[t].lora_lr,
                   "skipped": TASKS[t].skip, "budget": TASKS[t].budget} for t in tasks if t in TASKS})
    derived = derive(main_records, higher)
    (out / "compare.json").write_text(json.dumps(
        {"meta": meta, "derived": _jsonable(derived), "lr_grid": grid, "runs": records}, indent=1))
    with (out / "lr_grid.jsonl").open("w") as f:
        for task, ms in grid.items():
            for m, g in ms.items():
                for r in g["runs"]:
                    f.write(json.dumps({"task": task, "method": m, "seed": g["grid_seed"], **r}) + "\n")
                if g["inherited_from"]:
                    f.write(json.dumps({"task": task, "method": m, "lr": g["chosen_lr"], "chosen": True,
                                        "inherited_from": g["inherited_from"]}) + "\n")
    text = markdown(meta, main_records, derived, higher, methods, grid)
    (out / "compare.md").write_text(text)
    (out / "compare.html").write_text(html_plots(main_records, higher, list(methods)), encoding="utf-8")
    print(text)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "peft", "numpy", "onnxruntime-training-cpu", "rgft-edge"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _jsonable(d):
    """Tuple keys (e.g. verdict pairs) and numpy scalars out, for json.dumps."""
    if isinstance(d, dict):
        return {str(k): _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    return d


if __name__ == "__main__":
    main()
