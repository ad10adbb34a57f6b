"""Policy options: small dataclasses whose fields ARE the command-line flags (peft's config style).

Each field is made with `option(default, help, check, must)`; the flag is the field name with
dashes (`top_p` -> `--top-p`). Policies share an option by sharing its dataclass (e.g. every
count-based policy uses `TopPOptions.top_p`), so one flag means one thing everywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable


def option(default: Any, help: str, check: Callable[[Any], bool] | None = None, must: str = ""):
    """A policy option field: its default, its --help text, and a check with what it must be."""
    return field(default=default, metadata={"help": help, "check": check, "must": must})


def fraction(v) -> bool:
    return v is not None and 0.0 < v <= 1.0


def at_least_one(v) -> bool:
    return v is not None and v >= 1


def check_options(opts) -> None:
    """ValueError naming the flag for the first option outside its range."""
    for f in dataclasses.fields(opts):
        check, value = f.metadata.get("check"), getattr(opts, f.name)
        if check is not None and not check(value):
            raise ValueError(f"--{f.name.replace('_', '-')} must be {f.metadata.get('must')}, got {value}")


@dataclass
class NoOptions:
    pass


@dataclass
class TopPOptions:
    top_p: float = option(0.3, "fraction of components per step (top-p, rank, random, static)",
                          fraction, "in (0, 1]")


@dataclass
class BudgetOptions:
    budget: float | None = option(
        0.5, "per-step cost budget as a fraction of a full step (budget policies); "
             "unset in `train`: the forward floor plus half the backward work",
        lambda v: v is None or 0.0 < v <= 1.0, "in (0, 1] of a full step")
    budget_amortize: bool = option(
        False, "budget policies: count forced refresh steps inside the budget (their overspending "
               "is paid back by the following steps, so the budget holds on average)")


@dataclass
class WarmupOptions:
    static_warmup_steps: int = option(10, "static / static-budget: all-components steps before freezing",
                                      at_least_one, ">= 1")


def resolve_budget(budget: float | None, floor: float) -> float:
    """An unset budget means the forward floor plus half the backward work."""
    return budget if budget is not None else floor + 0.5 * (1.0 - floor)


@dataclass
class RankOptions(TopPOptions):
    rank_floor: float = option(0.25, "rank: LR multiplier of the last-ranked selected component",
                               fraction, "in (0, 1]")


@dataclass
class ScaleOptions:
    scale_top_p: float = option(1.0, "scale: fraction of components per step (1: all, LR-modulated)",
                                fraction, "in (0, 1]")
    scale_alpha: float = option(1.0, "scale: alpha in eta0 * (1 + alpha * E / max E)",
                                lambda v: v is not None and v >= 0, ">= 0")


@dataclass
class ClipOptions:
    clip_top_p: float = option(1.0, "clip: fraction of components per step (1: all, LR-modulated)",
                               fraction, "in (0, 1]")
    clip_eps: float = option(0.1, "clip: LR floor eps (keeps every trained component moving)",
                             fraction, "in (0, 1]")
    clip_thresh_init: float = option(0.1, "clip: threshold at step 0 (fraction of max E)",
                                     fraction, "in (0, 1]")
    clip_thresh_final: float = option(0.5, "clip: threshold after the warm-up", fraction, "in (0, 1]")
    clip_warmup_steps: int = option(100, "clip: steps over which the threshold rises", at_least_one, ">= 1")


@dataclass
class StaticOptions(TopPOptions, WarmupOptions):
    pass


@dataclass
class StaticBudgetOptions(BudgetOptions, WarmupOptions):
    pass


@dataclass
class ElasticOptions(BudgetOptions):
    probe_every: int = option(50, "elastic: steps between importance probes (full steps)",
                              at_least_one, ">= 1")


@dataclass
class PacedOptions(BudgetOptions):
    pace_bank: float = option(1.0, "paced: most unspent budget saved toward a deep step (fraction of "
                                   "a full step)", lambda v: v is not None and v >= 0, ">= 0")
    pace_lr_age: float = option(0.0, "paced: LR multiplier min(steps waited, --pace-lr-cap)^gamma for "
                                     "a component trained after waiting (0: off)",
                                lambda v: v is not None and v >= 0, ">= 0")
    pace_lr_cap: float = option(8.0, "paced: cap on the waited steps in the LR multiplier",
                                at_least_one, ">= 1")
