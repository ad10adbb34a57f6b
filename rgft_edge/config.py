"""The fine-tuning configuration, grouped by concern; its defaults ARE the default demo.

`rgft-edge finetune` with no flags runs `FinetuneConfig()` (a test checks that). Every field of a
group is one command-line flag (the field name with dashes unless its metadata names another), and
`finetune`, `train` and `compile` build their flags from these same groups, so a flag means one
thing in every command. The options of the selection policies come from the policy registry. The
resolved configuration is written to the run directory flat, one key per flag.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from .components import GRANULARITIES
from .errors import UserError
from .estimators import ESTIMATORS
from .policies import check_option_values, option_fields, policy_names

TASKS = ("sequence-classification", "causal-lm", "image-classification")
ADAPTERS = ("none", "lora")


def setting(default: Any, help: str = "", *, flag: str | None = None, choices: Callable | tuple | None = None,
            check: Callable[[Any], bool] | None = None, must: str = ""):
    """A config field: default, --help text, the flag name when it differs from the field, allowed
    choices (a tuple, or a function returning one: registries can grow), and a range check."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices,
                                            "check": check, "must": must})


def _positive(v) -> bool:
    return v is not None and v > 0


def _at_least(n: float) -> Callable[[Any], bool]:
    return lambda v: v is not None and v >= n


@dataclass(slots=True)
class DataConfig:
    source: str = setting("rotten-tomatoes", "rotten-tomatoes, bbc-news, orl-faces (images), a .csv/.tsv/.jsonl "
                          "file, or for --task image-classification a folder of class subfolders or a .npz",
                          flag="data")
    text_column: str = setting("text", "text column of a .csv/.tsv/.jsonl file")
    label_column: str = setting("label", "label column of a .csv/.tsv/.jsonl file")
    on_bad_row: str = setting("skip", "skip (counted) or error (refuse with the line number)",
                              choices=("skip", "error"))
    encoding: str = setting("auto", "text encoding of a .csv/.tsv/.jsonl file: auto (UTF-8; a row that is "
                            "not is read as cp1252, counted, not dropped) or a codec name (utf-8, cp1252, "
                            "latin-1, utf-16, ...; rows it cannot decode are skipped)")
    max_length: int = setting(64, "tokens per example", check=_at_least(2), must=">= 2")
    max_train_examples: int | None = setting(4000, "cap on training examples (0: all)")
    eval_examples: int = setting(2000, "held-out (test) examples, evaluated at the end", check=_at_least(1), must=">= 1")
    eval_data: str | None = setting(None, "a separate test set (a .csv/.tsv/.jsonl file with the same columns "
                                    "and labels, or a shipped dataset): all of --data then trains")
    validation_examples: int = setting(0, "validation examples, carved from the training data, for the "
                                       "evaluations during training (0: those use the held-out set)",
                                       check=_at_least(0), must=">= 0")
    batch_size: int = setting(16, "examples per step", check=_at_least(1), must=">= 1")
    image_size: int | None = setting(None, "image task: pixels per side (default: the model's)",
                                     check=lambda v: v is None or v >= 8, must=">= 8")
    drift_labels: str | None = setting(None, "the drift task: labels (names or indices, comma-separated) "
                                       "seen only after the drift; validation and test keep only them")
    drift_at: float = setting(0.5, "drift task: share of the run (of --max-train-seconds when set, else of "
                              "the steps) before the stream switches to the drift labels",
                              check=lambda v: v is not None and 0.0 <= v < 1.0, must="in [0, 1)")


@dataclass(slots=True)
class ModelConfig:
    path: str | None = setting(None, "HF model directory, or a shipped model: minilm (default, "
                               "all-MiniLM-L6-v2), smollm2-135m (SmolLM2-135M-Instruct, Llama-like; "
                               "use with --task causal-lm), efficientnet-lite0 (ImageNet CNN, the default of "
                               "--task image-classification)", flag="model")
    task: str = setting("sequence-classification", "sequence-classification, causal-lm, or image-classification "
                        "(default model efficientnet-lite0)", choices=TASKS)
    adapter: str = setting("none", "none: train the model's own weights | lora: peft LoRA + the head",
                           choices=ADAPTERS)
    lora_r: int = setting(8, "LoRA rank", check=_at_least(1), must=">= 1")
    granularity: str | None = setting("block", "components: layer, block (attention vs FFN), head, lora",
                                      choices=GRANULARITIES)
    train_embeddings: bool = setting(False, "train the embedding block too (frozen by default on devices)")


@dataclass(slots=True)
class SelectionConfig:
    policy: str = setting("budget", "selection policy", choices=policy_names)
    estimator: str = setting("grad-norm", "grad-norm or activation (||dL/dh||*||h||)", choices=ESTIMATORS)
    p_norm: float = setting(2.0, "p of the gradient norm (1 or 2)", check=lambda v: v in (1.0, 2.0), must="1 or 2")
    beta: float = setting(0.9, "EMA factor of the error map", check=lambda v: 0.0 <= v < 1.0, must="in [0, 1)")
    max_staleness: int = setting(20, "steps before an unmeasured component is forced in",
                                 check=_at_least(1), must=">= 1")
    calibrate_cost: bool = setting(False, "measure step time per backprop cut depth before training and "
                                   "price selections in seconds (--budget is then a share of a full "
                                   "step's measured time)")
    # every registered policy's options by flag name (--top-p, --budget, ...), defaults filled in
    options: dict = field(default_factory=lambda: {n: f.default for n, f in option_fields().items()})


@dataclass(slots=True)
class TrainingConfig:
    epochs: int = setting(1, "passes over the training data", check=_at_least(1), must=">= 1")
    max_steps: int | None = setting(None, "stop after this many steps")
    lr: float = setting(1e-4, "AdamW learning rate", check=_positive, must="positive")
    weight_decay: float = setting(0.01, "AdamW decoupled weight decay")
    evict_after: int = setting(200, "steps before a cold component's AdamW state is dropped")
    seed: int = setting(0, "seed of the data order, the model head and random policies")
    threads: int | None = setting(None, "CPU threads (default: the profile's, else 2)",
                                  check=lambda v: v is None or v >= 1, must=">= 1")
    eval_every: int = setting(0, "steps between held-out evaluations (0: --eval-points)")
    eval_points: int = setting(10, "with --eval-every and --eval-every-seconds at 0: this many evaluations "
                               "during training, evenly spaced, on a fixed subset of 200 held-out (or "
                               "validation) examples, so the report draws a curve; the full held-out set "
                               "is evaluated at the end (0: only then)", check=_at_least(0), must=">= 0")
    eval_every_seconds: float = setting(0.0, "also evaluate each time this much training time passed "
                                        "(evaluations excluded; 0: off)", check=_at_least(0), must=">= 0")
    max_train_seconds: float | None = setting(None, "stop once this much training time is spent "
                                              "(evaluations excluded); a completed run, exit status 0",
                                              check=lambda v: v is None or v > 0, must="positive")


@dataclass(slots=True)
class LimitsConfig:
    profile: str | None = setting(None, "device profile (name or YAML): threads, power model, sensor, defaults")
    memory_budget: str | None = setting(None, "e.g. 1.5GB: selections shrink so peak RSS stays under it")
    energy_budget: str | None = setting(None, "e.g. 2Wh or 500J: the run stops cleanly when it is spent")
    time_budget: str | None = setting(None, "e.g. 20m, 90s, 1h: likewise for wall time")
    country: str = setting("USA", "ISO code for the CO2-equivalent (codecarbon, offline)")


@dataclass(slots=True)
class OutputConfig:
    out: str | None = setting(None, "run directory (default runs/<data>-<policy>-<time>)")
    checkpoint_every: int = setting(50, "steps between atomic checkpoints (0: only when a budget stops the run)")
    checkpoint_seconds: float = setting(0.0, "also checkpoint when this much time passed since the last (0: off)")
    report: bool = setting(True, "write RUN_DIR/report.html at the end (--no-report to skip)")


GROUPS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "selection": SelectionConfig,
                           "training": TrainingConfig, "limits": LimitsConfig, "output": OutputConfig}


def flag_of(f: dataclasses.Field) -> str:
    """The flag key (underscores) of a config field."""
    return f.metadata.get("flag") or f.name


def group_fields(group: type) -> list[dataclasses.Field]:
    """The fields of a group that are flags (the policy options dict is expanded separately)."""
    return [f for f in dataclasses.fields(group) if f.name != "options"]


@dataclass(slots=True)
class FinetuneConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    # -- flat view: one key per flag (run directories, resume, benchmarks) ----------------------
    @classmethod
    def of(cls, **flags) -> "FinetuneConfig":
        """From flag values (`data=`, `policy=`, `top_p=`, ...); the rest keep their defaults."""
        cfg = cls()
        cfg.update(**flags)
        return cfg

    def update(self, **flags) -> "FinetuneConfig":
        options = self.selection.options
        for key, value in flags.items():
            where = _FLAG_PLACES.get(key)
            if where is not None:
                setattr(getattr(self, where[0]), where[1], value)
            elif key in option_fields():
                options[key] = value
            else:
                raise UserError(f"unknown setting {key!r}")
        return self

    def flat(self) -> dict:
        out = {}
        for gname, group in GROUPS.items():
            for f in group_fields(group):
                out[flag_of(f)] = getattr(getattr(self, gname), f.name)
        out.update(self.selection.options)
        return out

    to_dict = flat

    # -- checks and defaults --------------------------------------------------------------------
    def validate(self) -> "FinetuneConfig":
        for gname, group in GROUPS.items():
            for f in group_fields(group):
                value, meta = getattr(getattr(self, gname), f.name), f.metadata
                choices = meta.get("choices")
                choices = choices() if callable(choices) else choices
                name = "--" + flag_of(f).replace("_", "-")
                if choices and value not in choices and not (value is None and f.default is None):
                    raise UserError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
                if meta.get("check") and not meta["check"](value):
                    raise UserError(f"{name} must be {meta['must']}, got {value}")
        try:
            check_option_values(self.selection.options)
        except ValueError as e:
            raise UserError(str(e)) from e
        return self

    def resolved(self) -> "FinetuneConfig":
        """A copy with the profile's defaults filled in wherever the user kept the default."""
        cfg = FinetuneConfig.of(**self.flat())
        prof = None
        if cfg.limits.profile:
            from .device_profiles import load_profile

            prof = load_profile(cfg.limits.profile)
            stock = FinetuneConfig().flat()
            mine = cfg.flat()
            cfg.update(**{k: v for k, v in prof.defaults.items()
                          if k in stock and mine[k] == stock[k] and k != "threads"})
        if cfg.training.threads is None:
            cfg.training.threads = prof.default_threads if prof else 2
        if cfg.model.task == "image-classification" and cfg.data.source == DataConfig().source:
            cfg.data.source = "orl-faces"  # the image task's shipped data (the stock default is text)
        return cfg.validate()

    def budgets(self) -> tuple[int | None, float | None, float | None]:
        """(memory bytes, energy joules, time seconds) parsed from the budget strings."""
        from .budgets.units import parse_bytes, parse_duration, parse_energy

        lim = self.limits
        mem = parse_bytes(lim.memory_budget) if lim.memory_budget else None
        energy = parse_energy(lim.energy_budget) if lim.energy_budget else None
        secs = parse_duration(lim.time_budget) if lim.time_budget else None
        for name, v in (("--memory-budget", mem), ("--energy-budget", energy), ("--time-budget", secs)):
            if v is not None and v <= 0:
                raise UserError(f"{name} must be positive")
        return mem, energy, secs


# flag key -> (group attribute, field name)
_FLAG_PLACES = {flag_of(f): (g, f.name) for g, grp in GROUPS.items() for f in group_fields(grp)}
