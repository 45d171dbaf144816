"""The ``target:`` section and the one factory of orchestrator adapters."""

import pytest

from ecoscale.adapters.swarm import DockerSwarm
from ecoscale.adapters.targets import KINDS, build_target, describe_target
from ecoscale.config import LabelConfig, TargetConfig, parse_config
from ecoscale.errors import InputError

BASE = {"app": "socialNetwork", "table": "t.yaml",
        "prometheus": {"qps": "sum(rate(x[1m]))", "p99_ms": "histogram_quantile(0.99, y)"}}


@pytest.mark.parametrize("extra, expected", [
    ({}, TargetConfig("swarm", "")),
    ({"docker_host": "unix:///old.sock"}, TargetConfig("swarm", "unix:///old.sock")),
    ({"target": {"docker_host": "tcp://m:2375"}}, TargetConfig("swarm", "tcp://m:2375")),
    ({"target": {"kind": "swarm", "docker_host": "tcp://m:2375"},
      "docker_host": "tcp://m:2375"}, TargetConfig("swarm", "tcp://m:2375")),
    ({"target": {"kind": "nomad"}}, TargetConfig("nomad", "")),
], ids=["default", "old-top-level-key", "section", "both-agree", "kind-kept-for-factory"])
def test_the_target_section_and_the_old_docker_host_key(extra, expected):
    assert parse_config({**BASE, **extra}, "c.yaml").target == expected


@pytest.mark.parametrize("extra, fragment", [
    ({"target": {"docker_host": "a"}, "docker_host": "b"}, "keep only target.docker_host"),
    ({"target": {"dockerhost": "a"}}, "target.dockerhost: unknown setting"),
    ({"target": "swarm"}, "target: expected a mapping"),
    ({"docker_host": 5}, "docker_host: expected a string"),
], ids=["both-differ", "typo", "not-a-mapping", "not-a-string"])
def test_a_bad_target_section_names_the_field(extra, fragment):
    with pytest.raises(InputError, match="c.yaml") as raised:
        parse_config({**BASE, **extra}, "c.yaml")
    assert fragment in str(raised.value)


def test_the_factory_builds_the_swarm_adapter_with_its_settings():
    labels = LabelConfig(managed="x.managed")
    built = build_target(TargetConfig("swarm", "tcp://m:2375"), labels)
    assert isinstance(built, DockerSwarm)
    assert built.docker_host == "tcp://m:2375" and built.labels == labels


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
