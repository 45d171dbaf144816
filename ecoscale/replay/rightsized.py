"""Right-sized policies: replicas sized from their utilisation and packed onto few sockets.

- ``right-sized-new``: what an operator would run instead of one socket per replica: new
  servers only, HPA-like replica counts (each replica at most REPLICA_TARGET_LOAD of its
  saturation throughput), each replica's share (its CPU reservation, VPA-style) its
  utilisation at the planned load, packed first-fit decreasing onto the fewest sockets at
  TARGET_SOCKET_UTILISATION (the way Kubernetes' scheduler with VPA requests and the cluster
  autoscaler end up), and the SLO kept under the co-location model (``model.colocation``).
- ``ecoscale-packed``: ecoscale's own decisions (generation and replicas per service, from
  its policy table and closed loop), each packed the same way per generation, old sockets
  too.

Both plan for the load they observed plus PLAN_MARGIN, rounded up to a LOAD_QUANTUM of the
trace's peak (one plan per bucket, cached), and keep a plan for scale-down only as HPA does:
the highest bucket of the last SCALE_DOWN_WINDOW_S. When a packing misses the SLO at the
planned load, the service whose co-location costs it most gets sockets of its own (its
replicas share only with each other), then one more replica, and so on; when nothing is left
to try, every replica gets a socket of its own (the papers' slots).
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
    one_per_socket,
    pack,
    packed_e2e_p99_at,
    shared_replica_p99s_at,
)
from ecoscale.model.placement import Placement, ServicePlacement

TARGET_SOCKET_UTILISATION = 0.7
"""Reserved share packed onto one socket at most (sockets). 70 %: the headroom operators
leave on a node for bursts between scaling decisions, and where the calibrated p99 curves
turn steep (queueing grows as 1 / (1 - rho)); the issue's rough check used the same."""
REPLICA_TARGET_LOAD = 0.6
"""HPA-like replica count: each replica at most this fraction of its saturation throughput
(hpa-cpu's 60 % CPU target, expressed on the replica's own capacity)."""
MIN_SHARE = 0.01
"""Smallest share a replica reserves (sockets): an idle service still holds a little CPU
(VPA's minimum request; 0.01 of a 16-core socket is 0.16 core)."""
PLAN_MARGIN = 0.10
"""Load above the observed one that a plan must serve (fraction): the load a minute later
is within 10 % of the last minute's at 99 % of the default day's steps."""
LOAD_QUANTUM = 0.02
"""Plans are made for loads rounded up to this fraction of the trace's peak."""
SCALE_DOWN_WINDOW_S = 300.0
"""HPA's default stabilisation window: scale down only to the highest plan of this span."""
MAX_REPAIR_ROUNDS = 200
"""Most repair steps (isolate a service, add a replica) before one socket per replica."""
REPAIR_CHOICES = 3
"""Repair steps tried per round (each costs one packing and one p99 evaluation)."""
MAX_REPLICAS = 10
"""Most replicas of one service (hpa-cpu's maximum)."""


def replica_limit(model: AppModel, generation: str) -> int:
    """Most replicas of one service on ``generation``: MAX_REPLICAS, or fewer where the
    profile says more add no capacity (its ``replica_limits``)."""
    return min(MAX_REPLICAS, model.profile.replica_limits.get(generation, MAX_REPLICAS))


def hpa_replicas(model: AppModel, service: str, generation: str, load_qps: float,
                 target: float = REPLICA_TARGET_LOAD) -> int:
    """Replicas of ``service`` on ``generation`` so that each carries at most ``target`` of
    its saturation throughput at front-end load ``load_qps`` (req/s); at least one, at most
    ``replica_limit`` (HPA's maxReplicas)."""
    curve = model.profile.curve(service, generation)
    demand = model.visits[service] * load_qps / (target * curve.saturation_qps)
    if not math.isfinite(demand):
        return replica_limit(model, generation)
    return min(max(1, math.ceil(demand - 1e-9)), replica_limit(model, generation))


def replica_shares(model: AppModel, placement: Placement, load_qps: float) -> dict[str, float]:
    """Share of one replica of each service (sockets): its utilisation at front-end load
    ``load_qps`` (req/s), at least MIN_SHARE."""
    shares = {}
    for service, placed in placement.items:
        per_replica = model.visits[service] * load_qps / placed.replicas
        util = model.profile.curve(service, placed.generation).util_at(per_replica)
        shares[service] = max(util, MIN_SHARE)
    return shares


@dataclass(frozen=True)
class PackingPlan:
    """A packed placement for one load, and how it was reached."""

    packed: PackedPlacement
    p99_ms: float
    """End-to-end p99 at the planned load under the co-location model (ms)."""
    isolated: tuple[str, ...] = ()
    added: tuple[tuple[str, int], ...] = ()
    """Replicas added by the repair, per service."""
    fallback: bool = False
    """True when no packing kept the SLO: one replica per socket."""


def _co_location_cost(model: AppModel, packed: PackedPlacement, load_qps: float
                      ) -> list[tuple[float, str]]:
    """(p99 rise in ms over the replica alone, service) for the services that sharing a
    socket slows, costliest first."""
    rise: dict[str, float] = {}
    for service, curve, per_replica, shared in shared_replica_p99s_at(model, packed,
                                                                      load_qps):
        alone = curve.p99_at(per_replica)
        rise[service] = max(rise.get(service, 0.0), shared - alone)
    return sorted(((r, s) for s, r in rise.items() if r > 0), reverse=True)


def _candidates(model: AppModel, packed: PackedPlacement, current: Placement,
                load_qps: float, isolated: frozenset[str]
                ) -> list[tuple[Placement, frozenset[str]]]:
    """Repair steps to try: each of the REPAIR_CHOICES services whose co-location costs most
    gets sockets of its own (or, isolated already, one more replica); with no such service,
    the REPAIR_CHOICES busiest services (per-replica load over saturation) get a replica."""
    out: list[tuple[Placement, frozenset[str]]] = []

    def more(service: str) -> None:
        placed = current[service]
        if placed.replicas < replica_limit(model, placed.generation):
            out.append((current.with_service(
                service, ServicePlacement(placed.generation, placed.replicas + 1)), isolated))

    for _, service in _co_location_cost(model, packed, load_qps)[:REPAIR_CHOICES]:
        if service not in isolated:
            out.append((current, isolated | {service}))
        else:
            more(service)
    if not out:
        busy = sorted(((model.visits[s] * load_qps / p.replicas
                        / model.profile.curve(s, p.generation).saturation_qps, s)
                       for s, p in current.items if model.visits[s] > 0), reverse=True)
        for _, service in busy[:REPAIR_CHOICES]:
            more(service)
    return out


def pack_for_slo(model: AppModel, placement: Placement, load_qps: float, slo_ms: float,
                 capacity: float = TARGET_SOCKET_UTILISATION) -> PackingPlan:
    """``placement`` right-sized for front-end load ``load_qps`` (req/s) and packed per
    generation at ``capacity``, repaired until its end-to-end p99 under the co-location
    model is within ``slo_ms``: each round tries the candidate steps (``_candidates``) and
    keeps the one with the lowest p99 (then the fewest sockets)."""
    current = placement
    isolated: frozenset[str] = frozenset()
    packed = pack(current, replica_shares(model, current, load_qps), capacity, isolated)
    p99 = packed_e2e_p99_at(model, packed, load_qps)
    for _ in range(MAX_REPAIR_ROUNDS):
        if p99 <= slo_ms:
            added = tuple((s, p.replicas - placement[s].replicas) for s, p in current.items
                          if p.replicas > placement[s].replicas)
            return PackingPlan(packed, p99, tuple(sorted(isolated)), added)
        best = None
        for option, alone in _candidates(model, packed, current, load_qps, isolated):
            trial = pack(option, replica_shares(model, option, load_qps), capacity, alone)
            score = (packed_e2e_p99_at(model, trial, load_qps), len(trial.sockets))
            if best is None or score < best[0]:
                best = (score, option, alone, trial)
        if best is None:
            break
        (p99, _), current, isolated, packed = best
    packed = one_per_socket(placement, replica_shares(model, placement, load_qps))
    return PackingPlan(packed, packed_e2e_p99_at(model, packed, load_qps), fallback=True)


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
    """``ecoscale-packed``: a policy's placements (ecoscale's), right-sized and packed per
    generation for the observed load's bucket, the SLO kept under the co-location model."""

    name: str
    inner: Any
    model: AppModel
    slo_ms: float
    peak_qps: float
    capacity: float = TARGET_SOCKET_UTILISATION
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

    def initial_state(self) -> _Planned:
        return _Planned(inner=self.inner.initial_state())

    def initial_placement(self, load_qps: float, ci_g_per_kwh: float) -> Placement:
        start = getattr(self.inner, "initial_placement", None)
        unpacked = (start(load_qps, ci_g_per_kwh) if start is not None
                    else Placement.uniform(self.model.services, self.model.hardware.newest))
        return self.plan(unpacked, self.buckets.of(load_qps)).packed

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
        placement = self.plan(inner_decision.placement, bucket).packed
        moves = changed_moves(observation.current, placement, Cause.PACKING,
                              f"{self.inner.name}'s placement, right-sized for "
                              f"{self.buckets.load_of(bucket):.0f} req/s and packed")
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
