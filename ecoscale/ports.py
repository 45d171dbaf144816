"""The daemon's ports: what it needs from the world, as small role-named interfaces.

Adapters (ecoscale/adapters/) implement them against Prometheus, Docker Swarm and carbon
sources; ecoscale/testing.py implements them in memory for tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ecoscale.errors import EcoscaleError
from ecoscale.model.placement import Placement, ServicePlacement


class SourceUnavailable(EcoscaleError):
    """A source (Prometheus, the Docker API, a carbon API) cannot be read right now (a runtime
    error when it reaches the user)."""


@dataclass(frozen=True)
class Metrics:
    """Live metrics at one instant. NaN means no data (missing, stale or unreadable)."""

    qps: float = math.nan
    """Front-end load over the query's window, req/s."""
    p99_ms: float = math.nan
    """End-to-end p99 over the query's window, ms."""
    service_utilisation: Mapping[str, float] = field(default_factory=dict)
    """Measured CPU utilisation of one replica's slot, per service (0..1), when configured."""
    problems: tuple[str, ...] = ()
    """Why a value is missing (for logs and /healthz)."""


class MetricsSource(Protocol):
    def read(self, epoch_s: float) -> Metrics:
        """Metrics at ``epoch_s`` (Unix epoch s); raises SourceUnavailable when the source
        cannot be reached."""
        ...


class CarbonSource(Protocol):
    def intensity(self, epoch_s: float) -> float:
        """Grid carbon intensity (gCO2e/kWh) at ``epoch_s`` (Unix epoch s); NaN when unknown."""
        ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class ManagedService:
    """A Swarm service labelled as managed by ecoscale, as read from the Swarm."""

    name: str
    """The microservice name (label ecoscale.service, else the Swarm service name)."""
    swarm_id: str
    swarm_name: str
    placement: ServicePlacement | None
    """Generation (from the placement constraint) and desired replicas; None if unknown."""
    running: Mapping[str, int] = field(default_factory=dict)
    """Running tasks per generation (from the nodes' labels)."""
    paused: bool = False
    update_paused: str = ""
    """Swarm's message when it paused the service's last rolling update (a new task failed
    or ended early; the tasks it was replacing keep running), else ''."""


@dataclass(frozen=True)
class SwarmState:
    is_manager: bool
    services: Mapping[str, ManagedService]
    generations: tuple[str, ...]
    """Generations carried by ready nodes' labels."""

    def placement(self, services: tuple[str, ...]) -> Placement:
        """Current placement of ``services`` that are managed and have a known placement."""
        return Placement(tuple(
            (s, self.services[s].placement) for s in services
            if s in self.services and self.services[s].placement is not None
        ))


class SwarmControl(Protocol):
    def read(self) -> SwarmState:
        """Managed services, their placement and running tasks; raises SourceUnavailable."""
        ...

    def apply(self, service: ManagedService, placed: ServicePlacement) -> None:
        """Move/scale one managed service (start-first); raises SourceUnavailable."""
        ...

    def resume(self, service: ManagedService) -> None:
        """Start a rolling update that Swarm paused again (a forced update of the same
        spec); raises SourceUnavailable."""
        ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds of a clock that never goes back (durations only)."""
        ...

    def sleep(self, seconds: float) -> None: ...
