"""The component table: the units RGFT scores and selects.

A component owns a set of parameter *slices* (whole tensors for layers/blocks, row/column ranges
for attention heads), sits at a depth in forward order, and carries FLOP estimates the cost model
uses. This module is plain Python (no torch) so device runners can read a table from a manifest.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

KINDS = ("embedding", "attention", "ffn", "layer", "head", "lora", "norm", "classifier", "module")
GRANULARITIES = ("layer", "block", "head", "lora")


@dataclass(frozen=True)
class ParamRef:
    """A whole parameter (dim is None) or the range [start, stop) of it along `dim`."""

    name: str
    dim: int | None = None
    start: int = 0
    stop: int = 0

    def index(self, ndim: int) -> tuple:
        """Index tuple selecting this slice from an array with `ndim` dimensions."""
        if self.dim is None:
            return (...,)
        idx = [slice(None)] * ndim
        idx[self.dim] = slice(self.start, self.stop)
        return tuple(idx)

    def numel(self, shape: Sequence[int]) -> int:
        n = 1
        for i, s in enumerate(shape):
            n *= (self.stop - self.start) if i == self.dim else s
        return n


@dataclass(frozen=True)
class HookSpec:
    """Where the component's output h_k can be observed for activation attribution.

    mode "output": the module's output (first tensor if it returns a tuple);
    mode "input": the module's first input (e.g. the per-head context entering o_proj),
    restricted to [start, stop) of the last dimension when stop > 0.
    """

    module: str
    mode: str = "output"
    start: int = 0
    stop: int = 0


@dataclass
class Component:
    name: str
    kind: str
    depth: int
    params: list[ParamRef]
    num_params: int
    hook: HookSpec | None = None
    fwd_flops: float = 0.0  # per sample, forward
    wgrad_flops: float = 0.0  # per sample, weight-gradient work when trained
    igrad_flops: float = 0.0  # per sample, input-gradient work when backprop passes through

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"component {self.name!r}: unknown kind {self.kind!r}")

    @property
    def param_names(self) -> list[str]:
        return sorted({p.name for p in self.params})


@dataclass
class ComponentTable:
    components: list[Component]
    granularity: str
    notes: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.components)

    def __iter__(self):
        return iter(self.components)

    def __getitem__(self, i: int) -> Component:
        return self.components[i]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.components]

    @property
    def depths(self) -> list[int]:
        return [c.depth for c in self.components]

    def index(self, name: str) -> int:
        for i, c in enumerate(self.components):
            if c.name == name:
                return i
        raise KeyError(name)

    def indices_of_kind(self, *kinds: str) -> list[int]:
        return [i for i, c in enumerate(self.components) if c.kind in kinds]

    def param_names(self, selected: Iterable[int] | None = None) -> set[str]:
        idx = range(len(self)) if selected is None else selected
        return {p.name for i in idx for p in self.components[i].params}

    def check_coverage(self, shapes: dict[str, Sequence[int]]) -> None:
        """Every element of every trainable parameter belongs to exactly one component."""
        counts: dict[str, int] = {n: 0 for n in shapes}
        for c in self.components:
            for p in c.params:
                if p.name not in shapes:
                    raise ValueError(f"component {c.name!r} names unknown parameter {p.name!r}")
                counts[p.name] += p.numel(shapes[p.name])
        # Overlap check per parameter and dimension: slices along one dim must be disjoint.
        spans: dict[str, list[tuple]] = {}
        for c in self.components:
            for p in c.params:
                spans.setdefault(p.name, []).append((p.dim, p.start, p.stop, c.name))
        for name, items in spans.items():
            whole = [i for i in items if i[0] is None]
            if whole and len(items) > 1:
                raise ValueError(f"parameter {name!r} is whole in {whole[0][3]!r} and also in others")
            ordered = sorted(i for i in items if i[0] is not None)
            for a, b in zip(ordered, ordered[1:]):
                if a[0] == b[0] and b[1] < a[2]:
                    raise ValueError(f"parameter {name!r}: {a[3]!r} and {b[3]!r} overlap")
        for name, shape in shapes.items():
            total = 1
            for s in shape:
                total *= s
            if counts[name] != total:
                raise ValueError(
                    f"parameter {name!r}: components cover {counts[name]} of {total} elements"
                )

    def to_dict(self) -> dict:
        return {"granularity": self.granularity, "notes": self.notes,
                "components": [asdict(c) for c in self.components]}

    @classmethod
    def from_dict(cls, d: dict) -> "ComponentTable":
        comps = []
        for c in d["components"]:
            c = dict(c)
            c["params"] = [ParamRef(**p) for p in c["params"]]
            c["hook"] = HookSpec(**c["hook"]) if c.get("hook") else None
            comps.append(Component(**c))
        return cls(comps, d["granularity"], d.get("notes", {}))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)
