"""The server's round loop: send the global state, collect replies until the round deadline,
aggregate per component, evaluate the global model on the held-out split, checkpoint.

After every round the global state (safetensors) and the history (JSON) are written atomically to
`out`; a server started again with `resume` continues after the last completed round with exactly
that state, so a kill loses at most the round in flight. Nothing is unpickled.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord
from flwr.serverapp import Grid

from ..errors import UserError
from ..runs.writer import write_json, write_safetensors
from .config import FleetConfig
from .strategy import ComponentFedAvg, to_record

log = logging.getLogger("rgft_edge.fleet")
STATE, GLOBAL = "fleet_state.json", "global.safetensors"
SCHEMA = 1
# settings a resumed run must share with the run it continues
SAME_RUN = ("method", "model", "data", "clients", "alpha", "seed", "held_out", "validation", "max_length", "lora_r", "coding")


def save_checkpoint(out: Path, cfg: FleetConfig, round_done: int, values: dict[str, np.ndarray], history: list) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / GLOBAL, values)  # the state first: a kill between the two resumes one round early
    write_json(out / STATE, {"schema": SCHEMA, "round": round_done, "config": cfg.to_run_config(), "history": history})


def load_checkpoint(out: Path, cfg: FleetConfig, keys: dict[str, np.ndarray]) -> tuple[int, dict, list]:
    from safetensors.numpy import load_file

    try:
        state = json.loads((out / STATE).read_text())
        values = load_file(str(out / GLOBAL))
    except FileNotFoundError as e:
        raise UserError(f"--resume: no fleet checkpoint in {out} ({e.filename} missing)") from e
    except Exception as e:  # a torn or tampered file (safetensors raises its own error type)
        raise UserError(f"--resume: the fleet checkpoint in {out} is unreadable: {e}") from e
    if state.get("schema") != SCHEMA:
        raise UserError(f"--resume: checkpoint schema {state.get('schema')!r}, this version reads {SCHEMA}")
    saved = FleetConfig.from_run_config(state["config"])
    diff = [k for k in SAME_RUN if getattr(saved, k) != getattr(cfg, k)]
    if diff:
        raise UserError(f"--resume: the checkpoint was made with other settings: {', '.join(diff)}")
    if set(values) != set(keys) or any(values[k].shape != keys[k].shape for k in keys):
        raise UserError("--resume: the checkpoint's arrays do not match this model's components")
    return int(state["round"]), values, list(state["history"])


def run_server(grid: Grid, cfg: FleetConfig) -> dict:
    from .client import fleet_model

    fm = fleet_model(cfg)
    out = Path(cfg.out) if cfg.out else None
    values = fm.read()
    done, history = 0, []
    if cfg.resume:
        if out is None:
            raise UserError("resume needs an output directory (out)")
        done, values, history = load_checkpoint(out, cfg, values)
        log.info("resuming after round %d", done)
    limit = int(cfg.max_reply_mb * 2 ** 20) if cfg.max_reply_mb > 0 else int(fm.component_bytes.sum() * 2.1) + 2 ** 20
    strategy = ComponentFedAvg(fm.slots, fm.table.names, values, limit, cfg.fraction_train, cfg.min_clients)
    strategy.summary()
    if done == 0:
        fm.write(values)
        history.append({"round": 0, **fm.evaluate_splits(), "uplink_bytes": 0, "downlink_bytes": 0})
    train_config = {k: v for k, v in cfg.to_run_config().items() if k not in ("out", "resume")}
    for rnd in range(done + 1, cfg.rounds + 1):
        t0 = time.perf_counter()
        down = to_record(strategy.global_values)
        messages = list(strategy.configure_train(rnd, down, ConfigRecord(dict(train_config)), grid))
        replies = list(grid.send_and_receive(messages, timeout=cfg.round_timeout_s))
        strategy.aggregate_train(rnd, replies)
        fm.write(strategy.global_values)
        ev = fm.evaluate_splits()
        seen = strategy.last
        entry = {"round": rnd, **ev, "asked": len(messages), "replied": len(replies),
                 "accepted": len(seen["accepted"]), "refused": seen["refused"],
                 "no_reply": len(messages) - len(replies),
                 "uplink_bytes": sum(a["uplink_bytes"] for a in seen["accepted"]),
                 "downlink_bytes": int(down.count_bytes()) * len(messages),
                 "components_updated": seen["components_updated"], "clients": seen["accepted"],
                 "round_wall_s": time.perf_counter() - t0}
        history.append(entry)
        log.info("round %d: accuracy %.4f, %d/%d replies accepted, uplink %.2f MB", rnd, ev["accuracy"],
                 entry["accepted"], len(messages), entry["uplink_bytes"] / 1e6)
        if out is not None:
            save_checkpoint(out, cfg, rnd, strategy.global_values, history)
    result = {"config": cfg.to_run_config(), "history": history,
              "trainable_bytes": int(fm.component_bytes.sum()), "components": fm.table.names}
    if out is not None:
        (out / "results.json").write_text(json.dumps(result, indent=1))
    return result
