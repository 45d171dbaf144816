"""The emulator's own Prometheus metrics, rendered in the text exposition format (stdlib only).

Names carry units (``_seconds``) and the prefix ``ecoscale_emulator_``:

- ``ecoscale_emulator_request_duration_seconds{service,endpoint}``: histogram of the
  service's server-side latency per endpoint, from the request read to the response written,
  including its downstream calls (so the front end's is the end-to-end server-side latency);
- ``ecoscale_emulator_own_duration_seconds{service,endpoint}``: histogram of the service's
  own work per request (CPU then I/O wait), without its downstream calls;
- ``ecoscale_emulator_call_duration_seconds{service,callee,endpoint}``: histogram of each call
  to a callee as the caller sees it (network, the callee's queueing, its whole sub-tree):
  the callee's latency including the wait that its own histogram cannot see;
- ``ecoscale_emulator_requests_total{service,endpoint,code}``: requests by HTTP status;
- ``ecoscale_emulator_downstream_errors_total{service,callee}``: failed calls to callees;
- ``ecoscale_emulator_cpu_work_seconds_total{service}``: CPU burnt in the emulated work;
- ``ecoscale_emulator_process_cpu_seconds_total{service}``: CPU of the whole process (user +
  system), emulated work plus HTTP handling — the service's CPU utilisation is its rate;
- ``ecoscale_emulator_inflight_requests{service}``: requests being served now;
- ``ecoscale_emulator_info{service,app,kind,cpu_ms,io_ms,node,cpu_speed}``: 1, the configured
  work, the node the task runs on and that node's emulated per-core speed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

PREFIX = "ecoscale_emulator_"


def latency_buckets_s() -> tuple[float, ...]:
    """Histogram bounds (s): 11 per decade from 0.1 ms to 10 s, neighbours <= 1.34x apart.

    With linear interpolation inside a bucket, histogram_quantile's error on p99 stays below
    about 15 % anywhere between 0.5 ms and 2 s.
    """
    steps = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)
    bounds = [round(step * 10.0 ** exponent, 10) for exponent in range(-4, 1) for step in steps]
    return (*bounds, 10.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Histogram:
    """A labelled histogram: cumulative buckets are computed at render time."""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str],
                 bounds: Sequence[float]):
        self.name = name
        self.help = help_text
        self.label_names = tuple(label_names)
        self.bounds = tuple(bounds)
        self._series: dict[tuple[str, ...], list[float]] = {}
        """labels -> [count per bucket..., count in +Inf only, sum, count]."""

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [0.0] * (len(self.bounds) + 3)
        # Linear scan from the bottom: most latencies fall in the first few buckets.
        index = 0
        bounds = self.bounds
        while index < len(bounds) and value > bounds[index]:
            index += 1
        series[index] += 1
        series[-2] += value
        series[-1] += 1

    def touch(self, labels: tuple[str, ...]) -> None:
        """Create a series at zero so that rate() has a starting point before any request."""
        if labels not in self._series:
            self._series[labels] = [0.0] * (len(self.bounds) + 3)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels, series in sorted(self._series.items()):
            cumulative = 0.0
            for bound, count in zip((*self.bounds, float("inf")), series[:-2], strict=True):
                cumulative += count
                lab = _labels(self.label_names, labels, f'le="{_number(bound)}"')
                lines.append(f"{self.name}_bucket{lab} {_number(cumulative)}")
            lab = _labels(self.label_names, labels)
            lines.append(f"{self.name}_sum{lab} {series[-2]!r}")
            lines.append(f"{self.name}_count{lab} {_number(series[-1])}")
        return lines


class Counter:
    """A labelled monotonically increasing counter."""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str]):
        self.name = name
        self.help = help_text
        self.label_names = tuple(label_names)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        self._values[labels] = self._values.get(labels, 0.0) + amount

    def touch(self, labels: tuple[str, ...]) -> None:
        self._values.setdefault(labels, 0.0)

    def value(self, labels: tuple[str, ...]) -> float:
        return self._values.get(labels, 0.0)

    def render(self, kind: str = "counter") -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {kind}"]
        for labels, value in sorted(self._values.items()):
            lines.append(f"{self.name}{_labels(self.label_names, labels)} {_number(value)}")
        return lines


class EmulatorMetrics:
    """Every metric one emulator process exports."""

    def __init__(self, service: str, app: str = "", kind: str = "", cpu_ms: float = 0.0,
                 io_ms: float = 0.0, node: str = "", cpu_speed: float = 1.0):
        self.service = service
        self.info = {"service": service, "app": app, "kind": kind,
                     "cpu_ms": _number(cpu_ms), "io_ms": _number(io_ms), "node": node,
                     "cpu_speed": _number(cpu_speed)}
        self.duration = Histogram(
            PREFIX + "request_duration_seconds",
            "Server-side latency per endpoint, including downstream calls (s).",
            ("service", "endpoint"), latency_buckets_s())
        self.own = Histogram(
            PREFIX + "own_duration_seconds",
            "Own work per request (CPU then I/O wait), without downstream calls (s).",
            ("service", "endpoint"), latency_buckets_s())
        self.calls = Histogram(
            PREFIX + "call_duration_seconds",
            "Calls to each callee as the caller sees them, queueing at the callee included (s).",
            ("service", "callee", "endpoint"), latency_buckets_s())
        self.requests = Counter(PREFIX + "requests_total", "Requests served, by HTTP status.",
                                ("service", "endpoint", "code"))
        self.downstream_errors = Counter(PREFIX + "downstream_errors_total",
                                         "Calls to a callee that failed after retries.",
                                         ("service", "callee"))
        self.cpu_work = Counter(PREFIX + "cpu_work_seconds_total",
                                "CPU time burnt in emulated work (s).", ("service",))
        self.inflight = 0

    def start_endpoint(self, endpoint: str) -> None:
        """Export zeroed series for an endpoint before its first request."""
        self.duration.touch((self.service, endpoint))
        self.requests.touch((self.service, endpoint, "200"))

    def record(self, endpoint: str, code: int, seconds: float) -> None:
        self.duration.observe((self.service, endpoint), seconds)
        self.requests.inc((self.service, endpoint, str(code)))

    def render(self) -> bytes:
        times = os.times()
        lines = [
            *self.duration.render(),
            *self.own.render(),
            *self.calls.render(),
            *self.requests.render(),
            *self.downstream_errors.render(),
            *self.cpu_work.render(),
            f"# HELP {PREFIX}process_cpu_seconds_total CPU time of the process, user + "
            "system (s).",
            f"# TYPE {PREFIX}process_cpu_seconds_total counter",
            f'{PREFIX}process_cpu_seconds_total{{service="{_escape(self.service)}"}} '
            f"{times.user + times.system!r}",
            f"# HELP {PREFIX}inflight_requests Requests being served now.",
            f"# TYPE {PREFIX}inflight_requests gauge",
            f'{PREFIX}inflight_requests{{service="{_escape(self.service)}"}} {self.inflight}',
            f"# HELP {PREFIX}info The emulated service, its work per request, its node and "
            "that node's per-core speed.",
            f"# TYPE {PREFIX}info gauge",
            f"{PREFIX}info{_labels(tuple(self.info), tuple(self.info.values()))} 1",
        ]
        return ("\n".join(lines) + "\n").encode()
