"""Per-component memory model and the memory guard that keeps selections inside a budget.

Peak memory of a step = resident base (process after load: weights, runtime, data)
                      + what a step whose backprop cut is at depth d needs beyond its gradients
                        (saved activations, backward temporaries): *measured* per cut depth by
                        `profile_cut_peaks` (one step each, top down, stopping before a step that
                        could cross the budget; deeper cuts extrapolated), else estimated from the
                        saved-tensor profile
                      + gradients of the trained components (4 B per parameter)
                      + AdamW state held (8 B per parameter of every component with m/v)
                      + a margin that `calibrate()` raises whenever a measured step peak exceeds
                        its prediction, so the model errs on the safe side after each step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..backend import Backend
from ..components import ComponentTable
from ..meters import MemoryMeter
from .allocator import trim_heap
from ..errors import UserError
from ..policies import Selection


@dataclass
class MemoryModel:
    base_bytes: float  # measured RSS after load plus an inference forward pass
    activation_bytes: np.ndarray  # per component: saved-for-backward bytes per step (full batch)
    param_counts: np.ndarray
    depth: np.ndarray
    margin_bytes: float = 0.0  # learned from measured peaks (never negative)
    history: list = field(default_factory=list)
    cut_bytes: dict = field(default_factory=dict)  # depth -> measured step need beyond gradients
    resident_bytes: float = 0.0  # RSS measured between steps (what the process holds now)
    recent_cuts: dict = field(default_factory=dict)  # cut depth -> steps ago it last ran (since a trim)

    @classmethod
    def for_table(cls, table: ComponentTable, base_bytes: float, activation_bytes) -> "MemoryModel":
        return cls(float(base_bytes), np.asarray(activation_bytes, dtype=np.float64),
                   np.array([c.num_params for c in table], dtype=np.float64), np.array(table.depths))

    RECENT = 10  # steps within which a cut's heap blocks count as reusable

    def observe_step(self, mask: np.ndarray) -> None:
        """A training step ran with this selection (ages the other cuts by one step)."""
        self.recent_cuts = {d: age + 1 for d, age in self.recent_cuts.items()}
        if np.asarray(mask, bool).any():
            self.recent_cuts[int(self.depth[np.asarray(mask, bool)].min())] = 0

    def step_need(self, cut: int) -> float:
        """What a step with its backprop cut at depth `cut` needs beyond gradients and state."""
        return self.cut_bytes[cut] if cut in self.cut_bytes else self.saved_bytes(cut)

    def saved_bytes(self, cut: int) -> float:
        """The saved-tensor estimate: activations kept for backward from the cut up."""
        return float(self.activation_bytes[self.depth >= cut].sum())

    def predict(self, mask: np.ndarray, state_mask: np.ndarray) -> float:
        """The step's peak: what is resident (modelled from the base, or measured between steps
        with only the new optimizer state added, whichever is larger) plus the step's need."""
        mask, held = np.asarray(mask, bool), np.asarray(state_mask, bool)
        grads = 4.0 * self.param_counts[mask].sum()
        need = self.step_need(int(self.depth[mask].min())) if mask.any() else 0.0
        modelled = self.base_bytes + 8.0 * self.param_counts[held | mask].sum() + need
        # heap kept from earlier steps serves this step's need only when a step of the same cut ran
        # lately (same shapes, blocks reused); measured on MiniLM: a deep step after 20 shallow ones
        # got nothing from the 80 MB the shallow steps had left, and needed its whole need on top
        cut = int(self.depth[mask].min()) if mask.any() else None
        retained = 0.0
        if cut is not None and self.recent_cuts.get(cut, self.RECENT + 1) <= self.RECENT:
            retained = max(0.0, self.resident_bytes - self.base_bytes - 8.0 * self.param_counts[held].sum())
        measured = self.resident_bytes + 8.0 * self.param_counts[mask & ~held].sum() + max(0.0, need - retained)
        return max(modelled, measured) + grads + self.margin_bytes

    def minimum(self) -> float:
        """Smallest budget that can train anything: base plus the cheapest single component."""
        return self.predict(self.cheapest_mask(), np.zeros(len(self.param_counts), bool))

    def cheapest_mask(self) -> np.ndarray:
        k = len(self.param_counts)
        none = np.zeros(k, bool)
        costs = [self.predict(np.eye(k, dtype=bool)[i], none) for i in range(k)]
        return np.eye(k, dtype=bool)[int(np.argmin(costs))]

    def breakdown(self, mask: np.ndarray) -> dict[str, float]:
        """The prediction for training `mask` (no other optimizer state), by part, in bytes."""
        mask = np.asarray(mask, bool)
        return {"process after load (weights, runtime, data)": self.base_bytes,
                "gradients": 4.0 * self.param_counts[mask].sum(),
                "AdamW state": 8.0 * self.param_counts[mask].sum(),
                "activations and backward temporaries": self.step_need(int(self.depth[mask].min())),
                "allocator margin": self.margin_bytes}

    def calibrate(self, measured_peak: float, predicted: float) -> None:
        self.history.append((predicted, measured_peak))
        if measured_peak > predicted:
            self.margin_bytes += measured_peak - predicted


def profile_cut_peaks(model: MemoryModel, run_step: Callable[[np.ndarray], None],
                      window_peak: Callable[[], float], budget: float, safety: float = 2.0,
                      levels: int | None = None) -> list[int]:
    """Measure, top down, one step per backprop cut depth (training only the component at the
    cut), recording into `model.cut_bytes` what it needed beyond its gradients. Before each step the
    next one is predicted (the last need plus `safety` times the largest growth seen so far, or the
    saved-tensor estimate); profiling stops before a step predicted to cross the budget, and the
    deeper cuts are extrapolated the same way, so profiling itself never crosses it. Returns the
    measured depths."""
    depths = sorted({int(d) for d in model.depth}, reverse=True)
    done: list[int] = []
    last, growth = None, 0.0

    def next_guess(d: int) -> float:  # what a step at cut `d` may need, before it is measured
        est = model.saved_bytes(d)
        return safety * est if last is None else last + safety * max(growth, est - model.saved_bytes(done[-1]))

    for d in depths[:levels]:
        comp = model.depth == d
        grads = 4.0 * model.param_counts[comp].sum()
        guess = next_guess(d)
        if model.base_bytes + guess + grads + model.margin_bytes > budget:
            break
        window_peak()  # a fresh window for this step alone
        run_step(comp)
        need = max(0.0, window_peak() - model.base_bytes - grads)
        if last is not None:
            growth = max(growth, need - last)
        model.cut_bytes[d] = last = need if last is None else max(need, last)
        done.append(d)
    step = safety * max(growth, 1.0)
    for i, d in enumerate([d for d in depths if d not in done]):
        # never below the guess that profiling itself would have made for this cut (it stopped
        # because that guess did not fit): an extrapolation below it let a first deep step on
        # MiniLM peak 17 MB above its prediction
        model.cut_bytes[d] = max(next_guess(d), (last if last is not None else safety * model.saved_bytes(d))
                                 + (i + 1) * step)
    return done


class MemoryGuard:
    """Shrinks a selection until the predicted peak fits the budget (lowest components go first:
    dropping them raises the cut, which frees their activations and everything above it keeps)."""

    STOP_AT = 0.97  # RSS share of the budget, after a heap trim, at which the run stops itself
    TRIM_AT = 0.90  # RSS share of the budget at which the heap is trimmed
    # Selections must fit this share of the budget: the heap's reuse of freed blocks makes a step's
    # peak vary by a few MB around its prediction (measured on MiniLM: up to 6 MB above it)
    FIT_AT = 0.98
    # What the resident set grows by once real steps run, on top of the profiled minimum: heap that
    # trimming cannot return (other batch shapes, the run's records). Measured on MiniLM at a budget
    # just above the minimum: the trimmed resident set crept 20-38 MB above the base over the first
    # ~15 steps, then held; without this allowance such a run stopped itself after 1-2 steps.
    GROWTH = 0.08  # share of the base

    def __init__(self, model: MemoryModel, budget_bytes: float, load_peak_bytes: float = 0.0):
        self.model, self.budget = model, float(budget_bytes)
        growth = self.GROWTH * model.base_bytes
        need = max((model.minimum() + growth) / self.FIT_AT, load_peak_bytes)
        if budget_bytes < need:
            parts = {**model.breakdown(model.cheapest_mask()), "growth while training": growth}
            if load_peak_bytes > model.minimum():
                parts = {"peak before training (model load, data, cost calibration)": load_peak_bytes}
            lines = "; ".join(f"{k} {v / 1e6:.0f} MB" for k, v in parts.items())
            raise UserError(f"memory budget {budget_bytes / 1e9:.3f} GB is below what training needs "
                            f"here: at least {need / 1e9:.3f} GB ({lines}; {1 - self.FIT_AT:.0%} headroom)")
        self.shrunk_steps = 0
        self.trims = 0
        self.evictions = 0  # optimizer states dropped to make room
        self.reclaim: Callable[[], float] | None = None  # trims the heap, returns resident bytes after

    def check(self, rss_bytes: float, trim: Callable[[], bool], rss_now: Callable[[], float],
              evict: Callable[[], bool] | None = None) -> str | None:
        """Between steps (after the margin has learned from the last step's measured peak): trim
        the heap when RSS nears the budget; when even the cheapest step no longer fits, drop the
        optimizer state of the least recently trained components (`evict`, one per call) and trim
        again; a reason to stop when nothing is left to drop and it still does not fit, or RSS stays
        within 3% of the budget."""
        if rss_bytes >= self.TRIM_AT * self.budget and trim():
            self.trims += 1
            rss_bytes = rss_now()
            self.model.recent_cuts.clear()  # the kept blocks went back to the kernel
        self.model.resident_bytes = rss_bytes
        while not self._cheapest_fits(rss_bytes) and evict is not None and evict():
            # optimizer state accumulates as the selection moves (8 bytes per parameter trained
            # lately): it is what a long run adds to the resident set, and it can be rebuilt
            self.evictions += 1
            trim()
            rss_bytes = self.model.resident_bytes = rss_now()
            self.model.recent_cuts.clear()
        return None if self._cheapest_fits(rss_bytes) else "memory budget reached"

    def _cheapest_fits(self, rss_bytes: float) -> bool:
        cheapest = self.model.predict(self.model.cheapest_mask(), np.zeros(len(self.model.depth), bool))
        return cheapest <= self.FIT_AT * self.budget and rss_bytes < self.STOP_AT * self.budget

    def unaffordable(self, state_mask: np.ndarray) -> np.ndarray:
        """Components that cannot train within the budget even alone (their backprop is too deep)."""
        k = len(self.model.depth)
        return np.array([self.model.predict(np.eye(k, dtype=bool)[i], state_mask) > self.FIT_AT * self.budget
                         for i in range(k)])

    def fit(self, sel: Selection, state_mask: np.ndarray) -> tuple[Selection, float]:
        mask = sel.mask.copy()
        shrunk = False
        if self.reclaim is not None and self.model.predict(mask, state_mask) > self.FIT_AT * self.budget:
            # trim before shrinking: a heap that kept earlier steps' blocks reads as resident, and
            # without this a budget too high to trigger TRIM_AT trained fewer components than a
            # lower one that trimmed every step (MiniLM sweep: 3.0 at +25% against 4.0 at +13%)
            self.model.resident_bytes = self.reclaim()
            self.model.recent_cuts.clear()
            self.trims += 1
        while self.model.predict(mask, state_mask) > self.FIT_AT * self.budget:
            shrunk = True
            if mask.sum() <= 1:  # one component too deep to fit (a forced refresh): the cheapest instead
                mask = self.model.cheapest_mask()
                break
            idx = np.flatnonzero(mask)
            mask[idx[np.argmin(self.model.depth[idx])]] = False
        self.shrunk_steps += int(shrunk)
        mult = np.where(mask & (sel.lr_mult == 0), 1.0, sel.lr_mult)  # a stand-in trains at the base LR
        return Selection.of(mask, mult), self.model.predict(mask, state_mask)


def measure_memory_guard(backend: Backend, sample: dict, meter: MemoryMeter, budget: float) -> MemoryGuard:
    """The guard for a run about to train: base measured after load (heap trimmed), each cut
    depth's need measured on `sample` (the widest batch), the load peak checked against the budget."""
    # Saved-tensor profile on two rows, scaled: a first guess, before any step is measured.
    rows = len(next(iter(sample.values())))
    acts = backend.activation_bytes({k: v[:2] for k, v in sample.items()})
    # program runners cannot report activations; they also load their programs lazily
    programs = acts is None
    acts = np.zeros(len(backend.table)) if acts is None else acts * (rows / min(2, rows))

    def one_step(mask):  # gradients dropped, weights untouched
        backend.train_step(sample, mask, False)
        backend.commit([])

    return profiled_guard(backend.table, acts, one_step, meter, budget, refusal_measures_all=programs)


def profiled_guard(table: ComponentTable, activation_bytes: np.ndarray, run_step: Callable[[np.ndarray], None],
                   meter: MemoryMeter, budget: float, refusal_measures_all: bool = False) -> MemoryGuard:
    """Measure the memory model (base after load, one `run_step(mask)` per cut depth that fits)
    and return its guard; refused with the measured minimum when the budget is too small.
    `refusal_measures_all`: for runners that load programs lazily (see below)."""
    load_peak = meter.window_peak()  # model load, data (and cost calibration) so far
    # One step at the cheapest cut before the base is measured: a runtime's first step leaves caches
    # resident (oneDNN primitives, autograd and thread-pool buffers; ~60 MB on MiniLM, measured)
    # that every later step reuses. Measured from a cold base they were counted twice in the stated
    # minimum (in the base after profiling and in the cut's need). The step runs in every case: a
    # refused run measures it too.
    run_step(np.asarray(table.depths) == max(table.depths))
    trim_heap()  # what loading left free goes back before the base is measured
    model = MemoryModel.for_table(table, meter.current_rss_bytes, activation_bytes)
    model.margin_bytes = 0.05 * model.base_bytes  # allocator slack the profile cannot see
    if not profile_cut_peaks(model, run_step, meter.window_peak, budget):
        # not even the cheapest step fits: measure it anyway (nothing trains; the run is refused)
        # so the minimum in the refusal is measured, not guessed. Runners that load their programs
        # lazily (the `onnx` runner's gradient graphs) grow the base as cuts are first used —
        # measured on MiniLM int8+LoRA: 201 MB after one cut, 250 MB after all — so for them every
        # cut is measured; eager torch keeps what deep steps cached, so there one cut is the truth
        profile_cut_peaks(model, run_step, meter.window_peak, float("inf"),
                          levels=None if refusal_measures_all else 1)
    trim_heap()
    # the first steps leave runtime caches behind (~100 MB on MiniLM): the base is measured after
    model.base_bytes = model.resident_bytes = max(model.base_bytes, meter.current_rss_bytes)
    guard = MemoryGuard(model, budget, load_peak_bytes=load_peak)
    guard.reclaim = lambda: (trim_heap(), meter.current_rss_bytes)[1]
    return guard
