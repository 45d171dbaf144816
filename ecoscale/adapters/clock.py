"""The system clock: what ``ecoscale.ports.Clock`` is outside tests (wall time, real sleep)."""

from __future__ import annotations

import threading
import time


class SystemClock:
    """Wall-clock time; ``sleep`` wakes early when ``wake`` is set (the daemon sets it on
    SIGTERM and SIGHUP)."""

    def __init__(self) -> None:
        self.wake = threading.Event()

    def now(self) -> float:
        """Unix epoch seconds (wall clock: it can step)."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds of a clock that never goes back (for durations only)."""
        return time.perf_counter()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (s), or until ``wake`` is set."""
        self.wake.wait(max(0.0, seconds))
        self.wake.clear()


SYSTEM_CLOCK = SystemClock()
"""The instance the profiler and the lab use by default (the daemon makes its own, to wake)."""
