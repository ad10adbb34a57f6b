"""Federated RGFT against FedAvg of the full model and FedAvg of LoRA adapters, in one harness.

Each (method, seed) is one Flower simulation in its own child process: N clients on a Dirichlet(α)
non-IID split of a shipped dataset, the same rounds, local steps, batch and held-out split for
every method; the server evaluates the global model on the held-out split after every round.
Recorded per round: test accuracy, uplink bytes (the accepted replies' array payloads), downlink
bytes, each client's training time, median step time and energy (with its source).

LR per method: chosen on seed 0 from `--lr-factors` × its default, by validation accuracy (a split
carved from the training data before it is dealt out; mean of the last two rounds) after
`--choose-rounds` rounds; the test split is never used to choose. Then every seed runs with it.

Derived per seed: the target is 99% of FedAvg-full's final accuracy (same seed); a method's
"uplink to target" is its cumulative uplink bytes at the end of the first round whose accuracy
reaches the target (rounds are discrete: no interpolation). Verdicts use the paired rule of the
equal-time harness (better / worse / tie; a seed that never reaches the target counts as behind).

    python benchmarks/fleet.py [--methods fedavg-full fedavg-lora rgft rgft-int8 rgft-lora]
        [--seeds 0] [--rounds 20] [--local-steps 5] [--clients 10] [--data bbc-news]
        [--lr-factors 1 3] [--choose-rounds 6] [--resume | --analyse-only]

`--resume` keeps finished runs (runs.jsonl) and continues an interrupted one from its server
checkpoint. Writes benchmarks/results/fleet/{fleet.json, fleet.md, fleet.svg, runs.jsonl}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, run_child, write_results  # noqa: E402
from compare_analysis import mean_std, paired_rule  # noqa: E402

# benchmark method -> (fleet method, coding, default LR); a coded variant takes its uncoded twin's LR
METHODS = {
    "fedavg-full": ("fedavg-full", "none", 1e-4),
    "fedavg-lora": ("fedavg-lora", "none", 1e-3),
    "rgft": ("rgft", "none", 1e-4),
    "rgft-int8": ("rgft", "int8", 1e-4),
    "rgft-lora": ("rgft-lora", "none", 1e-3),
    "rgft-lora-int8": ("rgft-lora", "int8", 1e-3),
    "fedavg-lora-int8": ("fedavg-lora", "int8", 1e-3),
}
# (the LoRA variants train the same adapters as fedavg-lora, so they take its LR)
LR_FROM = {"rgft-int8": "rgft", "rgft-lora": "fedavg-lora", "rgft-lora-int8": "fedavg-lora",
           "fedavg-lora-int8": "fedavg-lora"}
# Upload budget (bytes as sent, share of the float32 trainable state) where it differs from
# --upload-budget: int8 deltas buy ~4x the components per byte, so rgft-int8 gets half the bytes (set
# before any run, from the target arithmetic: uplink to target / FedAvg-full's = budget x rounds to
# target / FedAvg-full's rounds). rgft-lora-int8's 0.15 (of the LoRA state: ~7 of 12 adapters plus
# the head) was set after FedAvg-LoRA's seed-0 run had shown its bytes per round, before any
# rgft-lora run; nothing was chosen on a rgft-lora result.
BUDGET = {"rgft-int8": 0.05, "rgft-lora-int8": 0.15}
TARGET = 0.99
REFERENCE = "fedavg-full"


def child(args) -> None:
    from rgft_edge.fleet import FleetConfig, simulate

    method, coding, _ = METHODS[args.child]
    run_dir = Path(args.out) / "runs" / f"{args.phase}-{args.child}-lr{args.lr:g}-r{args.rounds}-s{args.seed}"
    cfg = FleetConfig(method=method, coding=coding, lr=args.lr, data=args.data, clients=args.clients,
                      alpha=args.alpha, rounds=args.rounds, local_steps=args.local_steps,
                      batch_size=args.batch_size, upload_budget=BUDGET.get(args.child, args.upload_budget),
                      held_out=args.held_out,
                      seed=args.seed, min_clients=args.clients, out=str(run_dir),
                      resume=(run_dir / "fleet_state.json").is_file())
    t0 = time.perf_counter()
    result = simulate(cfg)
    print("RESULT " + json.dumps({"method": args.child, "seed": args.seed, "phase": args.phase, "lr": args.lr,
                                  "wall_s": time.perf_counter() - t0,
                                  "resumed": cfg.resume, **result}), flush=True)


def summarise(run: dict) -> dict:
    """Per-run figures: accuracy curve, bytes, client costs."""
    hist = run["history"]
    rounds = [h for h in hist if h["round"] > 0]
    clients = [c for h in rounds for c in h["clients"]]
    sources = sorted({c.get("energy_source", "") for c in clients})
    return {
        "acc": [h["accuracy"] for h in hist], "uplink": [h["uplink_bytes"] for h in hist],
        "downlink": [h["downlink_bytes"] for h in hist],
        "final_acc": hist[-1]["accuracy"],
        "last5_acc": float(np.mean([h["accuracy"] for h in rounds[-5:]])),  # one round's ±1-2 points matter less
        "min_acc_after_target": None,  # set by analyse, which knows the target
        "uplink_per_round": float(np.mean([h["uplink_bytes"] for h in rounds])),
        "downlink_per_round": float(np.mean([h["downlink_bytes"] for h in rounds])),
        "client_step_s": float(np.median([c["metrics"]["median-step-s"] for c in clients])),
        "client_train_s": float(np.mean([c["metrics"]["train-time-s"] for c in clients])),
        "client_energy_j": float(np.mean([c["metrics"]["energy-j"] for c in clients])),
        "energy_source": ", ".join(s for s in sources if s) or "unknown",
        "components": float(np.mean([c["metrics"]["components"] for c in clients])),
        "coding_error": float(np.mean([c["metrics"].get("coding-rel-error", 0.0) for c in clients])),
        "refused": sum(len(h["refused"]) for h in rounds),
        "no_reply": sum(h.get("no_reply", 0) for h in rounds),
    }


def to_target(s: dict, target: float) -> tuple[int | None, float | None]:
    """(round, cumulative uplink bytes) when the accuracy first reaches the target."""
    total = 0.0
    for r, (acc, up) in enumerate(zip(s["acc"], s["uplink"])):
        total += up
        if r > 0 and acc >= target - 1e-12:
            return r, total
    return None, None


TIMED = ("client_step_s", "client_train_s", "client_energy_j")  # depend on what else shares the machine


def shared(method: str, seed: int, shared_runs: list[str] | None) -> bool:
    """Whether a run shared the machine with other work ("METHOD:SEED", "*:SEED" or "METHOD:*")."""
    return any(m in ("*", method) and s in ("*", str(seed)) for m, s in (x.split(":", 1) for x in shared_runs or []))


def analyse(runs: list[dict], methods: list[str], shared_runs: list[str] | None = None) -> tuple[list[dict], dict]:
    """Rows per method and the paired verdicts. The time and energy columns leave out `shared_runs`
    (runs that shared the machine with other work); bytes and accuracy do not depend on other load as
    long as every client answers within the round deadline (the missing-replies column says so)."""
    by = {(r["method"], r["seed"]): summarise(r) for r in runs}
    seeds = sorted({r["seed"] for r in runs if r["method"] == REFERENCE})
    rows, verdicts = [], {}
    ref_bytes = {}
    for seed in seeds:
        ref = by[(REFERENCE, seed)]
        _, ref_bytes[seed] = to_target(ref, TARGET * ref["final_acc"])
    for m in methods:
        per = [(seed, by[(m, seed)]) for seed in seeds if (m, seed) in by]
        if not per:
            continue
        hit = []
        for seed, s in per:
            target = TARGET * by[(REFERENCE, seed)]["final_acc"]
            rnd, up = to_target(s, target)
            hit.append({"seed": seed, "round": rnd, "uplink": up,
                        "ratio": up / ref_bytes[seed] if up is not None and ref_bytes[seed] else None})
        row = {"method": m, "seeds": [seed for seed, _ in per], "per_seed_to_target": hit}
        for seed, s in per:
            rnd = to_target(s, TARGET * by[(REFERENCE, seed)]["final_acc"])[0]
            s["min_acc_after_target"] = min(s["acc"][rnd:]) if rnd is not None else None
        for key in ("final_acc", "last5_acc", "min_acc_after_target", "uplink_per_round", "downlink_per_round", "client_step_s", "client_train_s",
                    "client_energy_j", "components", "coding_error"):
            row[key] = mean_std([s[key] for seed, s in per if key not in TIMED or not shared(m, seed, shared_runs)])
        row["energy_source"] = per[0][1]["energy_source"]
        row["refused"] = sum(s["refused"] for _, s in per)
        row["no_reply"] = sum(s["no_reply"] for _, s in per)
        row["reached"] = sum(h["round"] is not None for h in hit)
        row["rounds_to_target"] = mean_std([h["round"] for h in hit if h["round"] is not None])
        row["uplink_to_target"] = mean_std([h["uplink"] for h in hit if h["uplink"] is not None])
        row["ratio_to_full"] = mean_std([h["ratio"] for h in hit if h["ratio"] is not None])
        rows.append(row)
    for m in methods:
        for other in ("fedavg-full", "fedavg-lora", "fedavg-lora-int8"):  # the last: same coding as rgft-lora-int8
            if m == other or not any(r["method"] == m for r in rows) or not any(r["method"] == other for r in rows):
                continue
            favour = []
            for seed in seeds:
                if (m, seed) not in by or (other, seed) not in by:
                    continue
                target = TARGET * by[(REFERENCE, seed)]["final_acc"]
                _, a = to_target(by[(m, seed)], target)
                _, b = to_target(by[(other, seed)], target)
                favour.append(0.0 if a is None and b is None else -math.inf if a is None else
                              math.inf if b is None else b - a)
            verdicts[f"{m} vs {other}"] = paired_rule(favour)
    return rows, verdicts


def _ms(ms, fmt="{:.3f}", scale=1.0) -> str:
    mean, std, n = ms
    if n == 0:
        return "—"
    return fmt.format(mean * scale) + (f" ± {fmt.format(std * scale)}" if n > 1 else "")


def markdown(meta: dict, rows: list[dict]) -> str:
    a = meta["args"]
    lines = ["# Federated fine-tuning: RGFT-fleet vs FedAvg (full model, LoRA)\n",
             f"{a['clients']} clients, Dirichlet α = {a['alpha']} over labels of `{a['data']}`, {a['rounds']} rounds, "
             f"{a['local_steps']} local steps of batch {a['batch_size']} per client per round, every client every round; "
             "upload budget: bytes a client sends per round (after coding) as a share of the float32 trainable state; "
             f"held-out {a['held_out']} examples evaluated by the server after each round. Seeds {meta['seeds']}; "
             f"MiniLM (all-MiniLM-L6-v2), {meta['environment']['cpu']}, {meta['environment']['date']}, "
             f"flwr {meta['environment']['flwr']}, torch {meta['environment']['torch']}, 1 thread per client, "
             f"{meta['parallel']} client processes at once (Flower simulation, Ray).\n",
             ("" if not meta.get("shared_runs") else
              f"Client step, train time and energy leave out the runs that shared the machine with other work "
              f"({', '.join(meta['shared_runs'])}): it slows clients; it changes no byte or accuracy while every "
              "client answers within the round deadline (last column).\n"),
             f"Target: {TARGET:.0%} of FedAvg-full's final accuracy (same seed). Uplink to target: cumulative bytes of "
             "the accepted replies' arrays until the end of the first round at or above it. Energy: "
             f"{meta['energy_note']}\n",
             "| method | LR | upload budget | final accuracy | mean of last 5 rounds | lowest after reaching the target | rounds to target [seeds] | uplink to target (MB) | × FedAvg-full's | "
             "uplink / round (MB) | downlink / round (MB) | components / client-round | client step (ms) | "
             "client train / round (s) | client energy / round (J) | int8 rel. error | refused / missing replies |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(" | ".join([
            f"| {r['method']}", f"{meta['lrs'][r['method']]:g}",
            "all" if r["method"].startswith("fedavg") else f"{BUDGET.get(r['method'], a['upload_budget']):g}",
            _ms(r["final_acc"], "{:.2f}", 100), _ms(r["last5_acc"], "{:.2f}", 100),
            _ms(r["min_acc_after_target"], "{:.2f}", 100),
            f"{_ms(r['rounds_to_target'], '{:.1f}')} [{r['reached']}/{len(r['seeds'])}]",
            _ms(r["uplink_to_target"], "{:.1f}", 1e-6), _ms(r["ratio_to_full"], "{:.4f}"),
            _ms(r["uplink_per_round"], "{:.2f}", 1e-6), _ms(r["downlink_per_round"], "{:.1f}", 1e-6),
            _ms(r["components"], "{:.1f}"), _ms(r["client_step_s"], "{:.0f}", 1e3), _ms(r["client_train_s"], "{:.2f}"),
            _ms(r["client_energy_j"], "{:.1f}"), _ms(r["coding_error"], "{:.4f}"),
            f"{r['refused']} / {r['no_reply']} |"]))
    lines += ["", f"LR per method, chosen on seed 0 by validation accuracy after {a['choose_rounds']} rounds "
              f"(factors {a['lr_factors']} of the default):", ""]
    for m, c in meta["chosen"].items():
        grid = f"as {c['from']}" if "from" in c else ", ".join(f"{lr:g}: {v:.4f}" for lr, v in c["grid"])
        lines.append(f"- {m}: **{c['lr']:g}** ({grid})")
    lines += ["", "## Verdicts (uplink bytes to the target, paired over seeds)", ""]
    for k, v in meta["verdicts"].items():
        lines.append(f"- {k}: **{v['word']}** (ahead in {v['ahead']} of {v['n']} seeds, {v['need']} needed)")
    lines += ["", "![accuracy vs cumulative uplink](fleet.svg)", ""]
    return "\n".join(lines)


def svg_plot(runs: list[dict], methods: list[str], path: Path) -> None:
    """Accuracy against cumulative uplink bytes (log scale), one line per method and seed."""
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    W, H, L, B = 760, 420, 60, 40
    pts = []
    for r in runs:
        s = summarise(r)
        xs = np.cumsum(s["uplink"])[1:]
        pts.append((r["method"], r["seed"], xs, s["acc"][1:]))
    allx = np.concatenate([p[2] for p in pts if len(p[2])]) if pts else np.array([1.0])
    lo, hi = math.log10(max(1.0, allx.min())), math.log10(max(10.0, allx.max()))
    accs = [a for p in pts for a in p[3]] or [0, 1]
    ylo, yhi = min(accs) - 0.02, min(1.0, max(accs) + 0.02)
    fx = lambda x: L + (math.log10(max(x, 1.0)) - lo) / max(hi - lo, 1e-9) * (W - L - 170)
    fy = lambda y: H - B - (y - ylo) / max(yhi - ylo, 1e-9) * (H - B - 20)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<line x1="{L}" y1="{H - B}" x2="{W - 170}" y2="{H - B}" stroke="black"/>',
           f'<line x1="{L}" y1="20" x2="{L}" y2="{H - B}" stroke="black"/>',
           f'<text x="{(W - 170) / 2}" y="{H - 8}" text-anchor="middle">cumulative uplink bytes (log)</text>',
           f'<text x="14" y="{H / 2}" transform="rotate(-90 14 {H / 2})" text-anchor="middle">held-out accuracy</text>']
    for e in range(int(math.floor(lo)), int(math.ceil(hi)) + 1):
        x = fx(10 ** e)
        if L <= x <= W - 170:
            out.append(f'<text x="{x:.0f}" y="{H - B + 15}" text-anchor="middle">1e{e}</text>')
    for t in np.linspace(ylo, yhi, 5):
        out.append(f'<text x="{L - 5}" y="{fy(t) + 4:.0f}" text-anchor="end">{t:.2f}</text>')
    for i, m in enumerate(methods):
        c = colours[i % len(colours)]
        for method, seed, xs, ys in pts:
            if method == m and len(xs):
                poly = " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y in zip(xs, ys))
                out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{poly}"/>')
        out.append(f'<text x="{W - 160}" y="{30 + 18 * i}" fill="{c}">{m}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out))


def choose_lrs(runs: list[dict], methods: list[str]) -> dict[str, dict]:
    """Per method, the LR whose choice run ends with the best validation accuracy (mean of the last
    two rounds)."""
    out = {}
    for m in methods:
        cands = [(float(np.mean([h["val_accuracy"] for h in r["history"][-2:]])), r["lr"])
                 for r in runs if r["method"] == m and r.get("phase") == "choose"]
        if cands:
            best = max(cands)
            out[m] = {"lr": best[1], "val_accuracy": best[0], "grid": sorted((lr, v) for v, lr in cands)}
    return out


def _run_one(args, out: Path, log: Path, done: list, phase: str, m: str, seed: int, lr: float, rounds: int) -> None:
    if any(r["method"] == m and r["seed"] == seed and r.get("phase") == phase and r["lr"] == lr
           and len(r["history"]) == rounds + 1 for r in done):
        return
    argv = [sys.executable, __file__, "--child", m, "--seed", str(seed), "--out", str(out), "--phase", phase,
            "--lr", repr(lr), "--rounds", str(rounds)]
    for k in ("local_steps", "clients", "alpha", "batch_size", "upload_budget", "held_out", "data"):
        argv += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
    print(f"[fleet] {phase} {m} lr {lr:g} seed {seed} ...", flush=True)
    rec = run_child(argv, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if "error" in rec:
        print(f"[fleet] {phase} {m} seed {seed} failed: {rec['error']}", flush=True)
        return
    done.append(rec)
    with log.open("a") as f:
        f.write(json.dumps(rec) + "\n")
    h = rec["history"][-1]
    print(f"[fleet] {phase} {m} lr {lr:g} seed {seed}: test {h['accuracy']:.4f}, validation "
          f"{h.get('val_accuracy', float('nan')):.4f} in {rec['wall_s']:.0f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=["fedavg-full", "fedavg-lora", "rgft", "rgft-int8", "rgft-lora"],
                    choices=list(METHODS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--local-steps", type=int, default=5)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=0.3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--upload-budget", type=float, default=0.1)
    ap.add_argument("--held-out", type=int, default=400)
    ap.add_argument("--data", default="bbc-news")
    ap.add_argument("--lr-factors", nargs="+", type=float, default=[1.0, 3.0])
    ap.add_argument("--choose-rounds", type=int, default=6)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "fleet"))
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--shared-runs", nargs="+", default=None, metavar="METHOD:SEED",
                    help="runs that shared the machine with other work ('*' matches any): left out of the time "
                         "and energy columns")
    ap.add_argument("--analyse-only", action="store_true",
                    help="run nothing: write the tables from the finished runs in runs.jsonl")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--phase", default="main", help=argparse.SUPPRESS)
    ap.add_argument("--lr", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.jsonl"
    keep_runs = args.resume or args.analyse_only
    done = [json.loads(line) for line in log.read_text().splitlines()] if keep_runs and log.is_file() else []
    if not keep_runs:
        log.write_text("")
    methods = [REFERENCE] + [m for m in args.methods if m != REFERENCE]
    for m in methods:  # 1. the LR per method, on validation, seed 0
        for f in args.lr_factors:
            if m not in LR_FROM and not args.analyse_only:
                _run_one(args, out, log, done, "choose", m, 0, METHODS[m][2] * f, args.choose_rounds)
    chosen = choose_lrs(done, methods)
    chosen.update({m: {**chosen[LR_FROM[m]], "from": LR_FROM[m]} for m in methods
                   if m in LR_FROM and LR_FROM[m] in chosen})
    for seed in args.seeds:  # 2. every seed with the chosen LR
        for m in methods:
            if m in chosen and not args.analyse_only:
                _run_one(args, out, log, done, "main", m, seed, chosen[m]["lr"], args.rounds)
    runs = [r for r in done if r.get("phase") == "main" and r["method"] in methods and r["seed"] in args.seeds
            and r["lr"] == chosen.get(r["method"], {}).get("lr") and len(r["history"]) == args.rounds + 1]
    if not any(r["method"] == REFERENCE for r in runs):
        sys.exit("no FedAvg-full run finished: nothing to compare against")
    rows, verdicts = analyse(runs, methods, args.shared_runs)
    import flwr

    keep = {k: getattr(args, k) for k in ("rounds", "local_steps", "clients", "alpha", "batch_size",
                                          "upload_budget", "held_out", "data", "lr_factors", "choose_rounds")}
    meta = {"args": keep, "seeds": sorted({r["seed"] for r in runs}), "shared_runs": args.shared_runs,
            "verdicts": verdicts, "chosen": chosen,
            "lrs": {m: c["lr"] for m, c in chosen.items()},
            "parallel": os.cpu_count(), "environment": environment(flwr=flwr.__version__, threads=1),
            "energy_note": "source as the clients' meters reported it: "
                           + "; ".join(sorted({r["energy_source"] for r in rows})) + ".",
            "runs": [{k: r.get(k) for k in ("method", "seed", "lr", "wall_s", "resumed")} for r in runs]}
    write_results(out, "fleet", meta, rows, markdown)
    svg_plot(runs, methods, out / "fleet.svg")


if __name__ == "__main__":
    main()
