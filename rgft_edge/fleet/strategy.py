"""The server's Flower Strategy: average each component over the clients that sent it.

Flower's FedAvg needs every reply to carry the same arrays. Here a reply carries only the components
its client trained, so each slot's new global value is the example-weighted mean over the replies
that carry it, and a slot nobody sent keeps its value. Every reply is checked first
(`payload.check_reply`); a refused or failed reply is logged with its reason and left out, and the
round goes on with the others. The global state is only replaced after every reply was read, so a
bad reply can never leave it half-updated.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from .model import Slot
from .payload import ReplyError, Upload, check_reply

log = logging.getLogger("rgft_edge.fleet")


def _last_line(text: str) -> str:
    """A client exception's own message: the simulation engine wraps it in a long Ray trace."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[-1] if lines else "(no reason given)"


def to_record(values: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in values.items()})


class ComponentFedAvg(Strategy):
    def __init__(self, slots: dict[str, Slot], component_names: list[str], global_values: dict[str, np.ndarray],
                 max_reply_bytes: int, fraction_train: float = 1.0, min_clients: int = 2):
        self.slots, self.component_names = slots, component_names
        self.global_values = global_values
        self.max_reply_bytes = max_reply_bytes
        self.fraction_train, self.min_clients = fraction_train, min_clients
        self.last: dict = {}  # what the last aggregation saw: accepted, refused, bytes

    def summary(self) -> None:
        log.info("ComponentFedAvg: %d components, %d arrays, fraction %.2f, min clients %d, reply limit %d B",
                 len(self.component_names), len(self.slots), self.fraction_train, self.min_clients,
                 self.max_reply_bytes)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        connected = len(list(grid.get_node_ids()))
        want = max(self.min_clients, int(connected * self.fraction_train))
        node_ids, _ = sample_nodes(grid, self.min_clients, want)
        config["server-round"] = server_round
        record = RecordDict({"arrays": arrays, "config": config})
        return [Message(content=record, message_type=MessageType.TRAIN, dst_node_id=n) for n in node_ids]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        accepted: list[tuple[int, Upload, dict, str]] = []
        refused: list[dict] = []
        for msg in replies:
            node = int(msg.metadata.src_node_id)
            if msg.has_error():
                refused.append({"node": node, "reason": f"client error: {_last_line(msg.error.reason)}"[:300]})
                continue
            try:
                up, metrics, source = self._read(msg)
            except ReplyError as e:
                refused.append({"node": node, "reason": str(e)[:300]})
                continue
            accepted.append((node, up, metrics, source))
        for r in refused:
            log.warning("round %d: reply from node %d refused: %s", server_round, r["node"], r["reason"])
        new = self._average([up for _, up, _, _ in accepted])
        self.global_values.update(new)
        self.last = {"accepted": [{"node": n, "components": up.components, "uplink_bytes": up.nbytes,
                                   "examples": up.examples, "metrics": m, "energy_source": s}
                                  for n, up, m, s in accepted],
                     "refused": refused, "components_updated": sorted({c for _, up, _, _ in accepted for c in up.components})}
        total = sum(up.examples for _, up, _, _ in accepted)
        metrics = MetricRecord({"accepted": len(accepted), "refused": len(refused), "num-examples": total})
        return to_record(self.global_values), metrics

    def _read(self, msg: Message) -> tuple[Upload, dict, str]:
        content = msg.content
        try:
            arrays = content.array_records["arrays"]
            upload = dict(content.config_records["upload"])
            metrics = dict(content.metric_records["metrics"])
        except (KeyError, TypeError, AttributeError) as e:
            raise ReplyError(f"malformed reply: no {e}") from e
        up = check_reply(arrays, upload, metrics, self.slots, self.component_names, self.global_values,
                         self.max_reply_bytes)
        return up, {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}, \
            str(upload.get("energy-source", ""))

    def _average(self, uploads: list[Upload]) -> dict[str, np.ndarray]:
        sums: dict[str, np.ndarray] = {}
        weights: dict[str, float] = {}
        for up in uploads:
            for key, v in up.values.items():
                w = float(up.examples)
                sums[key] = sums[key] + w * v if key in sums else w * v.astype(np.float64)
                weights[key] = weights.get(key, 0.0) + w
        return {k: (s / weights[k]).astype(np.float32) for k, s in sums.items()}

    # server-side evaluation replaces federated evaluation (the server holds the test split)
    def configure_evaluate(self, server_round, arrays, config, grid) -> Iterable[Message]:
        return []

    def aggregate_evaluate(self, server_round, replies) -> MetricRecord | None:
        return None
