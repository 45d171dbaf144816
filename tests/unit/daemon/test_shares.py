"""run_once() on a right-sized table: shares become CPU budgets, sockets become active nodes
(in-memory Swarm with nodes, fake clock)."""

import io
import json

from test_node_packing import HIGH_PACKED, LOW_PACKED, RIGHT_SIZED, SLOT_CPUS

from ecoscale.config import DaemonConfig
from ecoscale.control.decide import ControlSettings
from ecoscale.daemon.loop import Daemon
from ecoscale.daemon.telemetry import Log
from ecoscale.model.placement import Placement
from ecoscale.ports import ACTIVE, DRAIN, PAUSE
from ecoscale.testing import (
    TOY_LOW,
    TOY_TABLE,
    FakeClock,
    FixedCarbon,
    InMemoryMetrics,
    RecordingOrchestrator,
)

CONTROL = ControlSettings(slo_miss_periods=2, escalation_hold_s=600, cooldown_s=180,
                          no_data_fallback_periods=3)
LOW = Placement(LOW_PACKED.items)


def make(table=RIGHT_SIZED, start=LOW, nodes=None, qps=50.0, **config):
    settings = {"app": "toy", "table": "t.yaml", "interval_s": 60.0, "control": CONTROL,
                "slot_cpus": SLOT_CPUS, **config}
    swarm = RecordingOrchestrator.of(start, nodes=nodes or {"new": 1, "old": 2})
    stream = io.StringIO()
    daemon = Daemon(config=DaemonConfig(**settings), table=table, orchestrator=swarm,
                    metrics=InMemoryMetrics(qps, 5.0), carbon=FixedCarbon(),
                    clock=FakeClock(), log=Log(stream))
    return daemon, swarm, stream


def tick(daemon, qps=None):
    if qps is not None:
        daemon.metrics.qps = qps
    report = daemon.run_once()
    daemon.clock.advance(60.0)
    return report


def availability(swarm):
    return {name: n.availability for name, n in swarm.nodes.items()}


def test_a_packed_level_gets_its_budgets_and_one_node_of_the_two():
    daemon, swarm, log = make()
    assert swarm.tasks_on("old-1") == {"a": 1, "c": 1} and swarm.tasks_on("old-2") == {"b": 1}
    first = tick(daemon)
    # shares of a 2-core old slot: a 0.3, b 0.2, c 0.1
    budgets = {s: (m.cpu_reservation, m.cpu_limit) for s, m in swarm.services.items()}
    assert budgets == {"a": (0.6, 0.6), "b": (0.4, 0.4), "c": (0.2, 0.2)}
    assert sum(r for r, _ in budgets.values()) <= SLOT_CPUS["old"]   # one socket
    # old-2 paused before the updates, so b's new task runs on old-1; new-1 had nothing
    assert swarm.events[:2] == [("node", "new-1", PAUSE), ("node", "old-2", PAUSE)]
    assert swarm.tasks_on("old-1") == {"a": 1, "b": 1, "c": 1}
    assert swarm.tasks_on("old-2") == {}
    assert availability(swarm) == {"new-1": DRAIN, "old-1": ACTIVE, "old-2": PAUSE}
    assert [(a.node, a.before, a.after) for a in first.node_actions] == [
        ("new-1", ACTIVE, PAUSE), ("old-2", ACTIVE, PAUSE), ("new-1", PAUSE, DRAIN)]
    assert [a.service for a in first.actions] == ["a", "b", "c"]
    # the next loop finds old-2 empty: drained; nothing else to do
    second = tick(daemon)
    assert availability(swarm) == {"new-1": DRAIN, "old-1": ACTIVE, "old-2": DRAIN}
    assert second.actions == () and [(a.node, a.after) for a in second.node_actions] == [
        ("old-2", DRAIN)]
    assert swarm.nodes["old-2"].emptied and swarm.nodes["new-1"].emptied
    third = tick(daemon)
    assert third.actions == () and third.node_actions == ()   # reconciled: nothing repeats
    lines = [json.loads(x) for x in log.getvalue().splitlines()]
    nodes = [x for x in lines if x["event"] == "node"]
    assert [(x["node"], x["change"]) for x in nodes] == [
        ("new-1", "active -> pause"), ("old-2", "active -> pause"),
        ("new-1", "pause -> drain"), ("old-2", "pause -> drain")]
    assert all(x["reason"].startswith("level 1 packs") and x["applied"] for x in nodes)
    resized = [x for x in lines if x["event"] == "action"]
    assert resized[0]["cpus_per_replica"] == "none -> 0.6" and resized[0]["cause"] == "packing"
    health = daemon.health.report(daemon.clock.now())[1]
    assert health["sockets"] == {"old": 1}
    assert health["nodes"] == {"new-1": DRAIN, "old-1": ACTIVE, "old-2": DRAIN}


def test_a_level_with_more_sockets_activates_the_nodes_before_the_moves():
    daemon, swarm, _ = make()
    tick(daemon)
    tick(daemon)
    report = tick(daemon, qps=290)   # the top level: a on new, b 2x old on two sockets
    assert swarm.placement() == Placement(HIGH_PACKED.items)
    first_update = next(i for i, e in enumerate(swarm.events) if e[0] == "update"
                        and e[2] == "1xnew")
    activated = [i for i, e in enumerate(swarm.events) if e[0] == "node" and e[2] == ACTIVE]
    assert len(activated) == 2 and max(activated) < first_update
    assert availability(swarm) == {"new-1": ACTIVE, "old-1": ACTIVE, "old-2": ACTIVE}
    assert not any(n.emptied for n in swarm.nodes.values())
    assert swarm.services["a"].cpu_reservation == 2.0   # 0.5 of a 4-core new slot
    assert swarm.tasks_on("old-1")["b"] == 1 and swarm.tasks_on("old-2")["b"] == 1
    assert {a.service for a in report.actions} == {"a", "b"}   # c: the same share


def test_a_dry_run_decides_the_node_changes_and_makes_none():
    daemon, swarm, log = make(dry_run=True)
    report = tick(daemon)
    assert swarm.events == []
    assert report.node_actions and not any(a.applied for a in report.node_actions)
    assert report.actions and not any(a.applied for a in report.actions)
    lines = [json.loads(x) for x in log.getvalue().splitlines() if '"node"' in x]
    assert lines and all(x["dry_run"] and not x["applied"] for x in lines)


def test_a_dedicated_table_leaves_resources_and_nodes_alone():
    daemon, swarm, _ = make(table=TOY_TABLE, start=TOY_LOW)
    for qps in (50, 50, 290, 290):
        tick(daemon, qps=qps)
    assert swarm.updates and all(cpus is None and not restart
                                 for _, _, cpus, restart in swarm.updates)
    assert swarm.availability_set == []
    assert all(m.cpu_reservation is None for m in swarm.services.values())


def test_nodes_it_emptied_come_back_under_a_table_of_dedicated_slots():
    daemon, swarm, _ = make()
    tick(daemon)
    tick(daemon)
    daemon.table = TOY_TABLE   # a reload to a table without shares
    tick(daemon)
    assert availability(swarm) == {"new-1": ACTIVE, "old-1": ACTIVE, "old-2": ACTIVE}


def test_a_node_an_operator_drained_is_never_made_active():
    daemon, swarm, _ = make()
    swarm.nodes["old-2"] = swarm.nodes["old-2"].__class__(
        **{**swarm.nodes["old-2"].__dict__, "availability": DRAIN, "tasks": {}})
    tick(daemon)
    tick(daemon, qps=290)   # wants two old sockets
    assert swarm.nodes["old-2"].availability == DRAIN
    assert ("old-2", ACTIVE) not in swarm.availability_set
    health = daemon.health.report(daemon.clock.now())[1]
    assert any("only 1 old node can run tasks" in note for note in health["node_notes"])


def test_a_refused_node_change_is_reported_and_the_moves_still_run():
    daemon, swarm, log = make()
    swarm.refuse_nodes.add("old-2")
    report = tick(daemon)
    failed = [a for a in report.node_actions if a.node == "old-2"]
    assert failed and not failed[0].applied and "refused" in failed[0].error
    assert all(a.applied for a in report.actions)
    assert swarm.nodes["old-2"].availability == ACTIVE   # not paused: never drained either
    tick(daemon)
    assert swarm.nodes["old-2"].availability == ACTIVE


def test_tasks_left_on_a_paused_node_are_moved_by_a_forced_update():
    daemon, swarm, _ = make()
    # b already has its budget: pausing old-2 changes nothing in its spec
    swarm.services["b"] = swarm.services["b"].__class__(
        **{**swarm.services["b"].__dict__, "cpu_reservation": 0.4, "cpu_limit": 0.4})
    tick(daemon)
    restarted = [(s, cpus, restart) for s, _, cpus, restart in swarm.updates if s == "b"]
    assert restarted == [("b", None, True)]
    assert swarm.tasks_on("old-2") == {}


def test_what_runs_is_compared_with_its_shares_so_a_shrink_waits_for_the_hold():
    import dataclasses

    from ecoscale.daemon.packing import running_packing

    daemon, swarm, _ = make()
    tick(daemon)   # level 1: a 0.6, b 0.4, c 0.2 cores
    read = swarm.read()
    running = running_packing(read.placement(tuple(read.services)), read.services,
                              daemon.table, daemon.state.level, SLOT_CPUS)
    assert running == LOW_PACKED   # everything as level 1 says: the level itself, sockets too
    # as a higher level left it: a reserves 0.8 cores (share 0.4) where level 1 plans 0.3
    swarm.services["a"] = dataclasses.replace(swarm.services["a"], cpu_reservation=0.8,
                                              cpu_limit=0.8)
    read = swarm.read()
    running = running_packing(read.placement(tuple(read.services)), read.services,
                              daemon.table, daemon.state.level, SLOT_CPUS)
    assert running.share("a") == 0.4 and running.share("b") == 0.2
    hold = daemon.config.control.shrink_hold_s
    waited = 0.0
    while swarm.services["a"].cpu_reservation == 0.8:
        report = tick(daemon)
        assert all(a.service != "a" for a in report.actions) or waited >= hold
        waited += 60.0
        assert waited <= hold + 120.0, "the shrink never came"
    assert swarm.services["a"].cpu_reservation == 0.6 and waited >= hold


def test_a_service_without_a_reservation_leaves_what_runs_plain():
    from ecoscale.daemon.packing import running_packing

    daemon, swarm, _ = make()
    read = swarm.read()
    current = read.placement(tuple(read.services))
    assert running_packing(current, read.services, daemon.table, None, SLOT_CPUS) is current
