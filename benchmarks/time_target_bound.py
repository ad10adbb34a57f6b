"""Why the time-to-target goal is or is not reachable: time to target split into steps x step time.

A method's time to target relative to full fine-tuning's (same seed, same target) is the product of
two measured ratios: how many *steps* it needs to reach the target (its learning per step) and how
long its mean step takes (its cost per step). The cost side has a floor no selection can beat: the
step cost calibration (`--calibrate-cost`) times, at the top backprop cut, a step that trains only
the head; that step still runs the whole forward pass. So a goal of "time to target <= G x full's"
needs steps-to-target <= G / (step-time ratio), and at best G / floor.

Reads the equal-time harness's per-run records (`compare.py` wrote them; no run here, no torch):

    python benchmarks/time_target_bound.py [--runs benchmarks/results/equal-time/compare_runs.jsonl ...]
        [--goal 0.5] [--lm-goal 0.6] [--out benchmarks/results/time-target-bound]

Writes {out}/time_target_bound.{json,md}. Per task, method and seed (the LR each method keeps,
chosen on validation as in compare.md): steps and seconds to the target on the validation curve
(linearly interpolated between evaluations), both as ratios to full's; a method that never reaches
it gets a lower bound on its steps ratio (its steps in the run / full's steps to target).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from compare_analysis import mean_std, reference_of, select_main, target_for, time_to_target  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def steps_to_target(curve: list, target: float, higher_is_better: bool) -> float | None:
    """Training steps at which the validation curve first reaches the target, interpolated."""
    return time_to_target([(None, step, v) for step, _, v in curve], target, higher_is_better)


def cost_floor(record: dict) -> float | None:
    """The calibration's cheapest timed step (the top cut alone) over its full step (bottom cut,
    everything): `step_s` holds, per cut depth, (everything from the cut up, the cut alone)."""
    cal = record.get("cost_calibration") or {}
    times = cal.get("step_s") or []
    return min(times) / times[0] if len(times) >= 2 and times[0] > 0 else None


def mean_step_s(record: dict) -> float:
    return record["train_time_s"] / max(1, record["steps"])


def bound_rows(records: list[dict], goal: float, lm_goal: float) -> list[dict]:
    """One row per (task, method other than its reference), per-seed ratios and their means."""
    higher = {r["task"]: r.get("metric", "accuracy") != "perplexity" for r in records}
    main, _ = select_main(records, higher)
    runs = defaultdict(dict)  # (task, method) -> seed -> record
    for r in main:
        runs[(r["task"], r["method"])][r["seed"]] = r
    floors = defaultdict(list)
    for r in records:
        f = cost_floor(r)
        if f is not None:
            floors[r["task"]].append(f)
    rows = []
    for (task, method), by_seed in sorted(runs.items()):
        ref_name = reference_of(method)
        if method == ref_name:
            continue
        hib = higher[task]
        g = goal if hib else lm_goal
        seeds = []
        for seed, r in sorted(by_seed.items()):
            ref = runs.get((task, ref_name), {}).get(seed)
            if ref is None or ref.get("val_final") is None:
                continue
            tgt = target_for(ref["val_final"], hib)
            ref_steps, ref_t = steps_to_target(ref["curve"], tgt, hib), time_to_target(ref["curve"], tgt, hib)
            if not ref_steps or not ref_t:
                continue
            steps, t = steps_to_target(r["curve"], tgt, hib), time_to_target(r["curve"], tgt, hib)
            step_ratio = mean_step_s(r) / mean_step_s(ref)
            seeds.append({
                "seed": seed, "reached": steps is not None,
                "steps_ratio": steps / ref_steps if steps is not None else None,
                "steps_ratio_at_least": r["steps"] / ref_steps if steps is None else None,
                "step_time_ratio": step_ratio,
                "time_ratio": t / ref_t if t is not None else None,
                "steps_ratio_needed": g / step_ratio})
        if not seeds:
            continue
        rows.append({
            "task": task, "method": method, "reference": ref_name, "goal": g, "per_seed": seeds,
            "reached": sum(s["reached"] for s in seeds), "seeds": len(seeds),
            "steps_ratio": mean_std(s["steps_ratio"] for s in seeds),
            "steps_ratio_at_least": mean_std(s["steps_ratio_at_least"] for s in seeds),
            "step_time_ratio": mean_std(s["step_time_ratio"] for s in seeds),
            "time_ratio": mean_std(s["time_ratio"] for s in seeds),
            "steps_ratio_needed": mean_std(s["steps_ratio_needed"] for s in seeds),
            "cost_floor": mean_std(floors.get(task, [])),
            "steps_ratio_needed_at_floor": g / mean_std(floors[task])[0] if floors.get(task) else None,
        })
    return rows


def _ms(ms, fmt="{:.2f}") -> str:
    mean, std, n = ms
    if n == 0:
        return "—"
    return fmt.format(mean) + (f" ± {fmt.format(std)}" if n > 1 else "")


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = ["# Time to target = steps to target × step time\n",
             "Each ratio is against full fine-tuning of the same seed and target (99% of its final validation "
             "accuracy; perplexity: within 1%), from the equal-time harness's own runs (" +
             ", ".join(f"`{p}`" for p in meta["runs"]) + f"; LR as each method kept it). Goal: time to target "
             f"≤ {meta['goal']}× full's (LM tasks ≤ {meta['lm_goal']}×). *Steps needed* = goal ÷ the method's own "
             "step-time ratio: how few steps, relative to full's, it would need at its measured cost. *Floor*: the "
             "cost calibration's cheapest timed step (only the top component trained, the whole forward pass still "
             "run) ÷ its full step, in the calibrated runs of that task; *steps needed at the floor* = goal ÷ floor, "
             "what even the cheapest possible selective step would need. A seed that never reached the target "
             "shows its steps ratio as a lower bound (steps it ran ÷ full's steps to target).\n"]
    for task in dict.fromkeys(r["task"] for r in rows):
        trs = [r for r in rows if r["task"] == task]
        floor = trs[0]["cost_floor"]
        at_floor = trs[0]["steps_ratio_needed_at_floor"]
        lines += [f"## {task}\n",
                  f"Floor: {_ms(floor)} of a full step → steps needed at the floor ≤ "
                  + (f"{at_floor:.2f}×" if at_floor else "—") + " full's.\n",
                  "| method | reached [seeds] | steps to target × full's | (never reached: ≥) | mean step time × full's "
                  "| time to target × full's | steps needed for the goal |",
                  "|---|---|---|---|---|---|---|"]
        for r in sorted(trs, key=lambda r: (-r["reached"], r["steps_ratio"][0] if r["steps_ratio"][2] else 9e9)):
            lines.append(f"| {r['method']} | {r['reached']}/{r['seeds']} | {_ms(r['steps_ratio'])} | "
                         f"{_ms(r['steps_ratio_at_least'])} | {_ms(r['step_time_ratio'])} | {_ms(r['time_ratio'])} | "
                         f"≤ {_ms(r['steps_ratio_needed'])} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="+", default=[str(RESULTS / "equal-time" / "compare_runs.jsonl"),
                                                  str(RESULTS / "lm-drift" / "compare_runs.jsonl")])
    ap.add_argument("--goal", type=float, default=0.5)
    ap.add_argument("--lm-goal", type=float, default=0.6)
    ap.add_argument("--out", default=str(RESULTS / "time-target-bound"))
    args = ap.parse_args()
    records = [json.loads(line) for p in args.runs for line in Path(p).read_text().splitlines() if line.strip()]
    rows = bound_rows(records, args.goal, args.lm_goal)
    root = Path(__file__).resolve().parents[1]
    meta = {"runs": [str(Path(p).resolve().relative_to(root)) if Path(p).resolve().is_relative_to(root) else p
                     for p in args.runs], "goal": args.goal, "lm_goal": args.lm_goal}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "time_target_bound.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    text = markdown(meta, rows)
    (out / "time_target_bound.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
