"""Right-sizing in the planner: each replica's share of a socket, and the packing.

A right-sized placement (``model.packing.PackedPlacement``) gives each replica a share of a
socket of its generation (its CPU reservation, sized from its utilisation: VPA-style) and
packs replicas first-fit decreasing onto sockets of a generation up to a target utilisation.
Its latency comes from the co-location model (``model.colocation``), its carbon from the
sockets in use (``model.packing.packed_carbon``).

- ``pack_for_slo``: one placement right-sized for a load and packed at one socket capacity,
  repaired until the SLO holds under the co-location model: the service whose co-location
  costs most gets sockets of its own (its replicas share only with each other), then one more
  replica, and so on; when nothing is left to try, every replica gets a socket of its own.
- ``rightsize``: the planner's right-sizing pass for one load level. Packing the level's own
  MinNew plan saves little at high load: MinNew spends the SLO's slack on fewer replicas, so
  a packed socket pushes it over and the repair isolates most services again. The pass
  therefore chooses generation, replicas and share *together* with the packing: it packs
  every candidate placement (the level's plan, the plans of the levels above it, which carry
  more replicas and so more slack, and everything on the cheapest generation) at every
  socket capacity of SOCKET_CAPACITIES, repairs each, and keeps the least carbon at the
  level's load among those that keep the SLO there.
- ``packed_capacity_qps``: the highest load a packed placement (shares fixed) serves within
  the SLO under the co-location model: the policy table's capacity of a right-sized level.

Pure: an AppModel and numbers in, plans out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ecoscale.model.app import AppModel
from ecoscale.model.packing import (
    PackedPlacement,
    one_per_socket,
    pack,
    packed_carbon_at,
    packed_e2e_p99,
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
                 capacity: float = TARGET_SOCKET_UTILISATION,
                 max_rounds: int = MAX_REPAIR_ROUNDS) -> PackingPlan:
    """``placement`` right-sized for front-end load ``load_qps`` (req/s) and packed per
    generation at ``capacity``, repaired until its end-to-end p99 under the co-location
    model is within ``slo_ms``: each round tries the candidate steps (``_candidates``) and
    keeps the one with the lowest p99 (then the fewest sockets). ``max_rounds`` checks (the
    packing, then after each step but the last) before one socket per replica."""
    current = placement
    isolated: frozenset[str] = frozenset()
    packed = pack(current, replica_shares(model, current, load_qps), capacity, isolated)
    p99 = packed_e2e_p99_at(model, packed, load_qps)
    for _ in range(max_rounds):
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




# ---- the planner's right-sizing pass ------------------------------------------------------

SOCKET_CAPACITIES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
"""Socket capacities (reserved share per socket, sockets) the right-sizing pass packs at:
a tight packing needs fewer sockets, a loose one leaves latency slack for fewer replicas."""
LARGE_APP_SERVICES = 200
"""Above this many services the pass packs only the level's own plan at
TARGET_SOCKET_UTILISATION (each packing and repair costs O(services) per evaluation)."""
LARGE_APP_PROBES = 2
"""Packings ``pack_by_sensitivity`` tries per level above LARGE_APP_SERVICES (each one
packs and scores every service: 0.15 s at 10,000 services)."""
PASS_REPAIR_ROUNDS = 15
"""Repair rounds per candidate packing in the right-sizing pass (pack_for_slo's default,
MAX_REPAIR_ROUNDS, is for one placement alone): a candidate that needs more is beaten by
another candidate with the slack built in."""
ABOVE_CANDIDATES = 4
"""Plans of higher levels the pass packs besides a level's own (the nearest distinct ones:
further up they carry slack the level does not need, at more replicas)."""
SPREAD_REPLICAS = 3
"""Candidates with every service on the cheapest generation with 1 .. this many replicas
(the profile's ``replica_limits`` permitting): spreading each service over several tightly
packed sockets lowers every replica's own load, so the shared sockets queue less. At low
load that is the packed oracle's optimum (300 req/s on socialNetwork: 2 old sockets)."""
CAPACITY_BISECTIONS = 30
"""Bisection steps of ``packed_capacity_qps`` after its 65-point grid (the range over 2^36:
exact to the printed digit); LARGE_APP_BISECTIONS above LARGE_APP_SERVICES."""
LARGE_APP_BISECTIONS = 4
"""Above LARGE_APP_SERVICES: the capacity from one grid of 2^this + 1 loads between the
planned load and the level's capacity on dedicated slots (an upper bound): 1/16 of it."""


def packed_rate_g_per_h(model: AppModel, packed: PackedPlacement, load_qps: float,
                        ci_g_per_kwh: float) -> float:
    """Carbon rate (gCO2e/h) of ``packed`` at front-end load ``load_qps`` (req/s) and grid
    intensity ``ci_g_per_kwh`` (gCO2e/kWh): per socket in use, as ``packed_carbon``."""
    return packed_carbon_at(model, packed, load_qps, ci_g_per_kwh)


@dataclass(frozen=True)
class RightSized:
    """The right-sizing pass's choice for one level."""

    plan: PackingPlan
    capacity: float
    """Socket capacity it was packed at (sockets)."""
    base: Placement
    """The placement it was packed from (before the repair)."""
    carbon_g_per_h: float
    """Carbon rate at the level's load and intensity (gCO2e/h)."""
    tried: int
    """Packings tried (candidate placements x capacities)."""


def rightsize(model: AppModel, load_qps: float, slo_ms: float, bases: Sequence[Placement],
              ci_g_per_kwh: float, capacities: Sequence[float] = SOCKET_CAPACITIES,
              max_rounds: int = PASS_REPAIR_ROUNDS) -> RightSized | None:
    """The least-carbon right-sized packing at front-end load ``load_qps`` (req/s) that keeps
    ``slo_ms`` (ms) under the co-location model: every placement of ``bases`` packed at every
    socket capacity of ``capacities`` and repaired (``pack_for_slo``), scored at the load and
    ``ci_g_per_kwh``. None when no packing keeps the SLO (the fallback of one socket per
    replica is not a right-sizing). Ties keep the earlier base and capacity."""
    best: RightSized | None = None
    tried = 0
    for base in dict.fromkeys(bases):
        for capacity in capacities:
            tried += 1
            plan = pack_for_slo(model, base, load_qps, slo_ms, capacity, max_rounds)
            if plan.fallback or not plan.p99_ms <= slo_ms:
                continue
            grams = packed_rate_g_per_h(model, plan.packed, load_qps, ci_g_per_kwh)
            if best is None or grams < best.carbon_g_per_h - 1e-9:
                best = RightSized(plan, capacity, base, grams, 0)
    if best is None:
        return None
    return RightSized(best.plan, best.capacity, best.base, best.carbon_g_per_h, tried)


def pack_by_sensitivity(model: AppModel, placement: Placement, load_qps: float, slo_ms: float,
                        ci_g_per_kwh: float, capacity: float = TARGET_SOCKET_UTILISATION,
                        probes: int = LARGE_APP_PROBES, start_fraction: float = 0.5,
                        ) -> tuple[RightSized | None, float]:
    """The right-sizing pass for large apps, in ``probes`` packings: services are ranked by
    their co-location sensitivity (the rise of their own p99 on a socket the others fill to
    ``capacity``), the least sensitive k are packed (first-fit decreasing at ``capacity``)
    and the others keep sockets of their own; k is searched for the largest that keeps
    ``slo_ms`` (ms) at ``load_qps`` (req/s): the first probe at ``start_fraction`` of the
    services (the level below's), then halfway up after a hit, a quarter of the way down
    after a miss. Like the papers' pruner, but for
    sharing a socket rather than for old servers. Returns the best packing (None when no
    probe with a packed service keeps the SLO) and its fraction of packed services."""
    services = list(placement)
    shares = replica_shares(model, placement, load_qps)
    rise: dict[str, float] = {}
    for service, placed in placement.items:
        curve = model.profile.curve(service, placed.generation)
        own = model.visits[service] * load_qps / placed.replicas
        others = max(capacity - curve.util_at(own), 0.0)
        rise[service] = (curve.p99_at(own + others * curve.saturation_qps)
                         - curve.p99_at(own))
    order = sorted(services, key=lambda name: rise[name])
    best: tuple[int, PackedPlacement, float] | None = None
    low, high = 0, len(order) + 1      # k = low keeps the SLO (none packed); high does not
    k = max(1, min(len(order), round(start_fraction * len(order))))
    for _ in range(probes):
        packed = pack(placement, shares, capacity, frozenset(order[k:]))
        p99 = packed_e2e_p99_at(model, packed, load_qps)
        if p99 <= slo_ms:
            low = k
            best = (k, packed, p99)
            k = (low + high) // 2 if high <= len(order) else min(len(order), 2 * k)
        else:
            high = k
            k = low + max((high - low) // 4, 1)   # a miss: try well below it
        if high - low <= 1:
            break
    if best is None:
        return None, 0.0
    k, packed, p99 = best
    dedicated = tuple(sorted(order[k:]))
    plan = PackingPlan(packed, p99, dedicated)
    grams = packed_rate_g_per_h(model, packed, load_qps, ci_g_per_kwh)
    return RightSized(plan, capacity, placement, grams, probes), k / max(len(order), 1)


def packed_capacity_qps(model: AppModel, packed: PackedPlacement, slo_ms: float,
                        from_qps: float, bisections: int = CAPACITY_BISECTIONS,
                        below_qps: float | None = None) -> float:
    """Highest front-end load (req/s) at which ``packed`` (its shares and sockets fixed)
    keeps the p99 within ``slo_ms`` (ms) under the co-location model, searched by bisection
    from ``from_qps`` up to the saturation of the same placement on dedicated sockets (an
    upper bound: sharing only adds latency); ``from_qps`` when the SLO misses there. With
    ``below_qps`` (a known upper bound, e.g. the capacity on dedicated slots) one
    vectorised evaluation on 2^``bisections`` + 1 loads between the two, rounded down."""
    limit = slo_ms * (1 + 1e-9)
    if not packed_e2e_p99_at(model, packed, from_qps) <= limit:
        return float(from_qps)
    if below_qps is not None and math.isfinite(below_qps) and below_qps > from_qps:
        grid = np.linspace(from_qps, below_qps, 2 ** bisections + 1)
        held = packed_e2e_p99(model, packed, grid) <= limit
        last = int(np.argmin(held)) - 1 if not held.all() else len(grid) - 1
        return float(grid[max(last, 0)])
    high = model.saturation_qps(packed)
    if not math.isfinite(high):
        high = max(from_qps, 1.0) * 1e3
    if packed_e2e_p99_at(model, packed, high) <= limit:
        return float(high)
    low = float(from_qps)
    grid = np.linspace(low, high, 65)
    held = packed_e2e_p99(model, packed, grid) <= limit
    last = int(np.argmin(held)) - 1
    low, high = float(grid[max(last, 0)]), float(grid[last + 1])
    for _ in range(bisections):
        middle = 0.5 * (low + high)
        if packed_e2e_p99_at(model, packed, middle) <= limit:
            low = middle
        else:
            high = middle
    return low
