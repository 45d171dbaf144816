"""Swarm service definitions and the helpers that read and change placement."""

from types import SimpleNamespace

import pytest

from ecoscale.lab import deploy, swarm
from ecoscale.lab.apps import load_app
from ecoscale.lab.config import LabConfig


@pytest.fixture
def config():
    return LabConfig(state_dir="/tmp/lab-test")


def test_an_app_service_is_managed_pinned_to_new_dnsrr_and_start_first(config):
    app = load_app("socialNetwork")
    spec = deploy.app_service(config, app, "text-service", "img:1", {"ConfigName": "c"})
    assert spec["name"] == "text-service"
    assert spec["labels"][deploy.MANAGED_LABEL] == "true"
    assert spec["labels"][deploy.SERVICE_LABEL] == "text-service"
    assert spec["labels"][deploy.APP_LABEL] == "socialNetwork"
    assert spec["constraints"] == ["node.labels.ecoscale.generation==new"]
    assert spec["mode"]["replicated"]["Replicas"] == 1
    assert spec["endpoint_spec"]["Mode"] == "dnsrr"
    assert spec["update_config"]["Order"] == "start-first"
    assert spec["networks"] == [config.network]
    assert deploy.NODE_ENV in spec["env"]
    assert {m["Target"] for m in spec["mounts"]} <= {"/usr", "/lib", "/lib64"}
    assert all(m["ReadOnly"] for m in spec["mounts"])
    assert spec["command"][-2:] == ["--service", "text-service"]


def test_an_app_service_runs_in_one_slot_of_the_first_generation():
    app = load_app("socialNetwork")
    slotted = LabConfig.with_nodes(slot_cpus=0.05, state_dir="/tmp/lab-test")
    spec = deploy.app_service(slotted, app, "text-service", "img:1", {"ConfigName": "c"})
    assert spec["resources"]["Limits"]["NanoCPUs"] == 50_000_000
    assert spec["resources"]["Reservations"]["NanoCPUs"] == 50_000_000
    plain = deploy.app_service(LabConfig(state_dir="/tmp/lab-test"), app, "text-service",
                               "img:1", {"ConfigName": "c"})
    assert plain["resources"] is None
    # a change of slot is a change of definition: the next deploy recreates the service
    assert plain["labels"][deploy.SPEC_LABEL] != spec["labels"][deploy.SPEC_LABEL]


def test_gateway_and_prometheus_are_published_on_the_manager(config):
    app = load_app("socialNetwork")
    gateway = deploy.gateway_service(config, app, "img:1", {"ConfigName": "c"})
    prometheus = deploy.prometheus_service(config, "img:1")
    for spec, port in ((gateway, config.gateway_port), (prometheus, config.prometheus_port)):
        assert spec["constraints"] == ["node.role==manager"]
        (published,) = spec["endpoint_spec"]["Ports"]
        assert published["PublishMode"] == "host" and published["PublishedPort"] == port
        assert deploy.MANAGED_LABEL not in spec["labels"]
    assert "--gateway" in gateway["command"]
    assert prometheus["command"][0] == "/usr/bin/prometheus"


def fake_service(tasks, replicas=1, generation="new", update=None):
    spec = {"Name": "svc", "Mode": {"Replicated": {"Replicas": replicas}},
            "TaskTemplate": {"Placement": {"Constraints": [
                f"node.labels.ecoscale.generation=={generation}"]}}}
    return SimpleNamespace(attrs={"Spec": spec, "UpdateStatus": update or {}},
                           tasks=lambda: tasks)


def task(node, state, desired="running", err=""):
    return {"NodeID": node, "DesiredState": desired, "Status": {"State": state, "Err": err},
            "NetworksAttachments": [{"Addresses": ["10.214.1.5/24"]}]}


NODES = {"n1": {"name": "new-1", "generation": "new"}, "o1": {"name": "old-1",
                                                             "generation": "old"}}


@pytest.mark.parametrize("tasks, generation, expected", [
    ([task("n1", "running")], "new", ""),
    ([task("n1", "starting")], "new", "0/1 tasks running"),
    ([task("n1", "running")], "old", "not on 'old' nodes"),
    ([task("o1", "running"), task("n1", "running", desired="shutdown")], "old",
     "old task(s) still stopping"),
    ([task("o1", "running"), task("n1", "shutdown", desired="shutdown")], "old", ""),
    ([task("o1", "rejected", err="no such image")], "old", "no such image"),
], ids=["converged", "starting", "misplaced", "old-stopping", "old-gone", "error"])
def test_convergence_names_what_is_missing(tasks, generation, expected):
    problem = swarm.convergence_problem(fake_service(tasks, generation=generation), NODES)
    assert (expected in problem) if expected else problem == ""


def test_a_paused_update_of_an_unmanaged_service_is_named():
    service = fake_service([task("n1", "running")], update={"State": "paused",
                                                            "Message": "task failed"})
    assert swarm.convergence_problem(service, NODES) == "svc: update paused: task failed"
    assert swarm.convergence_problem(fake_service([task("n1", "running")],
                                                  update={"State": "completed"}), NODES) == ""


def test_a_spaced_constraint_and_a_global_service_are_read_as_the_adapter_reads_them():
    spaced = fake_service([task("o1", "running")], generation="old")
    spaced.attrs["Spec"]["TaskTemplate"]["Placement"]["Constraints"] = [
        "node.labels.ecoscale.generation == old"]
    assert swarm.convergence_problem(spaced, NODES) == ""
    spaced.attrs["Spec"]["Mode"] = {"Global": {}}   # no replica count to compare
    assert swarm.convergence_problem(spaced, NODES) == ""


def test_task_view_names_nodes_and_addresses():
    view = swarm.task_view(fake_service([task("o1", "running")]), NODES)
    assert view == [{"node": "old-1", "generation": "old", "state": "running",
                     "desired": "running", "address": "10.214.1.5", "error": ""}]
