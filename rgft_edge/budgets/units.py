"""Budget quantities as users write them: sizes (1.5GB), energies (2Wh, 500J), durations (20m)."""

from __future__ import annotations

import re

from ..errors import UserError

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$", re.I)
_BYTES = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30}
_ENERGY = {"j": 1.0, "kj": 1e3, "wh": 3600.0, "kwh": 3.6e6, "mwh": 3.6}
_TIME = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_bytes(text: str | int | float) -> int:
    """Bytes from '1.5GB', '800MB', '2GiB' (a bare number is bytes)."""
    if isinstance(text, (int, float)):
        return int(text)
    m = _SIZE.match(str(text))
    if not m:
        raise UserError(f"cannot read {text!r} as a size (examples: 1.5GB, 800MB, 2GiB)")
    return int(float(m.group(1)) * _BYTES[(m.group(2) or "b").lower()])


def _number_unit(text: str, units: dict, what: str, example: str) -> float:
    m = re.match(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in units:
        raise UserError(f"cannot read {text!r} as {what} (examples: {example})")
    return float(m.group(1)) * units[unit]


def parse_energy(text: str) -> float:
    """Joules from '2Wh', '500J', '1.5kJ'."""
    return _number_unit(text, _ENERGY, "an energy", "2Wh, 500J, 1.5kJ")


def parse_duration(text: str) -> float:
    """Seconds from '20m', '90s', '1.5h'."""
    return _number_unit(text, _TIME, "a duration", "20m, 90s, 1.5h")
