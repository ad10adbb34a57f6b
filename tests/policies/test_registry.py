"""The policy registry: every registered policy can be built, tightened and saved; the CLI offers
exactly the registered options; a policy registered at test time runs end to end via the CLI."""

import json

import numpy as np
import pytest

from rgft_edge.budgets import BudgetController
from rgft_edge.cli import build_parser, main
from rgft_edge.costs import CostModel
from rgft_edge.meters import EnergyResult
from rgft_edge.partition import build_component_table
from rgft_edge.policies import (NoOptions, make_policy, option_fields, policy_names, register_policy,
                                unregister_policy)
from tests.conftest import text_batch, tiny_bert
from tests.policies.every_other import EveryOther, EveryOtherOptions

CANNOT_TIGHTEN = {"full", "head-only"}  # they declare it: tighten() returns None


@pytest.fixture(scope="module")
def table():
    return build_component_table(tiny_bert(layers=4), "block", text_batch())


def run_policy(pol, k, steps=12):
    scores = np.linspace(1.0, 2.0, k)
    none = np.zeros(k, bool)
    masks = []
    for step in range(steps):
        if pol.wants_gain(step):
            pol.observe_gain(step, scores)
        masks.append(pol.select(scores, step, none).mask)
    return masks


class FakeEnergy:
    """An energy meter that has spent a fixed amount: the projection then breaks any budget."""

    def __init__(self, joules):
        self.joules = joules

    def snapshot(self):
        return EnergyResult(self.joules, self.joules / 3600, 1.0, 1.0, 1.0, "estimated:test", 0.0, "test")


@pytest.mark.parametrize("name", policy_names())
def test_every_policy_tightens_or_declares_it_cannot(table, name):
    k = len(table)
    cost = CostModel(table)
    pol = make_policy(name, table, budget=0.9, top_p=0.9, static_warmup_steps=2, probe_every=3)
    before = run_policy(pol, k)[-1]
    controller = BudgetController(pol, total_steps=1000, energy_budget_j=10.0, energy_meter=FakeEnergy(5.0))
    for step in (10, 20, 30):
        assert controller.should_stop(step) is None  # 5 J used of 10: not spent, projected 500 J
    if name in CANNOT_TIGHTEN:
        assert controller.adjustments == []
        return
    assert len(controller.adjustments) == 3 and all(a["projected_j"] > 10 for a in controller.adjustments)
    after = run_policy(pol, k, steps=24)[-1]
    assert cost.fraction(after) <= cost.fraction(before) + 1e-9 and after.sum() <= before.sum()
    again = make_policy(name, table, budget=0.9, top_p=0.9, static_warmup_steps=2, probe_every=3)
    again.load_state_dict(json.loads(json.dumps(pol.state_dict())))  # tightening survives a resume
    scores, none = np.linspace(1.0, 2.0, k), np.zeros(k, bool)
    for step in range(24, 30):
        assert np.array_equal(pol.select(scores, step, none).mask, again.select(scores, step, none).mask)


def test_cli_offers_exactly_the_registered_options():
    finetune = build_parser()._subparsers._group_actions[0].choices["finetune"]
    flags = {a.dest for a in finetune._actions}
    assert set(option_fields()) <= flags
    # options no flag could reach before are real flags now
    ns = build_parser().parse_args(["finetune", "--policy", "clip", "--clip-eps", "0.2", "--rank-floor", "0.5"])
    assert (ns.clip_eps, ns.rank_floor) == (0.2, 0.5)
    with pytest.raises(ValueError, match="unknown policy option"):
        make_policy("top-p", table_of(3), alpha=2.0)


def table_of(k):
    from tests.policies.test_policies import chain_table

    return chain_table(k)


def test_option_clash_is_refused():
    from dataclasses import dataclass

    from rgft_edge.policies import option

    @dataclass
    class Clashing:
        top_p: float = option(0.9, "a different default for a shared flag")

    with pytest.raises(ValueError, match="clashes"):
        register_policy("clashing", Clashing, lambda c, o: None, "x")
    assert "clashing" not in policy_names()


def test_policy_registered_at_test_time_runs_end_to_end_through_the_cli(
        tiny_model_dir, sentiment_csv, tmp_path, capsys):
    # the one registration line:
    register_policy("every-other", EveryOtherOptions, lambda c, o: EveryOther(len(c.table), o.every_other_period),
                    "alternate upper and lower half")
    try:
        out = tmp_path / "run"
        code = main(["finetune", "--no-progress", "--model", str(tiny_model_dir), "--data", str(sentiment_csv),
                     "--text-column", "review", "--label-column", "sentiment", "--eval-examples", "24",
                     "--batch-size", "8", "--threads", "1", "--policy", "every-other",
                     "--every-other-period", "2", "--out", str(out), "--no-report"])
        assert code == 0, capsys.readouterr().err
        steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        selected = [r["selected"] for r in steps if r["type"] == "step"]
        k = len(json.loads((out / "components.json").read_text())["components"])
        half = k // 2
        assert selected[0] == selected[1] == list(range(k - half, k)) and selected[2] == list(range(half))  # period 2
        assert json.loads((out / "config.json").read_text())["config"]["every_other_period"] == 2
        assert "every-other" in capsys.readouterr().out
    finally:
        unregister_policy("every-other")
    assert "every-other" not in policy_names()


def test_no_options_policy_builds_without_flags(table):
    assert NoOptions() == NoOptions()
    assert make_policy("full", table).select(np.ones(len(table)), 0, np.zeros(len(table), bool)).mask.all()
