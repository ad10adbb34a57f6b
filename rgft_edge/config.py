"""The fine-tuning configuration: one dataclass whose defaults ARE the default demo.

`rgft-edge finetune` with no flags runs `FinetuneConfig()` (a test checks that); every flag maps to
one field, and the resolved config is written to the run directory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .components import GRANULARITIES
from .errors import UserError
from .estimators import ESTIMATORS
from .policies import POLICIES

TASKS = ("sequence-classification", "causal-lm")


@dataclass
class FinetuneConfig:
    model: str | None = None  # HF model directory; None: the shipped all-MiniLM-L6-v2
    task: str = "sequence-classification"  # or causal-lm (next-token loss on the texts; labels unused)
    adapter: str = "none"  # none: train the model's own weights | lora: peft LoRA (fp32) + head
    lora_r: int = 8
    data: str = "rotten-tomatoes"  # rotten-tomatoes | bbc-news | path to .csv/.tsv/.jsonl
    text_column: str = "text"
    label_column: str = "label"
    on_bad_row: str = "skip"  # skip (counted) | error (refuse with the line number)
    max_length: int = 64
    max_train_examples: int | None = 4000
    eval_examples: int = 2000
    policy: str = "budget"
    top_p: float = 0.3
    budget: float | None = 0.5  # None: half the backward work on top of the forward floor
    granularity: str = "block"
    estimator: str = "grad-norm"
    p_norm: float = 2.0
    beta: float = 0.9
    max_staleness: int = 20
    clip_top_p: float = 1.0  # clip policy: fraction of components per step (1: all, LR-modulated)
    probe_every: int = 50  # elastic policy: steps between importance probes (full steps)
    static_warmup_steps: int = 10  # static / static-budget: all-components steps before freezing
    train_embeddings: bool = False  # embeddings are ~half of MiniLM; frozen by default on devices
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    evict_after: int = 200
    seed: int = 0
    threads: int | None = None  # None: the profile's default threads, else 2
    eval_every: int = 0
    out: str | None = None  # run directory; None: runs/<data>-<policy>-<time>
    profile: str | None = None  # device profile (name or YAML): threads, power model, sensor
    memory_budget: str | None = None  # e.g. 1.5GB: selections shrink so peak RSS stays under it
    energy_budget: str | None = None  # e.g. 2Wh or 500J: the run stops cleanly when it is spent
    time_budget: str | None = None  # e.g. 20m, 90s, 1h: likewise for wall time
    country: str = "USA"  # ISO code for the CO2-equivalent (codecarbon, offline)
    checkpoint_every: int = 50  # steps between atomic checkpoints (0: only when a budget stops the run)
    report: bool = True  # write RUN_DIR/report.html at the end (--no-report to skip)
    checkpoint_seconds: float = 0.0  # also checkpoint when this much time passed since the last (0: off)

    def validate(self) -> "FinetuneConfig":
        checks = [
            (self.policy in POLICIES, f"--policy must be one of {', '.join(POLICIES)}"),
            (self.granularity in GRANULARITIES, f"--granularity must be one of {', '.join(GRANULARITIES)}"),
            (self.estimator in ESTIMATORS, f"--estimator must be one of {', '.join(ESTIMATORS)}"),
            (0.0 < self.top_p <= 1.0, f"--top-p must be in (0, 1], got {self.top_p}"),
            (self.budget is None or 0.0 < self.budget <= 1.0,
             f"--budget must be in (0, 1] of a full step, got {self.budget}"),
            (self.p_norm in (1.0, 2.0), f"--p-norm must be 1 or 2, got {self.p_norm}"),
            (0.0 <= self.beta < 1.0, f"--beta must be in [0, 1), got {self.beta}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (self.threads is None or self.threads >= 1, f"--threads must be >= 1, got {self.threads}"),
            (self.max_length >= 2, f"--max-length must be >= 2, got {self.max_length}"),
            (self.eval_examples >= 1, f"--eval-examples must be >= 1, got {self.eval_examples}"),
            (self.max_staleness >= 1, f"--max-staleness must be >= 1, got {self.max_staleness}"),
            (self.on_bad_row in ("skip", "error"), "--on-bad-row must be skip or error"),
            (self.task in TASKS, f"--task must be one of {', '.join(TASKS)}"),
            (self.adapter in ("none", "lora"), "--adapter must be none or lora"),
            (self.lora_r >= 1, f"--lora-r must be >= 1, got {self.lora_r}"),
            (0.0 < self.clip_top_p <= 1.0, f"--clip-top-p must be in (0, 1], got {self.clip_top_p}"),
            (self.probe_every >= 1, f"--probe-every must be >= 1, got {self.probe_every}"),
            (self.static_warmup_steps >= 1, f"--static-warmup-steps must be >= 1, got {self.static_warmup_steps}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UserError(msg)
        return self

    def resolved(self) -> "FinetuneConfig":
        """A copy with the profile's defaults filled in where the user gave none."""
        cfg = dataclasses.replace(self)
        prof = None
        if cfg.profile:
            from .device_profiles import load_profile

            prof = load_profile(cfg.profile)
            if cfg.memory_budget is None and prof.defaults.get("memory_budget"):
                cfg.memory_budget = str(prof.defaults["memory_budget"])
            if "checkpoint_every" in prof.defaults and self.checkpoint_every == FinetuneConfig.checkpoint_every:
                cfg.checkpoint_every = int(prof.defaults["checkpoint_every"])
        if cfg.threads is None:
            cfg.threads = prof.default_threads if prof else 2
        return cfg.validate()

    def budgets(self) -> tuple[int | None, float | None, float | None]:
        """(memory bytes, energy joules, time seconds) parsed from the budget strings."""
        from .device_profiles import parse_bytes

        mem = parse_bytes(self.memory_budget) if self.memory_budget else None
        energy = parse_energy(self.energy_budget) if self.energy_budget else None
        secs = parse_duration(self.time_budget) if self.time_budget else None
        for name, v in (("--memory-budget", mem), ("--energy-budget", energy), ("--time-budget", secs)):
            if v is not None and v <= 0:
                raise UserError(f"{name} must be positive")
        return mem, energy, secs

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_ENERGY = {"j": 1.0, "kj": 1e3, "wh": 3600.0, "kwh": 3.6e6, "mwh": 3.6}
_TIME = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def _number_unit(text: str, units: dict, what: str, example: str) -> float:
    import re

    m = re.match(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in units:
        raise UserError(f"cannot read {text!r} as {what} (examples: {example})")
    return float(m.group(1)) * units[unit]


def parse_energy(text: str) -> float:
    """Joules from '2Wh', '500J', '1.5kJ'."""
    return _number_unit(text, _ENERGY, "an energy", "2Wh, 500J, 1.5kJ")


def parse_duration(text: str) -> float:
    """Seconds from '20m', '90s', '1.5h'."""
    return _number_unit(text, _TIME, "a duration", "20m, 90s, 1.5h")

