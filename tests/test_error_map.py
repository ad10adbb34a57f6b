import numpy as np
import pytest

from rgft_edge.error_map import ErrorMap


def test_ema_first_measurement_initialises_then_averages():
    em = ErrorMap(3, beta=0.9)
    em.update(0, np.array([True, True, False]), np.array([2.0, 4.0, 9.0]))
    assert em.scores.tolist() == [2.0, 4.0, 0.0]
    em.update(1, np.array([True, False, False]), np.array([12.0, 100.0, 100.0]))
    assert em.scores[0] == pytest.approx(0.9 * 2 + 0.1 * 12)
    assert em.scores[1] == 4.0  # not measured: keeps its score and ages
    assert em.ages(5).tolist() == [4, 5, 6]


def test_non_finite_scores_are_ignored():
    em = ErrorMap(2)
    em.update(0, np.array([True, True]), np.array([np.nan, 1.0]))
    assert em.scores.tolist() == [0.0, 1.0] and em.last_measured.tolist() == [-1, 0]


@pytest.mark.parametrize("k,s", [(10, 3), (7, 7), (25, 4), (3, 10)])
def test_staleness_bound_holds_under_an_adversarial_policy(k, s):
    """A policy that only ever measures component 0: every other component must still be
    re-measured within max_staleness steps through the forced exploration set."""
    em = ErrorMap(k, max_staleness=s)
    em.update(0, np.ones(k, bool), np.ones(k))  # probe step
    for step in range(1, 200):
        measured = np.zeros(k, bool)
        measured[0] = True
        forced = em.stale(step, measured)
        em.update(step, measured | forced, np.ones(k))
        assert em.ages(step).max() <= s
    assert em.ages(199).max() <= s


def test_staleness_forces_nothing_until_a_component_is_due_then_groups():
    em = ErrorMap(4, max_staleness=10)
    em.update(0, np.array([True, True, True, True]), np.ones(4))
    em.update(4, np.array([False, True, False, False]), np.ones(4))
    em.update(7, np.array([False, False, True, False]), np.ones(4))
    assert not em.stale(9, np.zeros(4, bool)).any()
    # at step 10 component 0 and 3 are due; 1 (age 6) is past half-way and joins; 2 (age 3) does not
    assert em.stale(10, np.zeros(4, bool)).tolist() == [True, True, False, True]
    assert em.stale(10, np.array([True, False, False, True])).tolist() == [False, False, False, False]

def test_bad_parameters():
    with pytest.raises(ValueError):
        ErrorMap(3, beta=1.0)
    with pytest.raises(ValueError):
        ErrorMap(3, max_staleness=0)
