import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from rgft_edge.components import ParamRef
from rgft_edge.fleet.model import Slot
from rgft_edge.fleet.payload import ReplyError, check_reply, encode

NAMES = ["layer.0", "head"]
SLOTS = {"layer.0|w": Slot(0, ParamRef("w"), (4, 3)), "layer.0|b": Slot(0, ParamRef("b"), (4,)),
         "head|h": Slot(1, ParamRef("h"), (2, 4))}
BASE = {"layer.0|w": np.zeros((4, 3), np.float32), "layer.0|b": np.zeros(4, np.float32),
        "head|h": np.ones((2, 4), np.float32)}


def record(d):
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in d.items()})


def check(arrays, components=("head",), coding="none", examples=10, max_bytes=10_000):
    return check_reply(record(arrays), {"components": list(components), "coding": coding},
                       {"num-examples": examples}, SLOTS, NAMES, BASE, max_bytes)


def test_a_well_formed_reply_is_accepted():
    up = check({"head|h": np.full((2, 4), 2.0, np.float32)})
    assert up.components == ["head"] and up.examples == 10
    assert np.array_equal(up.values["head|h"], np.full((2, 4), 2.0))
    assert up.nbytes > 32


@pytest.mark.parametrize("arrays, kwargs, reason", [
    ({"head|h": np.zeros((2, 4), np.float32)}, {"components": ("head", "layer.9")}, "unknown component"),
    ({"head|h": np.zeros((4, 2), np.float32)}, {}, "expected"),  # wrong shape
    ({"head|h": np.zeros((2, 4), np.float64)}, {}, "expected"),  # wrong dtype
    ({"head|h": np.zeros((2, 4), np.float32), "layer.0|b": np.zeros(4, np.float32)}, {}, "unexpected"),
    ({}, {"components": ("layer.0",)}, "missing"),
    ({"head|h": np.full((2, 4), np.nan, np.float32)}, {}, "non-finite"),
    ({"head|h": np.zeros((2, 4), np.float32)}, {"examples": 0}, "num-examples"),
    ({"head|h": np.zeros((2, 4), np.float32)}, {"max_bytes": 100}, "exceeds"),
    ({"head|h": np.zeros((2, 4), np.float32)}, {"components": ()}, "does not name"),
    ({"head|h": np.zeros((2, 4), np.float32)}, {"components": ("head", "head")}, "twice"),
    ({"head|h": np.zeros((2, 4), np.float32)}, {"coding": "zip"}, "unknown coding"),
])
def test_bad_replies_are_refused_with_their_reason(arrays, kwargs, reason):
    with pytest.raises(ReplyError, match=reason):
        check(arrays, **kwargs)


def test_a_tampered_buffer_is_refused_not_unpickled():
    rec = record({"head|h": np.zeros((2, 4), np.float32)})
    arr = rec["head|h"]
    rec["head|h"] = Array(dtype="float32", shape=(2, 4), stype=arr.stype, data=arr.data[:20])
    with pytest.raises(ReplyError, match="undecodable"):
        check_reply(rec, {"components": ["head"], "coding": "none"}, {"num-examples": 3}, SLOTS, NAMES, BASE, 10_000)


def test_int8_deltas_round_trip_within_the_reported_error():
    rng = np.random.default_rng(0)
    new = {"layer.0|w": rng.normal(size=(4, 3)).astype(np.float32), "layer.0|b": rng.normal(size=4).astype(np.float32)}
    sent, rel_err = encode(new, BASE, "int8")
    assert sent["layer.0|w"].dtype == np.int8 and sent["layer.0|w#scale"].shape == (1,)
    up = check(sent, components=("layer.0",), coding="int8")
    err = np.sqrt(sum(((up.values[k] - new[k]) ** 2).sum() for k in new) / sum((new[k] ** 2).sum() for k in new))
    assert 0 < rel_err < 0.01 and err == pytest.approx(rel_err, rel=1e-3)
    plain, zero = encode(new, BASE, "none")
    assert zero == 0.0
    # one byte per value plus one float32 scale per array, against four bytes per value
    assert sum(v.nbytes for v in sent.values()) == 16 + 2 * 4 and sum(v.nbytes for v in plain.values()) == 16 * 4
