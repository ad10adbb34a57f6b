"""The evidence as text and pictures: markdown tables, paired-verdict tables, generated answers,
the LR grid table and the HTML plots, from what `compare_analysis.py` derived (no torch here)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from compare_analysis import (COST_TOLERANCE, PPL_TARGET, TARGET, compare_pair, comparisons, is_rgft, mean_std,
                              plus_minus, reference_of, target_for)

PALETTE = ["#000000", "#7f7f7f", "#bcbd22", "#e377c2", "#8c564b", "#1f77b4", "#17becf", "#d62728",
           "#ff7f0e", "#aec7e8", "#2ca02c", "#9467bd", "#98df8a", "#c5b0d5", "#ff9896"]


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
            f"| {a} | {b} | {plus_minus(mean_std(c['test_diff']), '{:+.2f}', scale)} | "
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
                     f"{plus_minus(r['ttt_ratio'], '{:.2f}')} of {ref}'s own time to it and "
                     f"{plus_minus(r['ttt_energy_ratio'], '{:.2f}')} of its energy to it" if r["reached"] else
                     f"does not reach the target ({tw}) in any seed within T")
            lines.append(f"- {m}: test {what} at equal time {plus_minus(r['delta_vs_full'], '{:+.2f}', scale)} {unit} "
                         f"vs {ref}; {reach}; measured step time {plus_minus(r['step_time_ratio'], '{:.2f}')} of {ref}'s.")
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
                f"Equal training time T per seed: {et}."
                + (f" Budget of the budget-matched methods: {meta['tasks'][task]['budget']} of a full step's "
                   "measured time." if meta.get("tasks", {}).get(task, {}).get("budget") else ""), "",
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
                f"| {m} | {r['lr']:.3g} | {plus_minus(r['final'], '{:.2f}', sc)} | {plus_minus(r['val_final'], '{:.2f}', sc)} | "
                f"{plus_minus(r['train_time_s'], '{:.1f}')} | {plus_minus(r['steps'], '{:.0f}')} | "
                f"{plus_minus(r['energy_j'], '{:.0f}')} | {plus_minus(r['energy_ratio'], '{:.2f}')} | "
                f"{plus_minus(r['ttt_s'], '{:.1f}')} [{r['reached']}/{r['paired']}] | {plus_minus(r['ttt_ratio'], '{:.2f}')} | "
                f"{plus_minus(r['ttt_energy_ratio'], '{:.2f}')} | {plus_minus(r['step_time_ratio'], '{:.2f}')} | "
                f"{plus_minus(r['cost_fraction'], '{:.2f}')} [{unit}] | {plus_minus(r['calibration_s_est'], '{:.1f}')} | "
                f"{plus_minus(r['backward_gflops_est'], '{:.0f}')} | "
                f"{r['components_per_step'][0]:.1f}/{r['components']} | {plus_minus(r['peak_rss_mb'], '{:.0f}')} | "
                f"{plus_minus(r['tracking_pct'], '{:.2f}')} |")
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
