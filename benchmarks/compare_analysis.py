"""From per-run records to the evidence, under the equal-time protocol: the LR each method keeps
(chosen on validation, seed 0), mean ± std over seeds, ratios to full fine-tuning of the same seed,
time to target on the validation curves and the paired verdicts (rendered by `compare_report.py`).

No torch here: it reads the records `compare.py` wrote, so it can be re-run on any saved results.

Vocabulary:
- *reference*: `full` (or `full@<backend>` for the rows through that backend) of the same seed;
  its training clock T is every other method's training time.
- *test metric*: the held-out (test) split, evaluated once per run, at the end (at T).
- *validation curve*: evaluations during training on the validation split (carved from the
  training data), at >= 10 evenly spaced points; used for time to target and for the LR choice.
- *time to target*: training seconds at which the validation curve first reaches 99% of the
  reference's final validation accuracy of the same seed (perplexity: <= 1.01x its final),
  linearly interpolated between the two evaluations that straddle it.
- *paired rule*: over the n seeds both methods ran, "better" when the mean paired difference
  favours the method AND it is ahead in at least ceil(2n/3) seeds; "worse" symmetrically;
  otherwise "tie".
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

TARGET = 0.99  # "reaches 99% of full fine-tuning's final accuracy"
PPL_TARGET = 1.01  # perplexity: "within 1.01x of full fine-tuning's final perplexity"
COST_TOLERANCE = 0.05  # budget-matched methods should land within ±5% of each other in measured step time


# -- small pieces ------------------------------------------------------------------------------
def mean_std(xs) -> tuple[float, float, int]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return float("nan"), float("nan"), 0
    return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0, len(xs)


def reference_of(method: str) -> str:
    """Rows through an exported backend pair with full fine-tuning through the same backend."""
    return "full" + method[method.index("@"):] if "@" in method else "full"


def backend_suffix(method: str) -> str:
    return method[method.index("@"):] if "@" in method else ""


def reaches(value: float, target: float, higher_is_better: bool) -> bool:
    return value >= target - 1e-12 if higher_is_better else value <= target + 1e-12


def target_for(full_final: float, higher_is_better: bool) -> float:
    return full_final * TARGET if higher_is_better else full_final * PPL_TARGET


def time_to_target(curve: list, target: float, higher_is_better: bool) -> float | None:
    """Training seconds at which the validation curve first reaches `target`, linearly interpolated
    between the last evaluation short of it and the first that reaches it (the first evaluation
    itself when that one already reaches it: there is no point before it). None: never reached."""
    prev = None
    for _, t, v in curve:
        if reaches(v, target, higher_is_better):
            if prev is None:
                return float(t)
            t0, v0 = prev
            frac = (target - v0) / (v - v0) if v != v0 else 1.0
            return float(t0 + min(1.0, max(0.0, frac)) * (t - t0))
        prev = (t, v)
    return None


def paired_rule(favour: list[float]) -> dict:
    """The one rule behind every generated "better" / "worse" / "tie".

    `favour` holds one paired difference per seed, signed so that > 0 favours the method (±inf
    allowed: a seed where only one side reached a target). "better": the mean favours the method
    AND it is ahead in at least ceil(2n/3) seeds; "worse": the mean favours the other AND the
    method is behind in at least ceil(2n/3) seeds; otherwise "tie"."""
    n = len(favour)
    if n == 0:
        return {"word": "not run", "n": 0, "ahead": 0, "behind": 0, "need": 0, "mean": float("nan")}
    need = math.ceil(2 * n / 3)
    ahead = sum(1 for d in favour if d > 0)
    behind = sum(1 for d in favour if d < 0)
    with np.errstate(invalid="ignore"):
        mean = float(np.mean(np.asarray(favour, dtype=float)))  # +inf and -inf together: nan (no side)
    word = ("better" if mean > 0 and ahead >= need else
            "worse" if mean < 0 and behind >= need else "tie")
    return {"word": word, "n": n, "ahead": ahead, "behind": behind, "need": need, "mean": mean}


# -- the LR grid -------------------------------------------------------------------------------
def lr_source(method: str) -> str:
    return method.split("@")[0] if "@" in method else method


def _factor_key(f) -> float:
    return round(float(f), 6)


def choose_lr(grid: list[dict], higher_is_better: bool) -> dict | None:
    """The grid run a method keeps: best final validation metric; ties go to the factor nearest the
    default (x1), then to the smaller LR. Runs without a validation value never win."""
    ok = [r for r in grid if "error" not in r]
    if not ok:
        return None
    sign = 1.0 if higher_is_better else -1.0

    def key(r):
        v = r.get("val_final")
        v = sign * v if v is not None and math.isfinite(v) else -math.inf
        return (v, -abs(math.log(r.get("lr_factor", 1.0))), -r["lr"])

    return max(ok, key=key)


def select_main(records: list[dict], higher: dict[str, bool], grid_seed: int = 0) -> tuple[list[dict], dict]:
    """The records the tables use (one per task, method, seed: the chosen LR) and the grid summary
    task -> method -> {chosen_factor, chosen_lr, runs, inherited_from}."""
    ok = [r for r in records if "error" not in r]
    by = defaultdict(list)  # (task, method) -> records
    for r in ok:
        by[(r["task"], r["method"])].append(r)
    grid: dict = defaultdict(dict)
    for (task, method), rs in sorted(by.items()):
        if lr_source(method) != method:
            continue
        seeds_runs = [r for r in rs if r["seed"] == grid_seed]
        factors = {_factor_key(r.get("lr_factor", 1.0)) for r in rs}
        if seeds_runs:
            best = choose_lr(seeds_runs, higher[task])
        elif len(factors) == 1:  # no grid: the one LR
            best = rs[0]
        else:
            continue
        grid[task][method] = {
            "chosen_factor": _factor_key(best.get("lr_factor", 1.0)), "chosen_lr": best["lr"],
            "grid_seed": grid_seed, "inherited_from": None,
            "runs": [{"lr_factor": r.get("lr_factor", 1.0), "lr": r["lr"], "val_final": r.get("val_final"),
                      "final": r["final"], "train_time_s": r["train_time_s"],
                      "chosen": r is best} for r in sorted(seeds_runs, key=lambda r: r["lr"])]}
    for (task, method), rs in sorted(by.items()):
        src = lr_source(method)
        if src == method:
            continue
        if src in grid.get(task, {}):
            grid[task][method] = {**grid[task][src], "inherited_from": src, "runs": []}
        elif len({_factor_key(r.get("lr_factor", 1.0)) for r in rs}) == 1:  # run without its LR source
            grid[task][method] = {"chosen_factor": _factor_key(rs[0].get("lr_factor", 1.0)),
                                  "chosen_lr": rs[0]["lr"], "grid_seed": grid_seed, "inherited_from": None,
                                  "runs": []}
    main = []
    for (task, method), rs in by.items():
        g = grid.get(task, {}).get(method)
        if g is None:
            continue
        main += [r for r in rs if _factor_key(r.get("lr_factor", 1.0)) == g["chosen_factor"]]
    # one record per (task, method, seed): the latest of duplicates
    uniq = {}
    for r in main:
        uniq[(r["task"], r["method"], r["seed"])] = r
    return list(uniq.values()), {t: dict(m) for t, m in grid.items()}


# -- derived numbers ---------------------------------------------------------------------------
def derive(records: list[dict], higher: dict[str, bool]) -> dict:
    """task -> {"rows": method -> aggregated row, "equal_time": reference -> seed -> T,
    "cost_check": {...}}; `records` are the main records (one per task, method, seed)."""
    runs = defaultdict(lambda: defaultdict(dict))
    for r in records:
        if "error" not in r:
            runs[r["task"]][r["method"]][r["seed"]] = r
    out = {}
    for task, methods in runs.items():
        hib = higher[task]
        rows = {}
        for method, by_seed in methods.items():
            full = methods.get(reference_of(method), {})
            ratios = defaultdict(list)
            ttts, reached, paired = [], 0, 0
            for seed, r in by_seed.items():
                ref = full.get(seed)
                if ref is None or ref.get("val_final") is None:
                    continue
                paired += 1
                tgt = target_for(ref["val_final"], hib)
                ttt = time_to_target(r["curve"], tgt, hib)
                ref_ttt = time_to_target(ref["curve"], tgt, hib)
                ratios["time"].append(r["train_time_s"] / ref["train_time_s"])
                ratios["energy"].append(r["energy_j"] / ref["energy_j"])
                ratios["delta"].append(r["final"] - ref["final"])
                ratios["step_time"].append(r["median_step_s"] / ref["median_step_s"])
                if r.get("config", {}).get("calibrate_cost") and "outside_meter_s" in r and "outside_meter_s" in ref:
                    # setup + test evaluation, minus the reference's (same test set, no calibration)
                    ratios["calibration"].append(r["outside_meter_s"] - ref["outside_meter_s"])
                if ttt is not None and ref_ttt:
                    reached += 1
                    ttts.append(ttt)
                    ratios["ttt"].append(ttt / ref_ttt)
                    ratios["ttt_energy"].append((r["energy_j"] * ttt / r["train_time_s"])
                                                / (ref["energy_j"] * ref_ttt / ref["train_time_s"]))
            rs = list(by_seed.values())
            rows[method] = {
                "seeds": sorted(by_seed), "final": mean_std(r["final"] for r in rs),
                "val_final": mean_std(r.get("val_final") for r in rs),
                "lr": rs[0].get("lr"), "lr_factor": rs[0].get("lr_factor", 1.0),
                "train_time_s": mean_std(r["train_time_s"] for r in rs),
                "steps": mean_std(r.get("steps") for r in rs),
                "energy_j": mean_std(r["energy_j"] for r in rs),
                "energy_source": sorted({r["energy_source"] for r in rs}),
                "peak_rss_mb": mean_std(r["peak_rss_mb"] for r in rs),
                "backward_gflops_est": mean_std(r["backward_gflops_est"] for r in rs),
                "cost_fraction": mean_std(r["cost_fraction"] for r in rs),
                "cost_unit": sorted({str(r.get("step_cost_unit")) for r in rs}),
                "calibrated": any(r.get("config", {}).get("calibrate_cost") for r in rs),
                "calibration_s_est": mean_std(ratios["calibration"]),
                "median_step_s": mean_std(r["median_step_s"] for r in rs),
                "step_time_ratio": mean_std(ratios["step_time"]),
                "components_per_step": mean_std(r["components_per_step"] for r in rs),
                "components": rs[0]["components"],
                "tracking_pct": mean_std(r["tracking_pct"] for r in rs),
                "time_ratio": mean_std(ratios["time"]), "energy_ratio": mean_std(ratios["energy"]),
                "delta_vs_full": mean_std(ratios["delta"]),
                "ttt_s": mean_std(ttts), "ttt_ratio": mean_std(ratios["ttt"]),
                "ttt_energy_ratio": mean_std(ratios["ttt_energy"]), "reached": reached, "paired": paired,
            }
        equal_time = {m: {s: r["train_time_s"] for s, r in sorted(by.items())}
                      for m, by in methods.items() if m == reference_of(m)}
        out[task] = {"rows": rows, "equal_time": equal_time, "cost_check": cost_check(rows)}
    return out


def cost_check(rows: dict) -> dict:
    """Do the budget-matched (calibrated) methods land within ±5% of each other in measured step
    time (median step time as a fraction of full fine-tuning's, same seed)?"""
    frac = {m: r["step_time_ratio"][0] for m, r in rows.items()
            if r["calibrated"] and r["step_time_ratio"][2] > 0}
    if not frac:
        return {"methods": {}, "median": float("nan"), "within": True, "outside": []}
    med = float(np.median(list(frac.values())))
    outside = sorted(m for m, f in frac.items() if abs(f / med - 1) > COST_TOLERANCE)
    return {"methods": frac, "median": med, "within": not outside, "outside": outside}


def per_seed(records: list[dict], task: str) -> dict:
    by = defaultdict(dict)
    for r in records:
        if r["task"] == task and "error" not in r:
            by[r["method"]][r["seed"]] = r
    return by


def ttt_by_seed(by: dict, method: str, hib: bool) -> dict:
    """seed -> time to the target set by the method's reference on that seed (None: never)."""
    ref = by.get(reference_of(method), {})
    out = {}
    for seed, r in by.get(method, {}).items():
        if seed in ref and ref[seed].get("val_final") is not None:
            out[seed] = time_to_target(r["curve"], target_for(ref[seed]["val_final"], hib), hib)
    return out


def compare_pair(records: list[dict], task: str, a: str, b: str, hib: bool) -> dict:
    """`a` against `b` under the paired rule, on the test metric at equal time and on time to target."""
    by = per_seed(records, task)
    sign = 1.0 if hib else -1.0
    seeds = sorted(set(by.get(a, {})) & set(by.get(b, {})))
    test_diff = [by[a][s]["final"] - by[b][s]["final"] for s in seeds]
    test = paired_rule([sign * d for d in test_diff])
    ta, tb = ttt_by_seed(by, a, hib), ttt_by_seed(by, b, hib)
    tseeds = [s for s in seeds if s in ta and s in tb]
    fav = []
    for s in tseeds:
        x, y = ta[s], tb[s]
        fav.append(0.0 if x is None and y is None else -math.inf if x is None else
                   math.inf if y is None else y - x)  # > 0: a reaches the target sooner
    return {"seeds": seeds, "test_diff": test_diff, "test": test,
            "ttt_seeds": tseeds, "ttt": {s: (ta[s], tb[s]) for s in tseeds}, "ttt_verdict": paired_rule(fav)}


# -- markdown ----------------------------------------------------------------------------------
def plus_minus(ms, fmt="{:.3f}", scale=1.0) -> str:
    m, s, n = ms
    if n == 0:
        return "—"
    return fmt.format(m * scale) + (" ± " + fmt.replace("+", "").format(s * scale) if n > 1 else "")


def is_rgft(method: str) -> bool:
    return method.startswith("rgft-")


def comparisons(methods: list[str]) -> list[tuple[str, str]]:
    """Every RGFT method against every baseline run through the same backend (full included)."""
    out = []
    for a in methods:
        if not is_rgft(a):
            continue
        out += [(a, b) for b in methods if not is_rgft(b) and backend_suffix(b) == backend_suffix(a)]
    return out
