"""In-memory stand-ins for the daemon's ports, for tests: a fake clock, metrics you set,
a Swarm that records what it is asked to do, a fixed carbon intensity."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.ports import ManagedService, Metrics, SourceUnavailable, SwarmState


@dataclass
class FakeClock:
    """Virtual time: ``sleep`` advances it at once."""

    t: float = 1_000_000.0
    slept: list[float] = field(default_factory=list)

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class InMemoryMetrics:
    qps: float = math.nan
    p99_ms: float = math.nan
    utilisation: dict[str, float] = field(default_factory=dict)
    down: bool = False
    reads: int = 0

    def read(self, now_s: float) -> Metrics:
        self.reads += 1
        if self.down:
            raise SourceUnavailable("prometheus (fake) is down")
        return Metrics(self.qps, self.p99_ms, dict(self.utilisation))


@dataclass
class FixedCarbon:
    value: float = 250.0

    def intensity(self, now_s: float) -> float:
        return self.value

    def describe(self) -> str:
        return f"fixed {self.value:g} g/kWh"


@dataclass
class RecordingSwarm:
    """A Swarm of managed services held in memory; ``applied`` records every update."""

    services: dict[str, ManagedService] = field(default_factory=dict)
    is_manager: bool = True
    down: bool = False
    refuse: set[str] = field(default_factory=set)
    applied: list[tuple[str, ServicePlacement]] = field(default_factory=list)
    ready: set[str] = field(default_factory=lambda: {"new", "old"})
    """Generations with a ready node (``lose_node`` / ``restore_node`` change it)."""

    @classmethod
    def of(cls, placement: Placement, **kwargs: object) -> RecordingSwarm:
        services = {
            name: ManagedService(name, f"id-{name}", f"app_{name}", placed,
                                 {placed.generation: placed.replicas})
            for name, placed in placement.items
        }
        return cls(services=services, **kwargs)  # type: ignore[arg-type]

    def read(self) -> SwarmState:
        if self.down:
            raise SourceUnavailable("docker (fake) is down")
        return SwarmState(self.is_manager, dict(self.services), tuple(sorted(self.ready)))

    def apply(self, service: ManagedService, placed: ServicePlacement) -> None:
        from ecoscale.adapters.swarm import ActionFailed

        if self.down:
            raise SourceUnavailable("docker (fake) is down")
        if service.name in self.refuse:
            raise ActionFailed(f"{service.name}: refused (fake)")
        self.applied.append((service.name, placed))
        # A new update also ends a paused one, as in Swarm; tasks start only where a node is.
        running = {placed.generation: placed.replicas} if placed.generation in self.ready \
            else {}
        self.services[service.name] = replace(service, placement=placed, running=running,
                                              update_paused="")

    def lose_node(self, generation: str) -> None:
        """The only node of ``generation`` is gone: its tasks stop, new ones stay pending."""
        self.ready.discard(generation)
        for name, service in self.services.items():
            if generation in service.running:
                running = {g: n for g, n in service.running.items() if g != generation}
                self.services[name] = replace(service, running=running)

    def restore_node(self, generation: str) -> None:
        """The node is back: pending tasks of services placed on ``generation`` start."""
        self.ready.add(generation)
        for name, service in self.services.items():
            if service.placement is not None and service.placement.generation == generation:
                self.services[name] = replace(
                    service, running={generation: service.placement.replicas})

    def pause(self, name: str, paused: bool = True) -> None:
        self.services[name] = replace(self.services[name], paused=paused)

    def placement(self) -> Placement:
        return Placement(tuple((n, s.placement) for n, s in self.services.items()
                               if s.placement is not None))


def vector_reply(*series: tuple[dict[str, str], float, float | str]) -> dict[str, Any]:
    """The body Prometheus' instant-query API sends for a vector: (labels, time s, value)."""
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": dict(labels), "value": [stamp, str(value)]} for labels, stamp, value in series
    ]}}


@dataclass
class RecordedPrometheus:
    """An instant-query client answering from recorded reply bodies, by query text.

    A reply is a body (as `vector_reply` builds, or one recorded from a real Prometheus) or
    a callable taking the query time and returning one; an unknown query gets an empty
    vector. ``down`` makes every query fail as an unreachable server does."""

    replies: dict[str, Any] = field(default_factory=dict)
    down: bool = False
    queries: list[str] = field(default_factory=list)
    url: str = "http://prometheus.fake:9090"

    def query(self, promql: str, at_s: float | None = None) -> list[tuple[dict[str, str],
                                                                          float, float]]:
        from ecoscale.adapters.prometheus import parse_reply

        self.queries.append(promql)
        if self.down:
            raise SourceUnavailable(f"prometheus at {self.url}: ConnectionError: (fake) down")
        body = self.replies.get(promql, vector_reply())
        if callable(body):
            body = body(at_s)
        return parse_reply(body, promql)


@dataclass
class FakeAdapters:
    """An ecoscale.daemon.wiring.Adapters that builds fakes and records each build as
    (client, the setting it was built from); a client named in ``fail`` cannot be built."""

    prometheus_client: Any = field(default_factory=RecordedPrometheus)
    swarm_control: Any = field(default_factory=RecordingSwarm)
    carbon_value: float = 250.0
    fail: set[str] = field(default_factory=set)
    built: list[tuple[str, str]] = field(default_factory=list)

    def _build(self, client: str, setting: str) -> None:
        if client in self.fail:
            from ecoscale.errors import InputError

            raise InputError(setting, f"(fake) {client} cannot be built")
        self.built.append((client, setting))

    def prometheus(self, config: Any) -> Any:
        self._build("prometheus", config.prometheus.url)
        return self.prometheus_client

    def metrics(self, config: Any) -> Any:
        self._build("metrics", config.prometheus.url)
        return InMemoryMetrics()

    def swarm(self, config: Any) -> Any:
        self._build("swarm", config.docker_host)
        return self.swarm_control

    def carbon(self, config: Any, started_at_s: float) -> Any:
        self._build("carbon", config.carbon.url or config.carbon.trace)
        return FixedCarbon(self.carbon_value)
