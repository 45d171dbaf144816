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
  together with the packing per generation, old sockets too). A decision that is not a
  level's placement (the closed loop's escalation, moves held back) is packed for its bucket
  as right-sized-new's plans are.

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
    inner: Any = None
    """The wrapped policy's state (ecoscale-packed)."""
    unpacked: Placement | None = None
    """The wrapped policy's last placement, before packing (ecoscale-packed)."""


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
    """``ecoscale-packed``: ecoscale's decision function over a right-sized policy table
    (``planner.table.right_size_table``: generation, replicas and shares chosen with the
    packing per level). The decision function sees the table's placements without shares
    (the same ladder, hysteresis on the capacities measured under the co-location model)
    and the packed p99; a decision that is a level's placement runs that level's packing.
    Any other placement (the closed loop's escalation, moves held back by cooldowns) is
    right-sized and packed for the observed load's bucket, the SLO kept under the
    co-location model, as a daemon would have to."""

    name: str
    inner: Any
    model: AppModel
    slo_ms: float
    peak_qps: float
    capacity: float = TARGET_SOCKET_UTILISATION
    levels: tuple[Placement, ...] = ()
    """The right-sized table's placement per level (PackedPlacement where right-sized), in
    the order of the inner policy's table."""
    plans: dict[tuple[Placement, int], PackingPlan] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.buckets = _Buckets(self.peak_qps)
        self.feedback = self.inner.feedback

    def plan(self, placement: Placement, bucket: int) -> PackingPlan:
        key = (placement, bucket)
        if key not in self.plans:
            self.plans[key] = pack_for_slo(self.model, placement, self.buckets.load_of(bucket),
                                           self.slo_ms, self.capacity)
        return self.plans[key]

    def _packed(self, placement: Placement, level: int | None, bucket: int) -> Placement:
        """The level's packing when ``placement`` is the level's placement, else
        ``placement`` packed for ``bucket``."""
        if level is not None and level < len(self.levels):
            packed = self.levels[level]
            if packed.items == placement.items:
                return packed
        return self.plan(placement, bucket).packed

    def initial_state(self) -> _Planned:
        return _Planned(inner=self.inner.initial_state())

    def initial_placement(self, load_qps: float, ci_g_per_kwh: float) -> Placement:
        start = getattr(self.inner, "initial_placement", None)
        unpacked = (start(load_qps, ci_g_per_kwh) if start is not None
                    else Placement.uniform(self.model.services, self.model.hardware.newest))
        level = next((i for i, p in enumerate(self.levels) if p.items == unpacked.items),
                     None)
        return self._packed(unpacked, level, self.buckets.of(load_qps))

    def decide(self, observation: Observation, state: _Planned) -> tuple[Decision, Any]:
        unpacked = state.unpacked or Placement(observation.current.items)
        seen = replace(observation, current=unpacked)
        if (isinstance(observation.current, PackedPlacement) and observation.has_latency
                and observation.has_load):
            # the closed loop sees the packed placement's p99, as a live daemon would
            seen = replace(seen, p99_ms=packed_e2e_p99_at(self.model, observation.current,
                                                          observation.qps))
        inner_decision, inner_state = self.inner.decide(seen, state.inner)
        bucket, recent = self.buckets.stabilised(observation.clock_s,
                                                 self.buckets.of(observation.qps), state.recent)
        placement = self._packed(inner_decision.placement,
                                 getattr(inner_state, "level", None), bucket)
        moves = changed_moves(observation.current, placement, Cause.PACKING,
                              f"{self.inner.name}'s placement, right-sized and packed")
        for service, inner_move in inner_decision.moves.items():   # ecoscale's own cause
            if service in moves:
                moves[service] = replace(moves[service], cause=inner_move.cause)
        return (Decision(placement, moves, inner_decision.note),
                _Planned(recent, inner_state, inner_decision.placement))

    def evaluate_sequence(self, placements: list[Placement], frontend_qps: np.ndarray,
                          ci_g_per_kwh: np.ndarray, step_h: float
                          ) -> tuple[np.ndarray, CarbonBreakdown]:
        """Scores steps under the co-location model (the replay calls this)."""
        return evaluate_packed_sequence(self.model, placements, frontend_qps, ci_g_per_kwh,
                                        step_h)
