"""Right-sized policies: replicas sized from their utilisation and packed onto few sockets.

- ``right-sized-new``: what an operator would run instead of one socket per replica: new
  servers only, HPA-like replica counts (each replica at most REPLICA_TARGET_LOAD of its
  saturation throughput), each replica's share (its CPU reservation, VPA-style) its
  utilisation at the planned load, packed first-fit decreasing onto the fewest sockets at
  TARGET_SOCKET_UTILISATION (the way Kubernetes' scheduler with VPA requests and the cluster
  autoscaler end up), and the SLO kept under the co-location model (``model.colocation``).
  It plans for the load it observed plus PLAN_MARGIN, rounded up to a LOAD_QUANTUM of the
  trace's peak (one plan per bucket, cached), and keeps a plan for scale-down only as HPA
  does: the highest bucket of the last SCALE_DOWN_WINDOW_S.
- ``ecoscale-packed``: ecoscale's decision function over a right-sized policy table
  (``planner.table.right_size_table``: per level, generation, replicas and shares chosen
  together with the packing per generation, old sockets too). The decision function keeps
  the shares where its placement is not a level's (an escalation, moves held back), and
  grows shares at once but shrinks them after a hold (``control.decide``).

The packing and its repair (``planner.rightsize.pack_for_slo``): when a packing misses the
SLO at the planned load, the service whose co-location costs it most gets sockets of its own
(its replicas share only with each other), then one more replica, and so on; when nothing is
left to try, every replica gets a socket of its own (the papers' slots).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ecoscale.control.policy import Cause, Decision, Observation, changed_moves
from ecoscale.model.app import AppModel, CarbonBreakdown
from ecoscale.model.packing import (
    PackedPlacement,
    evaluate_packed_sequence,
    packed_e2e_p99_at,
)
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.planner.rightsize import (
    MIN_SHARE,
    REPLICA_TARGET_LOAD,
    TARGET_SOCKET_UTILISATION,
    PackingPlan,
    hpa_replicas,
    pack_for_slo,
    replica_shares,
)

__all__ = ["MIN_SHARE", "REPLICA_TARGET_LOAD", "TARGET_SOCKET_UTILISATION", "PackedPolicy",
           "PackingPlan", "RightSizedNewPolicy", "hpa_replicas", "pack_for_slo",
           "replica_shares", "right_sized_new"]

PLAN_MARGIN = 0.10
"""Load above the observed one that a plan must serve (fraction): the load a minute later
is within 10 % of the last minute's at 99 % of the default day's steps."""
LOAD_QUANTUM = 0.02
"""Plans are made for loads rounded up to this fraction of the trace's peak."""
SCALE_DOWN_WINDOW_S = 300.0
"""HPA's default stabilisation window: scale down only to the highest plan of this span."""


def right_sized_new(model: AppModel, load_qps: float, slo_ms: float, generation: str = "new",
                    capacity: float = TARGET_SOCKET_UTILISATION) -> PackingPlan:
    """The right-sized-new plan for front-end load ``load_qps`` (req/s): HPA-like replicas
    on ``generation``, right-sized, packed at ``capacity``, SLO kept (co-location model)."""
    placement = Placement(tuple(
        (s, ServicePlacement(generation, hpa_replicas(model, s, generation, load_qps)))
        for s in model.services
    ))
    return pack_for_slo(model, placement, load_qps, slo_ms, capacity)


@dataclass(frozen=True)
class _Planned:
    """Recent (time s, planned bucket) pairs for HPA-like scale-down, oldest first."""

    recent: tuple[tuple[float, int], ...] = ()


@dataclass
class _Buckets:
    """Load buckets of LOAD_QUANTUM of the peak, with HPA-like stabilisation."""

    peak_qps: float
    quantum: float = LOAD_QUANTUM
    margin: float = PLAN_MARGIN
    window_s: float = SCALE_DOWN_WINDOW_S

    @property
    def step_qps(self) -> float:
        return max(self.peak_qps * self.quantum, 1e-9)

    def of(self, load_qps: float) -> int:
        """The bucket that serves ``load_qps`` (req/s) with the margin."""
        if not math.isfinite(load_qps):
            return math.ceil((1.0 + self.margin) / self.quantum - 1e-9)
        return max(1, math.ceil(load_qps * (1.0 + self.margin) / self.step_qps - 1e-9))

    def stabilised(self, clock_s: float, wanted: int,
                   recent: tuple[tuple[float, int], ...]) -> tuple[int, tuple]:
        """Scale up at once; down only to the highest bucket of the window."""
        kept = (tuple((t, b) for t, b in recent if clock_s - t < self.window_s)
                + ((clock_s, wanted),))
        return max(b for _, b in kept), kept

    def load_of(self, bucket: int) -> float:
        return bucket * self.step_qps


@dataclass
class RightSizedNewPolicy:
    """``right-sized-new``: see the module doc."""

    name: str
    model: AppModel
    slo_ms: float
    peak_qps: float
    generation: str = "new"
    capacity: float = TARGET_SOCKET_UTILISATION
    feedback: frozenset[str] = frozenset()
    plans: dict[int, PackingPlan] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.buckets = _Buckets(self.peak_qps)

    def plan(self, bucket: int) -> PackingPlan:
        if bucket not in self.plans:
            self.plans[bucket] = right_sized_new(self.model, self.buckets.load_of(bucket),
                                                 self.slo_ms, self.generation, self.capacity)
        return self.plans[bucket]

    def initial_state(self) -> _Planned:
        return _Planned()

    def initial_placement(self, load_qps: float, ci_g_per_kwh: float) -> Placement:
        return self.plan(self.buckets.of(load_qps)).packed

    def decide(self, observation: Observation, state: _Planned) -> tuple[Decision, Any]:
        bucket, recent = self.buckets.stabilised(observation.clock_s,
                                                 self.buckets.of(observation.qps), state.recent)
        placement = self.plan(bucket).packed
        moves = changed_moves(
            observation.current, placement, Cause.PACKING,
            f"right-sized for {self.buckets.load_of(bucket):.0f} req/s, packed at "
            f"{self.capacity:.0%} of a socket")
        return Decision(placement, moves), replace(state, recent=recent)

    def evaluate_sequence(self, placements: list[Placement], frontend_qps: np.ndarray,
                          ci_g_per_kwh: np.ndarray, step_h: float
                          ) -> tuple[np.ndarray, CarbonBreakdown]:
        """Scores steps under the co-location model (the replay calls this)."""
        return evaluate_packed_sequence(self.model, placements, frontend_qps, ci_g_per_kwh,
                                        step_h)


@dataclass
class PackedPolicy:
    """``ecoscale-packed``: ecoscale's decision function (``inner``) over a right-sized policy
    table (``planner.table.right_size_table``: generation, replicas and shares chosen with
    the packing per level). The decision function itself keeps the shares: a level's
    packing, an escalation's services on whole sockets of the newest generation, the
    services a move holds back on their sockets, and shares that grow at once and shrink
    after a hold (``control.decide``, as the daemon runs it). This wrapper only measures
    what a live daemon would: the closed loop sees the packed placement's p99 under the
    co-location model, and the steps are scored under it."""

    name: str
    inner: Any
    model: AppModel

    def __post_init__(self) -> None:
        self.feedback = self.inner.feedback

    def initial_state(self) -> Any:
        return self.inner.initial_state()

    def initial_placement(self, load_qps: float, ci_g_per_kwh: float) -> Placement:
        start = getattr(self.inner, "initial_placement", None)
        return (start(load_qps, ci_g_per_kwh) if start is not None
                else Placement.uniform(self.model.services, self.model.hardware.newest))

    def decide(self, observation: Observation, state: Any) -> tuple[Decision, Any]:
        seen = observation
        if (isinstance(observation.current, PackedPlacement) and observation.has_latency
                and observation.has_load):
            # the closed loop sees the packed placement's p99, as a live daemon would
            seen = replace(observation, p99_ms=packed_e2e_p99_at(
                self.model, observation.current, observation.qps))
        return self.inner.decide(seen, state)

    def evaluate_sequence(self, placements: list[Placement], frontend_qps: np.ndarray,
                          ci_g_per_kwh: np.ndarray, step_h: float
                          ) -> tuple[np.ndarray, CarbonBreakdown]:
        """Scores steps under the co-location model (the replay calls this)."""
        return evaluate_packed_sequence(self.model, placements, frontend_qps, ci_g_per_kwh,
                                        step_h)
