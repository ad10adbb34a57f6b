"""The default demo's defaults, chosen on validation, and the demo's own table.

`rgft-edge finetune` with no flags is the default demo (MiniLM on Rotten Tomatoes, 250 steps). Which
selection policy and LR it uses should come from evidence, never from the test split:

1. **choose** — each candidate (policy settings x LR from one grid) runs the demo's exact training
   recipe with 1,000 validation examples carved from the unused training rows, 3 seeds; the
   candidate with the highest mean *final validation* accuracy wins (the held-out test accuracy is
   recorded, never used to choose) — and it replaces the current default only when it is *better*
   than it on validation by the evidence harness's paired rule (mean ahead AND ahead in >= 2 of 3
   seeds); otherwise the current default stays (a difference within noise changes nothing);
2. **demo** — the winner and the current default then run the demo itself (no validation split),
   3 seeds: the table the docs quote, with the paired rule of the evidence harness on test accuracy.
   A confirmation, not a second choice: the winner is adopted as the default unless it is *worse*
   than the current default there (a validation win that does not hold on the demo is noise).

One process per run (`rgft-edge finetune`), 2 threads; `--resume` keeps finished runs.

    python benchmarks/default_demo.py [--phase choose demo] [--seeds 0 1 2] [--resume]

Writes benchmarks/results/default-demo/{choose,demo}.json and .md (+ runs.jsonl, one line per run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, write_results  # noqa: E402
from compare_analysis import mean_std, paired_rule  # noqa: E402

OUT = Path("benchmarks/results/default-demo")
LRS = [3e-5, 1e-4, 3e-4]
# candidate defaults: name -> policy flags (the LR comes from the grid)
CANDIDATES = {
    "budget": ["--policy", "budget"],
    "paced": ["--policy", "paced"],
    "paced-lr": ["--policy", "paced", "--pace-lr-age", "0.5"],
    "paced-lr4": ["--policy", "paced", "--pace-lr-age", "0.5", "--pace-lr-cap", "4"],
}
CURRENT = ("budget", 1e-4)  # the default before this benchmark
VALIDATION = 1000
STEPS = 250  # the demo: 4,000 training examples, batch 16, one epoch


def key(phase: str, cand: str, lr: float, seed: int) -> str:
    return f"{phase}|{cand}|{lr:g}|{seed}"


def run_one(phase: str, cand: str, lr: float, seed: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        argv = [sys.executable, "-m", "rgft_edge.cli", "finetune", *CANDIDATES[cand], "--lr", f"{lr:g}",
                "--seed", str(seed), "--threads", str(threads), "--no-progress", "--no-report",
                "--checkpoint-every", "0", "--out", str(out)]
        if phase == "choose":
            argv += ["--validation-examples", str(VALIDATION), "--eval-every", str(STEPS // 2)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run(argv, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            return {"error": (proc.stderr or proc.stdout).strip()[-500:]}
        s = json.loads((out / "summary.json").read_text())
        evals = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in ln]
        val = [e for e in evals if e.get("split") == "validation"]
        return {"test_accuracy": s["held_out_accuracy"], "validation_accuracy": val[-1]["accuracy"] if val else None,
                "validation_step": val[-1]["step"] if val else None, "steps": s["steps"],
                "train_time_s": s["train_time_s"], "median_step_s": s["median_step_time_s"],
                "components": s["mean_components_updated_per_step"], "components_total": s["components"],
                "params_updated": s["mean_params_updated_per_step"], "params_total": s["trainable_params"],
                "energy_j": s["energy_j"], "energy_source": s["energy_source"],
                "peak_rss_mb": s["peak_rss_bytes"] / 1e6, "tracking_pct": s["tracking_overhead_pct"]}


def load_runs(path: Path) -> dict:
    if not path.exists():
        return {}
    return {r["key"]: r for r in map(json.loads, path.read_text().splitlines()) if "error" not in r}


def summarise(runs: dict, phase: str, cand: str, lr: float, seeds: list[int], field: str):
    return mean_std([runs.get(key(phase, cand, lr, s), {}).get(field) for s in seeds])


def fmt(ms, scale=100.0, digits=2) -> str:
    m, s, n = ms
    return "—" if n == 0 else f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def choose_table(meta: dict, rows: list[dict]) -> str:
    lines = [f"Default-demo choice: MiniLM on Rotten Tomatoes, the demo's recipe ({STEPS} steps, batch 16, "
             f"4,000 training examples) with {VALIDATION} validation examples carved from the unused training "
             f"rows; seeds {meta['seeds']}, {meta['threads']} threads, torch {meta['torch']}, {meta['date']}. "
             "**Chosen on mean final validation accuracy**; test accuracy (2,000 held out) recorded, not used.",
             "", _choice_line(meta), "",
             "| candidate | LR | validation accuracy (%) | test accuracy (%) | components/step | median step (ms) |",
             "|---|---|---|---|---|---|"]
    for r in rows:  # noqa: B007
        bold = "**" if (r["candidate"], r["lr"]) == (meta["chosen"]["candidate"], meta["chosen"]["lr"]) else ""
        lines.append(f"| {bold}{r['candidate']}{bold} | {r['lr']:g} | {fmt(r['validation'])} | {fmt(r['test'])} | "
                     f"{fmt(r['components'], 1, 1)} of {r['components_total']} | {fmt(r['median_step'], 1000, 0)} |")
    if meta.get("note"):
        lines += ["", meta["note"]]
    return "\n".join(lines) + "\n"


def _choice_line(meta: dict) -> str:
    b, c = meta["best_on_validation"], meta["chosen"]
    g = b["vs_current"]
    line = (f"Best mean validation accuracy: {b['candidate']} at LR {b['lr']:g}; against the current default "
            f"({CURRENT[0]} at LR {CURRENT[1]:g}) by the paired rule on validation: **{g['word']}** (ahead in "
            f"{g['ahead']} of {g['n']} seeds, mean {g['mean'] * 100:+.2f} points). ")
    if (b["candidate"], b["lr"]) == tuple(CURRENT):
        return line.split(";")[0] + f": the current default. Chosen: **{c['candidate']} at LR {c['lr']:g}**."
    return line + f"Chosen: **{c['candidate']} at LR {c['lr']:g}**."


def demo_table(meta: dict, rows: list[dict]) -> str:
    lines = [f"The default demo (`rgft-edge finetune`: MiniLM, Rotten Tomatoes, {STEPS} steps, 2,000 held out), "
             f"seeds {meta['seeds']}, {meta['threads']} threads, torch {meta['torch']}, {meta['date']}. "
             "Energy: the meter's estimate (no sensor on this machine) unless the source says measured.", "",
             "| settings | held-out accuracy (%) | components/step | params updated/step (M) | train time (s) | "
             "median step (ms) | energy (J) [source] | peak RSS (MB) | tracking % |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {fmt(r['test'])} | {fmt(r['components'], 1, 1)} of {r['components_total']} | "
                     f"{fmt(r['params'], 1e-6, 2)} of {r['params_total'] / 1e6:.1f} | {fmt(r['train_time'], 1, 0)} | "
                     f"{fmt(r['median_step'], 1000, 0)} | {fmt(r['energy'], 1, 0)} [{r['energy_source']}] | "
                     f"{fmt(r['rss'], 1, 0)} | {fmt(r['tracking'], 1, 2)} |")
    if meta.get("verdict"):
        v = meta["verdict"]
        lines += ["", f"Paired rule on held-out accuracy, validation winner vs the current default: **{v['word']}** "
                      f"(ahead in {v['ahead']} of {v['n']} seeds, mean {v['mean'] * 100:+.2f} points)."]
    a = meta["adopted"]
    lines += ["", f"Adopted as the default of `rgft-edge finetune`: **{a['candidate']} at LR {a['lr']:g}**"
                  + (" (the validation winner did not hold on the demo)." if meta.get("verdict", {}).get("word") == "worse"
                     else ".")]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phase", nargs="+", default=["choose", "demo"], choices=["choose", "demo"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--note", default="", help="a caveat printed under the choice table (e.g. a shared CPU)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / "runs.jsonl"
    if not args.resume and log.exists():
        log.unlink()
    runs = load_runs(log)

    def ensure(phase, cand, lr, seed):
        k = key(phase, cand, lr, seed)
        if k not in runs:
            r = {"key": k, "phase": phase, "candidate": cand, "lr": lr, "seed": seed,
                 **run_one(phase, cand, lr, seed, args.threads)}
            with open(log, "a") as f:
                f.write(json.dumps(r) + "\n")
            print(json.dumps(r), flush=True)
            if "error" in r:
                raise SystemExit(f"{k}: {r['error']}")
            runs[k] = r

    meta = environment(note=args.note, seeds=args.seeds, threads=args.threads, lrs=LRS, candidates=CANDIDATES, current=CURRENT)
    rows = []
    for seed in args.seeds:  # seed-major: a partial run still covers every candidate
        for cand in args.candidates:
            for lr in LRS:
                ensure("choose", cand, lr, seed)
    for cand in args.candidates:
        for lr in LRS:
            s = lambda f: summarise(runs, "choose", cand, lr, args.seeds, f)  # noqa: E731
            rows.append({"candidate": cand, "lr": lr, "validation": s("validation_accuracy"), "test": s("test_accuracy"),
                         "components": s("components"), "median_step": s("median_step_s"),
                         "components_total": runs[key("choose", cand, lr, args.seeds[0])]["components_total"]})
    best = max(rows, key=lambda r: r["validation"][0])
    val = lambda c, lr, s: runs[key("choose", c, lr, s)]["validation_accuracy"]  # noqa: E731
    gate = paired_rule([val(best["candidate"], best["lr"], s) - val(*CURRENT, s) for s in args.seeds])
    meta["best_on_validation"] = {"candidate": best["candidate"], "lr": best["lr"], "vs_current": gate}
    if gate["word"] != "better":
        best = next(r for r in rows if (r["candidate"], r["lr"]) == CURRENT)
    meta["chosen"] = {"candidate": best["candidate"], "lr": best["lr"]}
    write_results(OUT, "choose", meta, rows, choose_table)
    if "demo" not in args.phase:
        return
    chosen = (best["candidate"], best["lr"])
    demo_rows = []
    settings = (("default (unchanged)", CURRENT),) if chosen == CURRENT else (("current default", CURRENT),
                                                                              ("validation winner", chosen))
    for label, (cand, lr) in settings:
        for seed in args.seeds:
            ensure("demo", cand, lr, seed)
        s = lambda f: summarise(runs, "demo", cand, lr, args.seeds, f)  # noqa: E731
        first = runs[key("demo", cand, lr, args.seeds[0])]
        demo_rows.append({"label": f"{label}: {cand}, LR {lr:g}", "candidate": cand, "lr": lr,
                          "test": s("test_accuracy"), "components": s("components"), "params": s("params_updated"),
                          "train_time": s("train_time_s"), "median_step": s("median_step_s"), "energy": s("energy_j"),
                          "rss": s("peak_rss_mb"), "tracking": s("tracking_pct"),
                          "components_total": first["components_total"], "params_total": first["params_total"],
                          "energy_source": first["energy_source"]})
    if chosen != CURRENT:
        favour = [runs[key("demo", *chosen, s)]["test_accuracy"] - runs[key("demo", *CURRENT, s)]["test_accuracy"]
                  for s in args.seeds]
        meta["verdict"] = paired_rule(favour)
    adopted = CURRENT if meta.get("verdict", {}).get("word") == "worse" else chosen
    meta["adopted"] = {"candidate": adopted[0], "lr": adopted[1]}
    write_results(OUT, "demo", meta, demo_rows, demo_table)


if __name__ == "__main__":
    main()
