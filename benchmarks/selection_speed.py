"""Per-step selection time of the knapsack policies (`paced`, `budget`) on realistic cost tables.

The tables come from the project's own partitioner (block granularity, embeddings frozen, as
`finetune` builds them) run on random-init models with the shipped models' shapes: SmolLM2-135M
(Llama, 30 layers: 61 components) and all-MiniLM-L6-v2 (BERT, 6 layers: 14 components). No
weights are loaded; one profiled forward pass prices the components.

Each repeat replays the same simulated run (`--steps` steps, fixed seed): scores drift like an
error map, the staleness rule forces the deepest component every 20 steps (the loop then asks
twice in that step, as it does in training). Reported: the median over repeats of the mean
selection time per step. Only the policy calls are timed.

    python benchmarks/selection_speed.py [--steps 200] [--repeats 5] [--label after]

Writes selection_speed.json and selection_speed.md into --out; results of other labels already
in the JSON (e.g. `before`) are kept, so one file holds the comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import environment  # noqa: E402

BUDGET = 0.5  # the policies' default --budget


def smollm2_like():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg), 64


def minilm_like():
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                     intermediate_size=1536, num_labels=2)
    return BertForSequenceClassification(cfg), 64


def cost_model(build, batch_size: int = 16):
    import torch

    from rgft_edge.costs import CostModel
    from rgft_edge.partition import build_component_table, freeze_embeddings

    torch.manual_seed(0)
    model, seq = build()
    freeze_embeddings(model)
    example = {"input_ids": torch.randint(5, 1000, (2, seq)),
               "attention_mask": torch.ones(2, seq, dtype=torch.long)}
    return CostModel(build_component_table(model, "block", example), batch_size=batch_size)


def simulate(make, cost, steps: int, seed: int = 0) -> float:
    """Mean seconds per step spent in `select` over one simulated run."""
    k = len(cost.depth)
    rng = np.random.default_rng(seed)
    scores = rng.lognormal(0.0, 1.0, k)
    deepest = int(np.argmin(cost.depth))
    pol = make()
    spent = 0.0
    for step in range(steps):
        scores = scores * rng.lognormal(0.0, 0.1, k)  # the error map drifts
        forced = np.zeros(k, bool)
        t0 = time.perf_counter()
        if step and step % 20 == 0:
            forced[deepest] = True
            pol.select(scores, step, np.zeros(k, bool))  # the loop's first ask, then with forced
        pol.select(scores, step, forced)
        spent += time.perf_counter() - t0
    return spent / steps


def main(argv=None) -> None:
    from rgft_edge.policies import Knapsack, Paced, ScorePolicy

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--label", default="after")
    ap.add_argument("--note", default="", help="what code this label measured (e.g. a commit)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)

    rows = []
    for name, build in (("smollm2-135m-like (Llama)", smollm2_like), ("minilm-l6-like (BERT)", minilm_like)):
        cost = cost_model(build)
        policies = {"paced": lambda: Paced(Knapsack(cost, BUDGET), bank=1.0),
                    "budget": lambda: ScorePolicy(Knapsack(cost, BUDGET))}
        for pname, make in policies.items():
            simulate(make, cost, 5)  # warm-up
            per_step = [simulate(make, cost, args.steps) for _ in range(args.repeats)]
            rows.append({"table": name, "components": len(cost.depth),
                         "cut_depths": int(len(np.unique(cost.depth))), "policy": pname,
                         "median_ms_per_step": 1e3 * statistics.median(per_step),
                         "repeats_ms": [round(1e3 * t, 4) for t in per_step]})
            print(f"{args.label:>8} {name:28} {pname:7} {rows[-1]['median_ms_per_step']:.3f} ms/step",
                  flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "selection_speed.json"
    runs = json.loads(path.read_text())["runs"] if path.exists() else {}
    runs[args.label] = {"meta": environment(numpy=np.__version__, steps=args.steps, repeats=args.repeats,
                                            budget=BUDGET, processor=platform.processor() or None,
                                            loadavg_1min=round(os.getloadavg()[0], 2), note=args.note),
                        "results": rows}
    path.write_text(json.dumps({"runs": runs}, indent=1))
    (out / "selection_speed.md").write_text(markdown(runs))
    print(markdown(runs))


def markdown(runs: dict) -> str:
    labels = list(runs)
    lines = ["# Selection time per step (knapsack policies)", "",
             "Median over repeats of the mean `select` time per simulated step (budget "
             f"{BUDGET}; staleness forces the deepest component every 20 steps). "
             "Written by `benchmarks/selection_speed.py`.", ""]
    for lab in labels:
        m = runs[lab]["meta"]
        lines.append(f"- `{lab}`: python {m['python']}, numpy {m['numpy']}, {m['steps']} steps x "
                     f"{m['repeats']} repeats, {m['date']}" + (f"; {m['note']}" if m.get("note") else ""))
    ratio = len(labels) > 1
    lines += ["", "| table | components | policy | " + " | ".join(f"{lab} ms/step" for lab in labels)
              + (f" | {labels[0]} / {labels[-1]}" if ratio else "") + " |",
              "|---|---|---|" + "---|" * (len(labels) + ratio)]
    keys = [(r["table"], r["components"], r["policy"]) for r in runs[labels[0]]["results"]]
    for t, k, p in keys:
        cells = []
        for lab in labels:
            hit = [r for r in runs[lab]["results"] if r["table"] == t and r["policy"] == p]
            cells.append(f"{hit[0]['median_ms_per_step']:.3f}" if hit else "-")
        if ratio and "-" not in (cells[0], cells[-1]):
            cells.append(f"{float(cells[0]) / float(cells[-1]):.1f}x")
        lines.append(f"| {t} | {k} | {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
