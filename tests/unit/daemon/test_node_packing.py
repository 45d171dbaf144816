"""daemon/packing.py: the CPU budget of each replica and the node plan of a packing (pure)."""

from dataclasses import replace

import pytest

from ecoscale.daemon.packing import (
    DEDICATED_SHARE,
    Sizing,
    missing_slot_cpus,
    plan_nodes,
    replica_cpus,
    sizing,
)
from ecoscale.model.packing import PackedPlacement, Socket
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.planner.table import TableLevel
from ecoscale.ports import ACTIVE, DRAIN, PAUSE, NodeState
from ecoscale.testing import TOY_LOW, toy_table

OLD1, OLD2, NEW1 = ServicePlacement("old", 1), ServicePlacement("old", 2), \
    ServicePlacement("new", 1)
SLOT_CPUS = {"new": 4.0, "old": 2.0}


def packed(items, shares, sockets):
    """A PackedPlacement from (service, placement) items, shares and socket lists."""
    share = dict(shares)
    return PackedPlacement(
        tuple(items), shares=tuple((s, share[s]) for s, _ in items),
        sockets=tuple(Socket(dict(items)[names[0]].generation,
                             tuple((n, share[n]) for n in names)) for names in sockets))


LOW_PACKED = packed((("a", OLD1), ("b", OLD1), ("c", OLD1)),
                    {"a": 0.3, "b": 0.2, "c": 0.1}, [["a", "b", "c"]])
MID_PACKED = packed((("a", OLD2), ("b", OLD1), ("c", OLD1)),
                    {"a": 0.4, "b": 0.4, "c": 0.1}, [["a", "b"], ["a", "c"]])
HIGH_PACKED = packed((("a", NEW1), ("b", OLD2), ("c", OLD1)),
                     {"a": 0.5, "b": 0.3, "c": 0.1}, [["a"], ["b", "c"], ["b"]])


def sized_table(*placements):
    levels = [(100.0 * (i + 1), p) for i, p in enumerate(placements)]
    table = toy_table(levels)
    return replace(table, levels=tuple(replace(level, socket_capacity=0.9)
                                       for level in table.levels))


RIGHT_SIZED = sized_table(LOW_PACKED, MID_PACKED, HIGH_PACKED)


def test_a_replicas_budget_is_its_share_of_a_slot_to_the_millicore():
    assert replica_cpus(0.3, 2.0) == 0.6
    assert replica_cpus(0.12345, 1.0) == 0.123
    assert replica_cpus(DEDICATED_SHARE, 16.0) == 16.0


def test_the_levels_packing_gives_every_service_its_share_and_the_sockets():
    current = Placement(LOW_PACKED.items)
    got = sizing(Placement(MID_PACKED.items), current, RIGHT_SIZED, 1, SLOT_CPUS)
    assert got.replica_cpus == {"a": 0.8, "b": 0.8, "c": 0.2}   # shares x 2 cores
    assert got.sockets == {"old": 2}
    assert got.packing == "level 2"
    top = sizing(Placement(HIGH_PACKED.items), current, RIGHT_SIZED, 2, SLOT_CPUS)
    assert top.replica_cpus == {"a": 2.0, "b": 0.6, "c": 0.2}   # a: 0.5 of a 4-core slot
    assert top.sockets == {"new": 1, "old": 2}


def test_a_decision_that_is_a_packing_is_applied_as_it_is():
    decided = packed((("a", NEW1), ("b", OLD1), ("c", OLD1)),
                     {"a": 0.25, "b": 0.5, "c": 0.5}, [["a"], ["b"], ["c"]])
    got = sizing(decided, Placement(LOW_PACKED.items), RIGHT_SIZED, 0, SLOT_CPUS)
    assert got.replica_cpus == {"a": 1.0, "b": 1.0, "c": 1.0}
    assert got.sockets == {"new": 1, "old": 2}


@pytest.mark.parametrize("decided, current, expected", [
    # an escalation: a held on new, which the level does not say: one whole slot; b and c
    # as the level packs them, but no packing (sockets None)
    pytest.param((("a", NEW1), ("b", OLD1), ("c", OLD1)), LOW_PACKED.items,
                 {"a": 4.0, "b": 0.4, "c": 0.2}, id="escalation"),
    # a cooldown holds a at 2 old replicas (from the level above): its budget stays
    pytest.param((("a", OLD2), ("b", OLD1), ("c", OLD1)), MID_PACKED.items,
                 {"b": 0.4, "c": 0.2}, id="held-by-cooldown"),
])
def test_a_placement_outside_the_packing_sets_no_sockets(decided, current, expected):
    got = sizing(Placement(decided), Placement(current), RIGHT_SIZED, 0, SLOT_CPUS)
    assert got.replica_cpus == expected
    assert got.sockets is None


def test_a_table_of_dedicated_slots_sets_no_budget_and_no_sockets():
    got = sizing(TOY_LOW, TOY_LOW, toy_table(), 0, SLOT_CPUS)
    assert got == Sizing()
    assert missing_slot_cpus(toy_table(), {}) == []


def test_every_generation_of_a_right_sized_table_needs_slot_cpus():
    assert missing_slot_cpus(RIGHT_SIZED, {"old": 1.0}) == ["new"]
    assert missing_slot_cpus(RIGHT_SIZED, SLOT_CPUS) == []
    # a right-sized table with a dedicated level: that level's generations too
    mixed = replace(RIGHT_SIZED, levels=RIGHT_SIZED.levels[:1] + (
        TableLevel(300.0, float("inf"), Placement(HIGH_PACKED.items), {}, 5.0, 1.0, True),))
    assert missing_slot_cpus(mixed, {"old": 1.0}) == ["new"]


# ---- the node plan --------------------------------------------------------------------
def node(name, availability=ACTIVE, emptied=False, ready=True, others=(), **tasks):
    generation = name.split("-")[0]
    return NodeState(f"id-{name}", name, generation, ready, availability, emptied,
                     dict(tasks), tuple(others))


def changes(plan):
    return ([(c.node.name, c.availability) for c in plan.before_moves],
            [(c.node.name, c.availability) for c in plan.after_moves])


MOVABLE = ("a", "b", "c")
ONE_OLD = Sizing({}, {"old": 1}, "level 1")
TWO_OLD = Sizing({}, {"old": 2}, "level 2")


@pytest.mark.parametrize("nodes, sized, before, after, vacate", [
    pytest.param([node("old-1", a=1, c=1), node("old-2", b=1)], ONE_OLD,
                 [("old-2", PAUSE)], [], {"b": ("old-2",)},
                 id="keep-the-busier-node-pause-the-other-and-move-its-tasks"),
    pytest.param([node("old-1", a=1, b=1, c=1), node("old-2")], ONE_OLD,
                 [("old-2", PAUSE)], [("old-2", DRAIN)], {},
                 id="an-empty-node-is-paused-then-drained-at-once"),
    pytest.param([node("old-1", a=1, b=1, c=1), node("old-2", PAUSE, emptied=True)], ONE_OLD,
                 [], [("old-2", DRAIN)], {}, id="emptied-then-drained"),
    pytest.param([node("old-1", a=1), node("old-2", PAUSE, emptied=True, b=1)], ONE_OLD,
                 [], [], {"b": ("old-2",)}, id="paused-with-tasks-left-waits-for-them"),
    pytest.param([node("old-1", a=1, b=1), node("old-2", DRAIN, emptied=True)], TWO_OLD,
                 [("old-2", ACTIVE)], [], {}, id="a-level-of-two-sockets-reactivates"),
    pytest.param([node("old-1", a=1), node("old-2", DRAIN, emptied=True)], Sizing(),
                 [("old-2", ACTIVE)], [], {}, id="not-a-packing-every-node-active"),
    pytest.param([node("old-1", a=1), node("old-2", DRAIN)], TWO_OLD,
                 [], [], {}, id="an-operators-drained-node-is-never-touched"),
    pytest.param([node("old-1", a=1), node("old-2", others=("monitoring",), b=1)], ONE_OLD,
                 [("old-1", PAUSE)], [], {"a": ("old-1",)},
                 id="a-node-running-unmanaged-tasks-stays-the-other-is-emptied"),
    pytest.param([node("old-1", d=1), node("old-2", b=1)], ONE_OLD,
                 [("old-2", PAUSE)], [], {"b": ("old-2",)},
                 id="tasks-of-a-service-it-does-not-move-keep-their-node"),
    pytest.param([node("old-1", a=1), node("old-2", ready=False, b=1)], ONE_OLD,
                 [], [], {}, id="a-node-that-is-down-is-left-alone"),
    pytest.param([node("old-1", a=1), node("new-1")], ONE_OLD,
                 [("new-1", PAUSE)], [("new-1", DRAIN)], {},
                 id="a-generation-without-sockets-is-emptied"),
    pytest.param([node("old-1", a=1), node("gpu-1", DRAIN, emptied=True)], ONE_OLD,
                 [("gpu-1", ACTIVE)], [], {},
                 id="a-generation-the-table-does-not-know-is-made-active"),
])
def test_plan_nodes(nodes, sized, before, after, vacate):
    plan = plan_nodes(nodes, sized, ("new", "old"), MOVABLE)
    assert changes(plan) == (before, after)
    assert dict(plan.vacate) == vacate


def test_the_plan_says_what_it_cannot_do_and_why():
    short = plan_nodes([node("old-1", a=1), node("old-2", DRAIN)], TWO_OLD, ("old",), MOVABLE)
    assert short.active == {"old": 1}
    assert short.notes == ("level 2 packs old onto 2 sockets, but only 1 old node can run "
                           "tasks: all active",)
    busy = plan_nodes([node("old-1", others=("monitoring",)), node("old-2", d=1)], ONE_OLD,
                      ("old",), MOVABLE)
    assert busy.active == {"old": 2} and changes(busy) == ([], [])
    assert busy.notes == ("level 1 packs old onto 1 socket, but old-1, old-2 stay active: "
                          "tasks of services ecoscale does not move run there (d, "
                          "monitoring)",)


def test_every_change_says_why():
    plan = plan_nodes([node("old-1", a=1, c=1), node("old-2", b=1),
                       node("new-1", DRAIN, emptied=True)],
                      Sizing({}, {"old": 1, "new": 1}, "level 3"), ("new", "old"), MOVABLE)
    reasons = {c.node.name: (c.change, c.reason) for c in plan.before_moves}
    assert reasons["new-1"] == ("drain -> active",
                                "level 3 packs new onto 1 socket: 1 of 1 active")
    assert reasons["old-2"] == ("active -> pause", "level 3 packs old onto 1 socket: "
                                "emptying old-2 (no new tasks; its tasks move start-first)")


def test_a_budget_below_the_orchestrators_floor_is_asked_as_the_floor():
    # Docker writes a smaller budget as 0.01 CPU: asking for less would read back as a
    # different budget at every loop
    from ecoscale.ports import MIN_TASK_CPUS

    assert replica_cpus(0.004, 1.0) == MIN_TASK_CPUS == 0.01
    assert replica_cpus(0.02, 1.0) == 0.02
