"""Peak resident memory of this process, with its source."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import psutil

from .power import _append_capped
from .sampler import Sampler


class MemoryMeter(Sampler):
    """Peak resident memory of this process: psutil RSS samples plus the kernel's VmHWM high-water mark.

    VmHWM catches spikes shorter than the sampling interval; ``start()`` first tries to reset it
    (``reset_peak``) so the peak is the run's, else it is the process's lifetime peak.
    """

    def __init__(self, interval_s: float = 0.05, proc_dir: str | os.PathLike = "/proc/self",
                 max_samples: int = 10_000, whole_process: bool = False) -> None:
        super().__init__(interval_s)
        self._dir, self._cap, self._proc = Path(proc_dir), max_samples, psutil.Process()
        self._samples: list[tuple[float, int]] = []
        self._max, self._hwm_final, self.peak_was_reset = 0, None, False
        # whole_process: the peak is the process's since it started (model load included), as a
        # memory budget promises; otherwise the run's, from start()
        self.whole_process = whole_process
        self._earlier_windows = 0  # highest VmHWM of windows closed by window_peak()

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

    def window_peak(self) -> int:
        """Peak RSS since the previous call (or start), then a new window begins: the kernel's
        VmHWM catches what sampling misses, and resetting it makes the peak per step. The peak of
        the whole run keeps every window's. Where VmHWM cannot be reset, the lifetime peak."""
        self._sample()
        hwm = self._vmhwm() or 0
        peak = max(hwm, self._samples[-1][1] if self._samples else 0)
        self._earlier_windows = max(self._earlier_windows, peak)
        self.reset_peak()
        return peak

    def start(self) -> "MemoryMeter":
        if self._thread is None:
            self.peak_was_reset = False if self.whole_process else self.reset_peak()
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
        return max(self._max, hwm or 0, self._earlier_windows)

    @property
    def current_rss_bytes(self) -> int:
        return int(self._proc.memory_info().rss)

    @property
    def samples(self) -> list[tuple[float, int]]:
        return list(self._samples)
