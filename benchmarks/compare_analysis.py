"""From per-run records to the evidence, under the equal-time protocol: the LR each method keeps
(chosen on validation, seed 0), mean ± std over seeds, ratios to full fine-tuning of the same seed,
time to target on the validation curves, the paired verdicts, markdown and HTML plots.

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
PALETTE = ["#000000", "#7f7f7f", "#bcbd22", "#e377c2", "#8c564b", "#1f77b4", "#17becf", "#d62728",
           "#ff7f0e", "#aec7e8", "#2ca02c", "#9467bd", "#98df8a", "#c5b0d5", "#ff9896"]


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
def _pm(ms, fmt="{:.3f}", scale=1.0) -> str:
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


def _seed_list(xs: list, fmt) -> str:
    return ", ".join(fmt(x) for x in xs) if xs else "—"


def _ttt_str(pair, s) -> str:
    x, y = pair
    f = lambda t: "never" if t is None else f"{t:.0f}"  # noqa: E731
    return f"s{s}: {f(x)} vs {f(y)}"


def verdict_table(records: list[dict], task: str, rows: dict, hib: bool, order: list[str]) -> tuple[list[str], dict]:
    scale, unit = (100.0, "points") if hib else (1.0, "ppl")
    lines = [f"| RGFT method | vs | test Δ ({unit}), mean | test Δ per seed | test verdict [ahead/behind of n] | "
             "time to target per seed (s, method vs other) | time-to-target verdict [ahead/behind of n] |",
             "|---|---|---|---|---|---|---|"]
    verdicts = {}
    for a, b in comparisons([m for m in order if m in rows]):
        c = compare_pair(records, task, a, b, hib)
        verdicts[(a, b)] = c
        t, v = c["test"], c["ttt_verdict"]
        lines.append(
            f"| {a} | {b} | {_pm(mean_std(c['test_diff']), '{:+.2f}', scale)} | "
            f"{_seed_list(list(zip(c['seeds'], c['test_diff'])), lambda p: f's{p[0]}: {p[1] * scale:+.2f}')} | "
            f"**{t['word']}** [{t['ahead']}/{t['behind']} of {t['n']}] | "
            f"{_seed_list(c['ttt_seeds'], lambda s: _ttt_str(c['ttt'][s], s))} | "
            f"**{v['word']}** [{v['ahead']}/{v['behind']} of {v['n']}] |")
    return lines, verdicts


def target_words(ref: str, higher_is_better: bool) -> str:
    return (f"{TARGET:.0%} of {ref}'s final validation accuracy" if higher_is_better else
            f"{PPL_TARGET}× {ref}'s final validation perplexity")


def answers(records: list[dict], derived: dict, higher: dict[str, bool], verdicts: dict) -> list[str]:
    lines = []
    for task, d in derived.items():
        rows, hib = d["rows"], higher[task]
        unit = "accuracy points" if hib else "perplexity"
        scale = 100.0 if hib else 1.0
        what = "accuracy" if hib else "perplexity"
        lines.append(f"**{task}**")
        for m in [m for m in rows if is_rgft(m)]:
            r = rows[m]
            ref = reference_of(m)
            tw = target_words(ref, hib)
            reach = (f"reaches the target ({tw}) in {r['reached']}/{r['paired']} seeds, after "
                     f"{_pm(r['ttt_ratio'], '{:.2f}')} of {ref}'s own time to it and "
                     f"{_pm(r['ttt_energy_ratio'], '{:.2f}')} of its energy to it" if r["reached"] else
                     f"does not reach the target ({tw}) in any seed within T")
            lines.append(f"- {m}: test {what} at equal time {_pm(r['delta_vs_full'], '{:+.2f}', scale)} {unit} "
                         f"vs {ref}; {reach}; measured step time {_pm(r['step_time_ratio'], '{:.2f}')} of {ref}'s.")
            by_word = defaultdict(lambda: defaultdict(list))
            for (a, b), c in verdicts.get(task, {}).items():
                if a == m:
                    by_word["test"][c["test"]["word"]].append(b)
                    by_word["ttt"][c["ttt_verdict"]["word"]].append(b)
            for key, label in (("test", "test metric at equal time"), ("ttt", "time to target")):
                w = by_word[key]
                lines.append(f"  - {label} (paired rule): better than {', '.join(w['better']) or 'none'}; "
                             f"worse than {', '.join(w['worse']) or 'none'}; tie with {', '.join(w['tie']) or 'none'}.")
        cc = d["cost_check"]
        if cc["methods"]:
            listing = ", ".join(f"{m} {f:.2f}" for m, f in sorted(cc["methods"].items()))
            if len(cc["methods"]) == 1:
                lines.append(f"- equal cost, measured: one budget-matched method only ({listing} × full's "
                             "median step time, same seed).")
            elif cc["within"]:
                lines.append(f"- equal cost, measured: the budget-matched methods land within ±{COST_TOLERANCE:.0%} "
                             f"of each other in median step time (× full's, same seed: {listing}).")
            else:
                lines.append(f"- equal cost, measured: the budget-matched methods do NOT all land within "
                             f"±{COST_TOLERANCE:.0%} of each other in median step time (group median "
                             f"{cc['median']:.2f} × full's); outside: {', '.join(cc['outside'])} ({listing}).")
        lines.append("")
    return lines


def lr_grid_lines(grid: dict, higher: dict[str, bool], order: list[str]) -> list[str]:
    lines = []
    for task, methods in grid.items():
        hib = higher[task]
        scale = 100.0 if hib else 1.0
        fmt = lambda v, sc=scale: "—" if v is None else f"{sc * v:.2f}"  # noqa: E731
        lines += [f"**{task}** (final validation {'accuracy' if hib else 'perplexity'}, seed "
                  f"{next(iter(methods.values()))['grid_seed']})", "",
                  "| method | LR × default: LR → final validation (test) | chosen LR |", "|---|---|---|"]
        for m in [m for m in order if m in methods]:
            g = methods[m]
            if g["inherited_from"]:
                cells = f"(the LR chosen for {g['inherited_from']})"
            else:
                cells = "; ".join(f"{'**' if r['chosen'] else ''}×{r['lr_factor']:.3g}: {r['lr']:.3g} → "
                                  f"{fmt(r['val_final'])} ({fmt(r['final'])}){'**' if r['chosen'] else ''}"
                                  for r in g["runs"]) or "—"
            lines.append(f"| {m} | {cells} | {g['chosen_lr']:.3g} |")
        lines.append("")
    return lines


def markdown(meta: dict, records: list[dict], derived: dict, higher: dict[str, bool], methods: dict,
             grid: dict | None = None) -> str:
    order = list(methods)
    out = [f"Mode `{meta['mode']}`: seeds {meta['seeds']}, {meta['threads']} threads, torch "
           f"{meta.get('torch')}, {meta['date']}; one process per (task, method, seed, LR); `full` first per "
           f"(task, seed), the other methods rotated per seed. Harness wall time "
           f"{meta.get('harness_wall_s', 0) / 60:.1f} min.",
           "",
           "**Protocol: equal training time.** Per (task, seed), full fine-tuning runs first (the mode's "
           "epochs) and its training clock T (summed step time, evaluations excluded) becomes every other "
           "method's training time (`--max-train-seconds T`, validation every T/10). `@onnxruntime` rows "
           "pair with `full@onnxruntime`. Evaluations during training use a **validation** split carved from "
           "the training data (curves, time to target, LR choice); the **test** metric is the held-out split, "
           "evaluated **once per run, at the end** (at T). Each method's LR was chosen on validation "
           f"({meta.get('lr_factors')} × its default, seed {meta.get('grid_seed', 0)}; see the LR grid below)"
           + ("; in this mode the grid is the default LR only" if len(meta.get("lr_factors", [1])) == 1 else "")
           + ". Budget-matched methods price selections in measured seconds (`--calibrate-cost`); their "
             "calibration pass runs before training, outside T (the `calibration (s)` column: its session time "
             "outside training and evaluation minus full fine-tuning's, same seed).",
           "Energy: " + ", ".join(sorted({s for d in derived.values() for r in d["rows"].values()
                                          for s in r["energy_source"]}))
           + " — training steps only (the meter's average power × training time); no sensor on this "
             "machine unless the source says `measured`.",
           f"Time to target: training time at which the validation curve first reaches {TARGET:.0%} of the "
           f"reference's final validation accuracy of the same seed (perplexity: <= {PPL_TARGET}× its final), "
           "linearly interpolated between evaluations. Paired rule (every verdict below): over the n paired "
           "seeds, *better* when the mean paired difference favours the method AND it is ahead in at least "
           "⌈2n/3⌉ seeds; *worse* symmetrically; otherwise *tie*; for time to target a seed that never reaches "
           "the target counts as behind. Backward GFLOPs are estimated from the component FLOP table.", ""]
    for task, d in derived.items():
        rows, hib = d["rows"], higher[task]
        metric = "accuracy" if hib else "perplexity"
        sc = 100.0 if hib else 1.0
        et = "; ".join(f"{ref}: " + ", ".join(f"s{s} {t:.1f} s" for s, t in by.items())
                       for ref, by in d["equal_time"].items())
        out += [f"### {task} — test {metric} at equal time (mean ± std over seeds)", "",
                f"Equal training time T per seed: {et}.", "",
                f"| method | LR | test {metric} (at T, once) | final validation | train time (s) | steps | "
                f"energy (J) | × full energy | time to target (s) [seeds] | × full's time to it | "
                f"× full's energy to it | measured step time × full | est. step cost [unit] | "
                f"calibration (s) | backward GFLOPs (est.) | components/step | peak RSS (MB) | tracking % |",
                "|---|" + "---|" * 17]
        for m in order:
            if m not in rows:
                continue
            r = rows[m]
            unit = "s" if any(u.startswith("seconds") for u in r["cost_unit"]) else "FLOPs"
            out.append(
                f"| {m} | {r['lr']:.3g} | {_pm(r['final'], '{:.2f}', sc)} | {_pm(r['val_final'], '{:.2f}', sc)} | "
                f"{_pm(r['train_time_s'], '{:.1f}')} | {_pm(r['steps'], '{:.0f}')} | "
                f"{_pm(r['energy_j'], '{:.0f}')} | {_pm(r['energy_ratio'], '{:.2f}')} | "
                f"{_pm(r['ttt_s'], '{:.1f}')} [{r['reached']}/{r['paired']}] | {_pm(r['ttt_ratio'], '{:.2f}')} | "
                f"{_pm(r['ttt_energy_ratio'], '{:.2f}')} | {_pm(r['step_time_ratio'], '{:.2f}')} | "
                f"{_pm(r['cost_fraction'], '{:.2f}')} [{unit}] | {_pm(r['calibration_s_est'], '{:.1f}')} | "
                f"{_pm(r['backward_gflops_est'], '{:.0f}')} | "
                f"{r['components_per_step'][0]:.1f}/{r['components']} | {_pm(r['peak_rss_mb'], '{:.0f}')} | "
                f"{_pm(r['tracking_pct'], '{:.2f}')} |")
        out.append("")
    verdicts = {}
    vt = []
    for task, d in derived.items():
        lines, verdicts[task] = verdict_table(records, task, d["rows"], higher[task], order)
        vt += [f"**{task}**", ""] + lines + [""]
    out += ["### Answers (generated from the numbers above)", ""] + answers(records, derived, higher, verdicts)
    out += ["### Paired verdicts: RGFT vs each baseline (per-seed differences)", "",
            "Test Δ: method − baseline on the test metric at equal time (accuracy in points, > 0 is better; "
            "perplexity: < 0 is better). Time to target: seconds of training to the reference's target on "
            "validation, per seed (`never`: not within T).", ""] + vt
    if grid:
        out += ["### LR grid (chosen on the final validation metric; test in brackets, not used to choose)", ""]
        out += lr_grid_lines(grid, higher, order)
    errors = [r for r in meta.get("errors", [])]
    if errors:
        out += ["### Runs that failed", ""] + [f"- {r['task']} / {r['method']} / seed {r['seed']} / lr "
                                               f"{r.get('lr', '?')}: {' '.join(str(r['error']).split())[-300:]}"
                                               for r in errors] + [""]
    out += ["Methods: " + "; ".join(f"`{m}` {methods[m]}" for m in methods)]
    return "\n".join(out) + "\n"


def html_plots(records: list[dict], higher: dict[str, bool], methods: list[str]) -> str:
    from rgft_edge.runs.report import CSS, line_chart

    body = ["<h1>RGFT evidence: validation metric vs training time (equal training time)</h1>",
            "<p>Mean over seeds at each validation evaluation (x: mean training seconds at that evaluation); "
            f"dashed line: the target ({TARGET:.0%} of full fine-tuning's final validation value, mean over "
            "seeds). The test metric is evaluated once per run, at the end (tables in compare.md).</p>"]
    for task in dict.fromkeys(r["task"] for r in records):
        hib = higher[task]
        series, legend = [], []
        for i, m in enumerate(methods):
            curves = [r["curve"] for r in records if r["task"] == task and r["method"] == m
                      and "error" not in r and r["curve"]]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            xs = [float(np.mean([c[j][1] for c in curves])) for j in range(n)]
            ys = [float(np.mean([c[j][2] for c in curves])) for j in range(n)]
            color = PALETTE[i % len(PALETTE)]
            series.append((m, xs, ys, color))
            legend.append(f'<span style="color:{color}">■ {m}</span>')
        refs = [r["val_final"] for r in records if r["task"] == task and r["method"] == "full"
                and "error" not in r and r.get("val_final") is not None]
        hline = (target_for(float(np.mean(refs)), hib), "target") if refs else None
        metric = "accuracy" if hib else "perplexity"
        body.append(f"<h2>{task}</h2><p>{' '.join(legend)}</p>")
        body.append(line_chart(series, f"{task}: validation {metric}", hline=hline, legend=False,
                               x_label="training time (s)"))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>RGFT evidence</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
