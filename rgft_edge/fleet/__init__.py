"""Federated RGFT on Flower: many devices fine-tune one model, each uploading only the components
it trained.

- `FleetConfig`: a run's settings (method, data split, rounds, local steps, upload budget, coding).
- `simulate(cfg)`: Flower's local simulation (N virtual clients on a Dirichlet non-IID split).
- `apps.client_app` / `apps.server_app`: the ClientApp and ServerApp for a real deployment
  (SuperLink + SuperNodes, `flwr run`); `rgft-edge fleet app DIR` writes the app directory.
- `strategy.ComponentFedAvg`: per-component weighted averaging with every reply checked.

Needs the `fleet` extra (`flwr[simulation]`); importing this package does not import Flower.
"""

from __future__ import annotations

from .config import METHODS, FleetConfig
from .partition import dirichlet_split

__all__ = ["FleetConfig", "METHODS", "dirichlet_split", "simulate"]


def simulate(cfg: FleetConfig, **kwargs):
    from .simulation import simulate as _simulate

    return _simulate(cfg, **kwargs)
