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
from ecoscale.adapters.targets import adoption
from ecoscale.config import RoleQueries, label_values
from ecoscale.errors import InputError
from ecoscale.loadgen.generator import run_load
from ecoscale.model.placement import ServicePlacement
from ecoscale.model.topology import Topology
from ecoscale.ports import Clock, Orchestrator, Releasing, SourceUnavailable
from ecoscale.profiler.experiments import SLICE_S, Experiment, PoolConfig, settle_s, sliced_window
from ecoscale.profiler.store import E2E, Row, append_rows, finished_points, read_rows

QUANTILES = (0.5, 0.95, 0.99)
"""The latency quantiles measured per point (the pool's role queries take ``{quantile}``)."""


def by_service(samples: list[tuple[dict[str, str], float, float]], label: str,
               names: Mapping[str, str] | None = None) -> dict[str, float]:
    """{service: value} of a per-service reply, the name in the label ``label``; series
    without it are left out (``run --check`` and the README say how to add it). ``names``
    (label value -> topology service, ``config.label_values``) renames the values it knows
    (a Swarm service name such as ``socialnetwork_user-service``)."""
    names = names or {}
    return {names.get(labels[label], labels[label]): value for labels, _, value in samples
            if labels.get(label)}


@dataclass(frozen=True)
class LoadOutcome:
    """What the load generator reports for one window."""

    achieved_qps: float
    errors: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    started_at: float


def sliced_p99(prometheus: PrometheusClient, queries: RoleQueries, frontend: str,
               window_s: int, end_s: float) -> float:
    """Median of the end-to-end p99s of the window's SLICE_S-second slices (ms; see
    ``sliced_window``); NaN without data or when the window holds fewer than three."""
    if not sliced_window(window_s):
        return math.nan
    promql = queries.render("p99_ms", frontend, SLICE_S, 0.99)
    values = []
    for index in range(window_s // SLICE_S):
        for _, _, value in prometheus.query(promql, end_s - index * SLICE_S):
            if math.isfinite(value):
                values.append(value)
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
    unconstrained: set[str] = field(default_factory=set)
    """Services of ``original`` that had no generation constraint (placed where their
    tasks ran): restored without one."""
    pinned: set[str] = field(default_factory=set)
    """Services of ``unconstrained`` that this run constrained to a generation."""
    replies_checked: bool = False
    """Whether a measured point's replies were checked against the role queries."""
    clock: Clock = SYSTEM_CLOCK
    """Waits (placement, the last scrape) and the window's end; tests pass a FakeClock."""

    @property
    def names(self) -> dict[str, str]:
        """Label value -> topology service: a per-service series may name a service by its
        topology name or by the Swarm service the pool's target maps it to."""
        return label_values(self.topology.service_names, self.pool.target)

    # ---- placements --------------------------------------------------------------------
    def remember(self) -> None:
        """Read where every topology service runs now (restored at the end). The services
        are the pool's own (labelled) or a stack's it did not deploy (``target:``); their
        specs are left as they are but for the moves."""
        state = self.orchestrator.read()
        report = adoption(self.topology.service_names, state, self.pool.target)
        if not report.ok:
            raise SourceUnavailable(f"the pool's services of {self.topology.app} "
                                    f"({report.mapping}): {report.problem()}; {report.fix()}")
        generations = set(state.generations)
        absent = [g for g in self.pool.generations if g not in generations]
        if absent:
            raise SourceUnavailable(f"no ready node is labelled with generation(s) "
                                    f"{', '.join(absent)}")
        self.original = {s: state.services[s].placement for s in self.topology.services
                         if state.services[s].placement is not None}
        self.unconstrained = {s for s in self.original
                              if state.services[s].placement_source == "tasks"}

    def place(self, wanted: Mapping[str, ServicePlacement]) -> int:
        """Apply the placement and wait until every task runs where it should (at most the
        pool's settle_timeout_s); moves made. A service without a generation constraint
        is pinned at its first placement even where its tasks already run (else Swarm may
        place them anywhere, and tasks on two generations never converge)."""
        pins = [s for s in wanted if s in self.unconstrained and s not in self.pinned]
        if pins:
            state = self.orchestrator.read()
            for name in pins:
                self.orchestrator.apply(state.services[name], wanted[name])
                self.pinned.add(name)
        moved = place(self.orchestrator, wanted, self.clock, self.pool.settle_timeout_s,
                      log=self.log)
        return len(set(moved) | set(pins))

    def restore(self) -> None:
        """Put every service back as it was: its generation constraint and replicas; a
        service that had no generation constraint gets none again, and Swarm places it as
        before; then each moved service's own update order (the moves ran start-first).
        The last two need an orchestrator that can give services back (``ports.Releasing``)."""
        if not self.original:
            return
        self.log("restoring the services' placements from before the run")
        releaser = self.orchestrator if isinstance(self.orchestrator, Releasing) else None
        if releaser is None:   # the unconstrained ones stay on the generation they ran on
            self.place(dict(self.original))
            return
        self.place({s: p for s, p in self.original.items() if s not in self.unconstrained})
        if self.pinned:
            state = self.orchestrator.read()
            for name in sorted(self.pinned):
                releaser.release(state.services[name], self.original[name].replicas)
            self.pinned.clear()
        state = self.orchestrator.read()
        for name in sorted(self.original):
            releaser.give_back_update_order(state.services[name])

    def placement_for(self, experiment: Experiment) -> dict[str, ServicePlacement]:
        return {s: ServicePlacement(self.pool.oldest if s in experiment.on_old
                                    else self.pool.newest, 1)
                for s in self.topology.services}

    # ---- measurement -------------------------------------------------------------------
    @property
    def queries(self) -> RoleQueries:
        """The pool's role queries; a pool without them cannot be measured."""
        if self.pool.queries is None:
            raise InputError(self.pool.source or self.pool.name, [
                "queries: required to measure a pool: the PromQL of qps, p99_ms, "
                "service_p99_ms and service_cpu_cores, and service_label (README \"Metrics "
                "are configuration\" has worked sets; `--pool lab` has the emulator's)"])
        return self.pool.queries

    def _quantiles(self, role: str, window_s: int, at_s: float, label: str | None
                   ) -> dict[str, dict[float, float]]:
        """{service (or E2E without ``label``): {quantile: ms}} of a latency role query."""
        out: dict[str, dict[float, float]] = {}
        names = self.names
        for q in QUANTILES:
            promql = self.queries.render(role, self.topology.frontend, window_s, q)
            for labels, _, value in self.prometheus.query(promql, at_s):
                name = labels.get(label, "") if label else E2E
                name = names.get(name, name) if label else name
                if name:
                    out.setdefault(name, {})[q] = value
        return out

    def check_replies(self, per_service: Mapping[str, object], e2e: Mapping[str, object],
                      cpu: Mapping[str, float]) -> None:
        """After the first measured point (load has flowed, so every series exists): a role
        query that returned nothing, or no series whose service label names a topology
        service, is an error naming the query and the label, not silent "no data"."""
        queries = self.queries
        services = set(self.topology.services)
        problems = []
        if not e2e:
            problems.append(f"queries.p99_ms {queries.p99_ms!r} returned nothing: is the "
                            "metric name right and is its target scraped?")
        for role, label, found in (("service_p99_ms", queries.service_label, per_service),
                                   ("service_cpu_cores", queries.cpu_label, cpu)):
            if not services & set(found):
                problems.append(
                    f"queries.{role} {getattr(queries, role)!r}: no series whose label "
                    f"'{label}' names a service of the topology (got {sorted(found)[:5]}); "
                    f"aggregate with `sum by ({label})`, or set the label in queries:")
        if problems:
            raise InputError(self.pool.source or self.pool.name, problems)
        self.replies_checked = True

    def measure(self, experiment: Experiment, offered_qps: float, seed: int) -> list[Row]:
        wanted = self.placement_for(experiment)
        if self.pool.warmup_s > 0:
            self.load(offered_qps, self.pool.warmup_s, seed)
        outcome = self.load(offered_qps, self.pool.measure_s, seed + 1)
        start = outcome.started_at
        end = start + self.pool.measure_s
        window = max(int(round(end - start)), 1)
        self.clock.sleep(max(0.0, 2.5 - (self.clock.now() - end)))   # the last scrape lands
        queries = self.queries
        per_service = self._quantiles("service_p99_ms", window, end, queries.service_label)
        e2e = self._quantiles("p99_ms", window, end, None)
        cpu = by_service(self.prometheus.query(
            queries.render("service_cpu_cores", self.topology.frontend, window), end),
            queries.cpu_label, self.names)
        if not self.replies_checked:
            self.check_replies(per_service, e2e, cpu)
        rows = []
        for service in self.topology.services:
            placed = wanted[service]
            quantiles = per_service.get(service, {})
            slot = self.pool.slot_cpus.get(placed.generation, 1.0)
            util = cpu.get(service, math.nan) / placed.replicas / slot
            rows.append(Row(experiment.name, offered_qps, service, placed.generation,
                            placed.replicas, outcome.achieved_qps, outcome.errors,
                            quantiles.get(0.5, math.nan), quantiles.get(0.95, math.nan),
                            quantiles.get(0.99, math.nan), cpu_utilisation=util,
                            window_start=start, window_end=end, warmup_s=self.pool.warmup_s))
        server = e2e.get(E2E) or next(iter(e2e.values()), {})
        p99 = sliced_p99(self.prometheus, queries, self.topology.frontend, window, end)
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
