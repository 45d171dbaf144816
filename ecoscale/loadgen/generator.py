"""Open-loop load generator (wrk2-style) for the lab's front end.

Requests arrive as a Poisson process at the target rate, whatever the server does: each one's
send time is fixed in advance and its latency is measured from that *intended* time, so time
spent queueing (in the server, or here waiting for a free connection) counts, and a slow
server cannot slow the arrivals down (no coordinated omission). Each request picks an
endpoint of the topology's mix by its share and sends the endpoint's ``http`` method and path.

A load trace is replayed as a schedule: one rate per step, each step lasting ``step_s``
seconds of wall time (e.g. a day of per-minute rates with ``step_s=0.5`` takes 12 minutes).
The arrival process is a non-homogeneous Poisson process with a piecewise-constant rate.
Everything random comes from one seeded ``random.Random``.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from ecoscale.emulator.http import HttpClientProtocol
from ecoscale.errors import InputError
from ecoscale.model.topology import Topology

MAX_RATE_QPS = 20000.0


@dataclass(frozen=True)
class Target:
    """One endpoint of the mix: what to request and how often (share of all requests)."""

    endpoint: str
    method: str
    path: str
    share: float


@dataclass(frozen=True)
class PlannedRequest:
    at_s: float
    """Intended send time, seconds after the start of the run."""
    target: Target


def mix_of(topology: Topology) -> tuple[Target, ...]:
    """The endpoint mix of a topology, from each endpoint's ``http`` ("GET /path") and share."""
    targets = []
    problems = []
    for endpoint in topology.endpoints:
        method, _, path = endpoint.http.partition(" ")
        if not method or not path.startswith("/"):
            problems.append(f"endpoint '{endpoint.name}': http '{endpoint.http}' must look like "
                            "'GET /path'")
            continue
        if endpoint.share > 0:
            targets.append(Target(endpoint.name, method.upper(), path.strip(), endpoint.share))
    if problems or not targets:
        raise InputError(f"topology {topology.app}", problems or ["no endpoint has a share > 0"])
    return tuple(targets)


def schedule_of(rate_qps: float | None, schedule: Sequence[float] | None, step_s: float,
                duration_s: float | None) -> tuple[tuple[float, ...], float]:
    """(rates per step, step length in s) from a constant rate or a schedule; checked."""
    problems = []
    if (rate_qps is None) == (schedule is None):
        raise InputError("load", "give either a constant rate or a schedule of rates, not both")
    if rate_qps is not None:
        if duration_s is None or not duration_s > 0:
            problems.append(f"duration must be > 0 s with a constant rate, got {duration_s!r}")
        rates: tuple[float, ...] = (float(rate_qps),)
        step = float(duration_s or 0.0)
    else:
        rates = tuple(float(r) for r in schedule or ())
        step = float(step_s)
        if not rates:
            problems.append("the schedule is empty; give at least one rate")
        if not step > 0:
            problems.append(f"step must be > 0 s, got {step_s!r}")
        if duration_s is not None:
            problems.append("a schedule sets its own duration (steps x step); drop duration")
    for index, rate in enumerate(rates):
        if not math.isfinite(rate) or rate < 0 or rate > MAX_RATE_QPS:
            problems.append(f"rate {index}: {rate!r} req/s is outside 0..{MAX_RATE_QPS:g}")
    if problems:
        raise InputError("load", problems)
    return rates, step


def arrival_times(rates_qps: Sequence[float], step_s: float, rng: random.Random) -> list[float]:
    """Poisson arrival times (s) with a piecewise-constant rate, one rate per step.

    Within a step, gaps are exponential with mean 1/rate; at a step boundary the process
    restarts (exact, since the exponential distribution is memoryless).
    """
    times: list[float] = []
    for index, rate in enumerate(rates_qps):
        start, end = index * step_s, (index + 1) * step_s
        if rate <= 0:
            continue
        t = start + rng.expovariate(rate)
        while t < end:
            times.append(t)
            t += rng.expovariate(rate)
    return times


def plan(targets: Sequence[Target], rates_qps: Sequence[float], step_s: float,
         seed: int) -> list[PlannedRequest]:
    """The whole run, decided up front from the seed: when each request goes, and where."""
    rng = random.Random(seed)
    times = arrival_times(rates_qps, step_s, rng)
    weights = [t.share for t in targets]
    chosen = rng.choices(list(targets), weights=weights, k=len(times))
    return [PlannedRequest(at, target) for at, target in zip(times, chosen, strict=True)]


@dataclass(frozen=True)
class RequestRecord:
    at_s: float
    """Intended send time (s after the start)."""
    endpoint: str
    latency_s: float
    """From the intended send time to the full response (or the failure)."""
    status: int
    """HTTP status; 0 when no response came."""
    error: str = ""


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class LoadResult:
    """What the client saw: every request, and its summaries (latencies in ms)."""

    url: str
    seed: int
    rates_qps: tuple[float, ...]
    step_s: float
    records: tuple[RequestRecord, ...]
    wall_s: float
    max_send_lag_ms: float
    """How late the generator itself sent its latest request (its own health: keep it small)."""
    started_at: float = 0.0
    """Unix time (s) of the run's start: aligns the run with Prometheus data."""
    notes: tuple[str, ...] = field(default=())

    @property
    def duration_s(self) -> float:
        return len(self.rates_qps) * self.step_s

    @property
    def sent(self) -> int:
        return len(self.records)

    @property
    def ok(self) -> list[RequestRecord]:
        return [r for r in self.records if 200 <= r.status < 300]

    @property
    def errors(self) -> dict[str, int]:
        """Failed requests by reason ('http 502', 'timeout', 'connect', ...)."""
        return dict(Counter(r.error or f"http {r.status}" for r in self.records
                            if not 200 <= r.status < 300))

    @property
    def error_count(self) -> int:
        return self.sent - len(self.ok)

    def latencies_ms(self, endpoint: str | None = None, start_s: float = 0.0,
                     end_s: float = math.inf) -> list[float]:
        """Latencies (ms) of successful requests, optionally of one endpoint or time window."""
        return [r.latency_s * 1000 for r in self.records
                if 200 <= r.status < 300 and start_s <= r.at_s < end_s
                and (endpoint is None or r.endpoint == endpoint)]

    def percentile_ms(self, q: float, endpoint: str | None = None) -> float:
        return percentile(self.latencies_ms(endpoint), q)

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def p95_ms(self) -> float:
        return self.percentile_ms(95)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(99)

    @property
    def achieved_qps(self) -> float:
        return len(self.ok) / self.duration_s if self.duration_s > 0 else 0.0

    def completed_qps(self, start_s: float, end_s: float) -> float:
        """Successful responses per second that completed (intended send + latency) within
        [start_s, end_s): what a server kept busy by a backlog serves, its throughput."""
        if end_s <= start_s:
            raise ValueError(f"the window must end after it starts: {start_s} .. {end_s}")
        done = sum(1 for r in self.ok if start_s <= r.at_s + r.latency_s < end_s)
        return done / (end_s - start_s)

    def per_step(self) -> list[dict[str, float]]:
        """Per schedule step: target rate, sent, errors, p50 and p99 (ms)."""
        rows = []
        for index, rate in enumerate(self.rates_qps):
            start, end = index * self.step_s, (index + 1) * self.step_s
            inside = [r for r in self.records if start <= r.at_s < end]
            latencies = self.latencies_ms(start_s=start, end_s=end)
            rows.append({"step": index, "target_qps": rate, "sent": len(inside),
                         "errors": sum(1 for r in inside if not 200 <= r.status < 300),
                         "p50_ms": percentile(latencies, 50),
                         "p99_ms": percentile(latencies, 99)})
        return rows

    def summary(self) -> dict[str, object]:
        mean_rate = sum(self.rates_qps) / len(self.rates_qps) if self.rates_qps else 0.0
        return {
            "url": self.url, "seed": self.seed, "duration_s": round(self.duration_s, 3),
            "target_qps": round(mean_rate, 3), "achieved_qps": round(self.achieved_qps, 3),
            "sent": self.sent, "ok": len(self.ok), "errors": self.errors,
            "p50_ms": round(self.p50_ms, 3), "p95_ms": round(self.p95_ms, 3),
            "p99_ms": round(self.p99_ms, 3), "max_send_lag_ms": round(self.max_send_lag_ms, 3),
            "by_endpoint": {e: {"ok": len(self.latencies_ms(e)),
                                "p99_ms": round(self.percentile_ms(99, e), 3)}
                            for e in sorted({r.endpoint for r in self.records})},
        }


class _Pool:
    """Keep-alive connections to one host:port, opened on demand up to a maximum."""

    def __init__(self, host: str, port: int, max_connections: int):
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.open = 0
        self._idle: list[HttpClientProtocol] = []
        self._waiters: list[asyncio.Future[None]] = []

    def idle_connection(self) -> HttpClientProtocol | None:
        """An open idle connection, if there is one (the fast path: no waiting)."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
            self.open -= 1
        return None

    async def acquire(self) -> HttpClientProtocol:
        while True:
            conn = self.idle_connection()
            if conn is not None:
                return conn
            if self.open < self.max_connections:
                self.open += 1
                try:
                    loop = asyncio.get_running_loop()
                    _, conn = await loop.create_connection(HttpClientProtocol, self.host,
                                                           self.port)
                except OSError:
                    self.open -= 1
                    self._wake()
                    raise
                return conn
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    def release(self, conn: HttpClientProtocol, reusable: bool) -> None:
        if reusable and not conn.closed:
            self._idle.append(conn)
        else:
            conn.close()
            self.open -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


async def run_load_async(url: str, targets: Sequence[Target], rates_qps: Sequence[float],
                         step_s: float, seed: int = 0, timeout_s: float = 10.0,
                         max_connections: int = 256) -> LoadResult:
    """Drive the planned load against ``url`` (http://host:port) and record every request."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http" or not parsed.hostname:
        raise InputError("load", f"url must look like http://host:port, got {url!r}")
    host, port = parsed.hostname, parsed.port or 80
    planned = plan(targets, rates_qps, step_s, seed)
    loop = asyncio.get_running_loop()
    pool = _Pool(host, port, max_connections)
    records: list[RequestRecord] = []
    pending: set[asyncio.Task[None]] = set()
    max_lag = 0.0

    async def send(request: PlannedRequest, intended: float) -> None:
        conn: HttpClientProtocol | None = None
        status, error, reusable = 0, "", False
        try:
            conn = pool.idle_connection() or await asyncio.wait_for(pool.acquire(), timeout_s)
            status, _body, reusable = await conn.request(
                request.target.method, request.target.path, host, timeout_s=timeout_s)
            if not 200 <= status < 300:
                error = f"http {status}"
        except TimeoutError:
            error = "timeout"
        except OSError as exc:
            error = "connect" if conn is None else f"closed ({type(exc).__name__})"
        except Exception as exc:  # noqa: BLE001 - a bad reply is one failed request
            error = type(exc).__name__
        finally:
            if conn is not None:
                pool.release(conn, reusable and not error)
        records.append(RequestRecord(request.at_s, request.target.endpoint,
                                     loop.time() - intended, status, error))

    started_at = time.time()
    start = loop.time() + 0.05
    for request in planned:
        intended = start + request.at_s
        delay = intended - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        max_lag = max(max_lag, loop.time() - intended)
        task = loop.create_task(send(request, intended))
        pending.add(task)
        task.add_done_callback(pending.discard)
    end_of_plan = start + len(rates_qps) * step_s
    if end_of_plan > loop.time():
        await asyncio.sleep(end_of_plan - loop.time())
    if pending:
        await asyncio.wait(set(pending), timeout=timeout_s + 1)
    pool.close()
    wall = loop.time() - start
    records.sort(key=lambda r: r.at_s)
    return LoadResult(url, seed, tuple(float(r) for r in rates_qps), step_s, tuple(records),
                      wall, max_lag * 1000, started_at + 0.05)


def run_load(url: str, topology: Topology | Sequence[Target], rate_qps: float | None = None,
             duration_s: float | None = None, *, schedule: Sequence[float] | None = None,
             step_s: float = 1.0, seed: int = 0, timeout_s: float = 10.0,
             max_connections: int = 256) -> LoadResult:
    """Open-loop load against the front end at ``url``: a constant ``rate_qps`` (req/s) for
    ``duration_s``, or a ``schedule`` of rates, one per ``step_s`` seconds. Blocks until done.
    """
    targets = mix_of(topology) if isinstance(topology, Topology) else tuple(topology)
    rates, step = schedule_of(rate_qps, schedule, step_s, duration_s)
    return asyncio.run(run_load_async(url, targets, rates, step, seed, timeout_s,
                                      max_connections))
