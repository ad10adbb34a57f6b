"""The memory guard's model, its refusal with a breakdown, and what it does between steps."""

import numpy as np
import pytest

from rgft_edge.budgets import MemoryGuard, MemoryModel
from rgft_edge.budgets.allocator import settle_heap, trim_heap
from rgft_edge.errors import UserError
from rgft_edge.policies import Selection

MB = 1e6


def model(base=300 * MB):
    # three components, bottom to top; activations saved from the cut up
    return MemoryModel(base, np.array([40, 30, 5]) * MB, np.array([2e6, 2e6, 1e5]), np.array([0, 1, 2]))


def test_refusal_names_the_minimum_and_its_parts():
    m = model()
    # 300 base + 5 activations + 0.4 gradients + 0.8 AdamW state + 24 growth (8% of the base), 2% headroom
    with pytest.raises(UserError, match=r"at least 0\.337 GB \(process after load .* 300 MB.*activations and "
                                        r"backward temporaries 5 MB.*growth while training 24 MB"):
        MemoryGuard(m, 100 * MB)


def test_a_load_peak_above_the_budget_is_refused_as_such():
    with pytest.raises(UserError, match="peak before training"):
        MemoryGuard(model(), 400 * MB, load_peak_bytes=450 * MB)


def test_fit_drops_lowest_components_until_the_prediction_fits():
    g = MemoryGuard(model(), 340 * MB)
    sel, predicted = g.fit(Selection.of(np.ones(3, bool)), np.zeros(3, bool))
    assert predicted <= 340 * MB and sel.mask[2] and not sel.mask[0]
    assert g.shrunk_steps == 1


def test_check_trims_near_the_budget_and_stops_when_it_cannot_get_under():
    g = MemoryGuard(model(), 400 * MB)
    trims = []
    assert g.check(300 * MB, lambda: trims.append(1) or True, lambda: 300 * MB) is None and not trims
    # near the budget: trimmed, and it came back down
    assert g.check(380 * MB, lambda: trims.append(1) or True, lambda: 340 * MB) is None and g.trims == 1
    # still within 3% after trimming: stop before the kernel does
    assert g.check(395 * MB, lambda: True, lambda: 392 * MB) == "memory budget reached"


def test_check_stops_once_measured_peaks_leave_no_room_for_the_cheapest_step():
    g = MemoryGuard(model(), 340 * MB)
    g.model.calibrate(measured_peak=360 * MB, predicted=310 * MB)  # the heap grew 50 MB beyond the model
    assert g.model.minimum() > 340 * MB
    assert g.check(300 * MB, lambda: False, lambda: 300 * MB) == "memory budget reached"


def test_allocator_settings_apply_on_glibc():
    import platform

    ok = settle_heap()
    assert trim_heap() == ok
    if platform.libc_ver()[0] == "glibc":
        assert ok


def test_profiling_measures_top_down_and_stops_before_crossing_the_budget():
    """A fake process whose step peak grows 20 MB per level of backprop depth: profiling measures
    the shallow cuts, stops before one that could cross the budget, and extrapolates the rest
    above what they really need."""
    k = 6
    m = MemoryModel(300 * MB, np.full(k, 5 * MB), np.full(k, 1e5), np.arange(k))
    true_need = {d: (k - d) * 20 * MB for d in range(k)}
    peaks = []
    state = {"peak": 300 * MB}

    def run_step(mask):
        d = int(np.flatnonzero(mask)[0])
        state["peak"] = 300 * MB + true_need[d] + 4 * 1e5

    def window_peak():
        p, state["peak"] = state["peak"], 300 * MB
        peaks.append(p)
        return p

    from rgft_edge.budgets.memory_guard import profile_cut_peaks

    done = profile_cut_peaks(m, run_step, window_peak, budget=400 * MB)
    assert done == [5, 4, 3]  # 20, 40, 60 MB measured; the next guess (60 + 2 x 20) would cross 400
    assert max(peaks) <= 400 * MB  # profiling never crossed the budget
    for d in range(k):
        assert m.cut_bytes[d] >= true_need[d] - 1
    g = MemoryGuard(m, 400 * MB)
    sel, predicted = g.fit(Selection.of(np.ones(k, bool)), np.zeros(k, bool))
    assert predicted <= 400 * MB and not sel.mask[:3].any()


def test_a_single_component_too_deep_to_fit_gives_way_to_the_cheapest():
    g = MemoryGuard(model(), 340 * MB)
    forced_deep = Selection.of(np.array([True, False, False]))
    sel, predicted = g.fit(forced_deep, np.zeros(3, bool))
    assert sel.mask.tolist() == [False, False, True] and sel.lr_mult[2] == 1.0 and predicted <= 340 * MB


def test_check_drops_old_optimizer_state_before_it_stops():
    g = MemoryGuard(model(), 400 * MB)
    resident = [402 * MB]  # AdamW state of many components held: the cheapest step no longer fits

    def evict():  # each dropped state gives back 10 MB; three can be dropped
        if resident[0] <= 372 * MB:
            return False
        resident[0] -= 10 * MB
        return True

    assert g.check(resident[0], lambda: True, lambda: resident[0], evict) is None
    assert g.evictions == 2 and resident[0] == 382 * MB  # just enough dropped, not all
    # nothing left to drop: stop with a clear status instead of crossing the budget
    g.model.calibrate(measured_peak=500 * MB, predicted=350 * MB)
    assert g.check(resident[0], lambda: True, lambda: resident[0], evict) == "memory budget reached"
    assert resident[0] == 372 * MB


def test_fit_trims_the_heap_before_it_shrinks_a_selection():
    g = MemoryGuard(model(), 400 * MB)
    g.model.resident_bytes = 370 * MB  # freed blocks the heap kept: only the top component would fit
    reclaimed = []
    g.reclaim = lambda: reclaimed.append(1) or 300 * MB
    sel, predicted = g.fit(Selection.of(np.array([False, True, True])), np.zeros(3, bool))
    assert reclaimed and g.trims == 1 and sel.mask.tolist() == [False, True, True] and g.shrunk_steps == 0
    # a selection that fits as it is costs no trim
    g.fit(Selection.of(np.array([False, False, True])), np.zeros(3, bool))
    assert len(reclaimed) == 1
