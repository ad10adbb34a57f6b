"""What the evidence harness runs: tasks, methods, sizes per mode, and one (task, method, seed) run.

Every method is a plain `FinetuneConfig` (the same one `rgft-edge finetune` takes) on the same data
split, seed and thread count, so a row of the table can be re-run from the command line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rgft_edge.components import ComponentTable
from rgft_edge.config import FinetuneConfig
from rgft_edge.costs import CostModel

BUDGET = 0.5  # per-step cost budget (fraction of a full step) shared by every budget-matched method
TOP_P = 0.3


@dataclass
class Task:
    name: str
    data: str  # FinetuneConfig.data
    metric: str  # accuracy (higher is better) | perplexity (lower is better)
    base: dict  # FinetuneConfig fields shared by every method
    lr: float  # full fine-tuning and every selective method
    lora_lr: float  # LoRA and head-only train few, freshly initialised weights: the usual 10x LR
    sizes: dict  # mode -> dict(train=, held_out=, evals=)
    skip: dict = field(default_factory=dict)  # method -> why it does not apply

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"


TASKS = {
    "rotten-tomatoes": Task(
        "rotten-tomatoes", "rotten-tomatoes", "accuracy",
        dict(max_length=64, batch_size=16), lr=1e-4, lora_lr=1e-3,
        sizes={"quick": dict(train=256, held_out=200, evals=2),
               "full": dict(train=1280, held_out=500, evals=4)}),
    "bbc-news": Task(
        "bbc-news", "bbc-news", "accuracy",
        dict(max_length=128, batch_size=16), lr=1e-4, lora_lr=1e-3,
        sizes={"quick": dict(train=128, held_out=100, evals=2),
               "full": dict(train=480, held_out=200, evals=3)}),
    "bbc-news-lm": Task(
        "bbc-news-lm", "bbc-news", "perplexity",
        dict(model="smollm2-135m", task="causal-lm", max_length=64, batch_size=4), lr=3e-5, lora_lr=3e-4,
        sizes={"quick": dict(train=24, held_out=16, evals=2),
               "full": dict(train=96, held_out=32, evals=3)},
        skip={"head-only": "SmolLM2's LM head is tied to the (frozen) token embeddings: there is "
                           "no separate head to train"}),
}

# method -> (FinetuneConfig overrides, what it is). "lr" / "probe" / "warmup" are filled per task.
METHODS = {
    "full": (dict(policy="full"), "full fine-tuning (every block, every step)"),
    "lora": (dict(policy="full", adapter="lora", lr="lora"), "peft LoRA r=8 on the attention projections + head, uniform updates"),
    "head-only": (dict(policy="head-only", lr="lora"), "pooler + classifier only"),
    "random-top-p": (dict(policy="random", top_p=TOP_P), f"random {TOP_P:.0%} of components per step"),
    "static-top-p": (dict(policy="static", top_p=TOP_P, static_warmup_steps="warmup"),
                     f"top {TOP_P:.0%} by error after a 10% all-components warm-up, then fixed"),
    "rgft-top-p": (dict(policy="top-p", top_p=TOP_P), f"RGFT top {TOP_P:.0%} by the grad-norm error map"),
    "rgft-clip": (dict(policy="clip", clip_top_p=TOP_P), f"RGFT clip (eps 0.1 LR floor) over the top {TOP_P:.0%}"),
    "random-budget": (dict(policy="random-budget"), f"random order, kept while the step fits budget {BUDGET}"),
    "static-budget": (dict(policy="static-budget", static_warmup_steps="warmup"),
                      f"budget-{BUDGET} selection after a 10% warm-up, then fixed"),
    "elastic": (dict(policy="elastic", probe_every="probe"),
                f"ElasticTrainer-style: g*dw importance probed 4x per run, DP at budget {BUDGET}"),
    "rgft-budget": (dict(policy="budget"), f"RGFT budget {BUDGET}, grad-norm error map"),
    "rgft-budget-act": (dict(policy="budget", estimator="activation"),
                        f"RGFT budget {BUDGET}, activation-attribution error map"),
    # The same comparison through an exported backend: `rgft-edge compile --backend onnxruntime
    # --adapter full --quantize none` once, then `rgft-edge train` (fixed batch and sequence length).
    "full@onnxruntime": (dict(policy="full", backend="onnxruntime"),
                         "full fine-tuning through the ONNX Runtime training artifact"),
    "rgft-budget@onnxruntime": (dict(policy="budget", backend="onnxruntime"),
                                f"RGFT budget {BUDGET} through the ONNX Runtime training artifact"),
}
EXPORTED_TASKS = ("rotten-tomatoes",)  # exported-backend runs: the default task only (time on 2 cores)
MODES = {"quick": dict(seeds=[0]), "full": dict(seeds=[0, 1, 2])}


def config_for(task: Task, method: str, seed: int, mode: str, out: str | Path, threads: int = 2) -> FinetuneConfig:
    size = task.sizes[mode]
    steps = size["train"] // task.base["batch_size"]
    overrides = {k: v for k, v in METHODS[method][0].items() if k != "backend"}
    if overrides.get("lr") == "lora":
        overrides["lr"] = task.lora_lr
    if overrides.get("probe_every") == "probe":
        overrides["probe_every"] = max(1, steps // 4)
    if overrides.get("static_warmup_steps") == "warmup":
        overrides["static_warmup_steps"] = max(1, steps // 10)
    cfg = dict(data=task.data, max_train_examples=size["train"], eval_examples=size["held_out"],
               eval_every=max(1, steps // size["evals"]), lr=task.lr, budget=BUDGET, seed=seed,
               threads=threads, out=str(out), report=False, checkpoint_every=0, **task.base)
    cfg.update(overrides)
    return FinetuneConfig.of(**cfg)


def backend_of(method: str) -> str | None:
    return METHODS[method][0].get("backend")


def artifact_for(task: Task, backend: str, root: Path) -> Path:
    """Compile the task's model once per harness run (fp32, every block trainable, like `full`)."""
    from rgft_edge.data import load_dataset
    from rgft_edge.export.compile import compile_artifact
    from rgft_edge.export.prepare import PrepareOptions
    from rgft_edge.models import resolve_model

    out = root / f"{task.name}-{backend}"
    if not (out / "manifest.json").is_file():
        opts = PrepareOptions(task=task.base.get("task", "sequence-classification"),
                              labels=load_dataset(task.data).label_names, adapter="full", quantize="none",
                              max_length=task.base["max_length"], batch_size=task.base["batch_size"])
        compile_artifact(resolve_model(task.base.get("model")), out, backend, opts, force=True)
    return out


def run_one(task: Task, method: str, seed: int, mode: str, out: str | Path, threads: int = 2) -> dict:
    """Fine-tune once and condense the run directory into one record of the harness."""
    cfg = config_for(task, method, seed, mode, out, threads)
    backend = backend_of(method)
    if backend is None:
        from rgft_edge.recipes.finetune import finetune

        summary = finetune(cfg, progress=False)
    else:
        from rgft_edge.recipes.train import train_artifact

        summary = train_artifact(str(artifact_for(task, backend, Path(out).parent / "artifacts")), cfg,
                                 progress=False)
    return condense(task, method, seed, Path(out), summary, cfg)


def condense(task: Task, method: str, seed: int, run: Path, summary: dict, cfg: FinetuneConfig) -> dict:
    steps, evals = [], []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        (steps if rec["type"] == "step" else evals if rec["type"] == "eval" else []).append(rec)
    cost = CostModel(ComponentTable.from_dict(json.loads((run / "components.json").read_text())),
                     cfg.data.batch_size)
    k = len(cost.depth)
    backward = sum(cost.backward_flops(np.isin(np.arange(k), r["selected"])) for r in steps)
    clock = np.cumsum([r["step_time_s"] for r in steps])  # training time, evaluations excluded
    by_step = {e["step"]: e[task.metric] for e in evals}  # the final evaluation may repeat the last
    curve = [(s + 1, float(clock[min(s, len(clock) - 1)]), v) for s, v in sorted(by_step.items())]
    train_s = float(clock[-1])
    # The meter runs over the whole session (periodic evaluations too); training energy is its
    # average power over the training steps' time. Same source label as the meter.
    train_j = summary["avg_power_w"] * train_s
    return {
        "task": task.name, "method": method, "seed": seed, "metric": task.metric,
        "final": summary[f"held_out_{task.metric}"], "curve": curve, "steps": len(steps),
        "train_time_s": train_s, "wall_time_s": summary["wall_time_s"],
        "median_step_s": summary["median_step_time_s"],
        "energy_j": train_j, "session_energy_j": summary["energy_j"], "energy_source": summary["energy_source"],
        "peak_rss_mb": summary["peak_rss_bytes"] / 1e6, "memory_source": summary["memory_source"],
        "backward_gflops_est": backward * cfg.data.batch_size / 1e9,
        "cost_fraction": summary["mean_estimated_step_cost_fraction"],
        "components_per_step": summary["mean_components_updated_per_step"],
        "components": summary["components"],
        "params_per_step": summary["mean_params_updated_per_step"],
        "tracking_pct": summary["tracking_overhead_pct"], "config": cfg.flat(),
    }
