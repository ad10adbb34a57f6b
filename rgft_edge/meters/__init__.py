"""Meters for one run: energy / power / CO2 (`energy.py`, sensors in `power.py`) and peak memory
(`memory.py`). No torch import anywhere here: device runners use them as they are."""

from __future__ import annotations

from typing import Any

from .energy import EnergyMeter, EnergyResult
from .memory import MemoryMeter
from .power import (WORLD_AVERAGE_KG_PER_KWH, AndroidBatterySource, Ina3221Source, PowerSource,
                    RaplSource, Reading, RpiPmicSource, SensorUnavailable, TdpEstimate, default_sources,
                    register_power_sensor, sensor_names)


def energy_per_run_summary(result: EnergyResult, memory: MemoryMeter | None) -> dict[str, Any]:
    """The flat per-run figures every training report carries, each with its source."""
    return {"energy_j": result.energy_j, "energy_wh": result.energy_wh, "avg_power_w": result.avg_power_w,
            "peak_power_w": result.peak_power_w, "co2_kg": result.co2_kg, "energy_source": result.source,
            "co2_source": result.co2_source,
            "peak_rss_bytes": memory.peak_rss_bytes if memory is not None else None,
            "memory_source": memory.source if memory is not None else None}


__all__ = ["EnergyMeter", "EnergyResult", "MemoryMeter", "PowerSource", "Reading", "SensorUnavailable",
           "RaplSource", "Ina3221Source", "RpiPmicSource", "AndroidBatterySource", "TdpEstimate",
           "default_sources", "register_power_sensor", "sensor_names", "energy_per_run_summary",
           "WORLD_AVERAGE_KG_PER_KWH"]
