"""What the daemon applies beside generation and replicas: each replica's CPU budget and the
nodes of each generation in use (pure; ``loop.py`` acts on it).

**CPU budget** (``sizing``). A right-sized level (``planner.table``: a ``PackedPlacement``)
gives each service a share of one slot (one socket) of its generation; each of its tasks
then runs with a CPU reservation and limit of ``share x slot_cpus[generation]`` cores
(``replica_cpus``; the daemon config's ``slot_cpus``). A placement that is not the level's
packing (an escalation, a move held by its cooldown, the node-loss fallback) gives a service
that moves there one whole slot per replica, as a table without shares means; a service it
leaves where it is keeps its budget. A table without any right-sized level sets no budget:
the spec's resources stay the user's.

**Nodes** (``plan_nodes``). One Swarm node is one socket of its generation (on a real
server of several sockets, label and count each node as what it is: the packing counts
nodes). A packing with n sockets of a generation keeps n of its nodes active and empties the
rest, never dropping capacity: a node it needs is made active before the services move; a
node to empty is first paused (no new task lands there), its tasks are moved off by the
services' start-first updates (forced where nothing else changes), and it is drained once
no task is left on it. A placement that is not a packing keeps every node active.

What ecoscale never does to a node: touch one an operator paused or drained (it makes
active only nodes it emptied itself, marked with the ``emptied`` label), empty one that runs
tasks of a replicated service it does not move (unmanaged, paused, outside the table: those
stay active, and the plan says why), or touch a node that is not ready or carries a
generation the table does not place on (emptied ones of such a generation are made active).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from ecoscale.model.packing import PackedPlacement, pack
from ecoscale.model.placement import Placement
from ecoscale.planner.rightsize import TARGET_SOCKET_UTILISATION
from ecoscale.planner.table import PolicyTable, TableLevel
from ecoscale.ports import ACTIVE, DRAIN, MIN_TASK_CPUS, PAUSE, ManagedService, NodeState

DEDICATED_SHARE = 1.0
"""The share of a replica placed outside a right-sized level's packing: one whole slot."""


def replica_cpus(share: float, slot_cpus: float) -> float:
    """CPUs (cores) of one replica holding ``share`` (0..1) of a slot of ``slot_cpus`` cores,
    to the millicore and at least the orchestrator's floor (``ports.MIN_TASK_CPUS``: what it
    would write anyway, so that a budget read back equals the one asked for)."""
    return max(round(share * slot_cpus, 3), MIN_TASK_CPUS)


def right_sized(table: PolicyTable) -> bool:
    """Whether any level of ``table`` gives its replicas shares of a socket."""
    return any(level.right_sized for level in table.levels)


def missing_slot_cpus(table: PolicyTable, slot_cpus: Mapping[str, float]) -> list[str]:
    """The generations of a right-sized ``table`` without a ``slot_cpus`` entry (none for a
    table of dedicated slots, which sets no CPU budget)."""
    if not right_sized(table):
        return []
    used = {placed.generation for level in table.levels for _, placed in level.placement.items}
    return sorted(g for g in used if g not in slot_cpus)


def level_in_force(table: PolicyTable, level: int | None) -> TableLevel | None:
    """The table's level at index ``level`` (the decision state's), None without one (or
    past the table's levels, as after a reload)."""
    return table.levels[level] if level is not None and 0 <= level < len(table.levels) \
        else None


def running_packing(current: Placement, services: Mapping[str, ManagedService],
                    table: PolicyTable, level: int | None, slot_cpus: Mapping[str, float]
                    ) -> Placement:
    """What runs, as the decision compares it with a right-sized level: each service's share
    is its tasks' CPU reservation over ``slot_cpus`` of its generation (the level in force's
    own share where that gives the same budget, to the millicore), so that a share change is
    a move and the decision's shrink hold sees what runs. The level in force itself when
    everything runs as it says (its sockets too); else the shares packed first-fit at that
    level's socket capacity. ``current`` unchanged (plain: no share to compare) for a table
    without shares, or while any service runs without a reservation (a first start)."""
    if not right_sized(table):
        return current
    at = level_in_force(table, level)
    in_force = at.placement if at is not None and isinstance(at.placement, PackedPlacement) \
        else None
    shares: dict[str, float] = {}
    for service, placed in current.items:
        managed = services.get(service)
        slot = slot_cpus.get(placed.generation)
        if managed is None or managed.cpu_reservation is None or not slot:
            return current
        cpus = round(managed.cpu_reservation, 3)
        if in_force is not None and in_force.get(service) == placed and \
                replica_cpus(in_force.share(service), slot) == cpus:
            shares[service] = in_force.share(service)
        else:
            shares[service] = min(cpus / slot, 1.0)
    if in_force is not None and in_force.items == current.items and \
            all(shares[s] == in_force.share(s) for s in shares):
        return in_force
    capacity = at.socket_capacity if at is not None and math.isfinite(at.socket_capacity) \
        else TARGET_SOCKET_UTILISATION
    return pack(current, shares, capacity)


@dataclass(frozen=True)
class Sizing:
    """Beside generation and replicas, what a placement asks of the cluster."""

    replica_cpus: Mapping[str, float] = field(default_factory=dict)
    """Service -> the CPU budget (cores) of each of its replicas, for the services whose
    budget the placement sets; the others keep what they have."""
    sockets: Mapping[str, int] | None = None
    """Generation -> sockets (nodes) the placement is packed onto; None when it is not a
    packing (every node ecoscale emptied is made active again)."""
    packing: str = ""
    """Which packing, for reasons: 'level 3', '' when none."""


def sizing(placement: Placement, current: Placement, table: PolicyTable, level: int | None,
           slot_cpus: Mapping[str, float]) -> Sizing:
    """The budgets and sockets of ``placement`` (the decision; ``current``: what runs) when
    the table level in force is ``level`` (an index, None: none yet). ``placement`` is
    itself a packing when it is a ``PackedPlacement`` (a decision that keeps shares) or has
    the items of a right-sized level; else see the module doc."""
    if not right_sized(table):
        return Sizing()
    at = level_in_force(table, level)
    in_force = at.placement if at is not None else None
    packed = placement if isinstance(placement, PackedPlacement) else None
    name = "the decision's packing"
    if isinstance(in_force, PackedPlacement) and (
            packed == in_force or (packed is None and in_force.items == placement.items)):
        packed, name = in_force, f"level {level + 1}"   # type: ignore[operator]
    budgets: dict[str, float] = {}
    for service, placed in placement.items:
        if placed.generation not in slot_cpus:
            continue
        if packed is not None:
            share = packed.share(service)
        elif isinstance(in_force, PackedPlacement) and in_force.get(service) == placed:
            share = in_force.share(service)
        elif current.get(service) == placed:
            continue   # held where it runs: its budget stays
        else:
            share = DEDICATED_SHARE
        budgets[service] = replica_cpus(share, slot_cpus[placed.generation])
    if packed is None:
        return Sizing(budgets)
    return Sizing(budgets, packed.slots(), name)


@dataclass(frozen=True)
class NodeChange:
    """One node's availability to set, and why."""

    node: NodeState
    availability: str
    reason: str

    @property
    def change(self) -> str:
        return f"{self.node.availability} -> {self.availability}"


@dataclass(frozen=True)
class NodePlan:
    """The node changes of one decision, in the order they are made."""

    before_moves: tuple[NodeChange, ...] = ()
    """Nodes made active (before the services that need them move) and nodes paused (so
    that no moved task lands on a node being emptied)."""
    after_moves: tuple[NodeChange, ...] = ()
    """Paused nodes with no task left, drained."""
    vacate: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Service -> the nodes being emptied that still run its tasks (a forced start-first
    update moves them off)."""
    active: Mapping[str, int] = field(default_factory=dict)
    """Generation -> nodes the plan keeps active."""
    notes: tuple[str, ...] = ()
    """What the plan could not do as the packing asks (too few nodes, nodes kept busy)."""


AVAILABILITY_RANK = {ACTIVE: 0, PAUSE: 1, DRAIN: 2}
"""Which nodes to keep active first: those active now, then paused, then drained ones."""


def plan_nodes(nodes: Iterable[NodeState], sizing: Sizing, generations: Iterable[str],
               movable: Iterable[str]) -> NodePlan:
    """The node changes that make ``sizing.sockets`` nodes of each of ``generations`` (the
    table's) active and empty the others (the module doc); ``movable``: the services the
    daemon may update (managed, in the table, not paused)."""
    placed_on = set(generations)
    can_move = set(movable)
    by_generation: dict[str, list[NodeState]] = {}
    for node in nodes:
        if node.generation and node.usable:
            by_generation.setdefault(node.generation, []).append(node)
    before: list[NodeChange] = []
    after: list[NodeChange] = []
    vacate: dict[str, list[str]] = {}
    active: dict[str, int] = {}
    notes: list[str] = []
    why = sizing.packing
    for generation in sorted(by_generation):
        candidates = sorted(by_generation[generation], key=lambda n: n.name)
        packs = sizing.sockets is not None and generation in placed_on
        wanted = (sizing.sockets or {}).get(generation, 0) if packs else len(candidates)
        held = [n for n in candidates
                if n.other_tasks or any(s not in can_move for s in n.tasks)]
        rest = sorted((n for n in candidates if n not in held),
                      key=lambda n: (AVAILABILITY_RANK.get(n.availability, 3), -n.task_count,
                                     n.name))
        keep = held + rest[:max(0, wanted - len(held))]
        active[generation] = len(keep)
        if packs:
            sockets = f"{why} packs {generation} onto {wanted} socket{'s' * (wanted != 1)}"
        else:
            sockets = (f"{why or 'the placement in force'} is not a packing"
                       if generation in placed_on else
                       f"the table places nothing on {generation}") + ": every node active"
        if wanted > len(candidates):
            notes.append(f"{sockets}, but only {len(candidates)} {generation} node"
                         f"{'s' * (len(candidates) != 1)} can run tasks: all active")
        if len(held) > wanted:
            busy = sorted({t for n in held for t in (*n.other_tasks,
                                                     *(s for s in n.tasks if s not in can_move))})
            notes.append(f"{sockets}, but {', '.join(n.name for n in held)} stay"
                         f"{'s' * (len(held) == 1)} active: tasks of services ecoscale does "
                         f"not move run there ({', '.join(busy)})")
        for node in candidates:
            if node in keep:
                if node.availability != ACTIVE:
                    before.append(NodeChange(node, ACTIVE, f"{sockets}: {len(keep)} of "
                                                           f"{len(candidates)} active"))
                continue
            if node.availability == ACTIVE:
                before.append(NodeChange(node, PAUSE, f"{sockets}: emptying {node.name} (no "
                                                      "new tasks; its tasks move start-first)"))
                node = replace(node, availability=PAUSE)
            if node.tasks:
                for service in node.tasks:
                    vacate.setdefault(service, []).append(node.name)
            elif node.availability != DRAIN:
                after.append(NodeChange(node, DRAIN, f"{sockets}: {node.name} has no task "
                                                     "left"))
    return NodePlan(tuple(before), tuple(after),
                    {s: tuple(names) for s, names in sorted(vacate.items())}, active,
                    tuple(notes))
