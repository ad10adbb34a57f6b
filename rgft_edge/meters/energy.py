"""Energy, power and CO2 of one training run.

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
from typing import Any, Callable

from ..errors import UserError
from .power import (WORLD_AVERAGE_KG_PER_KWH, PowerSource, TdpEstimate, _READ_ERRORS, _append_capped,
                    default_sources)
from .sampler import Sampler


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


class EnergyMeter(Sampler):
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

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until codecarbon's background start has finished: under a memory budget the base
        is measured after this, so its imports (pandas among them, ~40 MB) are in it every time
        rather than only when that thread happened to win the race."""
        if self._cc_thread is not None:
            self._cc_thread.join(timeout)

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
