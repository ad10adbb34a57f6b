"""The runner-owned optimizer: AdamW per component, on parameter slices, with bounded state.

Why not torch.optim with param groups: a component can own a slice of a tensor (one attention
head's rows), torch's AdamW would still move the unselected slices of that tensor (momentum and
weight decay), and the exported backends hand us plain buffers anyway. The maths is AdamW exactly
(decoupled weight decay, bias correction per component step count); tests check it against
torch.optim.AdamW with per-group learning rates. `adamw_update` runs on torch tensors and numpy
arrays alike, each with its in-place operators (one temporary per tensor).

State bound (documented rule): the m/v state of a component that has not been updated for
`evict_after` steps is dropped; when it is selected again it restarts from zero with a fresh bias
correction. `max_state_components` additionally caps how many components may hold state at once
(least recently updated evicted first). Both keep optimizer memory bounded by the hot set, not K.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, MutableMapping

import numpy as np

from .components import ComponentTable


def adamw_update(p, g, m, v, lr: float, b1: float, b2: float, eps: float, wd: float,
                 bc1: float, bc2: float) -> None:
    """One AdamW update of `p` (and its moments `m`, `v`) in place, with one temporary: unfused,
    the same maths made ~8 full-size temporaries, and on numpy (single-threaded, no fused kernels)
    the optimizer took about as long as the backward of a small model."""
    if isinstance(p, np.ndarray):
        s = np.empty_like(g)
        m *= b1
        m += np.multiply(g, 1 - b1, out=s)
        v *= b2
        np.multiply(g, g, out=s)
        s *= 1 - b2
        v += s
        np.sqrt(v, out=s)
        s *= 1 / bc2 ** 0.5
        s += eps
        np.divide(m, s, out=s)
        s *= lr / bc1
        p *= 1 - lr * wd
        p -= s
        return
    m.mul_(b1).add_(g, alpha=1 - b1)  # torch tensors: torch.optim.AdamW's single-tensor update
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    denom = (v.sqrt() / bc2 ** 0.5).add_(eps)
    p.mul_(1 - lr * wd).addcdiv_(m, denom, value=-lr / bc1)


class ComponentAdamW:
    def __init__(self, table: ComponentTable, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01, evict_after: int = 200,
                 max_state_components: int | None = None):
        if lr <= 0 or not np.isfinite(lr):
            raise ValueError(f"learning rate must be a positive number, got {lr}")
        self.table, self.lr, self.betas, self.eps, self.wd = table, lr, betas, eps, weight_decay
        self.evict_after = evict_after
        self.max_state = max_state_components
        # component index -> {"t": int, "last": step, "m": [arrays], "v": [arrays]}
        self.state: dict[int, dict] = {}
        self.evictions = 0
        self.last_gain: np.ndarray | None = None

    def step(self, params: MutableMapping[str, Any], grads: Mapping[str, Any],
             lr_mult: np.ndarray, step: int, track_gain: bool = False) -> list[str]:
        """Update every component with lr_mult > 0; returns the parameter names touched.

        track_gain: also store in `last_gain` each component's first-order loss decrease of this
        update, sum(g * (w_before - w_after)) (ElasticTrainer's tensor importance)."""
        b1, b2 = self.betas
        touched = set()
        self.last_gain = np.zeros(len(self.table)) if track_gain else None
        for i in np.flatnonzero(np.asarray(lr_mult) > 0):
            comp = self.table[int(i)]
            st = self.state.get(int(i))
            if st is None:
                st = {"t": 0, "m": [None] * len(comp.params), "v": [None] * len(comp.params)}
                self.state[int(i)] = st
            st["t"] += 1
            st["last"] = step
            lr = self.lr * float(lr_mult[i])
            bc1, bc2 = 1 - b1 ** st["t"], 1 - b2 ** st["t"]
            for j, ref in enumerate(comp.params):
                p, g = params[ref.name], grads.get(ref.name)
                if g is None:
                    raise RuntimeError(f"component {comp.name!r} selected but {ref.name!r} has no gradient")
                idx = ref.index(p.ndim)
                g = g[idx]
                if st["m"][j] is None:
                    st["m"][j], st["v"][j] = g * 0, g * 0
                view = p[idx]
                before = view * 1 if track_gain else None  # a copy, for numpy and torch alike
                adamw_update(view, g, st["m"][j], st["v"][j], lr, b1, b2, self.eps, self.wd, bc1, bc2)
                if ref.dim is not None:  # numpy basic slices are views; torch too. Be explicit.
                    p[idx] = view
                if track_gain:
                    self.last_gain[i] += float((g * (before - view)).sum())
                touched.add(ref.name)
        self._evict(step)
        return sorted(touched)

    def _evict(self, step: int) -> None:
        cold = [i for i, s in self.state.items() if step - s["last"] >= self.evict_after]
        for i in cold:
            del self.state[i]
        self.evictions += len(cold)
        while self.max_state is not None and len(self.state) > self.max_state:
            self.evict_oldest()

    def evict_oldest(self) -> bool:
        """Drop the state of the least recently updated component (a memory guard's last resort
        before stopping a run); False when no component holds state."""
        if not self.state:
            return False
        del self.state[min(self.state, key=lambda i: self.state[i]["last"])]
        self.evictions += 1
        return True

    def state_tensors(self) -> tuple[dict[str, Any], dict]:
        """(tensors named "<component>.<param>.m|v", JSON metadata) for a checkpoint."""
        tensors, meta = {}, {}
        for i, st in self.state.items():
            meta[str(i)] = {"t": st["t"], "last": st["last"]}
            for j, (m, v) in enumerate(zip(st["m"], st["v"])):
                if m is not None:
                    tensors[f"{i}.{j}.m"], tensors[f"{i}.{j}.v"] = m, v
        return tensors, {"components": meta, "evictions": self.evictions}

    def load_state_tensors(self, tensors: Mapping[str, Any], meta: dict,
                           like: Callable[[str, Any], Any]) -> None:
        """Inverse of `state_tensors`; `like(param_name, array)` converts an array to the type of
        that parameter's buffer (numpy or torch)."""
        self.state = {}
        for key, info in meta["components"].items():
            i = int(key)
            m, v = [], []
            for j, ref in enumerate(self.table[i].params):
                m.append(like(ref.name, tensors[f"{i}.{j}.m"]) if f"{i}.{j}.m" in tensors else None)
                v.append(like(ref.name, tensors[f"{i}.{j}.v"]) if f"{i}.{j}.v" in tensors else None)
            self.state[i] = {"t": info["t"], "last": info["last"], "m": m, "v": v}
        self.evictions = int(meta.get("evictions", 0))

    def state_numel(self) -> int:
        return sum(int(np.prod(a.shape)) for s in self.state.values() for a in s["m"] + s["v"]
                   if a is not None)
