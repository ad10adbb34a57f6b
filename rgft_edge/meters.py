"""Energy, power, CO2 and peak-memory meters for one training run on an edge device.

Every figure carries its source string, ``measured:<sensor>`` or ``estimated:<model>``, so a report
never passes an estimate off as a measurement. Sensors are read from sysfs / a command under a
``root`` path, so tests can point them at a fake tree. No torch here; codecarbon is imported lazily.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import psutil

from .errors import UserError

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


def default_sources(root: str | os.PathLike = "/") -> list[PowerSource]:
    """Measured sources in preference order: RAPL, INA3221, RPi5 PMIC, Android battery."""
    return [RaplSource(root), Ina3221Source(root), RpiPmicSource(root=root), AndroidBatterySource(root)]


class _Sampler:
    """A daemon thread calling ``_sample()`` every ``interval_s``, so the training loop never waits on it."""

    def __init__(self, interval_s: float) -> None:
        if interval_s <= 0:
            raise UserError(f"{type(self).__name__} sampling interval must be > 0 s (got {interval_s})")
        self.interval_s = interval_s
        self._stop_evt = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self, now: float | None = None) -> None:
        raise NotImplementedError

    def stop(self) -> Any:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop_evt.wait(self.interval_s):
            self._sample()

    def start(self) -> Any:
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already running")
        self._stop_evt.clear()
        self._sample()
        self._thread = threading.Thread(target=self._run, name=f"rgft-{type(self).__name__}", daemon=True)
        self._thread.start()
        return self

    def _halt(self) -> None:
        if self._thread is None:
            raise RuntimeError(f"{type(self).__name__} was not started")
        self._stop_evt.set()
        self._thread.join()
        self._thread = None
        self._sample()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class EnergyResult:
    """Energy of one run; ``source`` / ``co2_source`` say measured or estimated, and how."""

    energy_j: float
    energy_wh: float
    avg_power_w: float
    peak_power_w: float
    duration_s: float
    source: str
    co2_kg: float
    co2_source: str
    samples: list[tuple[float, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class EnergyMeter(_Sampler):
    """Integrates the best available sensor over a run in a daemon thread; CO2 via codecarbon's grid data.

    Power readings are integrated with the trapezoid rule, counters by deltas. ``snapshot()`` gives
    running totals for energy budgets; ``notes`` records which source was chosen and why others were not.
    """

    def __init__(self, sources: list[PowerSource] | None = None, interval_s: float = 0.2,
                 idle_w: float = 2.0, max_w: float = 10.0, country_iso_code: str = "USA",
                 use_codecarbon: bool = True, root: str | os.PathLike = "/",
                 clock: Callable[[], float] = time.monotonic, max_samples: int = 10_000) -> None:
        super().__init__(interval_s)
        if not re.fullmatch(r"[A-Za-z]{3}", country_iso_code or ""):
            raise UserError(f"country must be a 3-letter ISO code such as USA or DEU (got {country_iso_code!r})")
        self.country = country_iso_code.upper()
        self.use_codecarbon, self._clock, self._cap = use_codecarbon, clock, max_samples
        cands = list(default_sources(root) if sources is None else sources)
        if not any(s.kind == "estimated" for s in cands):
            cands.append(TdpEstimate(idle_w, max_w, root))
        cands.sort(key=lambda s: s.kind != "measured")  # stable: measured first, given order kept
        self.notes: list[str] = []
        self.chosen: PowerSource = cands[-1]
        for s in cands:
            if s.available():
                self.chosen = s
                break
            self.notes.append(f"{s.source} unavailable: {s.reason}")
        self.notes.append(f"energy source: {self.chosen.source}" + (
            "" if self.chosen.kind == "measured" else " (no power sensor readable: modelled from CPU use)"))
        self._intensity, self._co2_source = WORLD_AVERAGE_KG_PER_KWH, "estimated:constant-world-average"
        self._lock = threading.Lock()
        self._cc_thread: threading.Thread | None = None
        self._tracker: Any = None  # codecarbon's OfflineEmissionsTracker, once started
        self._reset()

    @property
    def source(self) -> str:
        return self.chosen.source

    def _reset(self) -> None:
        self._t0: float | None = None
        self._t_end: float | None = None
        self._last: tuple[float, float] | None = None
        self._energy = self._peak = 0.0
        self._samples: list[tuple[float, float]] = []
        self.read_errors = 0

    def _sample(self, now: float | None = None) -> None:
        """Read the sensor once and add the interval since the previous read (``now`` for tests)."""
        with self._lock:
            t = self._clock() if now is None else now
            try:
                r = self.chosen.read()
            except _READ_ERRORS:
                self.read_errors += 1
                return
            if self._last is not None and t <= self._last[0]:
                return
            if r.energy_j is not None:
                if self._last is None:
                    self._t0 = self._t_end = t
                    self._last = (t, r.energy_j)
                    return
                de = max(0.0, r.energy_j - self._last[1])
                p = de / (t - self._last[0])
                self._energy += de
                self._last = (t, r.energy_j)
            else:
                p = float(r.power_w or 0.0)
                if self._last is None:
                    self._t0 = t
                else:
                    self._energy += 0.5 * (p + self._last[1]) * (t - self._last[0])
                self._last = (t, p)
            self._t_end, self._peak = t, max(self._peak, p)
            _append_capped(self._samples, (t - (self._t0 if self._t0 is not None else t), p), self._cap)

    def start(self) -> "EnergyMeter":
        if self._thread is None:
            self._reset()
        super().start()
        if self.use_codecarbon:  # its start takes 1-2 s (hardware probing): keep it off the caller's path
            self._cc_thread = threading.Thread(target=self._start_codecarbon, name="rgft-codecarbon", daemon=True)
            self._cc_thread.start()
        return self

    def _start_codecarbon(self) -> None:
        try:
            os.environ.setdefault("CODECARBON_LOG_LEVEL", "error")
            from codecarbon import OfflineEmissionsTracker
            from codecarbon.input import DataSource

            if self.country not in DataSource().get_global_energy_mix_data():
                raise ValueError(f"codecarbon has no grid data for {self.country}")
            # output_methods=[] is the non-deprecated save_to_file=False: no CSV, no API, no lock file.
            tr = OfflineEmissionsTracker(country_iso_code=self.country, output_methods=[], emissions_endpoint=None,
                                         tracking_mode="process", log_level="error", allow_multiple_runs=True)
            tr.start()  # codecarbon swallows its own exceptions; check that it really started
            if getattr(tr, "_start_time", None) is None:
                raise RuntimeError("tracker did not start")
            self._tracker = tr
        except Exception as e:  # any failure only downgrades the CO2 figure to the constant
            self.notes.append(f"codecarbon unusable ({type(e).__name__}: {e}); CO2 uses world-average "
                              f"{WORLD_AVERAGE_KG_PER_KWH} kg/kWh (IEA)")

    def _stop_codecarbon(self) -> None:
        if self._cc_thread is not None:
            self._cc_thread.join(timeout=30)
        tr, self._tracker, self._cc_thread = self._tracker, None, None
        if tr is None:
            return
        try:
            tr.stop()
            data = tr.final_emissions_data
            if not data.energy_consumed > 0:
                raise ValueError("codecarbon recorded no energy, so no intensity ratio")
            self._intensity = data.emissions / data.energy_consumed  # kg/kWh codecarbon uses for the country
            self._co2_source = f"estimated:codecarbon({self.country})"
        except Exception as e:
            self.notes.append(f"codecarbon result unusable ({type(e).__name__}: {e}); CO2 uses world average")

    def stop(self) -> EnergyResult:
        self._halt()
        self._stop_codecarbon()
        return self.result()

    def snapshot(self) -> EnergyResult:
        """Running totals (fresh read when running), e.g. to stop a run when its energy budget is spent."""
        if self._thread is not None:
            self._sample()
        with self._lock:
            dur = (self._t_end - self._t0) if self._t0 is not None and self._t_end is not None else 0.0
            e = self._energy
            return EnergyResult(energy_j=e, energy_wh=e / 3600.0, avg_power_w=e / dur if dur > 0 else 0.0,
                                peak_power_w=self._peak, duration_s=dur, source=self.source,
                                co2_kg=e / 3.6e6 * self._intensity, co2_source=self._co2_source,
                                samples=list(self._samples), notes=list(self.notes))

    def result(self) -> EnergyResult:
        return self.snapshot()


class MemoryMeter(_Sampler):
    """Peak resident memory of this process: psutil RSS samples plus the kernel's VmHWM high-water mark.

    VmHWM catches spikes shorter than the sampling interval; ``start()`` first tries to reset it
    (``reset_peak``) so the peak is the run's, else it is the process's lifetime peak.
    """

    def __init__(self, interval_s: float = 0.05, proc_dir: str | os.PathLike = "/proc/self",
                 max_samples: int = 10_000) -> None:
        super().__init__(interval_s)
        self._dir, self._cap, self._proc = Path(proc_dir), max_samples, psutil.Process()
        self._samples: list[tuple[float, int]] = []
        self._max, self._hwm_final, self.peak_was_reset = 0, None, False

    def _vmhwm(self) -> int | None:
        try:
            m = re.search(r"^VmHWM:\s+(\d+)\s*kB", (self._dir / "status").read_text(), re.M)
        except OSError:
            return None
        return int(m.group(1)) * 1024 if m else None

    @property
    def source(self) -> str:
        return "measured:psutil-rss+VmHWM" if self._vmhwm() is not None else "measured:psutil-rss"

    def reset_peak(self) -> bool:
        """Reset VmHWM to the current RSS (write 5 to clear_refs); False where not permitted/present."""
        try:
            (self._dir / "clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def _sample(self, now: float | None = None) -> None:
        t, rss = time.monotonic() if now is None else now, self._proc.memory_info().rss
        self._max = max(self._max, rss)
        _append_capped(self._samples, (t, rss), self._cap)

    def start(self) -> "MemoryMeter":
        if self._thread is None:
            self.peak_was_reset = self.reset_peak()
            self._samples, self._max, self._hwm_final = [], 0, None
        return super().start()

    def stop(self) -> int:
        """Stop sampling and return the peak RSS in bytes."""
        self._halt()
        self._hwm_final = self._vmhwm()
        return self.peak_rss_bytes

    @property
    def peak_rss_bytes(self) -> int:
        hwm = self._vmhwm() if self._thread is not None else self._hwm_final
        return max(self._max, hwm or 0)

    @property
    def current_rss_bytes(self) -> int:
        return int(self._proc.memory_info().rss)

    @property
    def samples(self) -> list[tuple[float, int]]:
        return list(self._samples)


def energy_per_run_summary(result: EnergyResult, memory: MemoryMeter | None) -> dict[str, Any]:
    """The flat per-run figures every training report carries, each with its source."""
    return {"energy_j": result.energy_j, "energy_wh": result.energy_wh, "avg_power_w": result.avg_power_w,
            "peak_power_w": result.peak_power_w, "co2_kg": result.co2_kg, "energy_source": result.source,
            "co2_source": result.co2_source,
            "peak_rss_bytes": memory.peak_rss_bytes if memory is not None else None,
            "memory_source": memory.source if memory is not None else None}
