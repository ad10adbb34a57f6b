"""A fleet client's round: take the global state, run the RGFT loop for `local_steps` steps on this
client's own data under its device profile and budgets, return the components it trained.

Which components: for `fedavg-*` every trainable one; for `rgft*` the error map decides. At the start
of a round (every `probe_every` rounds) one backward pass over every component measures each one's
gradient norm on this client's data at the new global model and folds it into the client's own
error map (kept across rounds); the round then trains the components with the most error per
uploaded byte until `upload_budget` of the trainable bytes is spent, and only those go up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..components import ComponentTable
from ..error_map import ErrorMap
from ..estimators import grad_norm_scores
from ..errors import UserError
from ..meters import EnergyMeter
from .config import FleetConfig
from .model import FleetModel

_MODELS: dict[tuple, FleetModel] = {}


def fleet_model(cfg: FleetConfig) -> FleetModel:
    """One FleetModel per process and model-defining setting (a simulated client process serves
    many clients; loading MiniLM once per round would dominate the round)."""
    key = (cfg.model, cfg.data, cfg.text_column, cfg.label_column, cfg.adapter, cfg.seed, cfg.held_out, cfg.validation,
           cfg.max_length, cfg.lora_r, cfg.clients, cfg.alpha, cfg.threads)
    if key not in _MODELS:
        _MODELS.clear()  # one model per process at a time
        _MODELS[key] = FleetModel(cfg)
    return _MODELS[key]


def choose_upload(scores: np.ndarray, nbytes: np.ndarray, budget_bytes: float) -> list[int]:
    """Components by expected loss decrease per uploaded byte, greedily, while they fit the byte
    budget; at least one (the best-value one that fits, else the smallest).

    An Adam step moves every trained parameter by about the learning rate, so a component's first-
    order loss decrease is ~ lr * ||g||_1 ~ lr * sqrt(n) * ||g||_2 for n parameters, and its upload
    costs 4n bytes: value per byte ~ ||g||_2 / sqrt(n) (the RMS gradient). Dividing the norm by n
    instead would always pick the smallest components."""
    order = np.argsort(-(np.asarray(scores, float) / np.sqrt(np.maximum(nbytes, 1))), kind="stable")
    chosen, used = [], 0
    for i in order:
        if used + nbytes[i] <= budget_bytes:
            chosen.append(int(i))
            used += int(nbytes[i])
    return sorted(chosen) if chosen else [int(np.argmin(nbytes))]


def sent_bytes(fm: FleetModel, coding: str) -> np.ndarray:
    """What uploading each component costs under the coding: 4 bytes a value as float32; int8 sends
    1 byte a value plus a 4-byte scale per array, so the same byte budget buys ~4x the components."""
    if coding == "none":
        return fm.component_bytes
    return np.array([fm.component_bytes[i] // 4 + 4 * len(keys) for i, keys in enumerate(fm.component_keys)])


@dataclass
class RoundResult:
    values: dict[str, np.ndarray]       # new values of the trained components' slots
    components: list[int]
    metrics: dict[str, float] = field(default_factory=dict)
    energy_source: str = ""


def _loss(fm: FleetModel, batch: dict):
    from rgft_edge.device_runners.torch_eager import classification_loss

    return classification_loss(fm.model, fm.tensors(batch))[0]


def _batches(fm: FleetModel, data, cfg: FleetConfig, seed: int):
    from ..text import batches

    while True:  # passes over this client's (small) data, reshuffled each time
        yield from batches(fm.encoder, data.texts, data.labels, cfg.batch_size, seed=seed)
        seed += 1


def train_round(fm: FleetModel, cfg: FleetConfig, partition: int, global_values: dict[str, np.ndarray],
                error_map: ErrorMap, server_round: int, profile: str | None = None) -> RoundResult:
    import torch

    from ..api import RGFT
    from ..device_profiles import power_profile

    fm.write(global_values)
    data = fm.client_data(partition)
    stream = _batches(fm, data, cfg, seed=cfg.seed * 100_003 + server_round * 1_009 + partition)
    prof = power_profile(profile or cfg.profile)
    meter = EnergyMeter(idle_w=prof.idle_power_w, max_w=prof.max_power_w).start()
    t0 = time.perf_counter()
    known = int(error_map.measured_once.sum())  # > 0: the map came back from earlier rounds (or disk)
    for p in fm.params.values():
        p.requires_grad_(False)
    probed = 0
    if cfg.uploads_everything:
        comps = list(range(len(fm.table)))
    else:
        if not error_map.measured_once.all() or (server_round - 1) % cfg.probe_every == 0:
            _probe(fm, next(stream), error_map, server_round)
            probed = 1
        comps = choose_upload(error_map.scores, sent_bytes(fm, cfg.coding), cfg.upload_budget * fm.component_bytes.sum())
    sub = ComponentTable([fm.table[i] for i in comps], fm.table.granularity)
    rgft = RGFT(fm.model, policy="full", table=sub, batch_size=cfg.batch_size, seed=cfg.seed)
    opt = rgft.optimizer(lr=cfg.lr)
    losses, step_times = [], []
    for _ in range(cfg.local_steps):
        if cfg.energy_budget_j and meter.snapshot().energy_j >= cfg.energy_budget_j:
            break
        ts = time.perf_counter()
        with rgft.step():
            loss = _loss(fm, next(stream))
            if not torch.isfinite(loss):
                raise UserError(f"client {partition}: non-finite loss in round {server_round}; nothing uploaded")
            loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
        step_times.append(time.perf_counter() - ts)
    if not losses:
        raise UserError(f"client {partition}: energy budget {cfg.energy_budget_j} J spent before the first step")
    # the trained components' last gradients: their error after this round's work
    measured = np.zeros(len(fm.table), bool)
    measured[comps] = rgft.error_map.measured_once
    scores = np.zeros(len(fm.table))
    scores[comps] = rgft.error_map.scores
    error_map.update(server_round, measured, scores)
    train_s = time.perf_counter() - t0
    energy = meter.stop()
    return RoundResult(fm.read(comps), comps, {
        "num-examples": len(data), "steps": len(losses), "probe-steps": probed, "train-time-s": train_s,
        "median-step-s": float(np.median(step_times)), "loss": float(np.mean(losses)),
        "energy-j": float(energy.energy_j), "components": len(comps), "map-known": known,
    }, energy.source)


def _probe(fm: FleetModel, batch: dict, error_map: ErrorMap, server_round: int) -> None:
    """One backward pass over every component: gradient norms into the client's error map."""
    names = fm.table.param_names()
    for n in names:
        fm.params[n].requires_grad_(True)
    loss = _loss(fm, batch)
    loss.backward()
    grads = {n: fm.params[n].grad for n in names if fm.params[n].grad is not None}
    scores, measured = grad_norm_scores(fm.table, grads)
    if all(np.isfinite(scores[measured])):
        error_map.update(server_round, measured, scores)
    for n in names:
        fm.params[n].grad = None
        fm.params[n].requires_grad_(False)


def error_map_state(error_map: ErrorMap) -> dict[str, np.ndarray]:
    return {"scores": error_map.scores.astype(np.float64), "measured": error_map.measured_once.astype(np.int8),
            "last": error_map.last_measured.astype(np.int64)}


def restore_error_map(error_map: ErrorMap, state: dict[str, np.ndarray]) -> None:
    if len(state.get("scores", ())) != len(error_map):
        return  # another model's map: start fresh
    error_map.scores[:] = state["scores"]
    error_map.measured_once[:] = state["measured"].astype(bool)
    error_map.last_measured[:] = state["last"]
