"""Energy, power, CO2 and peak-memory meters for one training run on an edge device.

Every figure carries its source string, ``measured:<sensor>`` or ``estimated:<model>``, so a report
never passes an estimate off as a measurement. Power sources live in `power.py`. No torch here;
codecarbon is imported lazily.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil

from .errors import UserError
from .power import (  # noqa: F401  (sources re-exported with the meters' public API)
    _READ_ERRORS, WORLD_AVERAGE_KG_PER_KWH, AndroidBatterySource, Ina3221Source, PowerSource,
    RaplSource, Reading, RpiPmicSource, SensorUnavailable, TdpEstimate, _append_capped,
    default_sources)


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
