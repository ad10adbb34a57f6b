"""The one RGFT training loop, shared by every backend. Read it top to bottom.

Per step: pick the components (policy over the EMA error map, plus whatever the staleness rule
forces), run forward/backward through the backend with only those trainable, score every component
the backward pass could measure, update the error map, apply AdamW to the selected components with
their LR multipliers, and log. A non-finite loss or gradient skips the update and is counted.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from .backend import Backend, Batch
from .costs import CostModel
from .error_map import ErrorMap
from .errors import UserError
from .estimators import compute_scores, squared_norms
from .optim import ComponentAdamW
from .policies import Policy, Selection


TRAIN_TIME_REACHED = "training time reached"  # --max-train-seconds: a completed run, not a fault


@dataclass
class LoopSettings:
    estimator: str = "grad-norm"
    p_norm: float = 2.0
    probe_first_step: bool = True  # step 0 trains everything so every component gets a score
    eval_every: int = 0  # steps between held-out evaluations during training (0: only at the end)
    max_steps: int | None = None
    max_faults: int = 3  # consecutive non-finite steps before `on_fault` (restore + lower LR)
    start_step: int = 0  # resume: batches before this step are skipped (same seeded order)
    max_train_seconds: float | None = None  # stop once the training clock reaches this (evals excluded)
    eval_every_seconds: float = 0.0  # also evaluate each time the training clock passes a multiple
    clock_offset_s: float = 0.0  # resume: training time of the earlier sessions of this run


@dataclass
class LoopResult:
    steps: int = 0
    skipped_steps: int = 0
    total_time_s: float = 0.0
    tracking_time_s: float = 0.0  # time in scoring, EMA, staleness and selection
    selected_counts: list[int] = field(default_factory=list)
    params_updated: list[int] = field(default_factory=list)
    cost_fractions: list[float] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    stop_reason: str = "completed"


def _measurable(estimator: str, mask: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Which components this selection's backward pass can score without extra work."""
    if not mask.any():
        return mask.copy()
    if estimator == "activation":
        return depth >= depth[mask].min()
    return mask.copy()


def choose(policy: Policy, error_map: ErrorMap, step: int, estimator: str, depth: np.ndarray,
           probe: bool) -> tuple[Selection, np.ndarray]:
    """(selection, forced-by-staleness mask) for this step."""
    k = len(error_map)
    none = np.zeros(k, bool)
    if probe:
        return Selection.of(np.ones(k, bool)), none
    sel = policy.select(error_map.scores, step, none)
    if not policy.uses_scores:
        return sel, none
    forced = error_map.stale(step, _measurable(estimator, sel.mask, depth))
    if forced.any():
        for _ in range(k):
            sel = policy.select(error_map.scores, step, forced)
            # the forced ones may displace a due component the first selection covered: force it too
            missing = error_map.stale(step, _measurable(estimator, sel.mask, depth)) & ~forced
            if not missing.any():
                break
            forced |= missing
        # Exploration only measures/refreshes a component; give it the base LR if the policy
        # did not assign one, so the step is an ordinary update for it.
        sel.lr_mult = np.where(sel.mask & (sel.lr_mult == 0), 1.0, sel.lr_mult)
    return sel, forced


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or "out of memory" in str(e).lower() or "bad_alloc" in str(e)


def _step_shrinking_on_oom(backend: Backend, batch: Batch, sel: Selection, depth: np.ndarray,
                           measure: bool):
    """Run the step; on out-of-memory drop the lowest selected component (its activations and
    everything below it leave the backward pass) and retry, rather than losing the run."""
    while True:
        try:
            return backend.train_step(batch, sel.mask, measure), sel
        except (MemoryError, RuntimeError) as e:
            if not _is_oom(e) or sel.mask.sum() <= 1:
                raise
            idx = np.flatnonzero(sel.mask)
            mask = sel.mask.copy()
            mask[idx[np.argmin(depth[idx])]] = False
            sel = Selection.of(mask, sel.lr_mult)


def _finite_grads(grads) -> bool:
    # A plain sum reads each gradient once with no temporary; NaN and inf propagate through it (a
    # finite sum overflowing to inf would be a fault worth skipping too).
    return all(math.isfinite(float(g.sum())) for g in grads.values())


def train(backend: Backend, policy: Policy, error_map: ErrorMap, optimizer: ComponentAdamW,
          batches: Iterable[Batch], settings: LoopSettings, *, cost: CostModel | None = None,
          on_step: Callable[[dict], None] | None = None,
          evaluate: Callable[[int, float], dict] | None = None,
          should_stop: Callable[[int], str | None] | None = None,
          constrain: Callable[[Selection, int], Selection] | None = None,
          on_fault: Callable[[int], bool] | None = None) -> LoopResult:
    """Run the RGFT loop over `batches`. `should_stop(step)` returns a reason to stop cleanly
    (budget spent); `evaluate(step, training_clock_s)` runs a held-out evaluation;
    `constrain(selection, step)` may shrink a selection (memory guard);
    `on_fault(step)` is called after `max_faults` non-finite steps in a row and returns whether
    training may go on (e.g. it restored the last good checkpoint and lowered the LR)."""
    table = backend.table
    if settings.estimator == "activation" and not backend.activation_scores:
        raise UserError(f"the {backend.name} backend exposes no activation gradients; "
                        "use --estimator grad-norm")
    depth = np.array(table.depths)
    sizes = np.array([c.num_params for c in table])
    result = LoopResult()
    params = backend.parameters()
    faults = 0
    clock = settings.clock_offset_s  # training time of the whole run so far, evaluations excluded
    next_eval_s = _next_multiple(clock, settings.eval_every_seconds)
    for step, batch in enumerate(batches):
        if step < settings.start_step:
            continue
        if settings.max_steps is not None and step >= settings.max_steps:
            break
        if should_stop is not None and (reason := should_stop(step)):
            result.stop_reason = reason
            break
        if settings.max_train_seconds is not None and clock >= settings.max_train_seconds:
            result.stop_reason = TRAIN_TIME_REACHED
            break
        t0 = time.perf_counter()
        probe = settings.probe_first_step and step == 0 and policy.uses_scores
        sel, forced = choose(policy, error_map, step, settings.estimator, depth, probe)
        if constrain is not None:
            sel = constrain(sel, step)
        t_sel = time.perf_counter() - t0

        out, sel = _step_shrinking_on_oom(backend, batch, sel, depth, settings.estimator == "activation")

        t1 = time.perf_counter()
        # grad-norm scores and the finite check share one read of every gradient (memory-bound)
        squared = squared_norms(out.grads) if settings.estimator == "grad-norm" and settings.p_norm == 2 else None
        finite = all(map(math.isfinite, squared.values())) if squared is not None else _finite_grads(out.grads)
        ok = math.isfinite(out.loss) and finite
        scores, measured = compute_scores(settings.estimator, table, out.grads, out.hook_norms,
                                          settings.p_norm, squared)
        if ok:
            error_map.update(step, measured, scores)
        # hook work inside forward/backward (activation norms) is tracking too
        t_track = time.perf_counter() - t1 + t_sel + out.info.get("hook_time_s", 0.0)

        track_gain = ok and policy.wants_gain(step)
        touched = optimizer.step(params, out.grads, sel.lr_mult, step, track_gain) if ok else []
        if track_gain:
            policy.observe_gain(step, optimizer.last_gain)
        backend.commit(touched)
        dt = time.perf_counter() - t0

        result.steps += 1
        result.skipped_steps += 0 if ok else 1
        faults = 0 if ok else faults + 1
        result.tracking_time_s += t_track
        result.total_time_s += dt
        clock += dt
        result.selected_counts.append(int(sel.mask.sum()))
        result.params_updated.append(int(sizes[sel.mask].sum()) if ok else 0)
        frac = cost.fraction(sel.mask) if cost is not None else float("nan")
        result.cost_fractions.append(frac)
        result.step_times.append(dt)
        result.losses.append(out.loss)
        record = {
            "type": "step", "step": step, "loss": out.loss, "skipped": not ok,
            "selected": np.flatnonzero(sel.mask).tolist(),
            "forced": np.flatnonzero(forced).tolist(),
            "lr_mult": {int(i): round(float(sel.lr_mult[i]), 6) for i in np.flatnonzero(sel.mask)},
            "measured": np.flatnonzero(measured).tolist(),
            "scores": [float(s) for s in error_map.scores],
            "params_updated": result.params_updated[-1], "cost_fraction": frac,
            "step_time_s": dt, "train_clock_s": clock, "tracking_time_s": t_track, **out.info,
        }
        out = None  # this step's gradients go now, not when the next step's arrive (peak memory)
        if on_step is not None:
            on_step(record)
        if faults >= settings.max_faults:
            faults = 0
            if on_fault is None or not on_fault(step):
                result.stop_reason = "non-finite loss"
                break
        due = settings.eval_every and (step + 1) % settings.eval_every == 0
        if next_eval_s is not None and clock >= next_eval_s:
            due = True
            next_eval_s = _next_multiple(clock, settings.eval_every_seconds)
        if evaluate is not None and due:
            evaluate(step, clock)
    return result


def _next_multiple(clock: float, every: float) -> float | None:
    return None if not every else (math.floor(clock / every) + 1) * every
