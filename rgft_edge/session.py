"""One training session, whatever the backend: setup, train, checkpoints, evaluation, run directory.

`rgft-edge finetune` (eager torch on an HF model) and `rgft-edge train` (a compiled artifact on a
device) both run a `Session`, so their run directories and summaries are the same. Its shape is
torchtune's recipe interface: `setup()` builds everything, `train()` runs the shared loop,
`save_checkpoint()` / `load_checkpoint()` are the one way state goes to and from disk, and
`cleanup()` evaluates and writes the summary. No torch import: the ONNX Runtime runner uses this on
devices without torch.
"""

from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path

import numpy as np

from .backend import Backend
from .budgets import EXIT_CODES, BudgetController, MemoryGuard
from .budgets.allocator import trim_heap
from .budgets.memory_guard import measure_memory_guard
from .config import FinetuneConfig
from .costs import CostModel, calibrate
from .device_profiles import power_profile
from .drift import PhasedStream, drift_label_ids, keep_labels
from .error_map import ErrorMap
from .errors import UserError
from .loop import LoopResult, LoopSettings, train
from .meters import EnergyMeter, MemoryMeter, energy_per_run_summary
from .optim import ComponentAdamW
from .policies import make_policy
from .progress import StepProgress
from .runs import checkpoint
from .runs.writer import RunWriter
from .splits import Splits
from .text import TextEncoder, batches

EVAL_SUBSET = 200  # examples evaluated at each --eval-points evaluation during training
MAX_FAULT_RECOVERIES = 3  # restores of the last checkpoint (LR halved each time) before giving up


class Session:
    def __init__(self, cfg: FinetuneConfig, backend: Backend, encoder: TextEncoder, splits: Splits,
                 meta: dict, progress: bool = True, drop_last: bool = False):
        self.cfg, self.backend, self.encoder, self.splits, self.meta = cfg, backend, encoder, splits, meta
        self.progress, self.drop_last = progress, drop_last
        self.t_start = time.perf_counter()
        self.out = Path(cfg.output.out or f"runs/{Path(cfg.data.source).stem}-{cfg.selection.policy}-"
                        f"{time.strftime('%Y%m%d-%H%M%S')}")
        self.start_step, self.resumed = 0, False
        self.prior = {"energy_j": 0.0, "train_time_s": 0.0}  # from earlier sessions of this run
        self.recoveries: list[dict] = []
        self.clock_s = 0.0  # training time of the whole run (evaluations excluded), across resumes
        self.calibration: dict | None = None
        self.guard: MemoryGuard | None = None
        self.stream: PhasedStream | None = None  # the drift task's training stream
        self.drift_step: int | None = None  # its switch step, from a checkpoint
        self._last_checkpoint = time.perf_counter()
        self.eval_subset = False  # evaluations during training on EVAL_SUBSET examples (--eval-points)

    # -- setup ------------------------------------------------------------------------------------
    def setup(self, resume: bool = False) -> None:
        cfg, table = self.cfg, self.backend.table
        _, self.energy_budget, self.time_budget = cfg.budgets()
        self.memory = MemoryMeter(whole_process=cfg.limits.memory_budget is not None).start()
        self.profile = power_profile(cfg.limits.profile)
        self.cost = CostModel(table, cfg.data.batch_size)
        sample = next(batches(self.encoder, self.splits.train.texts[: cfg.data.batch_size],
                              self.splits.train.labels[: cfg.data.batch_size], cfg.data.batch_size))
        if cfg.selection.calibrate_cost:
            self.calibration = self._calibrate(sample)
        try:
            self.policy = make_policy(cfg.selection.policy, table, seed=cfg.training.seed, cost=self.cost,
                                      **cfg.selection.options)
        except ValueError as e:
            raise UserError(str(e)) from e
        sel, tr = cfg.selection, cfg.training
        self.error_map = ErrorMap(len(table), sel.beta, sel.max_staleness)
        self.optimizer = ComponentAdamW(table, tr.lr, weight_decay=tr.weight_decay, evict_after=tr.evict_after)
        kept: list[dict] = []
        if resume:  # before the writer opens metrics.jsonl: later records are trimmed away
            self.load_checkpoint()
            kept = checkpoint.trim_metrics(self.out, self.start_step)
        else:
            checkpoint.clear_checkpoint(self.out)
        self.writer = RunWriter(self.out, len(table), fresh=not resume)
        for rec in kept:
            self.writer.add_rows(rec)
        self._write_config()
        self.total_steps = self._total_steps()
        self.energy = EnergyMeter(idle_w=self.profile.idle_power_w, max_w=self.profile.max_power_w,
                                  country_iso_code=cfg.limits.country)
        self.energy.start()
        # last: the memory base must include everything set up before training (meters included)
        if cfg.budgets()[0] is not None:
            self.energy.wait_ready()
        self.guard = self._memory_guard(sample)
        if self.guard is not None:
            self.error_map.exempt = self.guard.unaffordable(self._state_mask())
        self.budgets = BudgetController(self.policy, self.total_steps, self.energy_budget, self.time_budget,
                                        self.guard, self.energy, state_mask=self._state_mask)

    def _write_config(self) -> None:
        s = self.splits
        self.writer.write_json("config.json", {
            "config": self.cfg.flat(), **self.meta, "backend": self.backend.name,
            "environment": {"python": platform.python_version(), "machine": platform.machine(),
                            "cpu_count": os.cpu_count(), "seed": self.cfg.training.seed,
                            **self.meta.get("environment", {})},
            "data": {"source": s.full.source, "train": len(s.train), "held_out": len(s.held_out),
                     "validation": len(s.validation) if s.validation is not None else 0,
                     "labels": s.full.label_names, "skipped_rows": s.full.skipped_rows,
                     "read": s.full.notes.get("rows_read"), "skipped": s.full.notes.get("skipped", {}),
                     "encoding": s.full.notes.get("encoding"),
                     "recoded_rows": s.full.notes.get("recoded_rows", 0)}})
        self.writer.write_json("components.json", self.backend.table.to_dict())

    def _total_steps(self) -> int:
        d, tr = self.cfg.data, self.cfg.training
        n = len(self.splits.train)
        n_batches = n // d.batch_size if self.drop_last else math.ceil(n / d.batch_size)
        if n_batches < 1:
            raise UserError(f"{n} training examples make no full batch of {d.batch_size}")
        total = n_batches * tr.epochs
        return total if tr.max_steps is None else min(total, tr.max_steps)

    def _memory_guard(self, sample) -> MemoryGuard | None:
        budget = self.cfg.budgets()[0]
        if budget is None:
            return None
        # the longest batch the run can see: the worst case
        return measure_memory_guard(self.backend, self.encoder.widen(sample), self.memory, budget)

    def _calibrate(self, sample) -> dict:
        """Price selections in measured seconds: a short profiling pass per cut depth (weights are
        not updated; each step's gradients are dropped)."""
        backend, k = self.backend, len(self.backend.table)

        def fastest_time(run, repeats: int = 3) -> float:
            # the fastest of three: other processes only ever make a step slower
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
            return float(np.min(times))

        def step(mask: np.ndarray) -> float:
            return fastest_time(lambda: (backend.train_step(sample, mask, False), backend.commit([])))

        step(np.ones(k, bool))  # warm-up: allocator, kernels, lazy init
        forward = fastest_time(lambda: backend.evaluate([sample]))
        sizes = np.array([c.num_params for c in backend.table], dtype=np.float64)
        return calibrate(self.cost, step, forward, self._optimizer_seconds_per_param(sample, sizes), sizes)

    def _optimizer_seconds_per_param(self, sample, sizes: np.ndarray) -> float:
        """AdamW time per parameter, timed on copies of the largest component's buffers."""
        big = int(np.argmax(sizes))
        mask = np.eye(len(sizes), dtype=bool)[big]
        grads = self.backend.train_step(sample, mask, False).grads
        names = {r.name for r in self.backend.table[big].params}
        live = self.backend.parameters()
        copies = {n: live[n].clone() if hasattr(live[n], "clone") else live[n].copy() for n in names}
        scratch = ComponentAdamW(self.backend.table, 1e-4)
        times = []
        for i in range(3):  # the first also allocates m and v
            t0 = time.perf_counter()
            scratch.step(copies, grads, mask.astype(float), i)
            times.append(time.perf_counter() - t0)
        self.backend.commit([])
        return float(np.median(times[1:])) / max(1.0, sizes[big])

    def _state_mask(self) -> np.ndarray:
        mask = np.zeros(len(self.backend.table), bool)
        mask[list(self.optimizer.state)] = True
        return mask

    # -- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, step_done: int, reason: str | None = None) -> str:
        drift_step = self.stream.drift_step if self.stream is not None else self.drift_step
        extra = {"seed": self.cfg.training.seed, "policy": self.policy.state_dict(), "train_clock_s": self.clock_s,
                 "drift_step": drift_step,
                 "energy_j": self.prior["energy_j"] + self.energy.snapshot().energy_j,
                 "train_time_s": self.prior["train_time_s"] + time.perf_counter() - self.t_start}
        rng = self.backend.rng_state()
        extra["rng"] = rng.tolist() if rng is not None else None
        if reason:
            extra["stop_reason"] = reason
        self._last_checkpoint = time.perf_counter()
        return str(checkpoint.save_checkpoint(self.out, step_done, self.backend.parameters(),
                                              self.optimizer, self.error_map, extra))

    def load_checkpoint(self, resume: bool = True) -> None:
        """Restore the last checkpoint: to resume the run (step, energy and time spent so far
        come back too), or, with resume=False, to undo bad steps while the run goes on."""
        ck = checkpoint.load_checkpoint(self.out)
        params = self.backend.parameters()
        step = checkpoint.restore(ck, params, self.optimizer, self.error_map, self.policy)
        self.backend.commit(list(params))
        if ck["state"].get("rng") is not None and self.backend.rng_state() is not None:
            self.backend.set_rng_state(np.asarray(ck["state"]["rng"], dtype=np.uint8))
        if resume:
            self.start_step, self.resumed = step, True
            self.prior = {k: ck["state"].get(k, 0.0) for k in self.prior}
            self.clock_s = float(ck["state"].get("train_clock_s", 0.0))
            self.drift_step = ck["state"].get("drift_step")

    # -- training ---------------------------------------------------------------------------------
    def evaluate(self, step: int, clock_s: float | None = None, final: bool = False) -> dict:
        """Evaluate on the validation split during training (if there is one), on the held-out
        test split at the end; logged with the training time at which it happened."""
        # under a memory budget evaluate with the training batch: a bigger one is not budgeted
        size = self.cfg.data.batch_size
        if self.guard is None and self.backend.eval_batch_size:
            size = self.backend.eval_batch_size
        use_val = not final and self.splits.validation is not None
        data = self.splits.validation if use_val else self.splits.held_out
        split = "validation" if use_val else "held_out"
        n = len(data)
        if not final and self.eval_subset:  # the --eval-points schedule: a fixed, cheap subset
            n = min(n, EVAL_SUBSET)
            split += f"_subset{n}" if n < len(data) else ""
        m = self.backend.evaluate(batches(self.encoder, data.texts[:n], data.labels[:n], size)).metrics
        self.writer.log({"type": "eval", "step": step, "split": split,
                         "train_time_s": self.clock_s if clock_s is None else clock_s, **m})
        return m

    def on_step(self, record: dict) -> None:
        record["rss_bytes"] = self.memory.current_rss_bytes
        if self.guard is not None and self.budgets.predicted_peaks:
            peak = self.memory.window_peak()  # this step's peak (and any evaluation since the last)
            record["peak_rss_bytes"] = peak
            record["predicted_peak_bytes"] = self.budgets.predicted_peaks[-1]
            self.guard.model.calibrate(peak, self.budgets.predicted_peaks[-1])
            self.guard.model.observe_step(np.isin(np.arange(len(self.backend.table)), record["selected"]))
            self.budgets.memory_stop = self.guard.check(
                record["rss_bytes"], trim_heap, lambda: self.memory.current_rss_bytes, self.optimizer.evict_oldest)
            # the staleness rule must not keep forcing what the budget cannot train
            self.error_map.exempt = self.guard.unaffordable(self._state_mask())
        self.clock_s = record["train_clock_s"]  # the loop's training clock (carries over on resume)
        self.writer.log(record)
        self.bar.update(record)
        out = self.cfg.output
        due_steps = out.checkpoint_every and (record["step"] + 1) % out.checkpoint_every == 0
        due_time = out.checkpoint_seconds and time.perf_counter() - self._last_checkpoint >= out.checkpoint_seconds
        if due_steps or due_time:
            self.save_checkpoint(record["step"] + 1)

    def on_fault(self, step: int) -> bool:
        """Repeated NaN/inf: go back to the last good checkpoint and halve the LR (3 times)."""
        if len(self.recoveries) >= MAX_FAULT_RECOVERIES:
            return False
        if checkpoint.has_checkpoint(self.out):
            self.load_checkpoint(resume=False)
        self.optimizer.lr *= 0.5
        self.recoveries.append({"step": step, "lr": self.optimizer.lr})
        self.writer.log({"type": "fault", "step": step, "action": "restored last checkpoint, LR halved",
                         "lr": self.optimizer.lr})
        return True

    def train(self) -> LoopResult:
        cfg = self.cfg
        tr = cfg.training
        eval_every = tr.eval_every
        self.eval_subset = not eval_every and not tr.eval_every_seconds and tr.eval_points > 0
        if self.eval_subset:  # evenly spaced over the run (the splits are already shuffled)
            eval_every = max(1, self.total_steps // tr.eval_points)
        settings = LoopSettings(cfg.selection.estimator, cfg.selection.p_norm, eval_every=eval_every,
                                max_steps=self.total_steps, start_step=self.start_step,
                                max_train_seconds=tr.max_train_seconds, eval_every_seconds=tr.eval_every_seconds,
                                clock_offset_s=self.clock_s)
        train_batches = self._train_stream()
        with StepProgress(self.total_steps - self.start_step, len(self.backend.table),
                          enabled=self.progress) as self.bar:
            return train(self.backend, self.policy, self.error_map, self.optimizer, train_batches, settings,
                         cost=self.cost, on_step=self.on_step, evaluate=self.evaluate,
                         should_stop=self.budgets.should_stop,
                         constrain=self.budgets.constrain if self.guard is not None else None,
                         on_fault=self.on_fault)

    def _train_stream(self):
        cfg, train = self.cfg, self.splits.train
        if not cfg.data.drift_labels:
            return batches(self.encoder, train.texts, train.labels, cfg.data.batch_size, cfg.training.seed,
                           cfg.training.epochs, drop_last=self.drop_last)
        ids = drift_label_ids(cfg.data.drift_labels, train.label_names)
        limit_s, at = cfg.training.max_train_seconds, cfg.data.drift_at
        if limit_s:  # on the training clock, so every method drifts at the same share of its time
            switched = lambda step: self.clock_s >= at * limit_s  # noqa: E731
        else:
            switched = lambda step: step >= at * self.total_steps  # noqa: E731
        self.stream = PhasedStream(self.encoder, keep_labels(train, ids, keep=False), keep_labels(train, ids),
                                   cfg.data.batch_size, cfg.training.seed, switched, self.drop_last,
                                   drift_step=self.drift_step)
        return self.stream

    # -- the end ----------------------------------------------------------------------------------
    def cleanup(self, result: LoopResult) -> dict:
        """Checkpoint a budget stop, evaluate, write weights, summary, power and the report."""
        ck_path = None
        if EXIT_CODES.get(result.stop_reason, 1) != 0:  # stopped by a budget: keep all to resume from
            ck_path = self.save_checkpoint(self.start_step + result.steps, result.stop_reason)
        energy = self.energy.stop()
        final = self.evaluate(self.start_step + result.steps - 1, final=True)
        self.memory.stop()
        self.writer.write_json("eval.json", {"held_out": len(self.splits.held_out), **final})
        self.writer.save_weights(self.backend.trainable_state(), {"format": "rgft-edge trainable weights"})
        self.writer.close()
        summary = self._summary(result, final, energy, ck_path)
        self.writer.write_json("summary.json", summary)
        self.writer.write_json("power.json", {
            "source": energy.source, "energy_budget_j": self.energy_budget,
            "samples": [[round(t, 3), round(w, 3)] for t, w in energy.samples]})
        if self.cfg.output.report:
            from .runs.report import write_report

            write_report([self.out], self.out / "report.html")
        return summary

    def _summary(self, result: LoopResult, final: dict, energy, ck_path: str | None) -> dict:
        table, cfg, guard = self.backend.table, self.cfg, self.guard
        return {
            "run_dir": str(self.out), "backend": self.backend.name, "policy": cfg.selection.policy,
            "granularity": table.granularity, "estimator": cfg.selection.estimator,
            "steps": self.start_step + result.steps,
            "resumed_from_step": self.start_step if self.resumed else None,
            "skipped_steps": result.skipped_steps, "stop_reason": result.stop_reason,
            "held_out_examples": len(self.splits.held_out), "train_examples": len(self.splits.train),
            **{f"held_out_{k}": v for k, v in final.items()},
            "components": len(table), "trainable_params": sum(c.num_params for c in table),
            "mean_components_updated_per_step": float(np.mean(result.selected_counts)),
            "mean_params_updated_per_step": float(np.mean(result.params_updated)),
            "mean_estimated_step_cost_fraction": float(np.nanmean(result.cost_fractions)),
            "step_cost_unit": self.cost.unit, "cost_calibration": self.calibration,
            "validation_examples": len(self.splits.validation) if self.splits.validation is not None else 0,
            "train_clock_s": self.clock_s,
            "median_step_time_s": float(np.median(np.array(result.step_times))),
            "tracking_overhead_pct": 100.0 * result.tracking_time_s / max(1e-9, result.total_time_s),
            "optimizer_state_evictions": self.optimizer.evictions,
            "train_time_s": result.total_time_s, "wall_time_s": time.perf_counter() - self.t_start,
            **{k: v for k, v in self.meta.items() if k == "load_time_s"},
            **energy_per_run_summary(energy, self.memory), "energy_notes": energy.notes,
            "power_profile": self.profile.name, "duration_s": energy.duration_s,
            "memory_budget_bytes": guard.budget if guard else None,
            "memory_guard_shrunk_steps": guard.shrunk_steps if guard else 0,
            "memory_heap_trims": guard.trims if guard else 0,
            "memory_state_evictions": guard.evictions if guard else 0,
            # what the cheapest step needs now (resident memory grows with optimizer state, caches)
            "memory_needed_now_bytes": guard.model.predict(guard.model.cheapest_mask(), self._state_mask())
            if guard else None,
            "energy_budget_j": self.energy_budget, "time_budget_s": self.time_budget,
            "budget_adjustments": self.budgets.adjustments, "checkpoint": ck_path,
            "energy_j_including_earlier_sessions": self.prior["energy_j"] + energy.energy_j,
            "fault_recoveries": self.recoveries,
            "exit_code": EXIT_CODES.get(result.stop_reason, 1),
        }

    def run(self, resume: bool = False) -> dict:
        self.setup(resume)
        return self.cleanup(self.train())


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
           + (f", {s['memory_state_evictions']} optimizer states dropped" if s.get("memory_state_evictions") else "")
           if s.get("memory_budget_bytes") else ""),
    ]
    if s.get("checkpoint"):
        lines.append(f"checkpoint             {s['checkpoint']} (exit status {s['exit_code']})")
    return "\n".join(lines)


def _count(n: float) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} K"
