"""The one small interface every placement policy implements, live and in replay.

A policy is a pure function of (observation, state) -> (decision, new state). The daemon builds
the Observation from Prometheus and Swarm; the replay builds it from the model. Neither the
policy nor its state can tell which.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ecoscale.model.placement import Placement


@dataclass(frozen=True)
class Observation:
    """What a policy sees at one decision instant. NaN means "no data", never "fine"."""

    now_s: float
    """Seconds since the run started (injected clock)."""
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


@dataclass(frozen=True)
class Decision:
    """The placement a policy wants, and for each service it changes, why."""

    placement: Placement
    reasons: Mapping[str, str] = field(default_factory=dict)
    note: str = ""


class Policy(Protocol):
    """A placement policy. ``feedback`` names the observation fields it reads besides load and
    carbon ('p99', 'utilisation'), so that a replay computes only what is needed. A policy
    may also offer ``initial_placement(load_qps, ci_g_per_kwh) -> Placement``: what runs
    before its first decision in a replay (else all on the newest generation)."""

    name: str
    feedback: frozenset[str]

    def initial_state(self) -> Any: ...

    def decide(self, observation: Observation, state: Any) -> tuple[Decision, Any]: ...


def changed_reasons(before: Placement, after: Placement, reason: str) -> dict[str, str]:
    """One reason line per service that ``after`` places differently from ``before``."""
    return {
        service: f"{old} -> {new}: {reason}" for service, old, new in before.changes(after)
    }
