"""What a client uploads and how the server checks it.

A reply carries only the components the client trained this round: an ArrayRecord with one entry
per slot of each such component (`model.slot_key`), and a ConfigRecord naming the components and
the coding. `none` sends the new float32 values; `int8` sends each slot's change from the round's
global value as int8 with one float32 scale (`<key>#scale`), ~4x fewer bytes, and the client
reports the relative error the rounding added.

`check_reply` refuses (ReplyError, with the reason) anything that is not exactly that: unknown
components, missing or extra arrays, a wrong shape or dtype, non-finite values, a reply over the
size limit, a non-positive example count. Arrays are decoded with numpy's pickle-free loader.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import Slot

SCALE = "#scale"


class ReplyError(ValueError):
    """A client reply the server will not aggregate (the reason is logged, the round goes on)."""


@dataclass
class Upload:
    """A checked reply: new values per slot key, the components they make up, the example weight."""
    values: dict[str, np.ndarray]
    components: list[str]
    examples: int
    nbytes: int  # array payload bytes as sent (ArrayRecord.count_bytes)


def encode(new: dict[str, np.ndarray], base: dict[str, np.ndarray], coding: str) -> tuple[dict[str, np.ndarray], float]:
    """Arrays to send for the trained slots, and the relative L2 error the coding adds to the
    update (0 for `none`)."""
    if coding == "none":
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in new.items()}, 0.0
    out, err2, tot2 = {}, 0.0, 0.0
    for k, v in new.items():
        delta = v.astype(np.float32) - base[k]
        peak = float(np.abs(delta).max()) if delta.size else 0.0
        scale = peak / 127.0 if peak > 0 else 1.0
        q = np.clip(np.rint(delta / scale), -127, 127).astype(np.int8)
        out[k], out[k + SCALE] = q, np.array([scale], dtype=np.float32)
        err2 += float(((q.astype(np.float32) * scale - delta) ** 2).sum())
        tot2 += float((delta ** 2).sum())
    return out, (err2 / tot2) ** 0.5 if tot2 > 0 else 0.0


def check_reply(arrays, upload: dict, metrics: dict, slots: dict[str, Slot], component_names: list[str],
                base: dict[str, np.ndarray], max_bytes: int) -> Upload:
    """Validate one reply (its ArrayRecord, the 'upload' ConfigRecord, the MetricRecord) against
    the model's slots and decode it into new values. Raises ReplyError."""
    nbytes = int(arrays.count_bytes())
    if nbytes > max_bytes:
        raise ReplyError(f"reply of {nbytes:,} bytes exceeds the {max_bytes:,}-byte limit")
    names = upload.get("components")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ReplyError("reply does not name the components it carries")
    unknown = sorted(set(names) - set(component_names))
    if unknown:
        raise ReplyError(f"reply names unknown component(s) {unknown[:3]}")
    if len(set(names)) != len(names):
        raise ReplyError("reply names a component twice")
    coding = upload.get("coding")
    if coding not in ("none", "int8"):
        raise ReplyError(f"reply uses unknown coding {coding!r}")
    examples = metrics.get("num-examples")
    if not isinstance(examples, (int, float)) or not np.isfinite(examples) or examples <= 0:
        raise ReplyError(f"reply has no positive num-examples ({examples!r})")
    chosen = set(names)
    wanted = [k for k, s in slots.items() if component_names[s.component] in chosen]
    expected = set(wanted) | ({k + SCALE for k in wanted} if coding == "int8" else set())
    got = set(arrays.keys())
    if got != expected:
        missing, extra = sorted(expected - got), sorted(got - expected)
        raise ReplyError(f"reply arrays do not match its components: missing {missing[:2]}, unexpected {extra[:2]}")
    values = {}
    for key in wanted:
        slot = slots[key]
        if coding == "none":
            v = _decode(arrays[key], key, "float32", slot.shape)
        else:
            q = _decode(arrays[key], key, "int8", slot.shape)
            scale = _decode(arrays[key + SCALE], key + SCALE, "float32", (1,))
            v = base[key] + q.astype(np.float32) * scale[0]
        if not np.isfinite(v).all():
            raise ReplyError(f"{key}: non-finite values")
        values[key] = v
    return Upload(values, list(names), int(examples), nbytes)


def _decode(array, key: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if array.dtype != dtype or tuple(array.shape) != tuple(shape):
        raise ReplyError(f"{key}: {array.dtype}{list(array.shape)} sent, {dtype}{list(shape)} expected")
    try:
        v = array.numpy()
    except Exception as e:  # a truncated or tampered buffer
        raise ReplyError(f"{key}: undecodable array ({type(e).__name__})") from e
    if v.dtype != np.dtype(dtype) or v.shape != tuple(shape):
        raise ReplyError(f"{key}: payload is {v.dtype}{list(v.shape)}, metadata said {dtype}{list(shape)}")
    return v
