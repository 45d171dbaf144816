"""Carbon-intensity sources for the daemon: a trace file (the default) or a live JSON API."""

from __future__ import annotations

import math
from typing import Any

from ecoscale.adapters.tracefiles import load_carbon_trace
from ecoscale.config import CarbonConfig
from ecoscale.model.trace import Trace, trace_offset_s
from ecoscale.ports import CarbonSource


class TraceCarbon:
    """Intensity from a carbon trace: the daemon's start maps to ``start`` in the trace, and
    trace time runs ``speedup`` times faster than the wall clock (1: real time)."""

    def __init__(self, config: CarbonConfig, started_at_s: float):
        self.trace: Trace = load_carbon_trace(config.trace, config.factors)
        self.offset_s = trace_offset_s(self.trace, config.start, "carbon.start")
        self.speedup = config.speedup
        self.started_at_s = started_at_s

    def intensity(self, epoch_s: float) -> float:
        elapsed = self.offset_s + (epoch_s - self.started_at_s) * self.speedup
        return float(self.trace.at(elapsed % self.trace.duration_s))

    def describe(self) -> str:
        notes = "; ".join(self.trace.notes)
        return (f"trace {self.trace.source} from +{self.offset_s / 3600:g} h, x{self.speedup:g} "
                f"speed ({notes})")


class HttpCarbon:
    """Intensity from a JSON API (e.g. Electricity Maps' carbon-intensity/latest): the number
    at ``json_field`` (dots for nesting). Failures are no data (NaN), logged by the caller."""

    def __init__(self, url: str, json_field: str, headers: dict[str, str] | None = None,
                 timeout_s: float = 5.0, session: Any = None):
        import requests

        self.url = url
        self.field = json_field
        self.headers = headers or {}
        self.timeout_s = timeout_s
        self.session = session or requests.Session()
        self.last_problem = ""

    def intensity(self, epoch_s: float) -> float:
        import requests

        try:
            reply = self.session.get(self.url, headers=self.headers, timeout=self.timeout_s)
            value: Any = reply.json()
            for part in self.field.split("."):
                value = value[part]
            number = float(value)
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            self.last_problem = f"{self.url}: {exc}"
            return math.nan
        return number if math.isfinite(number) and number >= 0 else math.nan

    def describe(self) -> str:
        return f"live API {self.url} field {self.field}"


class WithFallback:
    """A source that falls back to a fixed intensity when the inner one has no data."""

    def __init__(self, inner: CarbonSource, fallback_g_per_kwh: float):
        self.inner = inner
        self.fallback = fallback_g_per_kwh

    def intensity(self, epoch_s: float) -> float:
        value = self.inner.intensity(epoch_s)
        return value if math.isfinite(value) else self.fallback

    def describe(self) -> str:
        return f"{self.inner.describe()}, else {self.fallback:g} g/kWh"


def carbon_source(config: CarbonConfig, started_at_s: float) -> CarbonSource:
    source: CarbonSource = (HttpCarbon(config.url, config.json_field) if config.url
                            else TraceCarbon(config, started_at_s))
    if config.fallback_g_per_kwh is not None:
        source = WithFallback(source, config.fallback_g_per_kwh)
    return source
