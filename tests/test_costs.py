"""Step cost: the FLOP model, and its calibration to measured seconds."""

import numpy as np
import pytest

from rgft_edge.costs import CostModel, calibrate
from tests.policies.test_policies import chain_table


def fake_machine(cost, fwd=6.0, igrad=2.0, wgrad=1.0):
    """A machine where forward costs `fwd` s, each level's input gradient `igrad`, weight gradient `wgrad`."""
    def step(mask):
        cut = cost.depth[mask].min()
        return fwd + igrad * (cost.depth > cut).sum() + wgrad * mask.sum()
    return step


def test_calibration_reprices_in_measured_seconds():
    cost = CostModel(chain_table(6), batch_size=10 ** 9)
    step = fake_machine(cost)
    info = calibrate(cost, step, 6.0)
    assert cost.unit.startswith("seconds")
    assert cost.full == pytest.approx(22.0) and cost.floor == pytest.approx(6 / 22)
    rng = np.random.default_rng(1)
    for mask in [cost.depth >= d for d in range(6)] + [rng.random(6) < 0.5 for _ in range(20)]:
        if mask.any():  # any selection, not only the measured ones, costs what the machine takes
            assert cost.flops(mask) == pytest.approx(step(mask))
    top = np.eye(6, dtype=bool)[5]
    assert cost.fraction(top) == pytest.approx(7 / 22)  # the FLOP model said 70/170 = 0.41
    assert cost.fraction(np.eye(6, dtype=bool)[0]) == pytest.approx(17 / 22)
    assert info["fit_error_pct"] < 1e-6


def test_optimizer_time_is_priced_per_parameter():
    cost = CostModel(chain_table(6), batch_size=10 ** 9)
    calibrate(cost, fake_machine(cost), 6.0, optimizer_seconds_per_param=0.5, params=np.arange(6.0))
    one = np.eye(6, dtype=bool)[4]
    assert cost.flops(one) == pytest.approx(fake_machine(CostModel(chain_table(6), 10 ** 9))(one) + 0.5 * 4)


def test_calibration_samples_at_most_max_levels_and_survives_noise():
    cost = CostModel(chain_table(12), batch_size=10 ** 9)
    calls = []
    rng = np.random.default_rng(0)

    def noisy(mask):
        calls.append(mask.copy())
        cut = cost.depth[mask].min()
        return 3.0 + (12 - cut) * 1.0 + rng.normal(0, 0.05)

    info = calibrate(cost, noisy, 3.0, max_levels=4)
    assert len(calls) == 2 * len(info["cut_depths"]) == 8 and info["cut_depths"][0] == 0
    assert np.all(np.isfinite([cost.igrad, cost.wgrad])) and (cost.wgrad >= 0).all()
    assert 0 < cost.floor < 1
