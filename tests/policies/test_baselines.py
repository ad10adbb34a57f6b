"""Baselines at RGFT's budget: random, static and ElasticTrainer-style selection."""

import numpy as np
import pytest

from rgft_edge.costs import CostModel
from rgft_edge.partition import build_component_table
from rgft_edge.policies import Elastic, Knapsack, RandomSelection, StaticSelection, make_policy
from tests.conftest import text_batch, tiny_bert


@pytest.fixture(scope="module")
def table():
    model = tiny_bert(layers=4)
    return build_component_table(model, "block", text_batch())


def knapsack(table, budget=0.6):
    return Knapsack(CostModel(table), budget)


def test_random_budget_fits_the_budget_and_varies(table):
    pol = RandomSelection(knapsack(table), seed=3)
    cost = CostModel(table)
    masks = [pol.select(np.ones(len(table)), t, np.zeros(len(table), bool)).mask for t in range(20)]
    assert all(cost.fraction(m) <= 0.6 + 1e-9 for m in masks)
    assert len({m.tobytes() for m in masks}) > 3  # random, not one fixed set


def test_static_budget_trains_everything_then_freezes_the_best_set(table):
    pol = StaticSelection(knapsack(table), warmup_steps=2)
    k = len(table)
    assert pol.select(np.ones(k), 0, np.zeros(k, bool)).mask.all() and pol.uses_scores
    scores = np.linspace(0, 1, k)
    frozen = pol.select(scores, 2, np.zeros(k, bool)).mask
    assert not pol.uses_scores
    assert np.array_equal(pol.select(scores[::-1], 9, np.zeros(k, bool)).mask, frozen)
    assert CostModel(table).fraction(frozen) <= 0.6 + 1e-9


def test_elastic_probes_with_full_steps_and_ranks_by_gain(table):
    k = len(table)
    pol = Elastic(knapsack(table), probe_every=5)
    none = np.zeros(k, bool)
    assert pol.wants_gain(0) and pol.select(np.ones(k), 0, none).mask.all()
    gain = np.zeros(k)
    gain[[k - 1, k - 2]] = [5.0, 3.0]  # only the top components helped
    pol.observe_gain(0, gain)
    chosen = pol.select(np.ones(k), 1, none).mask
    assert chosen[k - 1] and chosen[k - 2]
    assert not pol.wants_gain(4) and np.array_equal(pol.select(np.zeros(k), 4, none).mask, chosen)
    assert pol.wants_gain(5) and pol.select(np.ones(k), 5, none).mask.all()
    state = pol.state_dict()
    again = Elastic(knapsack(table), probe_every=5)
    again.load_state_dict(state)
    assert np.array_equal(again.select(np.ones(k), 6, none).mask, chosen)


def test_made_by_name_and_bad_probe_interval(table):
    for name, cls in (("random-budget", RandomSelection), ("static-budget", StaticSelection), ("elastic", Elastic)):
        assert isinstance(make_policy(name, table, budget=0.6), cls)
    with pytest.raises(ValueError, match="probe-every"):
        make_policy("elastic", table, budget=0.6, probe_every=0)
