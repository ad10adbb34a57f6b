"""From per-run records to the evidence: mean ± std over seeds, ratios to full fine-tuning measured
in the same harness run (paired by seed), time-to-target, plain answers, markdown and HTML plots.

No torch here: it reads the records `compare.py` wrote, so it can be re-run on any saved results.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

TARGET = 0.99  # "reaches 99% of full fine-tuning's final accuracy" (perplexity: within 1/0.99)
PALETTE = ["#000000", "#7f7f7f", "#bcbd22", "#e377c2", "#8c564b", "#1f77b4", "#17becf", "#d62728",
           "#ff7f0e", "#aec7e8", "#2ca02c", "#9467bd"]


def mean_std(xs) -> tuple[float, float, int]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return float("nan"), float("nan"), 0
    return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0, len(xs)


def reaches(value: float, target: float, higher_is_better: bool) -> bool:
    return value >= target - 1e-12 if higher_is_better else value <= target + 1e-12


def target_for(full_final: float, higher_is_better: bool) -> float:
    return full_final * TARGET if higher_is_better else full_final / TARGET


def time_to_target(curve: list, target: float, higher_is_better: bool) -> float | None:
    """Training seconds at the first evaluation that reaches the target (None: never reached)."""
    for _, t, v in curve:
        if reaches(v, target, higher_is_better):
            return float(t)
    return None


def derive(records: list[dict], higher: dict[str, bool]) -> dict:
    """task -> method -> aggregated row (ratios paired with the full-fine-tuning run of each seed)."""
    runs = defaultdict(lambda: defaultdict(dict))
    for r in records:
        if "error" not in r:
            runs[r["task"]][r["method"]][r["seed"]] = r
    out = {}
    for task, methods in runs.items():
        hib = higher[task]
        rows = {}
        for method, by_seed in methods.items():
            # exported-backend rows compare with full fine-tuning through the same backend
            full = methods.get("full" + method[method.index("@"):] if "@" in method else "full", {})
            ratios = defaultdict(list)
            ttts, reached = [], 0
            for seed, r in by_seed.items():
                ref = full.get(seed)
                if ref is None:
                    continue
                tgt = target_for(ref["final"], hib)
                ttt = time_to_target(r["curve"], tgt, hib)
                ref_ttt = time_to_target(ref["curve"], tgt, hib)
                ratios["time"].append(r["train_time_s"] / ref["train_time_s"])
                ratios["energy"].append(r["energy_j"] / ref["energy_j"])
                ratios["delta"].append(r["final"] - ref["final"])
                if ttt is not None and ref_ttt:
                    reached += 1
                    ttts.append(ttt)
                    ratios["ttt"].append(ttt / ref_ttt)
                    ratios["ttt_energy"].append((r["energy_j"] * ttt / r["train_time_s"])
                                                / (ref["energy_j"] * ref_ttt / ref["train_time_s"]))
            rs = list(by_seed.values())
            rows[method] = {
                "seeds": sorted(by_seed), "final": mean_std(r["final"] for r in rs),
                "train_time_s": mean_std(r["train_time_s"] for r in rs),
                "energy_j": mean_std(r["energy_j"] for r in rs),
                "energy_source": sorted({r["energy_source"] for r in rs}),
                "peak_rss_mb": mean_std(r["peak_rss_mb"] for r in rs),
                "backward_gflops_est": mean_std(r["backward_gflops_est"] for r in rs),
                "cost_fraction": mean_std(r["cost_fraction"] for r in rs),
                "components_per_step": mean_std(r["components_per_step"] for r in rs),
                "components": rs[0]["components"],
                "tracking_pct": mean_std(r["tracking_pct"] for r in rs),
                "time_ratio": mean_std(ratios["time"]), "energy_ratio": mean_std(ratios["energy"]),
                "delta_vs_full": mean_std(ratios["delta"]),
                "ttt_s": mean_std(ttts), "ttt_ratio": mean_std(ratios["ttt"]),
                "ttt_energy_ratio": mean_std(ratios["ttt_energy"]), "reached": reached,
                "paired": len(ratios["time"]),
            }
        out[task] = rows
    return out


def paired_difference(records: list[dict], task: str, a: str, b: str) -> dict:
    """final(a) - final(b) per seed, over the seeds both ran."""
    by = defaultdict(dict)
    for r in records:
        if r["task"] == task and "error" not in r:
            by[r["method"]][r["seed"]] = r["final"]
    seeds = sorted(set(by.get(a, {})) & set(by.get(b, {})))
    diffs = [by[a][s] - by[b][s] for s in seeds]
    return {"diff": mean_std(diffs), "seeds": seeds, "diffs": diffs}


def _pm(ms, fmt="{:.3f}", scale=1.0) -> str:
    m, s, n = ms
    if n == 0:
        return "—"
    return fmt.format(m * scale) + (" ± " + fmt.replace("+", "").format(s * scale) if n > 1 else "")


COMPARISONS = [("rgft-top-p", "random-top-p", "equal count"), ("rgft-top-p", "static-top-p", "equal count"),
               ("rgft-budget", "random-budget", "equal cost"), ("rgft-budget", "static-budget", "equal cost"),
               ("rgft-budget", "elastic", "equal cost"), ("rgft-budget-act", "random-budget", "equal cost"),
               ("rgft-budget-act", "elastic", "equal cost")]


def verdict(d: dict, higher_is_better: bool) -> str:
    diffs = d["diffs"]
    if not diffs:
        return "not run"
    if all(x == 0 for x in diffs):
        return f"identical held-out result in {len(diffs)}/{len(diffs)} seeds"
    sign = 1 if higher_is_better else -1
    wins = sum(sign * x > 0 for x in diffs)
    m, s, n = d["diff"]
    if n == 1:
        return f"{'better' if sign * m > 0 else 'worse'} (one seed: no spread to judge noise)"
    word = "within noise" if abs(m) <= s else "better" if sign * m > 0 else "worse"
    return f"{word} ({wins}/{len(diffs)} seeds better)"


def answers(records: list[dict], derived: dict, higher: dict[str, bool]) -> list[str]:
    lines = []
    for task, rows in derived.items():
        hib = higher[task]
        unit = "accuracy points" if hib else "perplexity"
        scale = 100.0 if hib else 1.0
        lines.append(f"**{task}**")
        for a, b, how in COMPARISONS:
            if a in rows and b in rows:
                d = paired_difference(records, task, a, b)
                cost = f"est. step cost {rows[a]['cost_fraction'][0]:.2f} vs {rows[b]['cost_fraction'][0]:.2f}"
                lines.append(f"- {a} vs {b} ({how}; {cost}): {_pm(d['diff'], '{:+.2f}', scale)} {unit} — "
                             f"{verdict(d, hib)}")
        for m in ("rgft-budget", "rgft-budget-act", "rgft-top-p", "rgft-clip", "rgft-budget@onnxruntime"):
            r = rows.get(m)
            if not r:
                continue
            reach = (f"reaches {TARGET:.0%} of full fine-tuning's final {'accuracy' if hib else 'perplexity'} "
                     f"in {r['reached']}/{r['paired']} seeds, after {_pm(r['ttt_ratio'], '{:.2f}')} of full "
                     f"fine-tuning's time to the same target and {_pm(r['ttt_energy_ratio'], '{:.2f}')} of its "
                     f"energy" if r["reached"] else
                     f"does not reach {TARGET:.0%} of full fine-tuning's final value in any seed")
            lines.append(f"- {m}: whole run {_pm(r['time_ratio'], '{:.2f}')} of full fine-tuning's time, "
                         f"{_pm(r['energy_ratio'], '{:.2f}')} of its energy; {reach}.")
        ref = rows.get("rgft-budget")
        if ref:
            sign = 1 if hib else -1
            losses = [f"{m} is better by {abs(r['final'][0] - ref['final'][0]) * scale:.2f} {unit} at "
                      f"{r['time_ratio'][0] / ref['time_ratio'][0]:.2f}x rgft-budget's time"
                      for m, r in rows.items() if m != "rgft-budget" and "@" not in m  # same backend only
                      and sign * (r["final"][0] - ref["final"][0]) > max(ref["final"][1], r["final"][1])]
            lines.append("- where rgft-budget loses (better by more than the seed std): "
                         + ("; ".join(losses) if losses else "nowhere"))
        lines.append("")
    return lines


def markdown(meta: dict, records: list[dict], derived: dict, higher: dict[str, bool], methods: dict) -> str:
    out = [f"Mode `{meta['mode']}`: seeds {meta['seeds']}, {meta['threads']} threads, torch "
           f"{meta.get('torch')}, {meta['date']}; one process per (task, method, seed); methods interleaved "
           f"per seed. Harness wall time {meta.get('harness_wall_s', 0) / 60:.1f} min.",
           "Energy: " + ", ".join(sorted({s for rows in derived.values() for r in rows.values()
                                          for s in r["energy_source"]}))
           + " — training steps only (the meter's average power × training time); no sensor on this "
             "machine unless the source says `measured`.",
           "Ratios are paired by seed with full fine-tuning in the same harness run (`@onnxruntime` rows: "
           "with `full@onnxruntime`); time = summed "
           "training-step time (evaluations excluded). Backward GFLOPs are estimated from the "
           "component FLOP table (attention core under SDPA not counted).", ""]
    for task, rows in derived.items():
        hib = higher[task]
        metric = "accuracy" if hib else "perplexity"
        out += [f"### {task} — held-out {metric} (mean ± std over seeds)", "",
                f"| method | {metric} | train time (s) | × full time | energy (J) | × full energy | "
                f"time to {TARGET:.0%} of full (s) [seeds] | × full's time to it | backward GFLOPs (est.) | "
                "est. step cost | components/step | peak RSS (MB) | tracking % |",
                "|---|" + "---|" * 12]
        for m in methods:
            if m not in rows:
                continue
            r = rows[m]
            fin = _pm(r["final"], "{:.2f}", 100) if hib else _pm(r["final"], "{:.2f}")
            out.append(
                f"| {m} | {fin} | {_pm(r['train_time_s'], '{:.0f}')} | {_pm(r['time_ratio'], '{:.2f}')} | "
                f"{_pm(r['energy_j'], '{:.0f}')} | {_pm(r['energy_ratio'], '{:.2f}')} | "
                f"{_pm(r['ttt_s'], '{:.0f}')} [{r['reached']}/{r['paired']}] | {_pm(r['ttt_ratio'], '{:.2f}')} | "
                f"{_pm(r['backward_gflops_est'], '{:.0f}')} | {_pm(r['cost_fraction'], '{:.2f}')} | "
                f"{r['components_per_step'][0]:.1f}/{r['components']} | {_pm(r['peak_rss_mb'], '{:.0f}')} | "
                f"{_pm(r['tracking_pct'], '{:.2f}')} |")
        out.append("")
    out += ["### Answers (generated from the numbers above)", ""] + answers(records, derived, higher)
    errors = [r for r in records if "error" in r]
    if errors:
        out += ["### Runs that failed", ""] + [f"- {r['task']} / {r['method']} / seed {r['seed']}: "
                                               f"{' '.join(r['error'].split())[-300:]}" for r in errors]
    out += ["", "Methods: " + "; ".join(f"`{m}` {methods[m]}" for m in methods)]
    return "\n".join(out) + "\n"


def html_plots(records: list[dict], higher: dict[str, bool], methods: list[str]) -> str:
    from rgft_edge.runs.report import CSS, line_chart

    body = ["<h1>RGFT evidence: held-out metric vs training time</h1>",
            "<p>Mean over seeds at each evaluation (x: mean training seconds at that evaluation).</p>"]
    for task in dict.fromkeys(r["task"] for r in records):
        series, legend = [], []
        for i, m in enumerate(methods):
            curves = [r["curve"] for r in records if r["task"] == task and r["method"] == m and "error" not in r]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            xs = [float(np.mean([c[j][1] for c in curves])) for j in range(n)]
            ys = [float(np.mean([c[j][2] for c in curves])) for j in range(n)]
            color = PALETTE[i % len(PALETTE)]
            series.append((m, xs, ys, color))
            legend.append(f'<span style="color:{color}">■ {m}</span>')
        metric = "accuracy" if higher[task] else "perplexity"
        body.append(f"<h2>{task}</h2><p>{' '.join(legend)}</p>")
        body.append(line_chart(series, f"{task}: held-out {metric}", legend=False, x_label="training time (s)"))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>RGFT evidence</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
