"""A daemon thread that samples a meter at a fixed interval, so the training loop never waits."""

from __future__ import annotations

import threading
from typing import Any

from ..errors import UserError


class Sampler:
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
