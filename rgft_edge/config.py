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


@dataclass
class FinetuneConfig:
    model: str | None = None  # HF model directory; None: the shipped all-MiniLM-L6-v2
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
    train_embeddings: bool = False  # embeddings are ~half of MiniLM; frozen by default on devices
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    evict_after: int = 200
    seed: int = 0
    threads: int = 2
    eval_every: int = 0
    out: str | None = None  # run directory; None: runs/<data>-<policy>-<time>

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
            (self.threads >= 1, f"--threads must be >= 1, got {self.threads}"),
            (self.max_length >= 2, f"--max-length must be >= 2, got {self.max_length}"),
            (self.eval_examples >= 1, f"--eval-examples must be >= 1, got {self.eval_examples}"),
            (self.max_staleness >= 1, f"--max-staleness must be >= 1, got {self.max_staleness}"),
            (self.on_bad_row in ("skip", "error"), "--on-bad-row must be skip or error"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UserError(msg)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
