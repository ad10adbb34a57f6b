"""The Flower apps. `client_app` is the ClientApp every device runs (simulation or a real
SuperNode); `server_app` is the ServerApp for a deployment (`flwr run`), which reads its settings
from the run config; `server_app_for(cfg)` builds one with settings fixed in code (simulation).

Node settings (`flower-supernode --node-config`): `partition-id` (required), `profile` (this device's
power profile, default the run's), `state-dir` (where the client keeps its error map across restarts;
without it the map lives in the node's Flower context).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from ..error_map import ErrorMap
from .client import error_map_state, fleet_model, restore_error_map, train_round
from .config import FleetConfig
from .payload import encode
from .server import run_server

client_app = ClientApp()
MAP_BETA = 0.5  # a client's map follows the global model's drift between rounds


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    config = {k: v for k, v in dict(msg.content.config_records["config"]).items() if k != "server-round"}
    cfg = FleetConfig.from_run_config(config)
    server_round = int(msg.content.config_records["config"]["server-round"])
    partition = int(context.node_config["partition-id"])
    fm = fleet_model(cfg)
    received = {k: a.numpy() for k, a in msg.content.array_records["arrays"].items()}
    if set(received) != set(fm.slots):
        raise ValueError("the server's model does not match this client's (different component keys)")
    error_map = ErrorMap(len(fm.table), beta=MAP_BETA)
    restore_error_map(error_map, _load_state(context))
    result = train_round(fm, cfg, partition, received, error_map, server_round,
                         str(context.node_config.get("profile", "")) or None)
    _save_state(context, error_map_state(error_map))
    arrays, coding_error = encode(result.values, received, cfg.coding)
    names = [fm.table[i].name for i in result.components]
    content = RecordDict({
        "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
        "upload": ConfigRecord({"components": names, "coding": cfg.coding, "energy-source": result.energy_source}),
        "metrics": MetricRecord({**result.metrics, "coding-rel-error": coding_error}),
    })
    return Message(content=content, reply_to=msg)


def _state_dir(context: Context) -> Path | None:
    d = context.node_config.get("state-dir")
    return Path(str(d)) if d else None


def _load_state(context: Context) -> dict[str, np.ndarray]:
    d = _state_dir(context)
    if d is not None:
        from safetensors.numpy import load_file

        f = d / "error_map.safetensors"
        try:
            return load_file(str(f)) if f.is_file() else {}
        except Exception:  # a torn or tampered file: start a fresh map rather than refuse the round
            return {}
    rec = context.state.array_records.get("rgft-error-map")
    return {k: a.numpy() for k, a in rec.items()} if rec is not None else {}


def _save_state(context: Context, state: dict[str, np.ndarray]) -> None:
    d = _state_dir(context)
    if d is not None:
        from ..runs.writer import write_safetensors

        d.mkdir(parents=True, exist_ok=True)
        write_safetensors(d / "error_map.safetensors", state)
    else:
        context.state["rgft-error-map"] = ArrayRecord({k: Array(v) for k, v in state.items()})


def server_app_for(cfg: FleetConfig) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, cfg)

    return app


server_app = ServerApp()


@server_app.main()
def _deployed(grid: Grid, context: Context) -> None:
    run_server(grid, FleetConfig.from_run_config(dict(context.run_config)))
