"""The policy registry: one place that knows every selection policy and its options.

Adding a policy is one file (a `Policy` implementation) plus one line:

    register_policy("my-policy", MyOptions, lambda ctx, o: MyPolicy(...), "one-line summary")

CLI choices, --help, config validation and `make_policy` all read from here; the flags a policy
adds are the fields of its options dataclass. Policies from other packages register through the
entry-point group `rgft_edge.policies` (each entry point is imported on first use).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Callable

from ..components import ComponentTable
from ..costs import CostModel
from .base import Policy, PolicyContext
from .options import check_options


@dataclass(frozen=True)
class PolicySpec:
    name: str
    options: type  # dataclass; its fields are the policy's --flags
    build: Callable[[PolicyContext, object], Policy]
    summary: str


_POLICIES: dict[str, PolicySpec] = {}
_plugins_loaded = False


def _fields(spec: PolicySpec) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(spec.options)}


def register_policy(name: str, options: type, build: Callable[[PolicyContext, object], Policy],
                    summary: str) -> PolicySpec:
    """Make `name` a policy everywhere (CLI, config, profiles, `make_policy`)."""
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"policy {name!r}: options must be a dataclass, got {options!r}")
    new = {f.name: f for f in dataclasses.fields(options)}
    for other in _POLICIES.values():
        for fname, f in _fields(other).items():
            mine = new.get(fname)
            if mine is not None and (mine.default != f.default or mine.type != f.type):
                raise ValueError(f"policy {name!r}: option {fname!r} clashes with policy {other.name!r}'s "
                                 f"(default {f.default!r}); share its options dataclass instead")
    spec = PolicySpec(name, options, build, summary)
    _POLICIES[name] = spec
    return spec


def unregister_policy(name: str) -> None:
    """Remove a registered policy (tests, plugins that replace one)."""
    _POLICIES.pop(name, None)


def _load_plugins() -> None:
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        for ep in entry_points(group="rgft_edge.policies"):
            ep.load()


def policy_specs() -> dict[str, PolicySpec]:
    _load_plugins()
    return dict(_POLICIES)


def policy_names() -> tuple[str, ...]:
    return tuple(policy_specs())


def get_policy(name: str) -> PolicySpec:
    specs = policy_specs()
    if name not in specs:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(specs)}")
    return specs[name]


def option_fields() -> dict[str, dataclasses.Field]:
    """Every registered policy option (the `--<option>` flags), by field name."""
    out: dict[str, dataclasses.Field] = {}
    for spec in policy_specs().values():
        for fname, f in _fields(spec).items():
            out.setdefault(fname, f)
    return out


def check_option_values(values: dict) -> None:
    """ValueError for an unknown option, or one outside its range whichever policy runs."""
    fields = option_fields()
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown policy option(s) {unknown}; known: {', '.join(fields)}")
    for spec in policy_specs().values():
        mine = _fields(spec)
        check_options(spec.options(**{k: v for k, v in values.items() if k in mine}))


def make_policy(name: str, table: ComponentTable, *, seed: int = 0, cost: CostModel | None = None,
                batch_size: int = 16, **options) -> Policy:
    """The named policy built from its options (options of other policies are ignored)."""
    spec = get_policy(name)
    check_option_values(options)
    mine = _fields(spec)
    opts = spec.options(**{k: v for k, v in options.items() if k in mine})
    ctx = PolicyContext(table, cost if cost is not None else CostModel(table, batch_size), seed)
    return spec.build(ctx, opts)
