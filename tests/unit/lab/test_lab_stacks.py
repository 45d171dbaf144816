"""Served stacks (pure parts): the recording rules that re-expose the emulator's series as
spanmetrics and cAdvisor, the stacks' scrape job, the deploy's environment and the shipped
compose file's shape."""

import copy
import re

import pytest
import yaml

from ecoscale.adapters.files import load_topology
from ecoscale.emulator.metrics import latency_buckets_s
from ecoscale.lab.config import LabConfig
from ecoscale.lab.prometheus import render_config, template_text
from ecoscale.lab.spanmetrics import (
    CONTAINER_CPU,
    SPAN_CALLS,
    SPAN_DURATION,
    STACK_JOB,
    _le,
    _ms,
    stack_rules,
)
from ecoscale.lab.stacks import stack_env, swarm_name, unexpected_changes
from ecoscale.paths import deploy_dir, project_root

COMPOSE = deploy_dir() / "examples" / "socialnetwork-swarm.yml"
POOL = deploy_dir() / "examples" / "socialnetwork-pool.yaml"


def rules() -> list[dict]:
    document = yaml.safe_load(stack_rules())
    (group,) = document["groups"]
    return group["rules"]


def test_one_bucket_rule_per_emulator_bound_in_milliseconds():
    buckets = [r for r in rules() if r["record"] == f"{SPAN_DURATION}_bucket"]
    assert len(buckets) == len(latency_buckets_s()) + 1          # and +Inf
    pairs = [re.search(r'le="([^"]+)"\}.*"le", "([^"]+)"', r["expr"]).groups() for r in buckets]
    for (seconds, millis), bound in zip(pairs, (*latency_buckets_s(), float("inf")),
                                        strict=True):
        if bound == float("inf"):
            assert (seconds, millis) == ("+Inf", "+Inf")
        else:
            assert float(seconds) == bound
            assert float(millis) == pytest.approx(bound * 1000, rel=1e-12)


@pytest.mark.parametrize(("seconds", "le", "ms"), [
    (0.0001, "0.0001", "0.1"), (0.00012, "0.00012", "0.12"), (0.001, "0.001", "1"),
    (0.0015, "0.0015", "1.5"), (0.8, "0.8", "800"), (10.0, "10", "10000"),
], ids=["0.1ms", "0.12ms", "1ms", "1.5ms", "800ms", "10s"])
def test_bounds_are_written_as_the_emulator_writes_them(seconds, le, ms):
    assert (_le(seconds), _ms(seconds)) == (le, ms)


def test_every_rule_reads_only_the_stacks_job_and_names_the_sources_labels():
    every = rules()
    assert all(f'job="{STACK_JOB}"' in r["expr"] for r in every)
    records = {r["record"] for r in every}
    assert records == {f"{SPAN_DURATION}_bucket", f"{SPAN_DURATION}_sum",
                       f"{SPAN_DURATION}_count", SPAN_CALLS, CONTAINER_CPU}
    spans = [r for r in every if r["record"] != CONTAINER_CPU]
    assert all('"service_name", "$1", "service"' in r["expr"] for r in spans)
    assert all('"span_kind", "SPAN_KIND_SERVER"' in r["expr"] for r in spans)
    (cpu,) = [r for r in every if r["record"] == CONTAINER_CPU]
    assert "container_label_com_docker_swarm_service_name" in cpu["expr"]
    assert "container_label_com_docker_stack_namespace" in cpu["expr"]
    # one series per task: no rule sums the instances away
    assert all("instance" not in r["expr"] for r in every)


def test_the_stacks_job_finds_every_task_of_the_stack_by_swarm_dns():
    text = render_config(template_text(), ["a"], 8080, 2.0, ["sn_b", "sn_a"], 9000)
    config = yaml.safe_load(text)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    sd = jobs[STACK_JOB]["dns_sd_configs"][0]
    assert sd["names"] == ["tasks.sn_a", "tasks.sn_b"] and sd["port"] == 9000
    assert config["rule_files"] == ["stack-rules.yml"]
    without = yaml.safe_load(render_config(template_text(), ["a"], 8080, 2.0))
    assert STACK_JOB not in {job["job_name"] for job in without["scrape_configs"]}


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"stack_network": "ecoscale"}, "network and stack_network must differ"),
    ({"stack_network": "Bad_Net"}, "stack_network 'Bad_Net'"),
    ({"stack_gateway_port": 18080}, "stack_gateway_port must differ"),
], ids=["same-network", "bad-name", "port-clash"])
def test_bad_stack_settings_are_refused(changes, fragment):
    with pytest.raises(Exception, match=re.escape(fragment)):
        LabConfig(**changes)


def test_the_deploy_environment_names_what_the_compose_file_substitutes():
    env = stack_env("unix:///x.sock", "img:1", deploy_dir() / "doc.json", "net", 8089)
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    assert used == set(env) - {"DOCKER_HOST"}
    assert env["SOCIALNETWORK_PORT"] == "8089" and swarm_name("sn", "a-b") == "sn_a-b"


def test_the_compose_file_is_the_topology_without_anything_of_ecoscale():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    topology = load_topology("socialNetwork")
    assert set(topology.services) <= set(services)
    assert set(services) - set(topology.services) == {"jaeger-agent"}   # unmapped on purpose
    text = COMPOSE.read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "ecoscale.managed" not in body and "ecoscale.service" not in body
    assert "ecoscale.generation" not in body
    published = [name for name, s in services.items() if s.get("ports")]
    assert published == [topology.frontend]
    for name in topology.services:
        service = services[name]
        assert service["hostname"] == name
        assert service["command"][-2:] == ["--service", name]
        assert service["deploy"]["replicas"] == 1
        assert service["deploy"]["placement"]["constraints"]
    assert re.search(r"/work/|/var/tmp|/home/", body) is None    # no machine path


BEFORE = {"Name": "sn_a", "Labels": {"tier": "logic"},
          "TaskTemplate": {"ContainerSpec": {"Image": "i", "Env": ["A=1"]},
                           "Placement": {"Constraints": ["node.platform.os == linux"]}},
          "Mode": {"Replicated": {"Replicas": 1}},
          "UpdateConfig": {"Parallelism": 1, "Order": "stop-first"}}


def moved(**changes):
    spec = copy.deepcopy(BEFORE)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return spec


@pytest.mark.parametrize(("after", "unexpected"), [
    (moved(TaskTemplate__Placement__Constraints=["node.platform.os == linux",
                                                 "node.labels.ecoscale.generation==old"],
           Mode__Replicated__Replicas=2, UpdateConfig__Order="start-first"), []),
    (moved(TaskTemplate__Placement__Constraints=["node.labels.ecoscale.generation == new"]),
     ["TaskTemplate.Placement.Constraints[-]: 'node.platform.os == linux' -> '<absent>'"]),
    (moved(TaskTemplate__ContainerSpec__Env=[]), ["TaskTemplate.ContainerSpec.Env: ['A=1'] -> []"]),
    (moved(Labels={}), ["Labels.tier: 'logic' -> '<absent>'"]),
    (moved(UpdateConfig__Order="stop-first", UpdateConfig__Delay=5),
     ["UpdateConfig.Delay: '<absent>' -> 5"]),
    (moved(TaskTemplate__ForceUpdate=1), []),
], ids=["a-move", "other-constraint-dropped", "env-lost", "label-lost", "update-delay",
        "resumed"])
def test_a_moves_spec_changes_only_generation_replicas_and_order(after, unexpected):
    assert unexpected_changes(BEFORE, after) == unexpected


@pytest.mark.parametrize(("update", "unexpected"), [
    ({"Parallelism": 1, "FailureAction": "pause", "Monitor": 5_000_000_000,
      "MaxFailureRatio": 0, "Order": "start-first"}, []),
    ({"Parallelism": 0, "Order": "start-first"},
     ["UpdateConfig.Parallelism: '<absent>' -> 0"]),
], ids=["swarm-defaults-written-out", "every-task-at-once"])
def test_an_absent_update_config_may_become_swarms_defaults_only(update, unexpected):
    before = {k: v for k, v in BEFORE.items() if k != "UpdateConfig"}
    assert unexpected_changes(before, {**before, "UpdateConfig": update}) == unexpected


def test_a_start_first_service_must_stay_start_first():
    before = moved(UpdateConfig__Order="start-first")
    assert unexpected_changes(before, moved(UpdateConfig__Order="stop-first")) == [
        "UpdateConfig.Order: 'start-first' -> 'stop-first'"]


def test_the_readme_worked_set_is_the_shipped_pools_queries():
    """The integration test runs the pool's queries on the lab: the README's set with them."""
    readme = (project_root() / "README.md").read_text()
    section = readme[readme.index("### Metrics are configuration"):]
    block = section[section.index("```yaml") + len("```yaml"):]
    worked = yaml.safe_load(block[:block.index("```")])["queries"]
    pool = yaml.safe_load(POOL.read_text())
    assert worked == pool["queries"]
    assert pool["target"]["stack"] == "socialnetwork"
