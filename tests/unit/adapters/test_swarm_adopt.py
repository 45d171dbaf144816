"""Adopting a stack that `docker stack deploy` made: names by the target's mapping, and a move
that writes back every part of the spec but the generation constraint, the replica count and
the update order. The update goes through docker-py's real ``APIClient.update_service``
(only its HTTP post is recorded), so what is checked is what the engine would receive."""

import copy
import json
import re
from pathlib import Path

import docker
import pytest

from ecoscale.adapters.swarm import (
    SWARM_UPDATE_DEFAULTS,
    DockerSwarm,
    generation_of,
    update_service,
)
from ecoscale.config import TargetConfig
from ecoscale.model.placement import ServicePlacement
from ecoscale.ports import ActionFailed

FIXTURES = Path(__file__).parents[2] / "fixtures" / "docker"
STACK = TargetConfig(stack="socialnetwork")
GENERATION = re.compile(r"^\s*node\.labels\.ecoscale\.generation\s*==")


def recorded(name):
    return json.loads((FIXTURES / f"{name}.json").read_text())


SERVICES = {s["Spec"]["Name"]: s for s in recorded("stack_services")}


class RecordingAPIClient(docker.APIClient):
    """docker-py's own low-level client, answering reads from the recordings; the body of
    each update it would POST is recorded (and becomes the service's spec)."""

    def __init__(self, services=None):
        super().__init__(base_url="tcp://127.0.0.1:9", version="1.41")
        self.recorded = copy.deepcopy(services or SERVICES)
        self.posted = []

    def info(self):
        return recorded("info")

    def nodes(self, filters=None):
        return recorded("nodes")

    def services(self, filters=None, status=None):
        assert filters is None   # with a mapping every service is read, the mapping selects
        return copy.deepcopy(list(self.recorded.values()))

    def tasks(self, filters=None):
        return recorded("stack_tasks")

    def inspect_service(self, service, insert_defaults=None):
        found = next(s for s in self.recorded.values() if service in (s["ID"],
                                                                       s["Spec"]["Name"]))
        found = copy.deepcopy(found)
        if insert_defaults:   # what the engine adds to a spec (swarmkit api/defaults)
            found["Spec"].setdefault("RollbackConfig", dict(SWARM_UPDATE_DEFAULTS))
            found["Spec"].setdefault("UpdateConfig", dict(SWARM_UPDATE_DEFAULTS))
            found["Spec"]["TaskTemplate"].setdefault("Resources", {"Limits": {},
                                                                  "Reservations": {}})
            found["Spec"]["TaskTemplate"]["ContainerSpec"].setdefault("StopGracePeriod",
                                                                     10_000_000_000)
        return found

    def _post_json(self, url, data, params=None, headers=None, **kwargs):
        body = json.loads(json.dumps(data))   # what goes over the wire
        self.posted.append((url, params, body))
        return None

    def _result(self, response, json=False, binary=False):
        return {}


class Client:
    def __init__(self, api):
        self.api = api


def adopter(api, target=STACK):
    return DockerSwarm(client=Client(api), target=target, sleep=lambda _s: None)


def differences(before, after, path=""):
    """Paths (a.b.c) where two JSON documents differ; a null is an absent key, and a
    mapping added or removed differs at each of its keys."""
    if isinstance(before, dict) and after is None or before is None and isinstance(after, dict):
        before, after = before or {}, after or {}
    if isinstance(before, dict) and isinstance(after, dict):
        keys = {k for k, v in before.items() if v is not None} | {
            k for k, v in after.items() if v is not None}
        return [p for k in sorted(keys)
                for p in differences(before.get(k), after.get(k), f"{path}.{k}".lstrip("."))]
    return [] if before == after else [path]


@pytest.mark.parametrize("swarm_name, topology_name, placed", [
    ("socialnetwork_user-timeline-service", "user-timeline-service", ServicePlacement("old", 1)),
    ("socialnetwork_nginx-thrift", "nginx-thrift", ServicePlacement("new", 3)),
    ("socialnetwork_media-memcached", "media-memcached", ServicePlacement("old", 2)),
], ids=["full-spec-no-update-config", "own-stop-first-config", "minimal-spec"])
def test_a_move_writes_back_every_other_part_of_the_spec(swarm_name, topology_name, placed):
    api = RecordingAPIClient()
    target = adopter(api)
    service = target.read().services[topology_name]
    target.apply(service, placed)
    (url, params, written), = api.posted
    read = SERVICES[swarm_name]
    assert url.endswith(f"/services/{read['ID']}/update")
    assert params == {"version": read["Version"]["Index"]}
    before = read["Spec"]
    changed = set(differences(before, written))
    allowed = {"TaskTemplate.Placement.Constraints", "Mode.Replicated.Replicas",
               "UpdateConfig.Order"}
    if "UpdateConfig" not in before:   # Swarm's defaults, written out, start-first
        allowed |= {f"UpdateConfig.{key}" for key in SWARM_UPDATE_DEFAULTS}
    assert changed <= allowed, changed - allowed
    # the generation constraint is the only one replaced; the others keep their order
    old = (before["TaskTemplate"].get("Placement") or {}).get("Constraints") or []
    new = written["TaskTemplate"]["Placement"]["Constraints"]
    assert new == [c for c in old if not GENERATION.match(c)] + [
        f"node.labels.ecoscale.generation=={placed.generation}"]
    assert written["Mode"]["Replicated"]["Replicas"] == placed.replicas
    # start-first; an update config of the user's keeps every other field, none is added
    own = before.get("UpdateConfig")
    assert written["UpdateConfig"] == {**(own or SWARM_UPDATE_DEFAULTS), "Order": "start-first"}
    # what a stack deploy left out stays out
    for key in ("RollbackConfig", "EndpointSpec", "Labels"):
        assert (key in before) == (written.get(key) is not None), key
    assert ("Networks" in before["TaskTemplate"]) == ("Networks" in written["TaskTemplate"])


def test_the_full_spec_survives_field_by_field():
    """The parts the issue names, one by one, on the richest recorded spec."""
    api = RecordingAPIClient()
    target = adopter(api)
    target.apply(target.read().services["user-timeline-service"], ServicePlacement("old", 1))
    written = api.posted[0][2]
    before = SERVICES["socialnetwork_user-timeline-service"]["Spec"]
    container, was = written["TaskTemplate"]["ContainerSpec"], before["TaskTemplate"][
        "ContainerSpec"]
    for key in ("Image", "Command", "Args", "Env", "Mounts", "Healthcheck", "Hostname",
                "StopGracePeriod", "Labels"):
        assert container[key] == was[key], key
    for key in ("Resources", "RestartPolicy", "Networks"):
        assert written["TaskTemplate"][key] == before["TaskTemplate"][key], key
    placement = written["TaskTemplate"]["Placement"]
    for key in ("Preferences", "MaxReplicas", "Platforms"):
        assert placement[key] == before["TaskTemplate"]["Placement"][key], key
    assert written["EndpointSpec"] == before["EndpointSpec"]   # the published port
    assert written["Labels"] == before["Labels"]
    assert "RollbackConfig" not in written or written["RollbackConfig"] is None


def test_fetch_current_spec_would_add_the_engines_defaults():
    """Why ecoscale writes its own read whole: docker-py's merge with a read that has the
    engine's defaults inserted fills in every part the user's spec lacks."""
    api = RecordingAPIClient()
    current = api.inspect_service("socialnetwork_media-memcached")
    api.update_service(current["ID"], current["Version"]["Index"],
                       task_template=current["Spec"]["TaskTemplate"],
                       mode=current["Spec"]["Mode"], fetch_current_spec=True)
    merged = api.posted[0][2]
    assert merged["RollbackConfig"] == SWARM_UPDATE_DEFAULTS
    assert "StopGracePeriod" in merged["TaskTemplate"]["ContainerSpec"]
    assert "RollbackConfig" not in current["Spec"]


def test_read_maps_the_stack_and_leaves_other_services_alone():
    state = adopter(RecordingAPIClient()).read()
    assert set(state.services) == {"user-timeline-service", "nginx-thrift", "media-memcached",
                                   "jaeger-agent"}   # not the other stack's global service
    timeline = state.services["user-timeline-service"]
    assert timeline.target_name == "socialnetwork_user-timeline-service"
    assert timeline.placement == ServicePlacement("new", 2)
    assert timeline.placement_source == "constraint" and timeline.running == {"new": 2}
    assert timeline.update_order == "stop-first"   # no UpdateConfig: Swarm's default
    nginx = state.services["nginx-thrift"]
    assert nginx.placement == ServicePlacement("old", 1)   # unconstrained: where it runs
    assert nginx.placement_source == "tasks" and nginx.update_order == "stop-first"
    memcached = state.services["media-memcached"]
    assert memcached.placement is None and memcached.running == {}   # its task is starting
    assert memcached.replicas == 1   # Replicated without a count: Swarm's one


@pytest.mark.parametrize("target, expected", [
    (TargetConfig(services={"frontend": "socialnetwork_nginx-thrift"}), {"frontend"}),
    (TargetConfig(stack="socialnetwork", services={"frontend": "socialnetwork_nginx-thrift"}),
     {"frontend", "user-timeline-service", "media-memcached", "jaeger-agent"}),
    (TargetConfig(stack="monitoring"), {"node-exporter"}),
], ids=["explicit-only", "explicit-overrides-the-stack-rule", "another-stack"])
def test_the_mapping_selects_and_names(target, expected):
    state = adopter(RecordingAPIClient(), target).read()
    assert set(state.services) == expected
    if "node-exporter" in expected:   # a global service has no replica count to set
        assert state.services["node-exporter"].placement is None


def test_labels_keep_working_beside_a_mapping():
    services = copy.deepcopy(SERVICES)
    labelled = services["socialnetwork_jaeger-agent"]["Spec"]["Labels"]
    labelled.update({"ecoscale.managed": "true", "ecoscale.service": "tracing"})
    services["lab-service"] = copy.deepcopy(services.pop("monitoring_node-exporter"))
    services["lab-service"]["Spec"].update(
        Name="lab-service", Labels={"ecoscale.managed": "true"}, Mode={"Replicated": {}})
    state = adopter(RecordingAPIClient(services)).read()
    assert "tracing" in state.services and "jaeger-agent" not in state.services
    assert state.services["lab-service"].target_name == "lab-service"


def test_an_update_checks_the_service_still_maps_to_the_same_name():
    api = RecordingAPIClient()
    target = adopter(api)
    service = target.read().services["nginx-thrift"]
    api.recorded["socialnetwork_nginx-thrift"]["Spec"]["Labels"].update(
        {"ecoscale.managed": "true", "ecoscale.service": "media-frontend"})
    with pytest.raises(ActionFailed, match="no longer stands for topology service "
                                           "'nginx-thrift' .*maps to 'media-frontend'"):
        target.apply(service, ServicePlacement("old", 1))
    assert api.posted == []


def test_an_adopted_service_needs_no_managed_label():
    api = RecordingAPIClient()
    target = adopter(api)
    service = target.read().services["jaeger-agent"]
    assert "ecoscale.managed" not in SERVICES["socialnetwork_jaeger-agent"]["Spec"]["Labels"]
    target.apply(service, ServicePlacement("new", 1))
    assert len(api.posted) == 1


def test_a_global_service_is_refused_not_turned_replicated():
    api = RecordingAPIClient()
    with pytest.raises(ActionFailed, match="not a replicated service"):
        update_service(api, "monitoring_node-exporter", lambda spec: __import__(
            "ecoscale.adapters.swarm", fromlist=["updated_spec"]).updated_spec(
                spec, ServicePlacement("old", 1)), sleep=lambda _s: None)
    assert api.posted == []


def test_the_lab_labels_still_select_without_a_mapping():
    """No stack, no services: only services labelled managed (the stack's have none; the
    read lists them all, to see whose tasks keep a node busy)."""
    api = RecordingAPIClient()
    state = adopter(api, TargetConfig()).read()
    assert api.services()   # the recorded stack is there...
    assert state.services == {}   # ...and none of it is managed without a mapping
    assert any(node.other_tasks for node in state.nodes)


class SwarmLike(RecordingAPIClient):
    """RecordingAPIClient that behaves as a Swarm: an update becomes the service's spec at
    once (what went over the wire, nulls as absent keys), and a service constrained to a
    generation runs its replicas on that generation's node (unconstrained: as recorded)."""

    NODES = {"new": "yuqn26nlojjk9dgbkgmkilcm6", "old": "cbmua67dqng7oim355xil11m8"}

    def _post_json(self, url, data, params=None, headers=None, **kwargs):
        super()._post_json(url, data, params, headers, **kwargs)
        service_id = url.split("/services/")[1].split("/")[0]
        service = next(s for s in self.recorded.values() if s["ID"] == service_id)
        service["Spec"] = {k: v for k, v in self.posted[-1][2].items() if v is not None}
        service["Version"]["Index"] += 1

    def tasks(self, filters=None):
        from ecoscale.adapters.swarm import replicas_of

        out = []
        for service in self.recorded.values():
            generation = generation_of(service["Spec"])
            if generation is None:
                out += [t for t in recorded("stack_tasks") if t["ServiceID"] == service["ID"]]
                continue
            out += [{"ServiceID": service["ID"], "NodeID": self.NODES[generation], "Slot": i,
                     "Status": {"State": "running"}}
                    for i in range(replicas_of(service["Spec"]) or 0)]
        return out


def test_the_profiler_moves_adopted_services_and_gives_them_back_as_they_were(tmp_path):
    from types import SimpleNamespace

    from ecoscale.profiler.experiments import parse_pool
    from ecoscale.profiler.runner import Runner
    from ecoscale.testing import FakeClock

    names = ("user-timeline-service", "nginx-thrift", "jaeger-agent")
    topology = SimpleNamespace(app="sn", services=dict.fromkeys(names),
                               service_names=names, frontend="nginx-thrift")
    pool = parse_pool({"frontend_url": "http://f:8080", "prometheus_url": "http://p:9090",
                       "target": {"stack": "socialnetwork"}}, "pool.yaml")
    api = SwarmLike()
    runner = Runner(pool, topology, adopter(api, pool.target), prometheus=None, load=None,
                    raw_csv=tmp_path / "raw.csv", clock=FakeClock(), log=lambda _m: None)
    runner.remember()
    assert runner.original == {"user-timeline-service": ServicePlacement("new", 2),
                               "nginx-thrift": ServicePlacement("old", 1),
                               "jaeger-agent": ServicePlacement("new", 1)}
    assert runner.unconstrained == {"nginx-thrift", "jaeger-agent"}
    # nginx-thrift already runs its one task on old, unconstrained: it is pinned there
    assert runner.place(dict.fromkeys(names, ServicePlacement("old", 1))) == 3
    pinned = api.recorded["socialnetwork_nginx-thrift"]["Spec"]["TaskTemplate"]["Placement"]
    assert pinned["Constraints"] == ["node.hostname != build-host",
                                     "node.labels.ecoscale.generation==old"]
    assert runner.place(dict.fromkeys(names, ServicePlacement("old", 1))) == 0
    moved = api.recorded["socialnetwork_jaeger-agent"]["Spec"]["TaskTemplate"]["Placement"]
    assert moved["Constraints"] == ["node.role == manager", "node.labels.ecoscale.generation==old"]
    moved = {name: api.recorded[f"socialnetwork_{name}"]["Spec"].get("UpdateConfig")
             for name in names}
    assert all(config["Order"] == "start-first" for config in moved.values())
    runner.restore()
    for name in names:
        before = SERVICES[f"socialnetwork_{name}"]["Spec"]
        after = api.recorded[f"socialnetwork_{name}"]["Spec"]
        # its own update settings again (none where it had none), and no other change
        assert after.get("UpdateConfig") == before.get("UpdateConfig"), name
        assert set(differences(before, after)) <= {"TaskTemplate.Placement.Constraints"}, name
        was = before["TaskTemplate"].get("Placement", {}).get("Constraints", [])
        now = after["TaskTemplate"].get("Placement", {}).get("Constraints", [])
        assert [c for c in now if not GENERATION.match(c)] == [
            c for c in was if not GENERATION.match(c)], name
        assert generation_of(after) == generation_of(before), name   # None: none again
    timeline = api.recorded["socialnetwork_user-timeline-service"]["Spec"]
    assert timeline["TaskTemplate"]["Placement"]["Constraints"][-1] == \
        "node.labels.ecoscale.generation==new"   # its generation again, and 2 replicas
    assert timeline["Mode"] == {"Replicated": {"Replicas": 2}}


def test_an_update_order_is_given_back_once_the_rolling_update_is_done():
    class Rolling(SwarmLike):
        """After each update the service's rolling update replaces tasks for two reads."""

        rolling = 0
        events: list[str] = []

        def _post_json(self, url, data, params=None, headers=None, **kwargs):
            super()._post_json(url, data, params, headers, **kwargs)
            self.events.append("update")
            self.rolling = 2

        def inspect_service(self, service, insert_defaults=None):
            found = super().inspect_service(service, insert_defaults)
            if self.rolling:
                self.rolling -= 1
                found["UpdateStatus"] = {"State": "updating"}
            self.events.append(found.get("UpdateStatus", {}).get("State", "read"))
            return found

    api = Rolling()
    swarm = adopter(api)
    service = swarm.read().services["nginx-thrift"]
    stop_first = api.recorded["socialnetwork_nginx-thrift"]["Spec"]["UpdateConfig"]
    assert stop_first["Order"] == "stop-first"
    swarm.give_back_update_order(service)        # never changed here: nothing written
    assert not api.posted
    swarm.apply(service, ServicePlacement("old", 1))
    assert api.recorded["socialnetwork_nginx-thrift"]["Spec"]["UpdateConfig"]["Order"] == \
        "start-first"
    api.events.clear()
    swarm.give_back_update_order(service)
    # it waited for the move's rolling update to end, then wrote (a read before each write)
    assert api.events == ["updating", "updating", "read", "read", "update"]
    assert api.recorded["socialnetwork_nginx-thrift"]["Spec"]["UpdateConfig"] == stop_first
    assert generation_of(api.recorded["socialnetwork_nginx-thrift"]["Spec"]) == "old"
    assert len(api.posted) == 2
    swarm.give_back_update_order(service)        # given back once
    assert len(api.posted) == 2
    # a service that was start-first already (the lab's own app) is not written again
    api = Rolling()
    api.recorded["socialnetwork_nginx-thrift"]["Spec"]["UpdateConfig"]["Order"] = "start-first"
    swarm = adopter(api)
    swarm.apply(swarm.read().services["nginx-thrift"], ServicePlacement("old", 1))
    swarm.give_back_update_order(swarm.read().services["nginx-thrift"])
    assert len(api.posted) == 1


@pytest.mark.parametrize("swarm_name", ["socialnetwork_media-memcached",
                                        "socialnetwork_jaeger-agent",
                                        "socialnetwork_user-timeline-service"],
                         ids=["no-placement-at-all", "another-constraint", "generation-too"])
def test_a_released_spec_has_no_generation_constraint_and_nothing_else_changed(swarm_name):
    from ecoscale.adapters.swarm import released_spec, updated_spec

    before = SERVICES[swarm_name]["Spec"]
    pinned = updated_spec(before, ServicePlacement("old", 3))
    released = released_spec(pinned, 2)
    assert generation_of(released) is None and released["Mode"]["Replicated"]["Replicas"] == 2
    was = (before["TaskTemplate"].get("Placement") or {}).get("Constraints") or []
    expected = dict(before["TaskTemplate"].get("Placement") or {},
                    Constraints=[c for c in was if not GENERATION.match(c)])
    if not expected["Constraints"]:
        del expected["Constraints"]
    assert released["TaskTemplate"].get("Placement", {}) == expected
    assert {k: v for k, v in released["TaskTemplate"].items() if k != "Placement"} == {
        k: v for k, v in before["TaskTemplate"].items() if k != "Placement"}


def _with_host_mode_port(name):
    services = copy.deepcopy(SERVICES)
    spec = services[name]["Spec"]
    spec.setdefault("EndpointSpec", {})["Ports"] = [
        {"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": 8080, "PublishMode": "host"}]
    return services


@pytest.mark.parametrize("swarm_name, topology_name", [
    ("socialnetwork_user-timeline-service", "user-timeline-service"),
    ("socialnetwork_nginx-thrift", "nginx-thrift"),
], ids=["no-update-config", "own-stop-first-config"])
def test_a_service_publishing_a_host_mode_port_keeps_its_own_update_order(
        swarm_name, topology_name):
    """A start-first task on the node of the one it replaces cannot bind a host-mode port
    (the update hangs with the new task pending, as seen on the lab): the move keeps the
    service's own order, and the adoption report says so."""
    services = _with_host_mode_port(swarm_name)
    api = RecordingAPIClient(services)
    target = adopter(api)
    service = target.read().services[topology_name]
    assert service.update_order == "stop-first (kept: host-mode port 8080)"
    target.apply(service, ServicePlacement("old", 2))
    (_, _, written), = api.posted
    before = services[swarm_name]["Spec"]
    assert written.get("UpdateConfig") == before.get("UpdateConfig")
    assert set(differences(before, written)) <= {"TaskTemplate.Placement.Constraints",
                                                 "Mode.Replicated.Replicas"}


def test_the_adoption_report_names_the_services_whose_order_is_kept():
    from ecoscale.adapters.targets import KEPT_ORDER_NOTE, adoption

    api = RecordingAPIClient(_with_host_mode_port("socialnetwork_nginx-thrift"))
    report = adoption(("nginx-thrift", "user-timeline-service"), adopter(api).read(), STACK)
    assert report.kept_order == ("nginx-thrift",)
    assert "nginx-thrift" not in report.stop_first
    assert any(line.startswith(KEPT_ORDER_NOTE) for line in report.lines())
    assert report.as_dict()["order_kept"] == ["nginx-thrift"]


def test_two_swarm_services_for_one_topology_name_fail_the_adoption_report():
    """The lab's own app (labelled) beside a stack with the same names: ecoscale would
    manage only the first by name, so the report fails and says which, instead of
    choosing silently."""
    from ecoscale.adapters.targets import adoption

    services = copy.deepcopy(SERVICES)
    twin = copy.deepcopy(services["socialnetwork_nginx-thrift"])
    twin["ID"] = "twin-of-nginx"
    twin["Spec"]["Name"] = "lab-nginx-thrift"
    twin["Spec"]["Labels"] = {"ecoscale.managed": "true", "ecoscale.service": "nginx-thrift"}
    services[twin["Spec"]["Name"]] = twin
    state = adopter(RecordingAPIClient(services)).read()
    assert state.ambiguous == {"nginx-thrift": ("lab-nginx-thrift",
                                                "socialnetwork_nginx-thrift")}
    report = adoption(("nginx-thrift",), state, STACK)
    assert not report.ok and not report.unmapped
    assert "1 mapped by more than one Swarm service: nginx-thrift" in report.problem()
    assert "lab-nginx-thrift, socialnetwork_nginx-thrift" in "\n".join(report.lines())
    assert "services: {nginx-thrift: <swarm service>}" in report.fix()
    assert report.as_dict()["ambiguous"] == {
        "nginx-thrift": ["lab-nginx-thrift", "socialnetwork_nginx-thrift"]}


# ---- shares: a CPU budget per task; node availability ------------------------------------
class NodeRecordingAPIClient(RecordingAPIClient):
    """RecordingAPIClient that also answers ``inspect_node`` from the recorded nodes (the
    node updates it would POST are recorded with the service updates)."""

    def inspect_node(self, node_id):
        return copy.deepcopy(next(n for n in recorded("nodes") if n["ID"] == node_id))

    def _raise_for_status(self, response):
        return None   # the recorded post has no HTTP response


@pytest.mark.parametrize("topology_name", ["user-timeline-service", "media-memcached"],
                         ids=["own-resources", "no-resources"])
def test_a_cpu_budget_changes_only_the_nanocpus_of_limits_and_reservations(topology_name):
    api = RecordingAPIClient()
    target = adopter(api)
    service = target.read().services[topology_name]
    target.apply(service, ServicePlacement("old", 1), replica_cpus=0.3)
    written = api.posted[0][2]
    before = SERVICES[service.target_name]["Spec"]
    changed = set(differences(before, written)) - {
        "TaskTemplate.Placement.Constraints", "Mode.Replicated.Replicas", "UpdateConfig.Order",
        *(f"UpdateConfig.{key}" for key in SWARM_UPDATE_DEFAULTS)}
    assert changed == {"TaskTemplate.Resources.Limits.NanoCPUs",
                       "TaskTemplate.Resources.Reservations.NanoCPUs"}
    resources = written["TaskTemplate"]["Resources"]
    assert resources["Limits"]["NanoCPUs"] == resources["Reservations"]["NanoCPUs"] == 300_000_000
    own = before["TaskTemplate"].get("Resources") or {}
    for part in ("Limits", "Reservations"):   # the user's memory limits stay
        assert {k: v for k, v in resources[part].items() if k != "NanoCPUs"} == {
            k: v for k, v in (own.get(part) or {}).items() if k != "NanoCPUs"}


def test_a_budget_is_read_back_and_a_tiny_one_is_dockers_floor():
    api = RecordingAPIClient()
    target = adopter(api)
    assert target.read().services["user-timeline-service"].cpu_reservation == 0.25
    assert target.read().services["user-timeline-service"].cpu_limit == 1.0
    target.apply(target.read().services["nginx-thrift"], ServicePlacement("old", 1),
                 replica_cpus=0.001)
    assert api.posted[0][2]["TaskTemplate"]["Resources"]["Limits"]["NanoCPUs"] == 10_000_000


def test_restart_is_a_forced_start_first_update_and_nothing_else():
    api = RecordingAPIClient()
    target = adopter(api)
    service = target.read().services["user-timeline-service"]
    target.apply(service, service.placement, restart=True)
    written = api.posted[0][2]
    before = SERVICES["socialnetwork_user-timeline-service"]["Spec"]
    changed = set(differences(before, written)) - {
        *(f"UpdateConfig.{key}" for key in SWARM_UPDATE_DEFAULTS),
        "TaskTemplate.Placement.Constraints"}   # the generation constraint, now explicit
    assert changed == {"TaskTemplate.ForceUpdate"}
    assert written["TaskTemplate"]["ForceUpdate"] == int(
        before["TaskTemplate"].get("ForceUpdate") or 0) + 1
    assert written["UpdateConfig"]["Order"] == "start-first"


def test_the_read_reports_each_nodes_availability_and_tasks():
    state = adopter(RecordingAPIClient()).read()
    nodes = {n.name: n for n in state.nodes}
    new, old = nodes["ecoscale-new-1"], nodes["ecoscale-old-1"]
    assert (new.generation, new.availability, new.ready, new.emptied) == (
        "new", "active", True, False)
    # the stack's services by topology name (a 'starting' task counts: it will run there);
    # the global node-exporter is not counted anywhere
    assert new.tasks == {"jaeger-agent": 1, "media-memcached": 1, "user-timeline-service": 2}
    assert old.tasks == {"nginx-thrift": 1} and old.other_tasks == ()
    unmapped = adopter(RecordingAPIClient(), TargetConfig()).read()
    assert {n.name: n.other_tasks for n in unmapped.nodes} == {
        "ecoscale-new-1": ("socialnetwork_jaeger-agent", "socialnetwork_media-memcached",
                           "socialnetwork_user-timeline-service"),
        "ecoscale-old-1": ("socialnetwork_nginx-thrift",)}


@pytest.mark.parametrize("availability, labels", [
    ("pause", {"ecoscale.generation": "old", "ecoscale.node": "old-1",
               "ecoscale.emptied": "true"}),
    ("drain", {"ecoscale.generation": "old", "ecoscale.node": "old-1",
               "ecoscale.emptied": "true"}),
    ("active", {"ecoscale.generation": "old", "ecoscale.node": "old-1"}),
])
def test_set_availability_writes_only_the_availability_and_ecoscales_mark(availability, labels):
    api = NodeRecordingAPIClient()
    target = adopter(api)
    old = next(n for n in target.read().nodes if n.generation == "old")
    target.set_availability(old, availability)
    (url, _params, written), = api.posted
    node = next(n for n in recorded("nodes") if n["ID"] == old.node_id)
    assert url.endswith(f"/nodes/{old.node_id}/update?version={node['Version']['Index']}")
    assert written == {**node["Spec"], "Availability": availability, "Labels": labels}


def test_a_node_an_operator_drained_is_no_capacity_one_ecoscale_emptied_is():
    def nodes(availability, emptied):
        out = recorded("nodes")
        old = next(n for n in out if n["Spec"]["Labels"]["ecoscale.generation"] == "old")
        old["Spec"]["Availability"] = availability
        if emptied:
            old["Spec"]["Labels"]["ecoscale.emptied"] = "true"
        return out

    for availability, emptied, generations in [("drain", False, ("new",)),
                                               ("drain", True, ("new", "old")),
                                               ("pause", False, ("new", "old"))]:
        api = RecordingAPIClient()
        api.nodes = lambda filters=None, a=availability, e=emptied: nodes(a, e)
        state = adopter(api).read()
        assert state.generations == generations, (availability, emptied)
        old = next(n for n in state.nodes if n.generation == "old")
        assert old.usable == (emptied or availability == "active")
