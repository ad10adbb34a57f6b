"""What `RGFT(..., run_dir=..., energy_budget=..., time_budget=...)` adds to a user's own loop:
the meters (energy from the best power source, its source named; whole-process peak RSS), energy
and time budgets checked by `rgft.should_stop()`, and the CLI's run directory (config.json,
components.json, metrics.jsonl, error map, summary.json, power.json) and HTML report, so a run
from code reads like a `rgft-edge finetune` run.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from .budgets.units import parse_duration, parse_energy
from .components import ComponentTable
from .device_profiles import power_profile
from .errors import UserError
from .meters import EnergyMeter, MemoryMeter, energy_per_run_summary
from .runs.writer import RunWriter


class RunLog:
    """Meters, budgets and (optionally) a run directory for one API run."""

    def __init__(self, table: ComponentTable, run_dir: str | Path | None, energy_budget: str | float | None,
                 time_budget: str | float | None, profile: str | None, config: dict[str, Any]):
        self.table = table
        self.energy_budget_j = parse_energy(energy_budget) if isinstance(energy_budget, str) else energy_budget
        self.time_budget_s = parse_duration(time_budget) if isinstance(time_budget, str) else time_budget
        for name, v in (("energy_budget", self.energy_budget_j), ("time_budget", self.time_budget_s)):
            if v is not None and v <= 0:
                raise UserError(f"{name} must be positive")
        self.profile = power_profile(profile)
        self.memory = MemoryMeter(whole_process=True).start()
        self.energy = EnergyMeter(idle_w=self.profile.idle_power_w, max_w=self.profile.max_power_w).start()
        self.t0 = time.perf_counter()
        self.writer = RunWriter(run_dir, len(table), fresh=True) if run_dir is not None else None
        self.pending: dict[str, Any] = {}  # values logged during the step in progress (loss, ...)
        self.counts: list[int] = []
        self.step_times: list[float] = []
        self.stop_reason: str | None = None
        self.guard = None  # the memory guard (api_memory.ApiMemoryGuard), when there is a memory budget
        self.memory_stop: str | None = None  # its reason to stop, set after each step
        if self.writer is not None:
            self.writer.write_json("config.json", {"config": {"api": True, **config}, "environment": {
                "python": platform.python_version(), "machine": platform.machine(), "cpu_count": os.cpu_count()}})
            self.writer.write_json("components.json", table.to_dict())

    def step(self, step: int, mask: np.ndarray, lr_mult: np.ndarray, scores: np.ndarray, step_time_s: float,
             skipped: bool) -> None:
        self.counts.append(int(mask.sum()))
        self.step_times.append(step_time_s)
        if self.writer is not None:
            self.writer.log({"type": "step", "step": step, "skipped": skipped, "selected": np.flatnonzero(mask).tolist(),
                             "lr_mult": {int(i): round(float(lr_mult[i]), 6) for i in np.flatnonzero(mask)},
                             "scores": [float(s) for s in scores], "step_time_s": step_time_s,
                             "rss_bytes": self.memory.current_rss_bytes, **self.pending})
        self.pending = {}

    def log_eval(self, step: int, values: dict[str, float]) -> None:
        if self.writer is not None:
            self.writer.log({"type": "eval", "step": step, "split": "held_out", **values})

    def should_stop(self) -> str | None:
        """"energy budget reached" / "time budget reached" once spent (the CLI's stop reasons)."""
        if self.memory_stop is not None:
            self.stop_reason = self.memory_stop
        elif self.energy_budget_j is not None and self.energy.snapshot().energy_j >= self.energy_budget_j:
            self.stop_reason = "energy budget reached"
        elif self.time_budget_s is not None and time.perf_counter() - self.t0 >= self.time_budget_s:
            self.stop_reason = "time budget reached"
        return self.stop_reason

    def finish(self, steps: int, report: bool) -> dict[str, Any]:
        energy = self.energy.stop()
        self.memory.stop()
        summary = {
            "run_dir": str(self.writer.root) if self.writer else None, "backend": "torch (your loop)",
            "steps": steps, "stop_reason": self.stop_reason or "completed", "components": len(self.table),
            "trainable_params": sum(c.num_params for c in self.table),
            "mean_components_updated_per_step": float(np.mean(self.counts)) if self.counts else 0.0,
            "median_step_time_s": float(np.median(self.step_times)) if self.step_times else None,
            "wall_time_s": time.perf_counter() - self.t0, "power_profile": self.profile.name,
            "energy_budget_j": self.energy_budget_j, "time_budget_s": self.time_budget_s,
            **energy_per_run_summary(energy, self.memory), "energy_notes": energy.notes,
            **(self.guard.summary() if self.guard is not None else {"memory_budget_bytes": None}),
        }
        if self.writer is not None:
            self.writer.close()
            self.writer.write_json("summary.json", summary)
            self.writer.write_json("power.json", {"source": energy.source, "energy_budget_j": self.energy_budget_j,
                                                  "samples": [[round(t, 3), round(w, 3)] for t, w in energy.samples]})
            if report:
                from .runs.report import write_report

                write_report([self.writer.root], self.writer.root / "report.html")
        return summary
