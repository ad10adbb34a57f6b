"""`rgft-edge fleet simulate | local | app`: one flag per FleetConfig setting."""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from .config import CODINGS, METHODS, FleetConfig

ACTIONS = {
    "simulate": "Flower's local simulation: --clients virtual devices in this machine's processes",
    "local": "a real deployment on localhost: a SuperLink and one SuperNode process per client, `flwr run`",
    "app": "write a Flower app directory (pyproject.toml + entry module) for `flwr run` on your own SuperLink",
}
CHOICES = {"method": list(METHODS), "coding": list(CODINGS)}


def add_parser(sub) -> None:
    p = sub.add_parser("fleet", help="federated RGFT on Flower: many devices, each uploading only what it trained",
                       description="; ".join(f"{k}: {v}" for k, v in ACTIONS.items()))
    p.add_argument("action", choices=list(ACTIONS))
    p.add_argument("app_dir", nargs="?", help="app: the directory to write")
    p.add_argument("--workdir", default=None, help="local: where the SuperLink/SuperNodes keep logs and state "
                   "(default: a temporary directory)")
    p.add_argument("--profiles", default="", help="local: comma-separated device profile per SuperNode")
    p.add_argument("--timeout", type=float, default=3600, help="local: seconds to wait for the run")
    g = p.add_argument_group("fleet settings")
    for f in dataclasses.fields(FleetConfig):
        flag = "--" + f.name.replace("_", "-")
        extra = f"; one of {', '.join(CHOICES[f.name])}" if f.name in CHOICES else ""
        if isinstance(f.default, bool):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, dest=f.name)
        else:
            g.add_argument(flag, type=type(f.default), default=f.default, dest=f.name,
                           help=f"(default: {f.default}){extra}")


def run(args) -> int:
    from ..errors import UserError

    cfg = FleetConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FleetConfig)})
    if args.action == "app":
        if not args.app_dir:
            raise UserError("fleet app needs the directory to write")
        from .deploy import write_app

        d = write_app(args.app_dir, cfg)
        print(f"wrote {d}/pyproject.toml and {d}/rgft_fleet_app.py; run it with `flwr run {d} <superlink>` "
              "(SuperNodes need --node-config \"partition-id=I num-partitions=N\")")
        return 0
    if args.action == "simulate":
        from . import simulate

        result = simulate(cfg)
    else:
        from .deploy import LocalFleet

        if not cfg.out:
            raise UserError("fleet local needs --out (the server's results and checkpoint directory)")
        work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="rgft-fleet-"))
        profiles = [s.strip() for s in args.profiles.split(",") if s.strip()]
        with LocalFleet(work, cfg.clients, profiles) as fleet:
            result = fleet.run(cfg, args.timeout)
        print(f"SuperLink / SuperNode logs: {work / 'logs'}")
    print(format_history(result))
    return 0


def format_history(result: dict) -> str:
    total = result["trainable_bytes"]
    lines = [f"{'round':>5}  {'accuracy':>8}  {'accepted':>8}  {'refused':>7}  {'uplink MB':>9}  {'× full state':>12}"]
    for h in result["history"]:
        if h["round"] == 0:
            lines.append(f"{0:>5}  {h['accuracy']:8.4f}  (the initial global model)")
            continue
        per_client = h["uplink_bytes"] / max(1, h["accepted"]) / total
        lines.append(f"{h['round']:>5}  {h['accuracy']:8.4f}  {h['accepted']:>8}  {len(h['refused']):>7}  "
                     f"{h['uplink_bytes'] / 1e6:9.2f}  {per_client:12.4f}")
        for r in h["refused"]:
            lines.append(f"       refused node {r['node']}: {r['reason']}")
    out = result["config"].get("out")
    return "\n".join(lines + ([f"results: {out}/results.json"] if out else []))
