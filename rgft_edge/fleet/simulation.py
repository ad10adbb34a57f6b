"""Flower's local simulation: `cfg.clients` virtual SuperNodes (one per data partition) run the
ClientApp in Ray worker processes while the ServerApp runs the rounds."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .config import FleetConfig


def simulate(cfg: FleetConfig, parallel: int | None = None, client_app=None) -> dict:
    """Run a fleet under Flower's simulation engine; returns the server's results (also written to
    `cfg.out`/results.json when `out` is set). `parallel`: client processes at once (default: one
    per CPU core, each with `cfg.threads` threads). `client_app`: another ClientApp (tests)."""
    from flwr.simulation import run_simulation

    from .apps import client_app as default_client, server_app_for

    tmp = None
    if not cfg.out:
        tmp = tempfile.TemporaryDirectory(prefix="rgft-fleet-")
        cfg = cfg.replace(out=tmp.name)
    cpus = parallel or max(1, (os.cpu_count() or 1) // cfg.threads)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        run_simulation(server_app_for(cfg), client_app or default_client, num_supernodes=cfg.clients,
                       backend_config={"client_resources": {"num_cpus": 1},
                                       "init_args": {"num_cpus": cpus, "include_dashboard": False}})
        path = Path(cfg.out) / "results.json"
        if not path.is_file():
            raise RuntimeError(f"the fleet simulation ended without results (see the log above); expected {path}")
        return json.loads(path.read_text())
    finally:
        if tmp is not None:
            tmp.cleanup()
