"""Selection policies: from the error map to (which components train, at which LR multiplier).

The built-in policies are registered below, one line each; see `registry.py` to add one.
"""

from __future__ import annotations

from .base import Policy, PolicyContext, Selection, top_k_mask
from .baselines import Full, HeadOnly, RandomSelection, StaticSelection, nearest_output_first
from .elastic import Elastic
from .options import (BudgetOptions, ClipOptions, ElasticOptions, NoOptions, PacedOptions, RankOptions, ScaleOptions,
                      StaticBudgetOptions, StaticOptions, TopPOptions, option, resolve_budget)
from .paced import Paced
from .parts import FrozenAfterWarmup, Knapsack, Quota
from .registry import (PolicySpec, check_option_values, get_policy, make_policy, option_fields,
                       policy_names, policy_specs, register_policy, unregister_policy)
from .score import ClipRule, ScorePolicy, rank_rule, scale_rule


def _quota(ctx: PolicyContext, p: float) -> Quota:
    return Quota(len(ctx.table), p)


def _knapsack(ctx: PolicyContext, o: BudgetOptions) -> Knapsack:
    return Knapsack(ctx.cost, resolve_budget(o.budget, ctx.cost.floor), amortize=o.budget_amortize)


# -- the error map's policies ------------------------------------------------------------------
register_policy("top-p", TopPOptions, lambda c, o: ScorePolicy(_quota(c, o.top_p)),
                "the top fraction of components by error score")
register_policy("rank", RankOptions, lambda c, o: ScorePolicy(_quota(c, o.top_p), rank_rule(o.rank_floor)),
                "top-p, LR multiplier falling with rank")
register_policy("scale", ScaleOptions,
                lambda c, o: ScorePolicy(_quota(c, o.scale_top_p), scale_rule(o.scale_alpha)),
                "seed 001: LR eta0 * (1 + alpha * E / max E)")
register_policy("clip", ClipOptions, lambda c, o: ScorePolicy(_quota(c, o.clip_top_p), ClipRule(
    o.clip_eps, o.clip_thresh_init, o.clip_thresh_final, o.clip_warmup_steps)),
    "seed 002: LR eta0 * clip(E / (thresh_t * max E), eps, 1)")
register_policy("budget", BudgetOptions, lambda c, o: ScorePolicy(_knapsack(c, o)),
                "most error covered within a depth-priced step budget (knapsack)")
register_policy("paced", PacedOptions,
                lambda c, o: Paced(_knapsack(c, o), o.pace_bank, o.pace_lr_age, o.pace_lr_cap),
                "budget on average: value accrues while a block waits, savings buy deep steps")
# -- baselines ---------------------------------------------------------------------------------
register_policy("full", NoOptions, lambda c, o: Full(), "every component, every step")
register_policy("random", TopPOptions, lambda c, o: RandomSelection(_quota(c, o.top_p), c.seed),
                "as many components as top-p, drawn at random")
register_policy("static", StaticOptions,
                lambda c, o: StaticSelection(_quota(c, o.top_p), o.static_warmup_steps),
                "top-p chosen once after an all-components warm-up, then fixed")
register_policy("head-only", NoOptions, lambda c, o: HeadOnly(c.table), "the task head only")
register_policy("random-budget", BudgetOptions, lambda c, o: RandomSelection(_knapsack(c, o), c.seed),
                "random order, each component kept while the step fits the budget")
register_policy("static-budget", StaticBudgetOptions,
                lambda c, o: StaticSelection(_knapsack(c, o), o.static_warmup_steps),
                "budget selection chosen once after a warm-up, then fixed")
register_policy("top-blocks", BudgetOptions,
                lambda c, o: ScorePolicy(_knapsack(c, o), values=nearest_output_first(c.cost.depth)),
                "map-free: the components nearest the output that fit the budget")
register_policy("elastic", ElasticOptions, lambda c, o: Elastic(_knapsack(c, o), o.probe_every),
                "ElasticTrainer-style: g*dw importance from periodic full probe steps, knapsack")

__all__ = ["Policy", "PolicyContext", "PolicySpec", "Selection", "top_k_mask", "make_policy",
           "register_policy", "unregister_policy", "get_policy", "policy_names", "policy_specs",
           "option_fields", "check_option_values", "option", "Quota", "Knapsack", "FrozenAfterWarmup",
           "ScorePolicy", "ClipRule", "rank_rule", "scale_rule", "Full", "HeadOnly",
           "RandomSelection", "StaticSelection", "nearest_output_first", "Elastic", "Paced", "resolve_budget"]
