"""The system clock: what ``ecoscale.ports.Clock`` is outside tests (wall time, real sleep)."""

from __future__ import annotations

import time


class SystemClock:
    """Wall-clock time (epoch s) and a real ``time.sleep``."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()
"""The one instance the profiler and the lab use by default."""
