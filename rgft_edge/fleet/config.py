"""One fleet run's settings: the same dataclass on the server, on every client and in the CLI.

Flower hands a run's settings to both apps as a flat `run_config` (str / int / float / bool
values), so the dataclass converts to and from one; unknown keys and bad values are refused with
one clear line before any model loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from ..errors import UserError

# method -> (adapter, every component uploaded each round?)
METHODS = {
    "rgft": ("full", False),        # the error map picks which model blocks to train and upload
    "rgft-lora": ("lora", False),   # the same over LoRA adapters (+ head)
    "fedavg-full": ("full", True),  # FedAvg of every trainable block
    "fedavg-lora": ("lora", True),  # FedAvg of peft LoRA adapters + head
}
CODINGS = ("none", "int8")


@dataclass
class FleetConfig:
    method: str = "rgft"
    model: str = "minilm"          # a shipped model name or an HF directory
    data: str = "bbc-news"         # a shipped dataset or a .csv/.tsv/.jsonl file
    text_column: str = "text"
    label_column: str = "label"
    clients: int = 10              # partitions of the training data (one per SuperNode)
    alpha: float = 0.3             # Dirichlet concentration over labels (smaller: less IID)
    rounds: int = 10
    fraction_train: float = 1.0    # share of connected clients asked per round
    min_clients: int = 2           # wait for at least this many before a round starts
    local_steps: int = 5           # RGFT steps per client per round
    batch_size: int = 16
    lr: float = 1e-4
    upload_budget: float = 0.1     # rgft methods: bytes a client uploads per round (as sent, after
                                   # coding), as a share of the whole trainable state in float32
    probe_every: int = 1           # rgft methods: re-measure every component's error every k rounds
    coding: str = "none"           # uploaded deltas: none (fp32 values) | int8 (per-tensor scale)
    held_out: int = 400            # test examples the server evaluates the global model on
    validation: int = 200          # taken from the training data before it is dealt out: choose settings on it
    max_length: int = 64
    lora_r: int = 8
    seed: int = 0
    round_timeout_s: float = 600.0  # replies later than this are left out of the round
    max_reply_mb: float = 0.0      # 0: refuse replies larger than the whole trainable state + 1 MB
    profile: str = "raspberry-pi-5"  # device profile pricing each client's energy (no sensor here)
    energy_budget_j: float = 0.0   # per client per round; 0: none
    threads: int = 1
    out: str = ""                  # server: results + checkpoint directory ("" = none)
    resume: bool = False           # server: continue from the checkpoint in `out`

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"unknown fleet method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.coding not in CODINGS:
            raise UserError(f"unknown coding {self.coding!r}; choose one of {', '.join(CODINGS)}")
        for name in ("clients", "rounds", "local_steps", "batch_size", "min_clients", "probe_every", "threads"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.upload_budget <= 1:
            raise UserError(f"upload_budget is a share of the trainable bytes: (0, 1], got {self.upload_budget}")
        if not 0 < self.fraction_train <= 1:
            raise UserError(f"fraction_train must be in (0, 1], got {self.fraction_train}")
        if self.held_out < 1 or self.validation < 0:
            raise UserError(f"held_out must be >= 1 and validation >= 0, got {self.held_out} / {self.validation}")
        if self.alpha <= 0 or self.lr <= 0 or self.round_timeout_s <= 0:
            raise UserError("alpha, lr and round_timeout_s must be positive")
        if self.min_clients > self.clients:
            raise UserError(f"min_clients ({self.min_clients}) exceeds clients ({self.clients})")

    @property
    def adapter(self) -> str:
        return METHODS[self.method][0]

    @property
    def uploads_everything(self) -> bool:
        return METHODS[self.method][1]

    def to_run_config(self) -> dict[str, Any]:
        """Flower's flat run_config, keys with dashes as Flower apps write them."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> "FleetConfig":
        known = {f.name: f for f in fields(cls)}
        values = {}
        for key, value in run_config.items():
            name = key.replace("-", "_")
            if name not in known:
                raise UserError(f"unknown fleet setting {key!r}")
            default = known[name].default
            try:
                if isinstance(default, bool):
                    value = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
                elif isinstance(default, (int, float, str)):
                    value = type(default)(value)
            except (TypeError, ValueError) as e:
                raise UserError(f"fleet setting {key!r}: {value!r} is not a {type(default).__name__}") from e
            values[name] = value
        return cls(**values)

    def replace(self, **changes: Any) -> "FleetConfig":
        return dataclasses.replace(self, **changes)
