"""In-memory stand-ins for the daemon's ports, for tests: a fake clock, metrics you set,
a Swarm that records what it is asked to do, a fixed carbon intensity."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

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
        generations = tuple(sorted({g for s in self.services.values() for g in s.running}))
        return SwarmState(self.is_manager, dict(self.services), generations)

    def apply(self, service: ManagedService, placed: ServicePlacement) -> None:
        from ecoscale.adapters.swarm import ActionFailed

        if self.down:
            raise SourceUnavailable("docker (fake) is down")
        if service.name in self.refuse:
            raise ActionFailed(f"{service.name}: refused (fake)")
        self.applied.append((service.name, placed))
        # A new update also ends a paused one, as in Swarm.
        self.services[service.name] = replace(service, placement=placed,
                                              running={placed.generation: placed.replicas},
                                              update_paused="")

    def pause(self, name: str, paused: bool = True) -> None:
        self.services[name] = replace(self.services[name], paused=paused)

    def placement(self) -> Placement:
        return Placement(tuple((n, s.placement) for n, s in self.services.items()
                               if s.placement is not None))
