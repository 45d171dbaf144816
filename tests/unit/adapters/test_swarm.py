"""The Swarm adapter against replies recorded from a real Docker 20.10 Swarm (the lab)."""

import copy
import json
from pathlib import Path

import docker
import pytest

from ecoscale.adapters.swarm import (
    OUT_OF_SEQUENCE,
    RETRY_PAUSE_S,
    DockerSwarm,
    forced_spec,
    generation_of,
    managed_service,
    replicas_of,
    update_service,
    updated_spec,
)
from ecoscale.config import LabelConfig
from ecoscale.errors import EcoscaleError
from ecoscale.model.placement import ServicePlacement
from ecoscale.ports import ActionFailed, SourceUnavailable

FIXTURES = Path(__file__).parents[2] / "fixtures" / "docker"


def recorded(name):
    return json.loads((FIXTURES / f"{name}.json").read_text())


SERVICES = {s["Spec"]["Name"]: s for s in recorded("services")}
NGINX = SERVICES["nginx-thrift"]


class RecordedApi:
    """docker-py's APIClient, answering from the recordings; updates are recorded."""

    def __init__(self, conflicts=0, manager=True):
        self.services_ = copy.deepcopy(SERVICES)
        self.updates = []
        self.conflicts = conflicts
        self.manager = manager

    def info(self):
        info = recorded("info")
        info["Swarm"]["ControlAvailable"] = self.manager
        return info

    def nodes(self):
        return recorded("nodes")

    def services(self, filters=None):
        return list(self.services_.values())

    def tasks(self, filters=None):
        return recorded("tasks")

    def inspect_service(self, service):
        """By id or by name, as the Docker API answers."""
        return next(copy.deepcopy(s) for s in self.services_.values()
                    if service in (s["ID"], s["Spec"]["Name"]))

    def update_service(self, service_id, version, **kwargs):
        if self.conflicts:
            self.conflicts -= 1
            raise docker.errors.APIError(f"rpc error: code = Unknown desc = {OUT_OF_SEQUENCE}")
        self.updates.append((service_id, version, kwargs))


class Client:
    def __init__(self, api):
        self.api = api


def swarm(api, pauses=None):
    return DockerSwarm(client=Client(api), sleep=(pauses if pauses is not None else []).append)


def test_spec_reading():
    spec = NGINX["Spec"]
    assert generation_of(spec, "ecoscale.generation") == "new"
    assert replicas_of(spec) == 1
    spaced = copy.deepcopy(spec)
    spaced["TaskTemplate"]["Placement"]["Constraints"] = ["node.labels.ecoscale.generation == old"]
    assert generation_of(spaced, "ecoscale.generation") == "old"


def test_updated_spec_changes_only_generation_replicas_and_order():
    spec = copy.deepcopy(NGINX["Spec"])
    spec["TaskTemplate"]["Placement"]["Constraints"].append("node.role==worker")
    spec["TaskTemplate"]["Placement"]["Preferences"] = [{"Spread": {"SpreadDescriptor": "x"}}]
    spec["UpdateConfig"]["Order"] = "stop-first"
    new = updated_spec(spec, ServicePlacement("old", 3), "ecoscale.generation")
    assert new["TaskTemplate"]["Placement"]["Constraints"] == [
        "node.role==worker", "node.labels.ecoscale.generation==old"]
    assert new["TaskTemplate"]["Placement"]["Preferences"] == spec["TaskTemplate"]["Placement"][
        "Preferences"]
    assert new["Mode"] == {"Replicated": {"Replicas": 3}}
    assert new["UpdateConfig"]["Order"] == "start-first"
    assert new["UpdateConfig"]["FailureAction"] == spec["UpdateConfig"]["FailureAction"]
    for key in ("ContainerSpec", "RestartPolicy", "Networks"):
        assert new["TaskTemplate"][key] == spec["TaskTemplate"][key]
    assert new["EndpointSpec"] == spec["EndpointSpec"] and new["Labels"] == spec["Labels"]
    assert spec["UpdateConfig"]["Order"] == "stop-first"   # the input is not modified


def test_read_builds_managed_services_with_running_tasks_per_generation():
    state = swarm(RecordedApi()).read()
    assert state.is_controller and set(state.generations) == {"new", "old"}
    nginx = state.services["nginx-thrift"]
    assert nginx.placement == ServicePlacement("new", 1)
    assert nginx.running == {"new": 1} and not nginx.paused
    assert nginx.target_id == NGINX["ID"]


def test_managed_service_uses_the_service_label_and_pause_label():
    service = copy.deepcopy(NGINX)
    service["Spec"]["Labels"]["ecoscale.service"] = "frontend"
    service["Spec"]["Labels"]["ecoscale.paused"] = "true"
    item = managed_service(service, [], {}, LabelConfig())
    assert item.name == "frontend" and item.paused and item.running == {}


def test_a_paused_rolling_update_is_read_with_swarms_message():
    service = copy.deepcopy(NGINX)
    assert not managed_service(service, [], {}, LabelConfig()).update_paused
    service["UpdateStatus"] = {"State": "paused", "Message": "update paused due to failure "
                               "or early termination of task abc"}
    item = managed_service(service, [], {}, LabelConfig())
    assert item.update_paused == ("paused: update paused due to failure or early termination "
                                  "of task abc")
    service["UpdateStatus"] = {"State": "completed", "Message": "update completed"}
    assert managed_service(service, [], {}, LabelConfig()).update_paused == ""


def test_not_a_manager_reads_nothing():
    state = swarm(RecordedApi(manager=False)).read()
    assert not state.is_controller and state.services == {}


def test_apply_rereads_and_retries_out_of_sequence():
    api = RecordedApi(conflicts=2)
    pauses = []
    target = swarm(api, pauses)
    service = target.read().services["nginx-thrift"]
    target.apply(service, ServicePlacement("old", 2))
    assert pauses == [RETRY_PAUSE_S, 2 * RETRY_PAUSE_S]   # a growing pause before each retry
    assert len(api.updates) == 1
    service_id, version, kwargs = api.updates[0]
    assert version == NGINX["Version"]["Index"]
    # the whole spec from ecoscale's own read: docker-py's fetch_current_spec=True would fill
    # what the spec lacks from a read with the engine's defaults inserted
    assert kwargs["fetch_current_spec"] is False
    assert kwargs["mode"] == {"Replicated": {"Replicas": 2}}
    assert "node.labels.ecoscale.generation==old" in kwargs["task_template"]["Placement"][
        "Constraints"]
    assert kwargs["task_template"]["ContainerSpec"] == NGINX["Spec"]["TaskTemplate"][
        "ContainerSpec"]


def test_apply_gives_up_after_repeated_conflicts():
    api = RecordedApi(conflicts=99)
    target = swarm(api)
    service = target.read().services["nginx-thrift"]
    with pytest.raises(ActionFailed, match=OUT_OF_SEQUENCE) as raised:
        target.apply(service, ServicePlacement("old", 1))
    assert isinstance(raised.value, EcoscaleError)   # a runtime error for the CLI (exit 1)
    assert api.updates == []


def test_apply_refuses_a_service_that_lost_its_managed_label():
    api = RecordedApi()
    target = swarm(api)
    service = target.read().services["nginx-thrift"]
    api.services_["nginx-thrift"]["Spec"]["Labels"]["ecoscale.managed"] = "false"
    with pytest.raises(ActionFailed, match="no longer labelled"):
        target.apply(service, ServicePlacement("old", 1))
    assert api.updates == []


def test_unreachable_engine_is_source_unavailable(tmp_path):
    target = DockerSwarm(f"unix://{tmp_path}/nothing.sock", timeout_s=2)
    with pytest.raises(SourceUnavailable, match="docker API"):
        target.read()


def test_resume_is_a_forced_update_of_the_same_spec():
    import random

    from ecoscale.adapters.swarm import DockerSwarm
    from ecoscale.model.placement import Placement, ServicePlacement
    from ecoscale.ports import ManagedService
    from ecoscale.testing import FakeDockerAPI, FakeDockerClient

    api = FakeDockerAPI(Placement((("a", ServicePlacement("old", 2)),)), random.Random(1))
    swarm = DockerSwarm(client=FakeDockerClient(api))
    before = api.inspect_service("id-a")
    swarm.resume(ManagedService("a", "id-a", "app_a", ServicePlacement("old", 2)))
    after = api.services["id-a"]
    assert after["Spec"]["TaskTemplate"]["ForceUpdate"] == 1
    assert after["Version"]["Index"] == before["Version"]["Index"] + 1
    assert api.placement() == Placement((("a", ServicePlacement("old", 2)),))


SPACED = "node.labels.ecoscale.generation == old"


def spec_with(constraints=None, mode="keep"):
    spec = copy.deepcopy(NGINX["Spec"])
    if constraints is not None:
        spec["TaskTemplate"]["Placement"]["Constraints"] = constraints
    if mode != "keep":
        if mode is None:
            del spec["Mode"]
        else:
            spec["Mode"] = mode
    return spec


@pytest.mark.parametrize("spec, generation, replicas", [
    (spec_with([SPACED]), "old", 1),
    (spec_with(["node.labels.ecoscale.generation==new", "node.role==worker"]), "new", 1),
    (spec_with(["node.role==worker"]), None, 1),
    (spec_with(mode={"Replicated": {}}), "new", 1),
    (spec_with(mode=None), "new", 1),
    (spec_with(mode={"Replicated": {"Replicas": 4}}), "new", 4),
    (spec_with(mode={"Global": {}}), "new", None),
    (spec_with(["node.labels.ecoscale.generationx==old"]), None, 1),
], ids=["spaces", "other-constraint", "unconstrained", "replicas-missing", "mode-missing",
        "four", "global", "another-label"])
def test_constraint_and_replica_parsing(spec, generation, replicas):
    assert generation_of(spec) == generation
    assert replicas_of(spec) == replicas


@pytest.mark.parametrize("constraints", [
    [SPACED, "node.role==worker"],
    ["node.role==worker", "node.labels.ecoscale.generation==new"],
    ["node.role==worker"],
], ids=["spaced-generation", "compact-generation", "no-generation"])
def test_updated_spec_replaces_only_the_generation_constraint(constraints):
    spec = spec_with(constraints, mode=None)
    new = updated_spec(spec, ServicePlacement("new", 2))
    assert new["TaskTemplate"]["Placement"]["Constraints"] == [
        "node.role==worker", "node.labels.ecoscale.generation==new"]
    assert generation_of(new) == "new" and replicas_of(new) == 2
    assert {k: v for k, v in new["TaskTemplate"].items() if k != "Placement"} == {
        k: v for k, v in spec["TaskTemplate"].items() if k != "Placement"}
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == constraints   # not modified


def test_forced_spec_bumps_force_update_and_keeps_the_rest():
    spec = spec_with()
    twice = forced_spec(forced_spec(spec))
    assert twice["TaskTemplate"]["ForceUpdate"] == 2
    assert spec["TaskTemplate"]["ForceUpdate"] == 0   # the recorded spec's; not modified
    assert {k: v for k, v in twice["TaskTemplate"].items() if k != "ForceUpdate"} == {
        k: v for k, v in spec["TaskTemplate"].items() if k != "ForceUpdate"}


def test_update_service_by_name_writes_the_whole_changed_spec():
    api = RecordedApi(conflicts=1)
    pauses = []
    update_service(api, "nginx-thrift", forced_spec, sleep=pauses.append)
    (service_id, version, kwargs), = api.updates
    assert service_id == NGINX["ID"] and version == NGINX["Version"]["Index"]
    assert kwargs["task_template"]["ForceUpdate"] == 1
    assert kwargs["endpoint_spec"] == NGINX["Spec"]["EndpointSpec"]
    assert kwargs["update_config"] == NGINX["Spec"]["UpdateConfig"]
    assert pauses == [RETRY_PAUSE_S]


def test_update_service_turns_a_refusal_into_action_failed():
    class Refusing(RecordedApi):
        def update_service(self, service_id, version, **kwargs):
            raise docker.errors.APIError("rpc error: code = InvalidArgument desc = bad spec")

    with pytest.raises(ActionFailed, match="nginx-thrift: .*bad spec"):
        update_service(Refusing(), "nginx-thrift", forced_spec, sleep=lambda _s: None)
