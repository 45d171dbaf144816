"""Rule 6, node loss: the pure rule (control/decide.py keep_off_lost_capacity) and the daemon
that feeds it from the Swarm (which generations have a ready node, which tasks run)."""

import io
import json

import pytest

from ecoscale.config import DaemonConfig
from ecoscale.control.decide import (
    Capacity,
    ControlSettings,
    ControlState,
    keep_off_lost_capacity,
)
from ecoscale.control.policy import Cause, Decision, Move
from ecoscale.daemon.loop import Daemon
from ecoscale.daemon.telemetry import Log
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.testing import (
    FakeClock,
    FixedCarbon,
    InMemoryMetrics,
    RecordingOrchestrator,
    toy_table,
)

NEW1, OLD1, OLD2 = ServicePlacement("new", 1), ServicePlacement("old", 1), \
    ServicePlacement("old", 2)
ORDER = ("new", "old")
SETTINGS = ControlSettings(cooldown_s=180.0, lost_task_grace_s=60.0)
NOW = 10_000.0


def placement(**placed):
    return Placement(tuple(placed.items()))


RULE_CASES = [
    # (current, decided, before.last_move_s, not_running_since, ready, running, paused,
    #  expected placement, lost services, moved services)
    pytest.param(placement(a=OLD1, b=NEW1), placement(a=OLD1, b=NEW1), {}, {}, {"new"},
                 {"a": 0, "b": 1}, (), placement(a=NEW1, b=NEW1), {"a"}, {"a"},
                 id="generation-without-a-ready-node-goes-to-new"),
    pytest.param(placement(a=OLD2), placement(a=OLD2), {}, {}, {"new"}, {"a": 0}, (),
                 placement(a=ServicePlacement("new", 2)), {"a"}, {"a"},
                 id="keeps-its-replica-count"),
    pytest.param(placement(a=NEW1), placement(a=OLD1), {"a": 1.0}, {}, {"new"}, {"a": 1}, (),
                 placement(a=NEW1), {"a"}, set(), id="no-move-back-while-the-node-is-gone"),
    pytest.param(placement(a=OLD1), placement(a=OLD1), {}, {"a": NOW - 61}, {"new", "old"},
                 {"a": 0}, (), placement(a=NEW1), {"a"}, {"a"},
                 id="tasks-not-running-past-the-grace-go-to-new"),
    pytest.param(placement(a=OLD1), placement(a=OLD1), {}, {"a": NOW - 30}, {"new", "old"},
                 {"a": 0}, (), placement(a=OLD1), set(), set(), id="within-the-grace-waits"),
    pytest.param(placement(a=OLD1), placement(a=OLD1), {"a": NOW - 10}, {"a": NOW - 120},
                 {"new", "old"}, {"a": 0}, (), placement(a=OLD1), set(), set(),
                 id="just-moved-its-tasks-are-starting"),
    pytest.param(placement(a=NEW1), placement(a=NEW1), {}, {"a": NOW - 600}, {"new", "old"},
                 {"a": 0}, (), placement(a=NEW1), {"a"}, set(),
                 id="not-running-on-new-is-reported-and-held"),
    pytest.param(placement(a=OLD1), placement(a=OLD1), {}, {}, set(), {"a": 0}, (),
                 placement(a=OLD1), {"a"}, set(), id="no-generation-ready-holds"),
    pytest.param(placement(a=OLD1), placement(a=OLD1), {}, {}, {"new"}, {"a": 0}, ("a",),
                 placement(a=OLD1), set(), set(), id="paused-is-never-touched"),
    pytest.param(placement(a=OLD1, b=NEW1), placement(a=OLD1, b=NEW1), {}, {},
                 {"new", "old"}, {"a": 1, "b": 1}, (), placement(a=OLD1, b=NEW1), set(),
                 set(), id="all-running-nothing-changes"),
]


@pytest.mark.parametrize("current,decided,moved_at,not_running,ready,running,paused,"
                         "expected,lost,moved", RULE_CASES)
def test_keep_off_lost_capacity(current, decided, moved_at, not_running, ready, running,
                                paused, expected, lost, moved):
    before = ControlState(level=0, last_move_s=moved_at, not_running_since=not_running)
    # decide() stamps the moves it made with now; the rule must undo the ones it cancels
    after = ControlState(level=0, last_move_s={
        **moved_at, **{s: NOW for s, _, _ in current.changes(decided)}},
        not_running_since=not_running)
    decision = Decision(decided, {s: Move(s, b, a, Cause.TABLE, "table")
                                  for s, b, a in current.changes(decided)})
    out, state, why = keep_off_lost_capacity(decision, before, after, current,
                                             Capacity(frozenset(ready), running), ORDER,
                                             SETTINGS, NOW, frozenset(paused))
    assert out.placement == expected
    assert set(why) == lost
    assert {s for s, _, _ in current.changes(out.placement)} == moved
    for service in moved:
        assert state.last_move_s[service] == NOW and "node loss" in out.reasons[service]
        assert out.moves[service].cause == Cause.LOST_CAPACITY
    for service in set(dict(current.items)) - moved:
        assert state.last_move_s.get(service) == moved_at.get(service), service
    assert set(state.not_running_since) == {s for s, n in running.items() if n == 0}


def test_not_running_since_is_kept_across_decisions_and_cleared_when_running():
    current = placement(a=OLD1)
    decision = Decision(current)
    state = ControlState()
    ready = Capacity(frozenset(ORDER), {"a": 0})
    _, state, _ = keep_off_lost_capacity(decision, state, state, current, ready, ORDER,
                                         SETTINGS, 100.0)
    _, state, _ = keep_off_lost_capacity(decision, state, state, current, ready, ORDER,
                                         SETTINGS, 130.0)
    assert state.not_running_since == {"a": 100.0}
    _, state, _ = keep_off_lost_capacity(decision, state, state, current,
                                         Capacity(frozenset(ORDER), {"a": 1}), ORDER,
                                         SETTINGS, 160.0)
    assert state.not_running_since == {}


# ---- the daemon on a fake Swarm that loses its old node ----------------------------------
LOW = placement(a=OLD1, b=OLD1, c=OLD1)
TABLE = toy_table(((100.0, LOW),), ranking=(("a", 1.0),), non_critical={}, critical={})
INTERVAL = 15.0


def test_daemon_moves_services_off_a_lost_node_reports_it_and_returns_after_cooldown():
    stream = io.StringIO()
    daemon = Daemon(config=DaemonConfig(app="toy", table="t.yaml", interval_s=INTERVAL,
                                        control=SETTINGS),
                    table=TABLE, orchestrator=RecordingOrchestrator.of(LOW),
                    metrics=InMemoryMetrics(50.0, 5.0), carbon=FixedCarbon(),
                    clock=FakeClock(), log=Log(stream))
    swarm = daemon.orchestrator

    def tick():
        report = daemon.run_once()
        daemon.clock.advance(INTERVAL)
        assert set(swarm.services) == {"a", "b", "c"}      # no service is ever lost
        return report

    tick()
    assert swarm.placement() == LOW and swarm.applied == []
    swarm.lose_node("old")
    report = tick()
    assert swarm.placement() == placement(a=NEW1, b=NEW1, c=NEW1)   # within one period
    assert all(a.applied and "node loss" in a.reason for a in report.actions)
    assert {a.cause for a in report.actions} == {Cause.LOST_CAPACITY}
    _, health = daemon.health.report(daemon.clock.now())
    assert set(health["capacity_lost"]) == {"a", "b", "c"}
    assert health["generations_ready"] == ["new"]
    metrics = daemon.telemetry.exposition().decode()
    assert "ecoscale_services_displaced 3.0" in metrics
    assert 'ecoscale_generation_ready{generation="old"} 0.0' in metrics
    assert 'ecoscale_actions_total{direction="new",dry_run="false",reason="capacity"} 3.0' \
        in metrics
    moves = len(swarm.applied)
    for _ in range(20):                    # five minutes without the node: nothing flaps
        tick()
    assert len(swarm.applied) == moves
    swarm.restore_node("old")
    report = tick()
    # the evacuation was > cooldown ago: the table puts them back on old at once
    assert swarm.placement() == LOW
    assert {a.service for a in report.actions} == {"a", "b", "c"}
    _, health = daemon.health.report(daemon.clock.now())
    assert health["capacity_lost"] == {} and health["generations_ready"] == ["new", "old"]
    logged = [json.loads(x)["event"] for x in stream.getvalue().splitlines()]
    assert logged.count("capacity_lost") == 3 and logged.count("capacity_back") == 3


def test_a_short_node_loss_returns_only_after_the_cooldown():
    daemon = Daemon(config=DaemonConfig(app="toy", table="t.yaml", interval_s=INTERVAL,
                                        control=SETTINGS),
                    table=TABLE, orchestrator=RecordingOrchestrator.of(LOW),
                    metrics=InMemoryMetrics(50.0, 5.0), carbon=FixedCarbon(),
                    clock=FakeClock(), log=Log(io.StringIO()))
    daemon.run_once()
    daemon.orchestrator.lose_node("old")
    daemon.clock.advance(INTERVAL)
    daemon.run_once()
    evacuated = daemon.clock.now()
    daemon.orchestrator.restore_node("old")
    while daemon.clock.now() - evacuated < SETTINGS.cooldown_s:
        daemon.clock.advance(INTERVAL)
        daemon.run_once()
        if daemon.clock.now() - evacuated < SETTINGS.cooldown_s:
            assert daemon.orchestrator.placement() == placement(a=NEW1, b=NEW1, c=NEW1)
    assert daemon.orchestrator.placement() == LOW
