"""The ``target:`` section and the one factory of orchestrator adapters."""

import pytest

from ecoscale.adapters.swarm import DockerSwarm
from ecoscale.adapters.targets import KINDS, build_target, describe_target
from ecoscale.config import TARGET_KINDS, LabelConfig, TargetConfig, parse_config
from ecoscale.errors import InputError

BASE = {"app": "socialNetwork", "table": "t.yaml",
        "prometheus": {"qps": "sum(rate(x[1m]))", "p99_ms": "histogram_quantile(0.99, y)"}}


@pytest.mark.parametrize("extra, expected", [
    ({}, TargetConfig("swarm", "")),
    ({"docker_host": "unix:///old.sock"}, TargetConfig("swarm", "unix:///old.sock")),
    ({"target": {"docker_host": "tcp://m:2375"}}, TargetConfig("swarm", "tcp://m:2375")),
    ({"target": {"kind": "swarm", "docker_host": "tcp://m:2375"},
      "docker_host": "tcp://m:2375"}, TargetConfig("swarm", "tcp://m:2375")),
    ({"target": {"stack": "socialnetwork"}}, TargetConfig("swarm", "", "socialnetwork")),
    ({"target": {"stack": "sn", "services": {"nginx-thrift": "sn_nginx-web-server"}}},
     TargetConfig("swarm", "", "sn", {"nginx-thrift": "sn_nginx-web-server"})),
], ids=["default", "old-top-level-key", "section", "both-agree", "stack", "stack-and-map"])
def test_the_target_section_and_the_old_docker_host_key(extra, expected):
    assert parse_config({**BASE, **extra}, "c.yaml").target == expected


@pytest.mark.parametrize("extra, fragment", [
    ({"target": {"docker_host": "a"}, "docker_host": "b"}, "keep only target.docker_host"),
    ({"target": {"dockerhost": "a"}}, "target.dockerhost: unknown setting"),
    ({"target": "swarm"}, "target: expected a mapping"),
    ({"docker_host": 5}, "docker_host: expected a string"),
    ({"target": {"kind": "nomad"}}, "target.kind: unknown orchestrator 'nomad'; known kinds: "
                                    "swarm"),
    ({"target": {"services": ["a", "b"]}}, "target.services: expected a mapping"),
    ({"target": {"services": {"a": 3}}}, "target.services.a: expected a Swarm service name"),
    ({"target": {"services": {"a": {"name": "x"}}}}, "target.services.a: expected a Swarm"),
    ({"target": {"services": {"a": "s_x", "b": "s_x"}}},
     "target.services.b: 's_x' is already the Swarm service of 'a'"),
    ({"target": {"stack": "my stack"}}, "target.stack: 'my stack' is not a stack name"),
    ({"target": {"stack": 5}}, "target.stack: expected a string"),
    ({"target": {"stacks": "sn"}}, "target.stacks: unknown setting (did you mean stack?)"),
], ids=["both-differ", "typo", "not-a-mapping", "not-a-string", "unknown-kind",
        "services-a-list", "services-value-a-number", "services-value-a-mapping",
        "one-swarm-service-twice", "stack-with-a-space", "stack-a-number", "stack-typo"])
def test_a_bad_target_section_names_the_field(extra, fragment):
    with pytest.raises(InputError, match="c.yaml") as raised:
        parse_config({**BASE, **extra}, "c.yaml")
    assert fragment in str(raised.value)


def test_the_factory_builds_the_swarm_adapter_with_its_settings():
    labels = LabelConfig(managed="x.managed")
    target = TargetConfig("swarm", "tcp://m:2375", "sn", {"a": "b"})
    built = build_target(target, labels)
    assert isinstance(built, DockerSwarm)
    assert built.docker_host == "tcp://m:2375" and built.labels == labels
    assert built.target == target


def test_the_kinds_a_config_may_name_are_the_kinds_the_factory_builds():
    assert set(TARGET_KINDS) == set(KINDS)


MAPPING = TargetConfig(stack="sn", services={"nginx-thrift": "sn_nginx-web-server",
                                             "media": "other_media"})


@pytest.mark.parametrize("target, topology, swarm", [
    (TargetConfig(), "user-service", "user-service"),
    (TargetConfig(stack="sn"), "user-service", "sn_user-service"),
    (MAPPING, "user-service", "sn_user-service"),
    (MAPPING, "nginx-thrift", "sn_nginx-web-server"),
    (MAPPING, "media", "other_media"),
], ids=["labels-only", "stack", "stack-beside-map", "map-in-the-stack", "map-outside"])
def test_topology_names_map_to_swarm_names(target, topology, swarm):
    assert target.target_name(topology) == swarm
    assert target.service_name(swarm) == (topology if target.adopts else None)


@pytest.mark.parametrize("swarm, expected", [
    ("sn_nginx-thrift", None),             # the map names nginx-thrift's service otherwise
    ("sn_nginx-web-server", "nginx-thrift"),
    ("sn_", None),
    ("snx_a", None),
    ("other_x", None),
], ids=["stack-rule-overridden", "mapped", "prefix-only", "another-stack", "unmapped"])
def test_which_topology_name_a_swarm_service_maps_to(swarm, expected):
    assert MAPPING.service_name(swarm) == expected


def test_an_unknown_kind_names_the_file_the_field_and_the_kinds():
    with pytest.raises(InputError) as raised:
        build_target(TargetConfig("kubernetes"), source="c.yaml")
    text = str(raised.value)
    assert text.startswith("c.yaml") and "target.kind" in text and "'kubernetes'" in text
    assert all(kind in text for kind in KINDS)


@pytest.mark.parametrize("target, expected", [
    (TargetConfig("swarm", "tcp://m:2375"), "tcp://m:2375"),
    (TargetConfig("swarm", ""), "DOCKER_HOST or /var/run/docker.sock"),
], ids=["set", "default"])
def test_describe_target(target, expected):
    assert describe_target(target) == expected
