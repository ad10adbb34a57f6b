"""Power sources for the energy meter: Intel RAPL, Jetson INA3221, Raspberry Pi 5 PMIC, Android
battery, and a TDP estimate as last resort. Each reads under a `root` path, so tests can point it at
a fake sysfs tree; each says whether its figure is measured or estimated.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import psutil

from ..errors import UserError

# IEA world-average grid carbon intensity (kg CO2e per kWh); used only when codecarbon is unusable.
WORLD_AVERAGE_KG_PER_KWH = 0.475
_READ_ERRORS = (OSError, ValueError, subprocess.SubprocessError)


def _append_capped(samples: list, item: tuple, cap: int) -> None:
    """Append, halving the history when full, so a long run on a 1 GB board cannot grow it without bound."""
    if len(samples) >= cap:
        del samples[1::2]
    samples.append(item)


def _num(path: str | Path) -> float:
    return float(Path(path).read_text().strip())


def _text(path: Path) -> str:
    """Stripped contents of an optional sysfs file, "" when absent."""
    return path.read_text().strip() if path.exists() else ""


class SensorUnavailable(OSError):
    """The sensor is absent, unreadable or not meaningful right now (the message says why)."""


@dataclass(frozen=True)
class Reading:
    """One sensor read: instantaneous ``power_w`` or a cumulative ``energy_j`` counter (exactly one set)."""

    power_w: float | None = None
    energy_j: float | None = None


class PowerSource:
    """A power or energy sensor; ``available()`` tries one read and keeps the failure in ``reason``."""

    name = "unknown"
    kind = "measured"

    def __init__(self, root: str | os.PathLike = "/") -> None:
        self.root = Path(root)
        self.reason = ""

    @property
    def source(self) -> str:
        return f"{self.kind}:{self.name}"

    def _p(self, pattern: str) -> list[str]:
        return sorted(glob.glob(str(self.root / pattern)))

    def read(self) -> Reading:
        raise NotImplementedError

    def available(self) -> bool:
        try:
            self.read()
        except _READ_ERRORS as e:
            self.reason = str(e) or type(e).__name__
            return False
        return True


class RaplSource(PowerSource):
    """Intel/AMD RAPL package energy counters (µJ), unwrapped with ``max_energy_range_uj``.

    Only top-level ``intel-rapl:N`` package domains are summed: subzones (core, uncore, dram) and a
    ``psys`` domain are already inside or around the package and would be counted twice.
    """

    name = "rapl"

    def __init__(self, root: str | os.PathLike = "/") -> None:
        super().__init__(root)
        self._last: dict[str, float] = {}
        self._total_uj = 0.0

    def read(self) -> Reading:
        doms = [d for d in self._p("sys/class/powercap/intel-rapl:*")
                if re.search(r"intel-rapl:\d+$", d) and not _text(Path(d, "name")).startswith("psys")]
        if not doms:
            raise SensorUnavailable("no /sys/class/powercap/intel-rapl:N package domain")
        for d in doms:
            try:
                raw = _num(f"{d}/energy_uj")
            except PermissionError as e:  # root-only since the 2020 PLATYPUS fix (CVE-2020-8694)
                raise SensorUnavailable(f"{d}/energy_uj is not readable (needs root): {e}") from e
            last = self._last.get(d)
            if last is not None:
                if raw >= last:
                    self._total_uj += raw - last
                else:  # wrapped around
                    rng = _num(f"{d}/max_energy_range_uj") if os.path.exists(f"{d}/max_energy_range_uj") else last
                    self._total_uj += rng - last + raw
            self._last[d] = raw
        return Reading(energy_j=self._total_uj / 1e6)


class Ina3221Source(PowerSource):
    """Jetson on-module INA3221 monitor: hwmon (mV x mA per channel) or the Nano's older iio layout (mW).

    When a channel is the module's total input rail (label ``VDD_IN`` / ``*_IN``), only it is used,
    because the other channels are sub-rails of it; otherwise channels are summed. ``sum`` channels
    are skipped, and only channels 1-3 are paired (in4-6 are shunt voltages in µV, curr4 a sum).
    """

    name = "ina3221"

    def read(self) -> Reading:
        rails: list[tuple[str, float]] = []
        for namef in self._p("sys/class/hwmon/hwmon*/name"):
            if "ina3221" not in Path(namef).read_text().lower():
                continue
            d = Path(namef).parent
            for n in (1, 2, 3):
                v, i, label = d / f"in{n}_input", d / f"curr{n}_input", _text(d / f"in{n}_label")
                if not (v.exists() and i.exists()) or "sum" in label.lower() or _text(d / f"in{n}_enable") == "0":
                    continue
                rails.append((label.upper(), _num(v) * _num(i) / 1e6))
        if rails:
            total = [w for lab, w in rails if lab.endswith("_IN")]
            return Reading(power_w=sum(total) if total else sum(w for _, w in rails))
        for dev in self._p("sys/bus/i2c/drivers/ina3221x/*/iio:device*"):
            ch0 = Path(dev) / "in_power0_input"  # POM_5V_IN: the whole module's input
            if ch0.exists():
                return Reading(power_w=_num(ch0) / 1e3)
            chans = sorted(Path(dev).glob("in_power*_input"))
            if chans:
                return Reading(power_w=sum(_num(c) for c in chans) / 1e3)
        raise SensorUnavailable("no ina3221 hwmon device and no ina3221x iio device")


_PMIC_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)=\s*([-+0-9.eE]+)\s*[AV]\s*$")


class RpiPmicSource(PowerSource):
    """Raspberry Pi 5 PMIC rails from ``vcgencmd pmic_read_adc``: sum of V*A over rails with both.

    With a ``root`` other than "/", a bare command name is looked up only under root's bin folders,
    so a fake tree never picks up the host's real vcgencmd.
    """

    name = "rpi5-pmic"

    def __init__(self, command: Sequence[str] = ("vcgencmd", "pmic_read_adc"),
                 root: str | os.PathLike = "/", timeout_s: float = 2.0) -> None:
        super().__init__(root)
        self.command, self.timeout_s = list(command), timeout_s

    def _exe(self) -> str | None:
        cmd = self.command[0]
        if os.path.isabs(cmd) or str(self.root) == "/":
            return shutil.which(cmd)
        return shutil.which(cmd, path=os.pathsep.join(str(self.root / b) for b in ("usr/bin", "bin", "usr/local/bin")))

    def read(self) -> Reading:
        exe = self._exe()
        if exe is None:
            raise SensorUnavailable(f"{self.command[0]} not found")
        out = subprocess.run([exe, *self.command[1:]], capture_output=True, text=True,
                             timeout=self.timeout_s, check=True).stdout
        amps: dict[str, float] = {}
        volts: dict[str, float] = {}
        for line in out.splitlines():
            m = _PMIC_LINE.match(line)
            if m:
                (amps if m.group(2) == "A" else volts)[m.group(1)] = float(m.group(3))
        both = amps.keys() & volts.keys()
        if not both:
            raise SensorUnavailable(f"{' '.join(self.command)} printed no rail with both current and voltage")
        return Reading(power_w=sum(volts[r] * amps[r] for r in both))


class AndroidBatterySource(PowerSource):
    """Battery fuel gauge: |current_now (µA)| * voltage_now (µV), or power_now (µW) where given.

    The sign of current_now differs between drivers (some report discharge as negative, some as
    positive), so its magnitude is used. While charging or full the current is the charger's, not
    the device's consumption, so the source then counts as unavailable: run unplugged.
    """

    name = "android-power-supply"

    def read(self) -> Reading:
        for d in map(Path, self._p("sys/class/power_supply/*")):
            if _text(d / "type") != "Battery" and d.name != "battery":
                continue
            status = _text(d / "status")
            if status in ("Charging", "Full", "Not charging"):
                raise SensorUnavailable(f"{d.name} is on external power (status {status!r})")
            if (d / "current_now").exists() and (d / "voltage_now").exists():
                return Reading(power_w=abs(_num(d / "current_now")) * _num(d / "voltage_now") / 1e12)
            if (d / "power_now").exists():
                return Reading(power_w=abs(_num(d / "power_now")) / 1e6)
        raise SensorUnavailable("no battery with current_now and voltage_now in /sys/class/power_supply")


class TdpEstimate(PowerSource):
    """Fallback model: idle + (max - idle) * this process's CPU share of all logical cores, in [0, 1]."""

    name = "tdp"
    kind = "estimated"

    def __init__(self, idle_w: float, max_w: float, root: str | os.PathLike = "/") -> None:
        super().__init__(root)
        if idle_w < 0 or max_w < idle_w:
            raise UserError(f"power model needs 0 <= idle_w <= max_w (got idle_w={idle_w}, max_w={max_w})")
        self.idle_w, self.max_w = float(idle_w), float(max_w)
        self._proc = psutil.Process()
        self._cores = psutil.cpu_count(logical=True) or 1
        self._proc.cpu_percent(None)  # prime: the first call has no interval and returns 0

    def read(self) -> Reading:
        util = min(1.0, max(0.0, self._proc.cpu_percent(None) / (100.0 * self._cores)))
        return Reading(power_w=self.idle_w + (self.max_w - self.idle_w) * util)


# Measured sensors in preference order. `register_power_sensor` adds one: profiles may then name
# it as `power_sensor.kind`, and the energy meter tries it on every run.
_SENSORS: dict[str, type[PowerSource]] = {}


def register_power_sensor(cls: type[PowerSource]) -> type[PowerSource]:
    """Register a measured PowerSource class under `cls.name` (its constructor takes `root`)."""
    if not (isinstance(cls, type) and issubclass(cls, PowerSource)) or cls.kind != "measured":
        raise TypeError(f"{cls!r}: a power sensor is a PowerSource subclass with kind 'measured'")
    _SENSORS[cls.name] = cls
    return cls


for _cls in (RaplSource, Ina3221Source, RpiPmicSource, AndroidBatterySource):
    register_power_sensor(_cls)


def sensor_names() -> tuple[str, ...]:
    return tuple(_SENSORS)


def default_sources(root: str | os.PathLike = "/") -> list[PowerSource]:
    """Every registered measured sensor, in registration order (RAPL, INA3221, RPi5 PMIC, Android)."""
    return [cls(root=root) for cls in _SENSORS.values()]
