import time

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Metadata, MetricRecord, RecordDict
from flwr.app.message import make_message

from rgft_edge.components import ParamRef
from rgft_edge.fleet.model import Slot
from rgft_edge.fleet.strategy import ComponentFedAvg

NAMES = ["a", "b", "head"]
SLOTS = {"a|w": Slot(0, ParamRef("w"), (3,)), "b|w": Slot(1, ParamRef("v"), (2, 2)), "head|h": Slot(2, ParamRef("h"), (2,))}


def fresh():
    glob = {"a|w": np.zeros(3, np.float32), "b|w": np.zeros((2, 2), np.float32), "head|h": np.zeros(2, np.float32)}
    return ComponentFedAvg(SLOTS, NAMES, glob, max_reply_bytes=10_000), {k: v.copy() for k, v in glob.items()}


def meta(node):
    return Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0, reply_to_message_id="x",
                    group_id="1", created_at=time.time(), ttl=60, message_type="train")


def reply(node, arrays, components, examples, **extra):
    content = RecordDict({"arrays": ArrayRecord({k: Array(np.asarray(v, np.float32)) for k, v in arrays.items()}),
                          "upload": ConfigRecord({"components": components, "coding": "none", **extra}),
                          "metrics": MetricRecord({"num-examples": examples, "steps": 5})})
    return make_message(meta(node), content=content)


def test_each_component_is_averaged_over_the_clients_that_sent_it_weighted_by_examples():
    s, before = fresh()
    replies = [reply(1, {"a|w": [1, 1, 1], "head|h": [4, 4]}, ["a", "head"], 10),
               reply(2, {"head|h": [1, 1]}, ["head"], 30)]
    arrays, metrics = s.aggregate_train(1, replies)
    assert np.allclose(s.global_values["a|w"], 1.0)  # only client 1 sent a
    assert np.allclose(s.global_values["head|h"], (4 * 10 + 1 * 30) / 40)
    assert np.array_equal(s.global_values["b|w"], before["b|w"])  # nobody sent b: unchanged
    assert set(arrays.keys()) == set(SLOTS) and metrics["accepted"] == 2
    assert s.last["components_updated"] == ["a", "head"]


def test_bad_replies_and_failed_clients_are_refused_logged_and_the_round_goes_on(caplog):
    s, _ = fresh()
    content = RecordDict({"arrays": ArrayRecord({"head|h": Array(np.ones(2, np.float32))})})  # no upload/metrics
    replies = [reply(1, {"head|h": [2, 2]}, ["head"], 10),
               reply(2, {"zz|w": [1, 1]}, ["zz"], 10),                  # unknown component
               reply(3, {"b|w": [1, 2, 3]}, ["b"], 10),                 # wrong shape
               reply(4, {"head|h": np.ones(3000)}, ["head"], 10),       # oversized
               make_message(meta(5), content=content),                  # malformed
               make_message(meta(6), error=Error(code=1, reason="device dropped mid-round"))]
    with caplog.at_level("WARNING", logger="rgft_edge.fleet"):
        s.aggregate_train(1, replies)
    assert np.allclose(s.global_values["head|h"], 2.0)  # only node 1 counted
    reasons = {r["node"]: r["reason"] for r in s.last["refused"]}
    assert sorted(reasons) == [2, 3, 4, 5, 6]
    assert "unknown component" in reasons[2] and "expected" in reasons[3] and "exceeds" in reasons[4]
    assert "malformed" in reasons[5] and "dropped" in reasons[6]
    assert sum("refused" in r.message for r in caplog.records) == 5


def test_a_round_with_only_bad_replies_keeps_the_global_model():
    s, before = fresh()
    s.aggregate_train(1, [reply(2, {"head|h": [np.nan, 1]}, ["head"], 10)])
    assert all(np.array_equal(s.global_values[k], before[k]) for k in before)
    assert len(s.last["refused"]) == 1 and not s.last["accepted"]
