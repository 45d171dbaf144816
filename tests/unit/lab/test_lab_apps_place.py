"""LabApps.place through the orchestrator port, on an in-memory lab host (no Docker)."""

from dataclasses import dataclass, field

import pytest

from ecoscale.errors import InputError
from ecoscale.lab.config import LabConfig
from ecoscale.lab.lab_apps import LabApps
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.testing import FakeClock, RecordingOrchestrator


@dataclass
class FakeHost:
    """The part of ``Lab`` that LabApps.place uses."""

    orchestrator_fake: RecordingOrchestrator
    config: LabConfig = field(default_factory=lambda: LabConfig(state_dir="/tmp/lab-test"))
    clock: FakeClock = field(default_factory=FakeClock)
    logged: list = field(default_factory=list)

    def __post_init__(self):
        self.nodes = self.config.nodes()

    def orchestrator(self):
        return self.orchestrator_fake

    def nodes_of(self, generation):
        return [n.name for n in self.nodes if n.generation == generation]

    def log(self, message):
        self.logged.append(message)


def apps(**placed):
    host = FakeHost(RecordingOrchestrator.of(Placement(tuple(placed.items()))))
    return LabApps(host), host.orchestrator_fake


@pytest.mark.parametrize("replicas, expected", [
    (None, ServicePlacement("old", 2)),
    (1, ServicePlacement("old", 1)),
], ids=["keeps-replicas", "sets-replicas"])
def test_place_moves_through_the_orchestrator(replicas, expected):
    lab_apps, orchestrator = apps(a=ServicePlacement("new", 2))
    lab_apps.place("a", "old", replicas, wait=False)
    assert orchestrator.applied == [("a", expected)]


def test_place_refuses_an_unknown_generation_naming_the_known_ones():
    lab_apps, orchestrator = apps(a=ServicePlacement("new", 1))
    with pytest.raises(InputError, match="no generation 'mid'; known: new, old"):
        lab_apps.place("a", "mid", wait=False)
    assert orchestrator.applied == []
