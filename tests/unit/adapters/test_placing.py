"""The one "apply a placement and wait until it runs", in virtual time."""

from dataclasses import dataclass, replace

import pytest

from ecoscale.adapters.placing import (
    NotConverged,
    apply_placement,
    place,
    placement_problems,
    wait_placed,
)
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.ports import ActionFailed
from ecoscale.testing import FakeClock, RecordingOrchestrator

NEW1, OLD2 = ServicePlacement("new", 1), ServicePlacement("old", 2)


@dataclass
class SlowOrchestrator(RecordingOrchestrator):
    """Tasks of an update start only after ``delay_reads`` further reads."""

    delay_reads: int = 2
    pending: dict = None

    def apply(self, service, placed, **options):
        super().apply(service, placed, **options)
        self.pending = {**(self.pending or {}), service.name: self.delay_reads}
        self.services[service.name] = replace(self.services[service.name], running={})

    def read(self):
        for name, left in list((self.pending or {}).items()):
            if left <= 0:
                placed = self.services[name].placement
                self.services[name] = replace(self.services[name],
                                              running={placed.generation: placed.replicas})
                del self.pending[name]
            else:
                self.pending[name] = left - 1
        return super().read()


def cluster(**placed):
    return SlowOrchestrator.of(Placement(tuple(placed.items())))


def test_place_moves_only_what_differs_and_waits_until_it_runs():
    orchestrator, clock = cluster(a=NEW1, b=NEW1), FakeClock()
    moved = place(orchestrator, {"a": OLD2, "b": NEW1}, clock, timeout_s=60)
    assert moved == ["a"] and orchestrator.applied == [("a", OLD2)]
    assert orchestrator.services["a"].running == {"old": 2}
    assert 0 < sum(clock.slept) < 60          # waited, in virtual time


def test_a_move_takes_its_new_generations_cpus_where_given():
    orchestrator, clock = cluster(a=NEW1, b=NEW1), FakeClock()
    place(orchestrator, {"a": OLD2, "b": ServicePlacement("mid", 1)}, clock, timeout_s=60,
          replica_cpus={"old": 0.05})
    assert [(name, cpus) for name, _placed, cpus, _restart in orchestrator.updates] == [
        ("a", 0.05), ("b", None)]     # a generation without a slot keeps its resources


def test_a_timeout_names_what_did_not_converge():
    orchestrator, clock = cluster(a=NEW1, b=NEW1), FakeClock()
    orchestrator.delay_reads = 10 ** 6
    with pytest.raises(NotConverged) as raised:
        place(orchestrator, {"a": OLD2}, clock, timeout_s=30)
    assert "within 30 s" in str(raised.value)
    assert raised.value.problems == ["a: running none, wanted 2 on old"]
    assert sum(clock.slept) == pytest.approx(30)


def test_further_checks_run_once_the_placement_runs():
    orchestrator, clock = cluster(a=NEW1), FakeClock()
    seen = []

    def scraped(state):
        seen.append(dict(state.services["a"].running))
        return "" if len(seen) >= 3 else "a: not scraped yet"

    place(orchestrator, {"a": OLD2}, clock, timeout_s=60, checks=[scraped])
    assert seen == [{"old": 2}] * 3


def test_a_paused_update_is_resumed_then_an_error():
    orchestrator, clock = cluster(a=NEW1), FakeClock()
    messages = []
    orchestrator.resume = lambda service: orchestrator.resumed.append(service.name)  # stays
    orchestrator.services["a"] = replace(orchestrator.services["a"], update_paused="paused: x")
    with pytest.raises(NotConverged, match="a: update paused: x .resumed 2 times"):
        wait_placed(orchestrator, {"a": NEW1}, clock, 60, log=messages.append)
    assert orchestrator.resumed == ["a", "a"] and len(messages) == 2


def test_a_resumed_update_that_completes_is_reported():
    orchestrator, clock = cluster(a=NEW1), FakeClock()
    orchestrator.services["a"] = replace(orchestrator.services["a"], update_paused="paused: x")
    assert wait_placed(orchestrator, {"a": NEW1}, clock, 60) == ["a"]


def test_an_unreachable_cluster_is_waited_for():
    orchestrator, clock = cluster(a=NEW1), FakeClock()
    reads = []
    real = orchestrator.read

    def flaky():
        reads.append(1)
        orchestrator.down = len(reads) < 3
        return real()

    orchestrator.read = flaky
    wait_placed(orchestrator, {"a": NEW1}, clock, 60)
    assert len(reads) == 3


def test_apply_refuses_services_that_are_not_managed():
    orchestrator = cluster(a=NEW1)
    with pytest.raises(ActionFailed, match="not managed services of the cluster: zz"):
        apply_placement(orchestrator, {"a": OLD2, "zz": NEW1})
    assert orchestrator.applied == []


@pytest.mark.parametrize("running, expected", [
    ({"old": 2}, []),
    ({"old": 1}, ["a: running 1 on old, wanted 2 on old"]),
    ({"old": 2, "new": 1}, ["a: running 1 on new, 2 on old, wanted 2 on old"]),
    ({"old": 2, "new": 0}, []),
], ids=["runs", "one-short", "old-task-left", "zero-counts-ignored"])
def test_placement_problems(running, expected):
    orchestrator = cluster(a=OLD2)
    orchestrator.services["a"] = replace(orchestrator.services["a"], running=running)
    assert placement_problems(orchestrator.read(), {"a": OLD2}) == expected
