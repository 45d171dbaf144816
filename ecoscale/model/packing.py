"""Right-sized placements: each replica holds a share of a socket, and replicas share sockets.

A ``PackedPlacement`` is a ``Placement`` (service -> generation and replica count) that also
says how large each replica is and which replicas share a socket:

- a replica's **share** is the fraction of one socket of its generation it reserves (0..1;
  the Swarm CPU reservation, VPA-style sized from its utilisation); shares decide the packing;
- a **socket** is one slot of ``model.carbon`` (one CPU socket of a server: what one replica
  occupied in the papers) holding one or more replicas of one generation.

Carbon per socket in use: its embodied share and idle power once, plus dynamic power at the
sum of its replicas' utilisation (power curve of the slot at the socket's total utilisation:
``model.carbon.carbon_of_slot_hours_g``, the same function as for a dedicated slot). Sockets with
nothing on them cost nothing: the rest of the server serves other tenants (the accounting of
the papers' all-new, which charges only occupied slots), so a packing charges what it holds.

Latency: every replica's p99 comes from the co-location model (``model.colocation``) at the
utilisation the other replicas of its socket add; a service's p99 is its slowest replica's
(conservative: load is split evenly over replicas). A replica alone on its socket has its
curve's p99, so a placement with one replica per socket scores as ``AppModel`` scores it.

Pure and vectorised over time steps.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from ecoscale.model.app import AppModel, CarbonBreakdown
from ecoscale.model.carbon import carbon_of_slot_hours_g
from ecoscale.model.colocation import shared_p99, shared_p99_at
from ecoscale.model.latency import LatencyCurve
from ecoscale.model.placement import Placement, ServicePlacement

FIT_TOLERANCE = 1e-9
"""Shares that overshoot a socket's capacity by less than this still fit (float sums)."""
SHARE_TOLERANCE = 1e-6
"""Shares closer than this (sockets) are one reservation: the table file keeps 6 decimals,
and a reservation read back from a cluster rounds to the cluster's own CPU units."""

K = TypeVar("K", bound=Hashable)


def first_fit_decreasing(
    sizes: Sequence[tuple[K, float]], capacity: float, apart: bool = True
) -> list[list[tuple[K, float]]]:
    """Bins of (key, size) items, largest items first, each into the first bin it fits in
    (bin total <= ``capacity``); an item larger than ``capacity`` gets a bin of its own.
    With ``apart``, items with equal keys (replicas of one service) never share a bin: the
    spread both Swarm and Kubernetes' default topology spread give a service's replicas.
    Ties keep the input order, so the result is deterministic.

    Above SCAN_ITEMS items, O(n log n): a max-tree over the bins' free room finds the first
    bin with room (the exact test, total + size <= capacity + FIT_TOLERANCE, is made on that
    bin, and the search goes on past it when it fails or holds the key), so 10,000 replicas
    pack in well under a second; the result is that of the plain first-fit scan."""
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i][1])
    if len(sizes) <= SCAN_ITEMS:
        return _first_fit_scan(sizes, order, capacity, apart)
    width = 1 << max(len(sizes) - 1, 0).bit_length()
    room = [math.inf] * (2 * width)      # free room per bin; unopened bins: unbounded
    limit = capacity + FIT_TOLERANCE
    bins: list[list[tuple[K, float]]] = []
    totals: list[float] = []
    keys: list[set[K]] = []

    def first_with_room(start: int, need: float) -> int:
        def walk(node: int, low: int, high: int) -> int:
            if high <= start or room[node] < need:
                return -1
            if high - low == 1:
                return low
            middle = (low + high) // 2
            found = walk(2 * node, low, middle)
            return found if found >= 0 else walk(2 * node + 1, middle, high)
        return walk(1, 0, width)

    def set_room(b: int, value: float) -> None:
        node = width + b
        room[node] = value
        node //= 2
        while node:
            room[node] = max(room[2 * node], room[2 * node + 1])
            node //= 2

    for i in order:
        key, size = sizes[i]
        start = 0
        while True:
            b = first_with_room(start, size - 1e-12)
            if b >= len(bins):
                bins.append([(key, size)])
                totals.append(size)
                keys.append({key})
                set_room(len(bins) - 1, limit - size)
                break
            if totals[b] + size <= limit and not (apart and key in keys[b]):
                bins[b].append((key, size))
                totals[b] += size
                keys[b].add(key)
                set_room(b, limit - totals[b])
                break
            start = b + 1
    return bins


SCAN_ITEMS = 256
"""Up to this many items ``first_fit_decreasing`` scans the bins in order (faster than its
tree for an app's few dozen replicas; the same bins)."""


def _first_fit_scan(sizes: Sequence[tuple[K, float]], order: Sequence[int], capacity: float,
                    apart: bool) -> list[list[tuple[K, float]]]:
    """``first_fit_decreasing`` by scanning every open bin for each item, in ``order``."""
    bins: list[list[tuple[K, float]]] = []
    totals: list[float] = []
    keys: list[set[K]] = []
    for i in order:
        key, size = sizes[i]
        for b, total in enumerate(totals):
            if total + size <= capacity + FIT_TOLERANCE and not (apart and key in keys[b]):
                bins[b].append((key, size))
                totals[b] = total + size
                keys[b].add(key)
                break
        else:
            bins.append([(key, size)])
            totals.append(size)
            keys.append({key})
    return bins


@dataclass(frozen=True, order=True)
class Socket:
    """One socket (slot) of ``generation`` and the replicas on it: (service, share) pairs,
    one per replica, share in sockets (0..1)."""

    generation: str
    replicas: tuple[tuple[str, float], ...]

    @property
    def reserved(self) -> float:
        """Sum of the shares on this socket (sockets)."""
        return sum(share for _, share in self.replicas)


@dataclass(frozen=True, eq=False)
class PackedPlacement(Placement):
    """A Placement whose replicas have shares and share sockets (see the module doc)."""

    sockets: tuple[Socket, ...] = ()
    shares: tuple[tuple[str, float], ...] = ()
    """service -> share of one replica (sockets), in topology order."""

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "_hash", hash((self.items, self.sockets)))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Placement):
            return NotImplemented
        return (self._hash == other._hash and self.items == other.items
                and self.sockets == getattr(other, "sockets", None))

    def share(self, service: str) -> float:
        """The share of one replica of ``service`` (sockets)."""
        index = self.__dict__.get("_share_index")
        if index is None:
            index = dict(self.shares)
            object.__setattr__(self, "_share_index", index)
        return index[service]

    def slots(self) -> dict[str, int]:
        """Sockets in use per generation (a right-sized replica does not fill a slot)."""
        out: dict[str, int] = {}
        for socket in self.sockets:
            out[socket.generation] = out.get(socket.generation, 0) + 1
        return out

    def changes(self, other: Placement) -> list[tuple[str, ServicePlacement, ServicePlacement]]:
        """(service, from, to) for every service placed or sized differently in ``other``:
        a new share is a service update too (its reservation changes). The last answer is
        kept: a decision asks twice (what grows, what moves)."""
        if self == other:
            return []
        last = self.__dict__.get("_last_changes")
        if last is not None and last[0] is other:
            return list(last[1])
        mine = dict(self.shares)
        theirs = dict(getattr(other, "shares", ()))
        found = [(name, placed, other[name]) for name, placed in self.items
                 if other.get(name) is not None
                 and (other[name] != placed or _resized(mine.get(name), theirs.get(name)))]
        object.__setattr__(self, "_last_changes", (other, tuple(found)))
        return found

    def describe(self) -> str:
        """Compact text, e.g. 'new: 26 services/31 replicas on 9 sockets'."""
        services: dict[str, int] = {}
        replicas: dict[str, int] = {}
        for _, placed in self.items:
            services[placed.generation] = services.get(placed.generation, 0) + 1
            replicas[placed.generation] = replicas.get(placed.generation, 0) + placed.replicas
        sockets = self.slots()
        return "; ".join(f"{g}: {services[g]} services/{replicas[g]} replicas on "
                         f"{sockets.get(g, 0)} sockets" for g in sorted(services))


def pack(
    placement: Placement, shares: Mapping[str, float], capacity: float,
    dedicated: frozenset[str] = frozenset(),
) -> PackedPlacement:
    """``placement`` with each replica of service s holding ``shares[s]`` (sockets), packed
    first-fit decreasing per generation onto sockets of ``capacity`` (sockets, 0..1).
    Replicas of one service go to different sockets; a replica of a ``dedicated`` service
    has a socket of its own."""
    sockets: list[Socket] = []
    generations = sorted({placed.generation for _, placed in placement.items})
    for generation in generations:
        groups: list[list[tuple[str, float]]] = [[]]
        for service, placed in placement.items:
            if placed.generation != generation:
                continue
            replicas = [(service, float(shares[service]))] * placed.replicas
            if service in dedicated:
                groups.extend([replica] for replica in replicas)
            else:
                groups[0].extend(replicas)
        for group in groups:
            for bin_ in first_fit_decreasing(group, capacity):
                sockets.append(Socket(generation, tuple(bin_)))
    return PackedPlacement(placement.items, sockets=tuple(sockets),
                           shares=tuple((s, float(shares[s])) for s, _ in placement.items))


def one_per_socket(placement: Placement, shares: Mapping[str, float]) -> PackedPlacement:
    """``placement`` with every replica on a socket of its own (the papers' slots)."""
    sockets = tuple(Socket(placed.generation, ((service, float(shares[service])),))
                    for service, placed in placement.items for _ in range(placed.replicas))
    return PackedPlacement(placement.items, sockets=sockets,
                           shares=tuple((s, float(shares[s])) for s, _ in placement.items))


def _resized(share: float | None, other: float | None) -> bool:
    """True when two shares (sockets; None: no share) are different reservations."""
    if share is None or other is None:
        return share is not other
    return abs(share - other) > SHARE_TOLERANCE


WHOLE_SOCKET = 1.0
"""The share of a replica of a plain placement: a dedicated slot is a whole socket."""


def as_packed(placement: Placement) -> PackedPlacement:
    """``placement`` as a right-sized one: a PackedPlacement as it is, a plain one with every
    replica alone on a socket it holds whole (WHOLE_SOCKET: the papers' slots)."""
    if isinstance(placement, PackedPlacement):
        return placement
    return one_per_socket(placement, dict.fromkeys(placement, WHOLE_SOCKET))


def share_of(placement: Placement, service: str) -> float:
    """The share of one replica of ``service`` (sockets): its share in a right-sized
    placement, WHOLE_SOCKET in a plain one."""
    if isinstance(placement, PackedPlacement):
        return placement.share(service)
    return WHOLE_SOCKET


def merged(base: Placement, other: Placement, take: Collection[str]) -> PackedPlacement:
    """``base`` with the services of ``take`` as ``other`` runs them (generation, replicas,
    share), every replica staying on the socket its placement gives it: the sockets of
    ``base`` without the replicas of ``take``, then the sockets of ``other`` with only
    those (sockets left empty are dropped). Services in the order of ``base``; plain
    placements count as ``as_packed`` makes them. What runs while only some services of a
    move have moved (the rest held back), and an escalation's services on a right-sized
    level."""
    base, other = as_packed(base), as_packed(other)
    taken = {s for s in take if s in base._index and s in other._index}
    items = tuple((s, other[s] if s in taken else placed) for s, placed in base.items)
    shares = tuple((s, other.share(s) if s in taken else base.share(s)) for s, _ in base.items)
    sockets = [Socket(socket.generation, kept) for socket in base.sockets
               if (kept := tuple(r for r in socket.replicas if r[0] not in taken))]
    sockets += [Socket(socket.generation, moved) for socket in other.sockets
                if (moved := tuple(r for r in socket.replicas if r[0] in taken))]
    return PackedPlacement(items, sockets=tuple(sockets), shares=shares)


# ---- latency and carbon of a packed placement -------------------------------------------

def replica_utilisation(
    model: AppModel, placement: Placement, frontend_qps: np.ndarray | float
) -> dict[str, np.ndarray]:
    """Socket utilisation (0..1) one replica of each service adds, at front-end load
    ``frontend_qps`` (req/s): its curve's utilisation at its per-replica load."""
    return model.utilisation(placement, frontend_qps)


def socket_utilisation(
    model: AppModel, packed: PackedPlacement, frontend_qps: np.ndarray | float
) -> list[np.ndarray]:
    """Total utilisation (0..1 and beyond when overloaded) of each socket of ``packed``."""
    util = replica_utilisation(model, packed, frontend_qps)
    zero = np.zeros_like(np.asarray(frontend_qps, dtype=float))
    return [sum((util[service] for service, _ in socket.replicas), zero)
            for socket in packed.sockets]


def packed_service_p99(
    model: AppModel, packed: PackedPlacement, frontend_qps: np.ndarray | float
) -> dict[str, np.ndarray]:
    """p99 (ms) of each service: its slowest replica's under the co-location model."""
    qps = np.asarray(frontend_qps, dtype=float)
    util = replica_utilisation(model, packed, qps)
    totals = socket_utilisation(model, packed, qps)
    out: dict[str, np.ndarray] = {}
    for socket, total in zip(packed.sockets, totals, strict=True):
        for service in {name for name, _ in socket.replicas}:
            placed = packed[service]
            curve = model.profile.curve(service, placed.generation)
            per_replica = model.service_load(service, qps) / placed.replicas
            p99 = shared_p99(curve, per_replica, total - util[service])
            out[service] = p99 if service not in out else np.maximum(out[service], p99)
    return out


def packed_e2e_p99(
    model: AppModel, packed: PackedPlacement, frontend_qps: np.ndarray | float
) -> np.ndarray:
    """End-to-end p99 of the request mix (ms) of ``packed`` at each load."""
    model.evaluations += 1
    return model.e2e.mix_p99(packed_service_p99(model, packed, frontend_qps))


def shared_replica_p99s_at(model: AppModel, packed: PackedPlacement, frontend_qps: float
                           ) -> Iterator[tuple[str, LatencyCurve, float, float]]:
    """Per socket and service on it, at one front-end load: (service, its curve, load per
    replica req/s, p99 ms under the co-location model), without numpy overhead."""
    util: dict[str, float] = {}
    per_replica: dict[str, float] = {}
    for service, placed in packed.items:
        per_replica[service] = model.visits[service] * frontend_qps / placed.replicas
        util[service] = model.profile.curve(service, placed.generation).util_at(
            per_replica[service])
    for socket in packed.sockets:
        total = sum(util[name] for name, _ in socket.replicas)
        for service in {name for name, _ in socket.replicas}:
            curve = model.profile.curve(service, packed[service].generation)
            yield (service, curve, per_replica[service],
                   shared_p99_at(curve, per_replica[service], total - util[service]))


def packed_e2e_p99_at(model: AppModel, packed: PackedPlacement, frontend_qps: float) -> float:
    """``packed_e2e_p99`` at one load (ms), without numpy overhead (the planners' loop)."""
    service_p99: dict[str, float] = {}
    for service, _, _, p99 in shared_replica_p99s_at(model, packed, frontend_qps):
        service_p99[service] = max(service_p99.get(service, 0.0), p99)
    model.evaluations += 1
    return float(model.e2e.mix_p99(service_p99))  # type: ignore[arg-type]


def packed_carbon_at(model: AppModel, packed: PackedPlacement, frontend_qps: float,
                     ci_g_per_kwh: float, step_h: float = 1.0) -> float:
    """``packed_carbon`` in total (gCO2e per step of ``step_h`` hours, default: a rate in
    gCO2e/h) at one load, without numpy overhead (the planners' loop)."""
    util: dict[str, float] = {}
    for service, placed in packed.items:
        per_replica = model.visits[service] * frontend_qps / placed.replicas
        util[service] = model.profile.curve(service, placed.generation).util_at(per_replica)
    total = 0.0
    pue = model.hardware.pue
    for socket in packed.sockets:
        gen = model.hardware.generation(socket.generation)
        used = sum(util[name] for name, _ in socket.replicas)
        embodied, operational = carbon_of_slot_hours_g(gen, step_h, used, ci_g_per_kwh, pue)
        total += float(embodied) + float(operational)
    return total


def packed_carbon(
    model: AppModel, packed: PackedPlacement, frontend_qps: np.ndarray, ci_g_per_kwh: np.ndarray,
    step_h: float,
) -> CarbonBreakdown:
    """Carbon (gCO2e per step of ``step_h`` hours) of ``packed``: per socket in use, its
    embodied share once and its power at the socket's total utilisation."""
    qps = np.asarray(frontend_qps, dtype=float)
    ci = np.asarray(ci_g_per_kwh, dtype=float)
    embodied = np.zeros_like(qps)
    operational = np.zeros_like(qps)
    by_generation: dict[str, np.ndarray] = {}
    pue = model.hardware.pue
    for socket, total in zip(packed.sockets, socket_utilisation(model, packed, qps),
                             strict=True):
        gen = model.hardware.generation(socket.generation)
        emb_g, op = carbon_of_slot_hours_g(gen, step_h, total, ci, pue)
        emb = np.full_like(qps, emb_g)
        embodied += emb
        operational += op
        by_generation[socket.generation] = by_generation.get(socket.generation, 0.0) + emb + op
    return CarbonBreakdown(embodied, operational, by_generation)


def evaluate_packed_sequence(
    model: AppModel, placements: Sequence[Placement], frontend_qps: np.ndarray,
    ci_g_per_kwh: np.ndarray, step_h: float,
) -> tuple[np.ndarray, CarbonBreakdown]:
    """p99 (ms) and carbon per step when step i runs ``placements[i]``, packed ones under
    the co-location model and plain ones as ``AppModel.evaluate_sequence`` scores them;
    grouped by placement, vectorised over each one's steps."""
    def score(placement: Placement, qps: np.ndarray, ci: np.ndarray, step_h: float
              ) -> tuple[np.ndarray, CarbonBreakdown]:
        if isinstance(placement, PackedPlacement):
            return (packed_e2e_p99(model, placement, qps),
                    packed_carbon(model, placement, qps, ci, step_h))
        return model.e2e_p99(placement, qps), model.carbon(placement, qps, ci, step_h)

    return model.evaluate_sequence(placements, frontend_qps, ci_g_per_kwh, step_h, score)
