"""The eps-floor rule on a convex problem: what docs/convergence.md claims, checked numerically.

f(x) = 1/2 x^T A x - b^T x (A positive definite, L = lambda_max = 1), blocks of coordinates play
the components, the real `Clip` policy and `ErrorMap` (with the loop's `choose`, staleness rule
included) pick the per-block LR multipliers, and the step is x <- x - (1/L) D_t grad f(x).
"""

from __future__ import annotations

import numpy as np
import pytest

from rgft_edge.error_map import ErrorMap
from rgft_edge.loop import choose
from rgft_edge.policies import ClipRule, Quota, ScorePolicy, Selection, StaticSelection

N_BLOCKS, SIZE = 6, 3


def quadratic(cond: float = 20.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    d = N_BLOCKS * SIZE
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    eig = np.geomspace(1.0 / cond, 1.0, d)
    a = (q * eig) @ q.T
    b = rng.normal(size=d)
    x_star = np.linalg.solve(a, b)
    f = lambda x: 0.5 * x @ a @ x - b @ x  # noqa: E731
    return a, b, f, f(x_star), eig[0]


def run(multipliers, steps: int, cond: float = 20.0):
    """Gaps f(x_t) - f* for t = 0..steps; `multipliers(t, block_grad_norms)` -> per-block m_t."""
    a, b, f, f_star, lam_min = quadratic(cond)
    x = np.zeros(len(b))
    gaps = [f(x) - f_star]
    for t in range(steps):
        g = a @ x - b
        norms = np.linalg.norm(g.reshape(N_BLOCKS, SIZE), axis=1)
        m = np.repeat(multipliers(t, norms), SIZE)
        x = x - m * g  # step 1/L with L = 1
        gaps.append(f(x) - f_star)
    return np.array(gaps), lam_min


def loop_multipliers(policy, beta: float = 0.9, exact: bool = False, max_staleness: int = 5):
    """Multipliers as the RGFT loop makes them: choose() on the EMA map, then measure what trained."""
    emap = ErrorMap(N_BLOCKS, beta=beta, max_staleness=max_staleness)
    depth = np.arange(N_BLOCKS)

    def mult(t, norms):
        sel, _ = choose(policy, emap, t, "grad-norm", depth, probe=(t == 0))
        emap.update(t, np.ones(N_BLOCKS, bool) if exact else sel.mask, norms)
        return sel.lr_mult

    return mult


def bound(gap0: float, t: np.ndarray, rate: float) -> np.ndarray:
    """delta_t <= delta_0 / (1 + t * rate * delta_0), the recursion delta' <= delta - rate delta^2."""
    return gap0 / (1.0 + t * rate * gap0)


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.3])
def test_theorem_a_every_component_with_floor(eps):
    # clip over all components (clip_top_p = 1), stale EMA scores: any m in [eps, 1] gives
    # delta_t <= 2 L R^2 / (eps t) with R^2 = 2 delta_0 / lambda_min (level-set radius).
    policy = ScorePolicy(Quota(N_BLOCKS, 1.0), ClipRule(eps=eps, thresh_init=0.3, thresh_final=0.9, warmup_steps=50))
    gaps, lam = run(loop_multipliers(policy), 3000)
    r2 = 2 * gaps[0] / lam
    t = np.arange(len(gaps))
    assert np.all(np.diff(gaps) <= 1e-12 * gaps[0])  # descent every step (the key lemma)
    assert np.all(gaps <= bound(gaps[0], t, eps / (2 * r2)) * (1 + 1e-9))
    assert gaps[-1] < 1e-6 * gaps[0]  # converges


def test_theorem_a_holds_for_adversarial_multipliers():
    eps = 0.1
    rng = np.random.default_rng(1)
    # the largest gradient gets the smallest multiplier: the worst a stale map could do
    adversarial = lambda t, norms: np.where(norms == norms.max(), eps, rng.uniform(eps, 1.0, N_BLOCKS))  # noqa: E731
    gaps, lam = run(adversarial, 2000)
    t = np.arange(len(gaps))
    assert np.all(gaps <= bound(gaps[0], t, eps / (2 * 2 * gaps[0] / lam)) * (1 + 1e-9))


def test_worst_case_steps_scale_as_one_over_eps():
    # All multipliers at the floor is plain gradient descent with step eps/L: the number of steps to
    # a given gap scales exactly as 1/eps, which is the eps-dependence the bound predicts.
    def steps_to(eps, level=1e-3):
        gaps, _ = run(lambda t, norms: np.full(N_BLOCKS, eps), 20000)
        return int(np.argmax(gaps <= level * gaps[0]))

    ratio = steps_to(0.1) / steps_to(0.2)
    assert ratio == pytest.approx(2.0, rel=0.05)


def test_theorem_b_subset_with_exact_scores():
    # top-p subset (2 of 6 blocks) with exact, current block gradient norms (beta 0, every block
    # measured): the argmax block always gets multiplier 1, so delta_t <= 2 n L R^2 / t.
    policy = ScorePolicy(Quota(N_BLOCKS, 2 / N_BLOCKS), ClipRule(eps=0.1, thresh_init=0.5, thresh_final=0.5, warmup_steps=1))
    gaps, lam = run(loop_multipliers(policy, beta=0.0, exact=True), 3000)
    t = np.arange(len(gaps))
    assert np.all(gaps <= bound(gaps[0], t, 1.0 / (2 * N_BLOCKS * 2 * gaps[0] / lam)) * (1 + 1e-9))
    assert gaps[-1] < 1e-6 * gaps[0]


def test_without_floor_or_refresh_a_frozen_block_never_converges():
    # A selection frozen after warm-up (static) leaves blocks at multiplier 0 for good: the gap
    # stays bounded away from zero — why the rule needs eps > 0 (or the staleness refresh).
    policy = StaticSelection(Quota(N_BLOCKS, 0.5), warmup_steps=3)
    gaps, _ = run(loop_multipliers(policy), 3000)
    assert gaps[-1] > 1e-3 * gaps[0]
    assert gaps[-1] == pytest.approx(gaps[-500], rel=1e-6)  # stalled, not slow


def test_stale_subset_is_refreshed_by_the_staleness_rule():
    # Subset + stale EMA scores: no rate is claimed (docs/convergence.md), but the staleness rule
    # forces every block back in at least every `max_staleness` steps, and the gap does go to zero.
    policy = ScorePolicy(Quota(N_BLOCKS, 2 / N_BLOCKS), ClipRule(eps=0.1))
    mult = loop_multipliers(policy, beta=0.9, max_staleness=5)
    seen = np.zeros((3000, N_BLOCKS), bool)

    def recording(t, norms):
        m = mult(t, norms)
        seen[t] = m > 0
        return m

    gaps, _ = run(recording, 3000)
    gaps_between = [np.flatnonzero(seen[:, i]) for i in range(N_BLOCKS)]
    assert all(np.diff(g).max() <= 5 for g in gaps_between)
    assert gaps[-1] < 1e-6 * gaps[0]


def test_selection_multipliers_stay_in_the_floor_interval():
    policy = ScorePolicy(Quota(N_BLOCKS, 1.0), ClipRule(eps=0.2))
    sel: Selection = policy.select(np.array([0.0, 1e-9, 0.5, 1.0, 3.0, 10.0]), step=0,
                                   forced=np.zeros(N_BLOCKS, bool))
    assert np.all((sel.lr_mult >= 0.2) & (sel.lr_mult <= 1.0))
