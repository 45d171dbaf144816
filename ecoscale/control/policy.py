"""The one small interface every placement policy implements, live and in replay.

A policy is a pure function of (observation, state) -> (decision, new state). The daemon builds
the Observation from Prometheus and Swarm; the replay builds it from the model. Neither the
policy nor its state can tell which.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from ecoscale.model.placement import Placement, ServicePlacement


@dataclass(frozen=True)
class Observation:
    """What a policy sees at one decision instant. NaN means "no data", never "fine"."""

    clock_s: float
    """The decision clock (s): Unix epoch seconds in the daemon (its injected clock), the
    offset from the window's start in a replay. Policies use only differences of it (the
    oracle, which sees the replay's future, reads the offset)."""
    qps: float
    """Front-end load over the last observation window, req/s."""
    p99_ms: float
    """Measured end-to-end p99 over the last window, ms."""
    ci_g_per_kwh: float
    """Grid carbon intensity now, gCO2e/kWh."""
    current: Placement
    """What runs now."""
    utilisation: Mapping[str, float] = field(default_factory=dict)
    """Per-service CPU utilisation of one replica's slot (0..1)."""
    paused: frozenset[str] = frozenset()
    """Services an operator paused: never changed."""

    @property
    def has_load(self) -> bool:
        return math.isfinite(self.qps) and self.qps >= 0

    @property
    def has_latency(self) -> bool:
        return math.isfinite(self.p99_ms) and self.p99_ms >= 0


class Cause(StrEnum):
    """Why a service moves: the rule that made the move (one member per rule). The value is
    what metrics labels and the daemon's JSON log carry."""

    TABLE = "table"
    """The policy table's level for the load (ecoscale: start, up, down, or the level in
    force once a cooldown has passed)."""
    SLO_MISS = "slo"
    """The closed loop: measured p99 over the SLO holds the most critical on the newest."""
    STEP_BACK = "step-back"
    """The closed loop: SLO met for the hold time, one escalated service goes back."""
    NO_DATA = "no-data"
    """No load data for too long: fall back toward new (the table's top level)."""
    LOST_CAPACITY = "capacity"
    """Node loss: the generation has no ready node, or the service's tasks do not run."""
    STATIC = "static"
    """A static placement (all-new, all-old, noscale, minnew)."""
    CPU = "cpu"
    """HPA's CPU-utilisation rule (hpa-cpu; carbon-ceiling adds a replica ceiling)."""
    OPTIMUM = "optimum"
    """The oracle's exact least-carbon placement for the step."""
    PACKING = "packing"
    """Right-sizing: replicas' shares and sockets follow the load (right-sized-new;
    ecoscale-packed's moves carry the decision's own causes)."""


@dataclass(frozen=True, slots=True)
class Move:
    """One service's change, as a policy decided it (nomad-autoscaler's scaling action:
    the change, its cause, the capped count and the reason text)."""

    service: str
    before: ServicePlacement
    after: ServicePlacement
    cause: Cause
    reason: str
    """The human line for logs and reports, e.g. 'a: old x1 -> new x1: p99 ... > SLO ...'."""
    capped: bool = False
    """True when min/max replicas (or a replica ceiling) changed the replicas the rule
    wanted."""
    wanted_replicas: int | None = None
    """The replicas the rule wanted before the bound, when ``capped``."""


@dataclass(frozen=True)
class Decision:
    """The placement a policy wants, and for each service it changes, the move (its cause
    and why)."""

    placement: Placement
    moves: Mapping[str, Move] = field(default_factory=dict)
    note: str = ""

    @property
    def reasons(self) -> dict[str, str]:
        """The reason text of each move, by service."""
        return {service: move.reason for service, move in self.moves.items()}


class Policy(Protocol):
    """A placement policy. ``feedback`` names the observation fields it reads besides load and
    carbon ('p99', 'utilisation'), so that a replay computes only what is needed. A policy
    may also offer ``initial_placement(load_qps, ci_g_per_kwh) -> Placement``: what runs
    before its first decision in a replay (else all on the newest generation)."""

    name: str
    feedback: frozenset[str]

    def initial_state(self) -> Any: ...

    def decide(self, observation: Observation, state: Any) -> tuple[Decision, Any]: ...


def changed_moves(before: Placement, after: Placement, cause: Cause, reason: str,
                  wanted_replicas: Mapping[str, int] | None = None) -> dict[str, Move]:
    """One move per service that ``after`` places differently from ``before``, each with
    ``cause`` and the line '<old> -> <new>: <reason>'; ``wanted_replicas`` names the
    services whose replicas a bound changed, with what the rule wanted."""
    wanted = wanted_replicas or {}
    return {
        service: Move(service, old, new, cause, f"{old} -> {new}: {reason}",
                      capped=service in wanted, wanted_replicas=wanted.get(service))
        for service, old, new in before.changes(after)
    }
