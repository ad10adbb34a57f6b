"""On-device runners side by side: torch eager, ExecuTorch and ONNX Runtime on compiled MiniLM.

For each artifact (compiled beforehand with `rgft-edge compile`) and each policy, one child process
(so peak RSS is that run's alone) trains on fixed Rotten Tomatoes batches through the shared loop
and reports: median step time, step time per backprop program (cut depth), peak RSS, the FLOPs
model's backward work, and the programs used. Methods and backends interleave per repeat.

    python benchmarks/runners.py --artifacts DIR [DIR ...] [--steps 14] [--threads 2]
        [--executorch-runtimes native bindings]

Writes benchmarks/results/runners.json and runners.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, run_child, write_results  # noqa: E402

POLICIES = {"full": dict(policy="full"), "top-p 0.3": dict(policy="top-p", top_p=0.3),
            "budget 0.4": dict(policy="budget", budget=0.4),
            # `rgft-edge train`'s default: half the backward work on top of the forward floor
            "budget auto": dict(policy="budget", budget=None),
            "budget 0.5": dict(policy="budget", budget=0.5), "head-only": dict(policy="head-only")}


def child(artifact: str, policy: str, steps: int, threads: int, seed: int) -> dict:
    import numpy as np

    from rgft_edge.artifact import load_artifact
    from rgft_edge.costs import CostModel
    from rgft_edge.data import rotten_tomatoes
    from rgft_edge.error_map import ErrorMap
    from rgft_edge.loop import LoopSettings, train
    from rgft_edge.meters import MemoryMeter
    from rgft_edge.optim import ComponentAdamW
    from rgft_edge.policies import make_policy
    from rgft_edge.backend import open_backend
    from rgft_edge.text import TextEncoder, batches

    art = load_artifact(artifact)
    spec = art.manifest["input_spec"]
    mem = MemoryMeter().start()
    backend = open_backend(art, threads)
    ds = rotten_tomatoes()
    enc = TextEncoder(art.root / "tokenizer", spec["max_length"], spec["names"], pad_to_max=True)
    data = list(batches(enc, ds.texts[: spec["batch_size"] * steps], ds.labels[: spec["batch_size"] * steps],
                        spec["batch_size"], seed=seed, drop_last=True))
    table = backend.table
    cost = CostModel(table, spec["batch_size"])
    opts = dict(POLICIES[policy])
    if opts.get("policy") == "budget" and opts["budget"] is None:
        opts["budget"] = cost.floor + 0.5 * (1 - cost.floor)
    try:
        pol = make_policy(opts.pop("policy"), table, seed=seed, **opts)
    except ValueError as e:
        return {"error": str(e)}
    records: list[dict] = []
    train(backend, pol, ErrorMap(len(table)), ComponentAdamW(table, 1e-3), data, LoopSettings(),
          cost=cost, on_step=records.append)
    peak = mem.stop()
    steady = records[2:]  # the probe step and one warm-up step excluded
    by_cut: dict[str, list[float]] = {}
    for r in steady:
        by_cut.setdefault(str(r.get("cut_depth", "eager")), []).append(r["step_time_s"])
    return {"median_step_s": statistics.median(r["step_time_s"] for r in steady),
            "step_s_by_cut_depth": {k: statistics.median(v) for k, v in by_cut.items()},
            "steps_by_cut_depth": {k: len(v) for k, v in by_cut.items()},
            "peak_rss_bytes": peak, "backward_fraction_est": float(np.mean([cost.backward_flops(
                np.isin(np.arange(len(table)), r["selected"])) / max(1.0, cost.full - cost.forward_total)
                for r in steady])),
            "mean_selected": float(np.mean([len(r["selected"]) for r in steady])),
            "components": len(table), "backend": backend.name,
            "artifact_kind": {"quantization": art.manifest["quantization"]["scheme"],
                         "adapter": art.manifest["adapter"]["kind"], "granularity": table.granularity}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artifacts", nargs="*", default=[])
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policies", nargs="*", default=list(POLICIES)[:4], choices=list(POLICIES))
    ap.add_argument("--executorch-runtimes", nargs="+", default=["native"], choices=["native", "bindings"],
                    help="run each ExecuTorch artifact through these runtimes (RGFT_EDGE_EXECUTORCH_RUNTIME)")
    ap.add_argument("--name", default="runners", help="results file stem (NAME.json, NAME.md)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--child", nargs=2, metavar=("ARTIFACT", "POLICY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child[0], args.child[1], args.steps, args.threads, args.seed)))
        return
    rows = []
    for rep in range(args.repeats):
        for policy in args.policies:
            for art in args.artifacts:
                backend = json.loads((Path(art) / "manifest.json").read_text())["backend"]
                for runtime in args.executorch_runtimes if backend == "executorch" else [None]:
                    t0 = time.perf_counter()
                    env = {**os.environ, **({"RGFT_EDGE_EXECUTORCH_RUNTIME": runtime} if runtime else {})}
                    res = run_child([sys.executable, __file__, "--child", art, policy, "--steps", str(args.steps),
                                     "--threads", str(args.threads), "--seed", str(args.seed)], env=env)
                    label = Path(art).name + (f" [{runtime}]" if runtime and len(args.executorch_runtimes) > 1 else "")
                    rows.append({"artifact": label, "policy": policy, "repeat": rep, "executorch_runtime": runtime,
                                 "wall_s": time.perf_counter() - t0, **res})
                    print(rows[-1]["artifact"], policy, res.get("median_step_s", res.get("error")), flush=True)
    meta = environment(steps=args.steps, excluded_steps=2, repeats=args.repeats, threads=args.threads,
                       executorch_runtimes=args.executorch_runtimes,
                       seed=args.seed, batch="16x64 (artifact input spec)")
    write_results(args.out, args.name, meta, rows, markdown)


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"{meta['steps']} steps per run ({meta['excluded_steps']} excluded), {meta['threads']} threads, "
             f"seed {meta['seed']}, batch {meta['batch']}, {meta['date']}; one process per run.\n",
             "| artifact | policy | median step (ms) | step (ms) by backprop cut depth [steps] | peak RSS (MB) | est. backward work vs full | components/step |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            why = " ".join(r["error"].split())[:90].replace("|", "/")
            lines.append(f"| {r['artifact']} | {r['policy']} | refused: {why} | | | | |")
            continue
        cuts = ", ".join(f"{'d' + k if k.isdigit() else k}: {v * 1000:.0f} [{r['steps_by_cut_depth'][k]}]"
                         for k, v in sorted(r["step_s_by_cut_depth"].items(), key=lambda kv: (len(kv[0]), kv[0])))
        lines.append(f"| {r['artifact']} | {r['policy']} | {r['median_step_s'] * 1000:.0f} | {cuts} | "
                     f"{r['peak_rss_bytes'] / 1e6:.0f} | {r['backward_fraction_est']:.2f} | "
                     f"{r['mean_selected']:.1f}/{r['components']} |")
    return "\n".join(lines + ratio_table(rows)) + "\n"


def ratio_table(rows: list[dict]) -> list[str]:
    """Medians over repeats, as ratios: each artifact's full step against the torch artifact of
    the same kind (quantization + adapter), and each policy's step against the artifact's own full
    step."""
    ok = [r for r in rows if "error" not in r]
    med: dict[tuple, float] = {}
    for key in {(r["artifact"], r["policy"]) for r in ok}:
        med[key] = statistics.median(r["median_step_s"] for r in ok if (r["artifact"], r["policy"]) == key)
    kind = {r["artifact"]: (r["artifact_kind"]["quantization"], r["artifact_kind"]["adapter"]) for r in ok}
    eager = {kind[r["artifact"]]: med[(r["artifact"], "full")] for r in ok
             if r["backend"] == "torch" and (r["artifact"], "full") in med}
    peak = {}
    for r in ok:
        peak.setdefault(r["artifact"], []).append(r["peak_rss_bytes"])
    policies = [p for p in POLICIES if any(r["policy"] == p for r in ok) and p != "full"]
    out = ["", "Ratios (medians over repeats): full step vs the torch artifact of the same kind; "
           "other policies vs the artifact's own full step.", "",
           "| artifact | full step (ms) | full vs eager torch | " + " | ".join(f"{p} vs own full" for p in policies)
           + " | peak RSS, max over runs (MB) |",
           "|---|---|---|" + "---|" * len(policies) + "---|"]
    for art in sorted(kind):
        full = med.get((art, "full"))
        if full is None:
            continue
        ref = eager.get(kind[art])
        cells = [f"{med[(art, p)] / full:.2f}" if (art, p) in med else "—" for p in policies]
        out.append(f"| {art} | {full * 1000:.0f} | {f'{full / ref:.2f}' if ref else '—'} | "
                   + " | ".join(cells) + f" | {max(peak[art]) / 1e6:.0f} |")
    return out


if __name__ == "__main__":
    main()
