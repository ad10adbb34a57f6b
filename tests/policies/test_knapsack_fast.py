"""The one-pass value-grid knapsack (`Knapsack.candidates_at`) against the per-cut weight-grid DP
it replaced, kept here as the reference: never over capacity, and per cut at least the old value
up to the value grid's rounding; `Paced`'s vectorised planner against the loop it replaced."""

import math

import numpy as np
import pytest

from rgft_edge.components import Component, ComponentTable, ParamRef
from rgft_edge.costs import CostModel
from rgft_edge.policies import Knapsack, Paced

from .test_policies import chain_table


# --- the previous implementation (reference only) ------------------------------------------------

def old_candidates(c: CostModel, values, forced, capacity, res=256):
    """[(cut depth, mask)] as the old `Knapsack.candidates` built them (one DP per cut)."""
    forced = np.asarray(forced, bool)
    values = np.maximum(np.asarray(values, dtype=np.float64), 0.0)
    limit = capacity * c.full
    out = []
    min_forced = c.depth[forced].min() if forced.any() else None
    for d in np.unique(c.depth):
        if min_forced is not None and d > min_forced:
            break
        allowed = (c.depth >= d) & ~forced
        spare = limit - c.forward_total - c.igrad[c.depth > d].sum() - c.wgrad[forced].sum()
        if spare < 0:
            continue
        mask = _old_knapsack(values, c.wgrad, allowed, spare, res) | forced
        if mask.any():
            out.append((d, mask))
    return out


def _old_knapsack(values, weights, allowed, capacity, res):
    idx = np.flatnonzero(allowed)
    unit = capacity / res if capacity > 0 else 1.0
    w = np.ceil(weights[idx] / unit - 1e-9).astype(np.int64) if capacity > 0 else \
        np.where(weights[idx] > 0, res + 1, 0)
    table = np.zeros(res + 1)
    take = np.zeros((len(idx), res + 1), dtype=bool)
    for j, (wj, vj) in enumerate(zip(w, values[idx])):
        if wj > res:
            continue
        cand = np.full(res + 1, -np.inf)
        cand[wj:] = table[: res + 1 - wj] + vj + 1e-12
        better = cand > table
        take[j] = better
        table = np.where(better, cand, table)
    mask = np.zeros(len(values), bool)
    r = res
    for j in range(len(idx) - 1, -1, -1):
        if take[j, r]:
            mask[idx[j]] = True
            r -= w[j]
    return mask


def old_plan(pol: Paced, values, forced):
    """The old `Paced._plan` loop, on the candidates the knapsack now gives (asked for both
    capacities at once, as `_plan` asks: they share one value grid)."""
    kn = pol.knapsack
    budget = kn.budget
    now = max(kn.cheapest, budget + pol.credit)
    cost = kn.cost.fraction
    (targets, _), (fillers, _) = kn.candidates_at(values, forced, [budget + max(pol.bank, pol.credit),
                                                                   min(budget, now)])
    targets, fillers = list(targets), list(fillers)
    best, best_rate = None, -1.0
    for t in targets:
        ct, vt = cost(t), values[t].sum()
        if ct <= now + 1e-9:
            plans = [(t, vt / ct)]
        else:
            plans = []
            for f in fillers:
                cf = cost(f)
                saving = budget - cf
                if saving <= 1e-9:
                    continue
                n = math.ceil((ct - now) / saving - 1e-9)
                plans.append((f, (vt + n * values[f].sum()) / (ct + n * cf)))
        for mask, rate in plans:
            rate += 1e-12 * mask.sum()
            if rate > best_rate:
                best, best_rate = mask, rate
    for f in fillers:
        rate = values[f].sum() / cost(f) + 1e-12 * f.sum()
        if rate > best_rate:
            best, best_rate = f, rate
    if best is None and forced.any():
        rates = [values[t].sum() / cost(t) for t in targets]
        best = targets[int(np.argmax(rates))] if targets else None
    return best if best is not None else kn.fallback(forced)


# --- tables ----------------------------------------------------------------------------------------

def _table(units, extra_fwd=0.0):
    """units: (kind, depth, fwd, wgrad, igrad) per component."""
    comps = [Component(f"c{i}", kind, d, [ParamRef(f"p{i}")], 1, fwd_flops=f, wgrad_flops=w, igrad_flops=g)
             for i, (kind, d, f, w, g) in enumerate(units)]
    return ComponentTable(comps, "block", {"untracked_fwd_flops": extra_fwd})


def llama_like():
    """SmolLM2's shape: 30 x (attention, FFN at 3x its work) + the final norm; the tied LM head's
    forward is untracked work (forward floor ~0.39 of a full step)."""
    units = [(kind, 2 * i + j, x, x, x)
             for i in range(30) for j, (kind, x) in enumerate((("attention", 1.0), ("ffn", 3.0)))]
    return _table(units + [("norm", 60, 1e-3, 1e-4, 1e-3)], extra_fwd=33.0)


def bert_like():
    """MiniLM's shape: 6 x (attention, FFN at 2x) + pooler + classifier."""
    units = [(kind, 2 * i + j, x, x, x)
             for i in range(6) for j, (kind, x) in enumerate((("attention", 1.0), ("ffn", 2.0)))]
    head = [("module", 12, 5e-3, 5e-3, 5e-3), ("classifier", 13, 1e-4, 1e-4, 1e-4)]
    return _table(units + head, extra_fwd=2.0)


def random_ties(seed, k=12):
    """Random costs, several components per depth."""
    rng = np.random.default_rng(seed)
    depths = np.sort(rng.integers(0, 5, k))
    return _table([("layer", int(d), *rng.uniform(1, 10, 3)) for d in depths])


TABLES = {"llama": llama_like, "bert": bert_like, "chain": lambda: chain_table(6),
          **{f"ties{s}": (lambda s=s: random_ties(s)) for s in range(3)}}


def _values(rng, k, kind):
    if kind == "accrued":  # paced: error x steps waited
        return rng.lognormal(0, 1, k) * rng.integers(1, 80, k)
    if kind == "sparse":  # many zeros
        return np.where(rng.random(k) < 0.5, 0.0, rng.uniform(0, 1, k))
    if kind == "ties":
        return rng.integers(1, 3, k).astype(float)
    return rng.uniform(0, 1, k)


def _forced(rng, cost, case):
    k = len(cost.depth)
    forced = np.zeros(k, bool)
    if case == "one":
        forced[rng.integers(k)] = True
    elif case == "deepest":
        forced[int(np.argmin(cost.depth))] = True
    elif case == "two":
        forced[rng.choice(k, 2, replace=False)] = True
    return forced


def _check_against_old(cost, kn, values, forced, capacity):
    values = np.maximum(values, 0.0)
    (masks, costs), = kn.candidates_at(values, forced, [capacity])
    for m, f in zip(masks, costs):
        assert f == pytest.approx(cost.fraction(m), rel=1e-12)
        assert cost.fraction(m) <= capacity + 1e-9
        assert not (forced & ~m).any()
    # the value grid: one step is at most this much (the bound it is laid over <= the total)
    step = values[~forced].sum() / kn.res
    for d, old in old_candidates(cost, values, forced, capacity):
        reach = [m for m in masks if cost.depth[m].min() >= d]  # new answers confined to cut d
        assert reach, f"cut {d}: the old DP found a selection, the new one none"
        new_val = max(values[m].sum() for m in reach)
        old_val = values[old].sum()
        assert new_val >= old_val - (old & ~forced).sum() * step - 1e-9 * old_val, (d, new_val, old_val)
    return masks


@pytest.mark.parametrize("name", sorted(TABLES))
def test_candidates_fit_and_match_the_old_dp(name):
    cost = CostModel(TABLES[name](), batch_size=16)
    k = len(cost.depth)
    kn = Knapsack(cost, 1.0)
    singles = sorted(cost.fraction(np.eye(k, dtype=bool)[i]) for i in range(k))
    rng = np.random.default_rng(sorted(TABLES).index(name))
    for trial in range(24):
        values = _values(rng, k, ("accrued", "uniform", "sparse", "ties")[trial % 4])
        forced = _forced(rng, cost, ("none", "one", "deepest", "two")[(trial // 4) % 4])
        # paced's two capacities, the default budget, and one that fits only the cheapest single
        for capacity in (1.5, 0.5, float(rng.uniform(cost.floor, 1.0)), singles[0] + 1e-12):
            _check_against_old(cost, kn, values, forced, capacity)


def test_only_the_cheapest_fits():
    cost = CostModel(llama_like(), batch_size=16)
    k = len(cost.depth)
    singles = [cost.fraction(np.eye(k, dtype=bool)[i]) for i in range(k)]
    kn = Knapsack(cost, min(singles) + 1e-12)
    mask = kn.best(np.random.default_rng(0).uniform(0, 1, k), np.zeros(k, bool))
    assert cost.fraction(mask) <= kn.budget + 1e-9
    assert mask[int(np.argmin(singles))]


@pytest.mark.parametrize("name", ["llama", "bert", "ties0"])
def test_best_is_as_good_as_the_old_best(name):
    cost = CostModel(TABLES[name](), batch_size=16)
    k = len(cost.depth)
    rng = np.random.default_rng(7)
    for budget in (0.5, 0.7, 0.95):
        kn = Knapsack(cost, max(budget, kn_min(cost)))
        for trial in range(10):
            values = _values(rng, k, ("accrued", "uniform")[trial % 2])
            forced = _forced(rng, cost, ("none", "one")[trial % 2])
            mask = kn.best(values, forced)
            old = old_candidates(cost, values, forced, kn.available())
            old_val = max((values[m].sum() for _, m in old), default=None)
            if old_val is None:  # nothing fits: both fall back alike
                assert np.array_equal(mask, kn.fallback(forced))
                continue
            assert cost.fraction(mask) <= kn.available() + 1e-9
            assert values[mask].sum() >= old_val * (1 - 1e-9) - k * values.sum() / kn.res


def kn_min(cost):
    k = len(cost.depth)
    return min(cost.fraction(np.eye(k, dtype=bool)[i]) for i in range(k)) + 1e-9


@pytest.mark.parametrize("name", ["llama", "bert", "chain"])
def test_vectorised_plan_is_the_old_loop(name):
    """Same candidates in, same plan out, over a run's states (credit, ages, forced refreshes)."""
    cost = CostModel(TABLES[name](), batch_size=16)
    k = len(cost.depth)
    rng = np.random.default_rng(3)
    pol = Paced(Knapsack(cost, max(0.5, kn_min(cost))), bank=1.0)
    scores = rng.lognormal(0, 1, k)
    for step in range(60):
        scores = scores * rng.lognormal(0, 0.1, k)
        forced = np.zeros(k, bool)
        if step and step % 15 == 0:
            forced[int(np.argmin(cost.depth))] = True
        if pol.trained_at is not None:
            values = pol.values(scores, step)
            assert np.array_equal(pol._plan(values, forced), old_plan(pol, values, forced)), step
        pol.select(scores, step, forced)
