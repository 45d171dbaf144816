"""The daemon's ports: what it needs from the world, as small role-named interfaces.

Adapters (ecoscale/adapters/) implement them against Prometheus, an orchestrator (Docker
Swarm: adapters/swarm.py, built by adapters/targets.py) and carbon sources;
ecoscale/testing.py implements them in memory for tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

from ecoscale.errors import EcoscaleError
from ecoscale.model.placement import Placement, ServicePlacement


class SourceUnavailable(EcoscaleError):
    """A source (Prometheus, the orchestrator's API, a carbon API) cannot be read or reached
    right now: a connectivity problem, worth retrying at the next loop."""


class ActionFailed(EcoscaleError):
    """The orchestrator answered and refused an update (a rejected spec, a service that is
    no longer managed, version conflicts past the retries): not a connectivity problem."""


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
    """A service of the orchestrator that ecoscale manages (mapped by the target's
    ``stack``/``services``, or labelled managed), as read from it."""

    name: str
    """The topology's service name (by the mapping, else label ecoscale.service, else the
    orchestrator's name)."""
    target_id: str
    """The orchestrator's id of the service (a Swarm service id)."""
    target_name: str
    """The orchestrator's name of the service (a Swarm service name)."""
    placement: ServicePlacement | None
    """Generation (from the placement constraint) and desired replicas; None if unknown."""
    running: Mapping[str, int] = field(default_factory=dict)
    """Running tasks (replicas) per generation (from the nodes' labels)."""
    paused: bool = False
    """The service's pause label is set: ecoscale leaves it alone."""
    update_paused: str = ""
    """The orchestrator's message when it paused the service's last rolling update (a new
    task failed or ended early; the tasks it was replacing keep running), else ''."""
    update_order: str = ""
    """The update order of ecoscale's moves of this service: ``start-first``, or the
    service's own order where start-first cannot work (a Swarm service publishing a
    host-mode port: ``stop-first (kept: host-mode port 8080)``); before a move, what the
    service had: ``stop-first`` is reported as moved start-first. '' when unknown."""
    replicas: int | None = None
    """Desired replicas as the spec asks, also when ``placement`` is unknown; None for a
    global service or when not read."""
    placement_source: str = ""
    """Where ``placement.generation`` comes from: ``constraint`` (the generation
    constraint), ``tasks`` (unconstrained: where most tasks run), '' (unknown)."""
    cpu_reservation: float | None = None
    """CPUs (cores) each task reserves (Swarm ``Resources.Reservations.NanoCPUs``); None
    when the spec sets none."""
    cpu_limit: float | None = None
    """CPUs (cores) each task may use at most (``Resources.Limits.NanoCPUs``); None when
    the spec sets none."""
    updating: bool = False
    """A rolling update of the service is in progress (its tasks are being replaced)."""

    def has_cpu_budget(self, cpus: float) -> bool:
        """Whether each task already reserves and is limited to ``cpus`` (cores, to the
        millicore)."""
        return all(value is not None and round(value * 1000) == round(cpus * 1000)
                   for value in (self.cpu_reservation, self.cpu_limit))


MIN_TASK_CPUS = 0.01
"""The smallest CPU budget (cores) a task runs with (Docker's floor: a CFS quota of 1 ms per
100 ms period); a smaller one is written as this, so the daemon asks for no less."""


ACTIVE, PAUSE, DRAIN = "active", "pause", "drain"
"""A node's availability (Swarm's words): active runs new tasks; pause keeps its tasks but
gets no new ones; drain has its tasks moved elsewhere and gets none."""


@dataclass(frozen=True)
class NodeState:
    """One node of the cluster as the packing of a right-sized table sees it: one socket
    of its generation (README "Shares and node availability")."""

    node_id: str
    name: str
    """Its host name."""
    generation: str
    """Its generation label; '' when unlabelled."""
    ready: bool
    availability: str
    """ACTIVE, PAUSE or DRAIN."""
    emptied: bool = False
    """ecoscale set this availability (the node label ``labels.emptied``) to empty the
    node; only such nodes does ecoscale make active again."""
    tasks: Mapping[str, int] = field(default_factory=dict)
    """Topology service -> tasks of that managed service on this node (desired running)."""
    other_tasks: tuple[str, ...] = ()
    """The orchestrator's names of the replicated services ecoscale does not manage that
    have a task on this node (global services, which run on every node, are left out)."""

    @property
    def task_count(self) -> int:
        return sum(self.tasks.values()) + len(self.other_tasks)

    @property
    def usable(self) -> bool:
        """Whether ecoscale may count this node as a socket: ready, and active or emptied
        by ecoscale itself (a node an operator paused or drained is theirs)."""
        return self.ready and (self.availability == ACTIVE or self.emptied)


@dataclass(frozen=True)
class ClusterState:
    """What an orchestrator runs, as one read of it."""

    is_controller: bool
    """This endpoint may change the cluster (a Swarm manager); only a controller acts, and
    a non-controller reads no services."""
    services: Mapping[str, ManagedService]
    generations: tuple[str, ...]
    """Generations carried by ready nodes' labels."""
    ambiguous: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Topology name -> the orchestrator's names of every service that maps to it, where
    more than one does (``services`` holds the first by name; the adoption report fails)."""
    nodes: tuple[NodeState, ...] = ()
    """Every node, with its availability and tasks (empty: the orchestrator reports none,
    and the daemon manages no node)."""

    def only(self, services: Iterable[str]) -> ClusterState:
        """The same read of ``services`` alone: a stack rule maps every service of the
        stack, and the ones outside the topology are neither acted on nor counted."""
        keep = set(services)
        return replace(self, services={n: s for n, s in self.services.items() if n in keep},
                       ambiguous={n: a for n, a in self.ambiguous.items() if n in keep})

    def placement(self, services: tuple[str, ...]) -> Placement:
        """Current placement of ``services`` that are managed and have a known placement."""
        return Placement(tuple(
            (s, self.services[s].placement) for s in services
            if s in self.services and self.services[s].placement is not None
        ))


class Orchestrator(Protocol):
    """Where the managed services run (Docker Swarm today; one adapter per orchestrator)."""

    def read(self) -> ClusterState:
        """Managed services, their placement and running tasks; raises SourceUnavailable."""
        ...

    def apply(self, service: ManagedService, placed: ServicePlacement, *,
              replica_cpus: float | None = None, restart: bool = False) -> None:
        """Move/scale one managed service (start-first: capacity never drops), changing only
        its generation constraint and replica count, and with ``replica_cpus`` each task's
        CPU budget: a reservation and a limit of that many CPUs (cores; None leaves the
        spec's resources as they are). ``restart`` replaces every task even where nothing
        else changes (a forced update, start-first: moves tasks off a paused node). Raises
        SourceUnavailable (unreachable) or ActionFailed (refused)."""
        ...

    def resume(self, service: ManagedService) -> None:
        """Start a rolling update that the orchestrator paused again (a forced update of
        the same spec); raises SourceUnavailable or ActionFailed."""
        ...


@runtime_checkable
class Releasing(Protocol):
    """An Orchestrator that can also give a service back to the user as it was: the
    profiler's restore of the services it moved."""

    def release(self, service: ManagedService, replicas: int) -> None:
        """Remove the service's generation constraint (it runs wherever its own constraints
        let it) and set ``replicas``, changing nothing else; raises SourceUnavailable or
        ActionFailed."""
        ...

    def give_back_update_order(self, service: ManagedService) -> None:
        """Put back the update settings the service had before this process first moved it
        (its moves run start-first), once its rolling update is done; nothing when this
        process never changed it. Raises SourceUnavailable or ActionFailed."""
        ...


@runtime_checkable
class NodeAvailability(Protocol):
    """An Orchestrator that can also make its nodes available for tasks or not: the daemon
    keeps as many nodes of a generation active as a right-sized level has sockets there and
    empties the others (``ClusterState.nodes`` is what it reads)."""

    def set_availability(self, node: NodeState, availability: str) -> None:
        """Set ``node``'s availability (ACTIVE, PAUSE or DRAIN), marking a paused or drained
        node as emptied by ecoscale and clearing that mark when it is active again; changes
        nothing else of the node. Raises SourceUnavailable or ActionFailed."""
        ...


class Clock(Protocol):
    """Time for code that waits: the daemon's loop, the profiler, the lab (tests pass
    ecoscale.testing.FakeClock; adapters/clock.py has the system one)."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds of a clock that never goes back (durations only)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (s) (a fake clock advances instead)."""
        ...
