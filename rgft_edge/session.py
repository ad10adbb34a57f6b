"""One training session, whatever the backend: data splits, the loop, evaluation, run directory.

`rgft-edge finetune` (eager torch on an HF model) and `rgft-edge train` (a compiled artifact on a
device) both end here, so their run directories and summaries are the same. No torch import: the
ONNX Runtime runner uses this on devices without torch.
"""

from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path

import numpy as np

from .backend import Backend
from .budgets import EXIT_CODES, BudgetController
from .checkpoint import save_checkpoint
from .resume import load_checkpoint, restore, trim_metrics
from .config import FinetuneConfig
from .costs import CostModel
from .data import TextDataset, load_dataset, split
from .error_map import ErrorMap
from .errors import UserError
from .loop import LoopSettings, train
from .memory import MemoryGuard, MemoryModel
from .meters import EnergyMeter, MemoryMeter, energy_per_run_summary
from .optim import ComponentAdamW
from .policies import make_policy
from .progress import StepProgress
from .rundir import RunWriter
from .text import TextEncoder, batches


def _state_mask(optimizer: ComponentAdamW, k: int) -> np.ndarray:
    mask = np.zeros(k, bool)
    mask[list(optimizer.state)] = True
    return mask


def load_splits(cfg: FinetuneConfig, labels: list[str] | None = None) -> tuple[TextDataset, TextDataset, TextDataset]:
    """(full dataset, train split, held-out split) as the config asks."""
    builtin = cfg.data in ("rotten-tomatoes", "bbc-news")
    kwargs = {} if builtin else dict(text_column=cfg.text_column, label_column=cfg.label_column,
                                     on_bad_row=cfg.on_bad_row, labels=labels)
    data = load_dataset(cfg.data, **kwargs)
    if labels is not None and data.label_names != labels:
        raise UserError(f"{cfg.data}: labels {data.label_names} do not match the model's {labels}")
    eval_n = min(cfg.eval_examples, max(1, len(data) // 5))
    train_ds, test_ds = split(data, eval_n, cfg.seed, cfg.max_train_examples)
    return data, train_ds, test_ds


def _power_model(cfg: FinetuneConfig):
    """The profile that prices power when no sensor exists (given, detected, or a laptop)."""
    from .device_profiles import ProfileError, detect, load_profile

    if cfg.profile:
        return load_profile(cfg.profile)
    try:
        return detect()[0]
    except ProfileError:
        return load_profile("laptop-x86")


def _memory_guard(cfg: FinetuneConfig, backend: Backend, memory_meter, sample_batch) -> MemoryGuard | None:
    mem_budget = cfg.budgets()[0]
    if mem_budget is None:
        return None
    table = backend.table
    measure = getattr(backend, "activation_bytes", None)
    # Profile on two rows and scale: a full-batch profiling step with everything trainable would
    # itself be the largest step of the run, before the guard could say anything.
    rows = len(next(iter(sample_batch.values())))
    small = {k: v[:2] for k, v in sample_batch.items()}
    acts = measure(small) * (rows / min(2, rows)) if measure is not None else np.zeros(len(table))
    base = float(memory_meter.current_rss_bytes)
    model = MemoryModel.for_table(table, base, acts)
    model.margin_bytes = 0.10 * base  # allocator slack and first-step growth, before calibration
    return MemoryGuard(model, mem_budget)


def run_session(cfg: FinetuneConfig, backend: Backend, encoder: TextEncoder, data: TextDataset,
                train_ds: TextDataset, test_ds: TextDataset, meta: dict, progress: bool = True,
                drop_last: bool = False, resume: bool = False) -> dict:
    t_start = time.perf_counter()
    table = backend.table
    _, energy_budget, time_budget = cfg.budgets()
    memory = MemoryMeter().start()
    prof = _power_model(cfg)
    cost = CostModel(table, cfg.batch_size)
    try:
        budget = cfg.budget if cfg.budget is not None else cost.floor + 0.5 * (1 - cost.floor)
        policy = make_policy(cfg.policy, table, top_p=cfg.top_p, budget=budget, seed=cfg.seed,
                             clip_top_p=cfg.clip_top_p, probe_every=cfg.probe_every,
                             static_warmup_steps=cfg.static_warmup_steps)
    except ValueError as e:
        raise UserError(str(e)) from e
    error_map = ErrorMap(len(table), cfg.beta, cfg.max_staleness)
    optimizer = ComponentAdamW(table, cfg.lr, weight_decay=cfg.weight_decay, evict_after=cfg.evict_after)

    out = Path(cfg.out or f"runs/{Path(cfg.data).stem}-{cfg.policy}-{time.strftime('%Y%m%d-%H%M%S')}")
    start, prior = 0, {"energy_j": 0.0, "train_time_s": 0.0}
    if resume:  # before the writer opens metrics.jsonl: later records are trimmed away
        ck = load_checkpoint(out)
        start = restore(ck, backend.parameters(), optimizer, error_map, policy, backend)
        prior = {k: ck["state"].get(k, 0.0) for k in prior}
        kept = trim_metrics(out, start)
    writer = RunWriter(out, len(table))
    if resume:
        for rec in kept:
            writer.add_rows(rec)
    writer.write_json("config.json", {
        "config": cfg.to_dict(), **meta, "backend": backend.name,
        "environment": {"python": platform.python_version(), "machine": platform.machine(),
                        "cpu_count": os.cpu_count(), "seed": cfg.seed, **meta.get("environment", {})},
        "data": {"source": data.source, "train": len(train_ds), "held_out": len(test_ds),
                 "labels": data.label_names, "skipped_rows": data.skipped_rows}})
    writer.write_json("components.json", table.to_dict())

    guard = None

    def evaluate(step: int) -> dict:
        # under a memory budget evaluate with the training batch: a bigger one is not budgeted
        size = cfg.batch_size if guard is not None else getattr(backend, "eval_batch_size", None) or cfg.batch_size
        m = backend.evaluate(batches(encoder, test_ds.texts, test_ds.labels, size)).metrics
        writer.log({"type": "eval", "step": step, **m})
        return m

    n_batches = len(train_ds) // cfg.batch_size if drop_last else math.ceil(len(train_ds) / cfg.batch_size)
    if n_batches < 1:
        raise UserError(f"{len(train_ds)} training examples make no full batch of {cfg.batch_size}")
    total = n_batches * cfg.epochs if cfg.max_steps is None else min(n_batches * cfg.epochs, cfg.max_steps)
    settings = LoopSettings(cfg.estimator, cfg.p_norm, eval_every=cfg.eval_every, max_steps=total,
                            start_step=start)
    train_batches = batches(encoder, train_ds.texts, train_ds.labels, cfg.batch_size, cfg.seed,
                            cfg.epochs, drop_last=drop_last)
    sample = next(batches(encoder, train_ds.texts[: cfg.batch_size], train_ds.labels[: cfg.batch_size],
                          cfg.batch_size))
    guard = _memory_guard(cfg, backend, memory, sample)
    energy = EnergyMeter(idle_w=prof.idle_power_w, max_w=prof.max_power_w, country_iso_code=cfg.country)
    energy.start()
    budgets = BudgetController(policy, total, energy_budget, time_budget, guard, energy,
                               state_mask=lambda: _state_mask(optimizer, len(table)))
    def checkpoint(step_done: int, reason: str | None = None) -> str:
        extra = {"seed": cfg.seed, "policy": policy.state_dict(),
                 "energy_j": prior["energy_j"] + energy.snapshot().energy_j,
                 "train_time_s": prior["train_time_s"] + time.perf_counter() - t_start,
                 "rng": backend.rng_state().tolist() if hasattr(backend, "rng_state") else None}
        if reason:
            extra["stop_reason"] = reason
        return str(save_checkpoint(out, step_done, backend.parameters(), optimizer, error_map, extra))

    last_ck = [time.perf_counter()]
    with StepProgress(total - start, len(table), enabled=progress) as bar:
        def on_step(record):
            if guard is not None and budgets.predicted_peaks:
                guard.model.calibrate(memory.peak_rss_bytes, budgets.predicted_peaks[-1])
            record["rss_bytes"] = memory.current_rss_bytes
            writer.log(record)
            bar.update(record)
            due_steps = cfg.checkpoint_every and (record["step"] + 1) % cfg.checkpoint_every == 0
            due_time = cfg.checkpoint_seconds and time.perf_counter() - last_ck[0] >= cfg.checkpoint_seconds
            if due_steps or due_time:
                checkpoint(record["step"] + 1)
                last_ck[0] = time.perf_counter()

        recoveries = []

        def on_fault(step: int) -> bool:
            """Repeated NaN/inf: go back to the last good checkpoint and halve the LR (3 times)."""
            if len(recoveries) >= 3:
                return False
            if (out / "checkpoint" / "state.json").is_file():
                restore(load_checkpoint(out), backend.parameters(), optimizer, error_map, policy, backend)
            optimizer.lr *= 0.5
            recoveries.append({"step": step, "lr": optimizer.lr})
            writer.log({"type": "fault", "step": step, "action": "restored last checkpoint, LR halved",
                        "lr": optimizer.lr})
            return True

        result = train(backend, policy, error_map, optimizer, train_batches, settings, cost=cost,
                       on_step=on_step, evaluate=evaluate, should_stop=budgets.should_stop,
                       constrain=budgets.constrain if guard is not None else None, on_fault=on_fault)
    ck_path = None
    if result.stop_reason != "completed":  # stopped by a budget: keep everything to resume from
        ck_path = checkpoint(start + result.steps, result.stop_reason)
    energy_result = energy.stop()
    final = evaluate(result.steps - 1)
    memory.stop()
    writer.write_json("eval.json", {"held_out": len(test_ds), **final})
    writer.save_weights(backend.trainable_state(), {"format": "rgft-edge trainable weights"})
    writer.close()

    step_times = np.array(result.step_times)
    summary = {
        "run_dir": str(out), "backend": backend.name, "policy": cfg.policy,
        "granularity": table.granularity, "estimator": cfg.estimator, "steps": start + result.steps,
        "resumed_from_step": start if resume else None,
        "skipped_steps": result.skipped_steps, "stop_reason": result.stop_reason,
        "held_out_examples": len(test_ds), "train_examples": len(train_ds),
        **{f"held_out_{k}": v for k, v in final.items()},
        "components": len(table), "trainable_params": sum(c.num_params for c in table),
        "mean_components_updated_per_step": float(np.mean(result.selected_counts)),
        "mean_params_updated_per_step": float(np.mean(result.params_updated)),
        "mean_estimated_step_cost_fraction": float(np.nanmean(result.cost_fractions)),
        "median_step_time_s": float(np.median(step_times)),
        "tracking_overhead_pct": 100.0 * result.tracking_time_s / max(1e-9, result.total_time_s),
        "optimizer_state_evictions": optimizer.evictions,
        "train_time_s": result.total_time_s, "wall_time_s": time.perf_counter() - t_start,
        **{k: v for k, v in meta.items() if k == "load_time_s"},
        **energy_per_run_summary(energy_result, memory), "energy_notes": energy_result.notes,
        "power_profile": prof.name, "duration_s": energy_result.duration_s,
        "memory_budget_bytes": guard.budget if guard else None,
        "memory_guard_shrunk_steps": guard.shrunk_steps if guard else 0,
        "energy_budget_j": energy_budget, "time_budget_s": time_budget,
        "budget_adjustments": budgets.adjustments, "checkpoint": ck_path,
        "energy_j_including_earlier_sessions": prior["energy_j"] + energy_result.energy_j,
        "fault_recoveries": recoveries,
        "exit_code": EXIT_CODES.get(result.stop_reason, 1),
    }
    writer.write_json("summary.json", summary)
    writer.write_json("power.json", {"source": energy_result.source, "energy_budget_j": energy_budget,
                                     "samples": [[round(t, 3), round(w, 3)] for t, w in energy_result.samples]})
    if cfg.report:
        from .report import write_report

        write_report([out], out / "report.html")
    return summary


def format_summary(s: dict) -> str:
    acc = s.get("held_out_accuracy")
    mb = lambda b: f"{b / 1e6:.0f} MB" if b is not None else "-"  # noqa: E731
    lines = [
        f"run directory          {s['run_dir']}",
        f"policy                 {s['policy']} ({s['granularity']} granularity, {s['estimator']} scores, "
        f"{s['backend']} backend)",
        f"steps                  {s['steps']} ({s['skipped_steps']} skipped), stop: {s['stop_reason']}",
        (f"held-out accuracy      {acc:.4f} on {s['held_out_examples']} examples" if acc is not None
         else f"held-out loss          {s['held_out_loss']:.4f} (perplexity {s.get('held_out_perplexity', float('nan')):.2f})"
              f" on {s['held_out_examples']} examples"),
        f"updated per step       {s['mean_components_updated_per_step']:.2f} of {s['components']} "
        f"components, {_count(s['mean_params_updated_per_step'])} of {_count(s['trainable_params'])} "
        f"trainable parameters (mean)",
        f"est. step cost         {s['mean_estimated_step_cost_fraction']:.2f} of a full step (FLOPs model)",
        f"median step time       {s['median_step_time_s'] * 1000:.0f} ms; error tracking "
        f"{s['tracking_overhead_pct']:.1f}% of step time",
        f"time                   {s['train_time_s']:.0f} s training, {s['wall_time_s']:.0f} s total",
        f"energy per run         {s['energy_j']:.0f} J = {s['energy_wh']:.4f} Wh, avg {s['avg_power_w']:.1f} W, "
        f"peak {s['peak_power_w']:.1f} W [{s['energy_source']}]",
        f"CO2-equivalent         {s['co2_kg'] * 1000:.3f} g [{s['co2_source']}]",
        f"peak RSS               {mb(s['peak_rss_bytes'])} [{s['memory_source']}]"
        + (f"; budget {mb(s['memory_budget_bytes'])}, {s['memory_guard_shrunk_steps']} steps shrunk"
           if s.get("memory_budget_bytes") else ""),
    ]
    if s.get("checkpoint"):
        lines.append(f"checkpoint             {s['checkpoint']} (exit status {s['exit_code']})")
    return "\n".join(lines)


def _count(n: float) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} K"
