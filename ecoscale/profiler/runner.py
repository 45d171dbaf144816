"""Running the profiling experiments on a pool: move services, drive load, read Prometheus.

The I/O side of the profiler. After a placement change, a settle of load (longer the more
services moved); each load point: a warm-up, then a measured window of open-loop
load; the client-side latency comes from the load generator, the per-service and end-to-end
server-side latency and the CPU of each service from Prometheus over exactly that window.
Finished points are appended to the raw CSV at once, so an interrupted run resumes where it
stopped; whatever happens, the services go back to where they were before the run.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ecoscale.adapters.clock import SYSTEM_CLOCK
from ecoscale.adapters.placing import place
from ecoscale.adapters.prometheus import PrometheusClient
from ecoscale.loadgen.generator import run_load
from ecoscale.model.placement import ServicePlacement
from ecoscale.model.topology import Topology
from ecoscale.ports import Clock, Orchestrator, SourceUnavailable
from ecoscale.profiler.experiments import SLICE_S, Experiment, PoolConfig, settle_s, sliced_window
from ecoscale.profiler.store import E2E, Row, append_rows, finished_points, read_rows

# PromQL over a window of W seconds ending at the evaluation time; {svc} is a regex of
# service names. Histograms of the lab's emulator (ecoscale_emulator_*; see README "Run a
# lab"): the caller-side duration of calls to each service (queueing at the callee
# included), the front end's own work, and the front end's server-side end-to-end latency.
QUERIES = {
    "call_p": 'histogram_quantile({q}, sum by (le, callee) (increase('
              'ecoscale_emulator_call_duration_seconds_bucket{{service!="ecoscale-gateway"}}'
              '[{w}s])))',
    "own_p": 'histogram_quantile({q}, sum by (le, service) (increase('
             'ecoscale_emulator_own_duration_seconds_bucket{{service="{frontend}"}}[{w}s])))',
    "e2e_p": 'histogram_quantile({q}, sum by (le) (increase('
             'ecoscale_emulator_request_duration_seconds_bucket{{service="{frontend}"}}[{w}s])))',
    "cpu": 'sum by (service) (rate(ecoscale_emulator_process_cpu_seconds_total[{w}s]))',
}


@dataclass(frozen=True)
class LoadOutcome:
    """What the load generator reports for one window."""

    achieved_qps: float
    errors: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    started_at: float


def sliced_p99(prometheus: PrometheusClient, frontend: str, window_s: int, end_s: float
               ) -> float:
    """Median of the end-to-end p99s of the window's SLICE_S-second slices (ms; see
    ``sliced_window``); NaN without data or when the window holds fewer than three."""
    if not sliced_window(window_s):
        return math.nan
    promql = QUERIES["e2e_p"].format(q=0.99, w=SLICE_S, frontend=frontend)
    values = []
    for index in range(window_s // SLICE_S):
        for _, _, value in prometheus.query(promql, end_s - index * SLICE_S):
            if math.isfinite(value):
                values.append(value * 1000.0)
    return float(np.median(values)) if values else math.nan


LoadDriver = Callable[[float, float, int], LoadOutcome]
"""(rate req/s, duration s, seed) -> outcome; blocks for the duration."""


class Progress:
    """A one-line progress bar with time remaining, on stderr."""

    def __init__(self, total: int, per_point_s: float, stream: TextIO | None = None,
                 clock: Clock = SYSTEM_CLOCK):
        self.total = max(total, 1)
        self.done = 0
        self.per_point_s = per_point_s
        self.clock = clock
        self.began = clock.now()
        self.stream = stream or sys.stderr

    def step(self, label: str) -> None:
        self.done += 1
        elapsed = self.clock.now() - self.began
        left = (self.total - self.done) * (elapsed / self.done if self.done else self.per_point_s)
        width = 30
        filled = int(width * self.done / self.total)
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                          f"{label[:40]:<40} {elapsed / 60:5.1f} min, ~{left / 60:.1f} min left")
        self.stream.flush()
        if self.done >= self.total:
            self.stream.write("\n")


@dataclass
class Runner:
    pool: PoolConfig
    topology: Topology
    orchestrator: Orchestrator
    prometheus: PrometheusClient
    load: LoadDriver
    raw_csv: Path
    log: Callable[[str], None] = field(default=lambda message: print(message, file=sys.stderr))
    original: Mapping[str, ServicePlacement] = field(default_factory=dict)
    clock: Clock = SYSTEM_CLOCK
    """Waits (placement, the last scrape) and the window's end; tests pass a FakeClock."""

    # ---- placements --------------------------------------------------------------------
    def remember(self) -> None:
        state = self.orchestrator.read()
        missing = [s for s in self.topology.services if s not in state.services]
        if missing:
            raise SourceUnavailable(f"the pool does not run these services of "
                                    f"{self.topology.app} as managed Swarm services: "
                                    f"{', '.join(missing)}")
        generations = set(state.generations)
        absent = [g for g in self.pool.generations if g not in generations]
        if absent:
            raise SourceUnavailable(f"no ready node is labelled with generation(s) "
                                    f"{', '.join(absent)}")
        self.original = {s: state.services[s].placement for s in self.topology.services
                         if state.services[s].placement is not None}

    def place(self, wanted: Mapping[str, ServicePlacement]) -> int:
        """Apply the placement and wait until every task runs where it should (at most the
        pool's settle_timeout_s); moves made."""
        return len(place(self.orchestrator, wanted, self.clock, self.pool.settle_timeout_s,
                         log=self.log))

    def restore(self) -> None:
        if self.original:
            self.log("restoring the services' placements from before the run")
            self.place(dict(self.original))

    def placement_for(self, experiment: Experiment) -> dict[str, ServicePlacement]:
        return {s: ServicePlacement(self.pool.oldest if s in experiment.on_old
                                    else self.pool.newest, 1)
                for s in self.topology.services}

    # ---- measurement -------------------------------------------------------------------
    def _quantiles(self, kind: str, window_s: int, at_s: float, key: str
                   ) -> dict[str, dict[float, float]]:
        out: dict[str, dict[float, float]] = {}
        for q in (0.5, 0.95, 0.99):
            promql = QUERIES[kind].format(q=q, w=window_s, frontend=self.topology.frontend)
            for labels, _, value in self.prometheus.query(promql, at_s):
                name = labels.get(key, E2E)
                out.setdefault(name, {})[q] = value * 1000.0
        return out

    def measure(self, experiment: Experiment, offered_qps: float, seed: int) -> list[Row]:
        wanted = self.placement_for(experiment)
        if self.pool.warmup_s > 0:
            self.load(offered_qps, self.pool.warmup_s, seed)
        outcome = self.load(offered_qps, self.pool.measure_s, seed + 1)
        start = outcome.started_at
        end = start + self.pool.measure_s
        window = max(int(round(end - start)), 1)
        self.clock.sleep(max(0.0, 2.5 - (self.clock.now() - end)))   # the last scrape lands
        calls = self._quantiles("call_p", window, end, "callee")
        own = self._quantiles("own_p", window, end, "service")
        e2e = self._quantiles("e2e_p", window, end, "service")
        cpu = {labels.get("service", ""): value for labels, _, value in
               self.prometheus.query(QUERIES["cpu"].format(w=window), end)}
        rows = []
        for service in self.topology.services:
            placed = wanted[service]
            # the front end: its own work (only the gateway calls it, with the whole request)
            quantiles = (own.get(service, {}) if service == self.topology.frontend
                         else calls.get(service, {}))
            slot = self.pool.slot_cpus.get(placed.generation, 1.0)
            util = cpu.get(service, math.nan) / placed.replicas / slot
            rows.append(Row(experiment.name, offered_qps, service, placed.generation,
                            placed.replicas, outcome.achieved_qps, outcome.errors,
                            quantiles.get(0.5, math.nan), quantiles.get(0.95, math.nan),
                            quantiles.get(0.99, math.nan), cpu_utilisation=util,
                            window_start=start, window_end=end, warmup_s=self.pool.warmup_s))
        server = e2e.get(E2E) or next(iter(e2e.values()), {})
        p99 = sliced_p99(self.prometheus, self.topology.frontend, window, end)
        rows.append(Row(experiment.name, offered_qps, E2E, "", 0, outcome.achieved_qps,
                        outcome.errors, server.get(0.5, math.nan), server.get(0.95, math.nan),
                        p99 if math.isfinite(p99) else server.get(0.99, math.nan),
                        outcome.p50_ms, outcome.p95_ms, outcome.p99_ms, window_start=start,
                        window_end=end, warmup_s=self.pool.warmup_s))
        return rows

    def run(self, experiments: list[Experiment], progress: Progress | None) -> int:
        """Measure every point not measured yet; returns how many were measured now."""
        done = finished_points(read_rows(self.raw_csv))
        measured = 0
        for number, experiment in enumerate(experiments):
            todo = [q for q in experiment.loads_qps if (experiment.name, round(q, 6)) not in done]
            if not todo:
                for _ in experiment.loads_qps:
                    if progress:
                        progress.step(f"{experiment.name} (done before)")
                continue
            settle = settle_s(self.pool, self.place(self.placement_for(experiment)))
            if settle > 0:
                self.load(todo[0], settle, self.pool.seed + 1000 * number + 999)
            for index, offered in enumerate(todo):
                rows = self.measure(experiment, offered, self.pool.seed + 1000 * number + index)
                append_rows(self.raw_csv, rows)
                measured += 1
                if progress:
                    progress.step(f"{experiment.name} @ {offered:g} req/s")
        return measured


def loadgen_driver(url: str, topology: Topology) -> LoadDriver:
    """The lab's open-loop load generator as a LoadDriver."""
    def drive(rate_qps: float, duration_s: float, seed: int) -> LoadOutcome:
        result: Any = run_load(url, topology, rate_qps=rate_qps, duration_s=duration_s,
                               seed=seed)
        sent = max(result.sent, 1)
        return LoadOutcome(result.achieved_qps, result.error_count / sent, result.p50_ms,
                           result.p95_ms, result.p99_ms, result.started_at)

    return drive
