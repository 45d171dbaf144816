"""The profiler's runner moves services through the one apply-and-wait, in virtual time."""

import io
from pathlib import Path

import pytest

from ecoscale.adapters.files import load_topology
from ecoscale.adapters.placing import NotConverged
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.profiler.experiments import Experiment, PoolConfig
from ecoscale.profiler.runner import Progress, Runner
from ecoscale.testing import FakeClock, RecordedPrometheus, RecordingOrchestrator

TOPOLOGY = load_topology("socialNetwork")
POOL = PoolConfig("fake", "http://front", "http://prom", settle_timeout_s=40.0)


def runner(orchestrator, clock):
    def no_load(rate_qps, duration_s, seed):
        raise AssertionError("no load in these tests")

    return Runner(POOL, TOPOLOGY, orchestrator, RecordedPrometheus(), no_load,
                  Path("unused.csv"), log=lambda _m: None, clock=clock)


def all_new():
    return Placement(tuple((s, ServicePlacement("new", 1)) for s in TOPOLOGY.services))


def test_place_moves_the_experiments_services_and_counts_the_moves():
    orchestrator, clock = RecordingOrchestrator.of(all_new()), FakeClock()
    run = runner(orchestrator, clock)
    first, second = TOPOLOGY.service_names[:2]
    wanted = run.placement_for(Experiment("two-old", (first, second), (10.0,)))
    assert run.place(wanted) == 2
    assert sorted(name for name, _ in orchestrator.applied) == sorted([first, second])
    assert orchestrator.services[first].running == {"old": 1}
    assert run.place(wanted) == 0                       # already there: no update


def test_a_placement_that_never_runs_times_out_naming_it_in_virtual_time():
    orchestrator, clock = RecordingOrchestrator.of(all_new()), FakeClock()
    orchestrator.ready.discard("old")                   # no ready old node: tasks pend
    run = runner(orchestrator, clock)
    first = TOPOLOGY.service_names[0]
    with pytest.raises(NotConverged, match=f"within 40 s: {first}: running none"):
        run.place(run.placement_for(Experiment("one-old", (first,), (10.0,))))
    assert sum(clock.slept) == pytest.approx(POOL.settle_timeout_s)


def test_progress_reads_the_injected_clock():
    clock, stream = FakeClock(), io.StringIO()
    progress = Progress(2, per_point_s=60.0, stream=stream, clock=clock)
    clock.advance(120.0)
    progress.step("first")
    assert "1/2" in stream.getvalue() and "2.0 min, ~2.0 min left" in stream.getvalue()
