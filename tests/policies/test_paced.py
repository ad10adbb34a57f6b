"""The `paced` policy: budget on average, value accrued while waiting, savings spent on deep steps."""

import json

import numpy as np
import pytest

from rgft_edge.costs import CostModel
from rgft_edge.policies import Knapsack, Paced, ScorePolicy, make_policy

from .test_policies import chain_table

K = 6
# the bottom block has the highest error: a plain per-step knapsack at this budget never reaches it
SCORES = np.array([5.0, 1.0, 1.0, 1.0, 1.0, 1.0])
NONE = np.zeros(K, bool)


def _cost():
    return CostModel(chain_table(K), batch_size=10 ** 9)  # optimizer term negligible


def _run(pol, steps, scores=SCORES, forced_every=0):
    masks = []
    for step in range(steps):
        forced = NONE.copy()
        if forced_every and step and step % forced_every == 0:
            forced[0] = True
            pol.select(scores, step, NONE)  # the loop's first ask, then with the forced set
        masks.append(pol.select(scores, step, forced).mask)
    return masks


def test_budget_holds_on_average_and_deep_blocks_train():
    cost = _cost()
    budget = 0.65
    masks = _run(Paced(Knapsack(cost, budget), bank=1.0), 200)
    costs = [cost.fraction(m) for m in masks]
    assert np.mean(costs) <= budget + 0.01
    assert max(costs) > budget  # savings were spent on deeper steps
    assert sum(m[0] for m in masks) >= 10  # the high-error bottom block trains, unforced
    plain = _run(ScorePolicy(Knapsack(cost, budget)), 200)
    assert sum(m[0] for m in plain) == 0  # ... which the per-step knapsack never does


def test_no_bank_is_the_per_step_budget():
    cost = _cost()
    masks = _run(Paced(Knapsack(cost, 0.65), bank=0.0), 50)
    assert max(cost.fraction(m) for m in masks) <= 0.65 + 1e-9


def test_forced_deep_step_is_paid_back_and_trains_above_the_cut():
    cost = _cost()
    pol = Paced(Knapsack(cost, 0.65), bank=0.5)
    masks = _run(pol, 60, scores=np.ones(K), forced_every=10)
    for step in range(10, 60, 10):
        assert masks[step][0]  # the forced block trained
        assert masks[step].sum() > 1  # with what sits above it (cheap once the cut is paid)
    assert np.mean([cost.fraction(m) for m in masks]) <= 0.65 + 0.02
    assert pol.credit <= 0.5 + 1e-9


def test_lr_multiplier_grows_with_the_wait():
    pol = Paced(Knapsack(_cost(), 0.65), bank=1.0, lr_age=0.5, lr_cap=4.0)
    sels = [pol.select(SCORES, step, NONE) for step in range(40)]
    mults = np.concatenate([s.lr_mult[s.mask] for s in sels])
    assert mults.min() >= 1.0 and mults.max() <= 2.0 + 1e-9 and mults.max() > 1.0
    for s in sels:
        assert np.all(s.lr_mult[~s.mask] == 0)


def test_state_round_trip_continues_identically():
    cost = _cost()
    a = Paced(Knapsack(cost, 0.65), bank=1.0)
    _run(a, 17)
    b = Paced(Knapsack(cost, 0.65), bank=1.0)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))  # checkpoints are JSON
    rest_a = [a.select(SCORES, s, NONE).mask for s in range(17, 40)]
    rest_b = [b.select(SCORES, s, NONE).mask for s in range(17, 40)]
    assert all(np.array_equal(x, y) for x, y in zip(rest_a, rest_b))


def test_registered_with_checked_options():
    from rgft_edge.components import ComponentTable  # noqa: F401  (table comes from the chain)
    table = chain_table(K)
    pol = make_policy("paced", table, seed=0, cost=_cost(), budget=0.65, pace_bank=0.5)
    assert isinstance(pol, Paced) and pol.bank == 0.5
    with pytest.raises(ValueError, match="--pace-bank"):
        make_policy("paced", table, seed=0, cost=_cost(), budget=0.65, pace_bank=-1.0)
