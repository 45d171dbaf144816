"""The one factory of orchestrator adapters: ``target: {kind: ..., ...}`` -> an Orchestrator.

The daemon (daemon/wiring.py), the profiler (profiler/main.py), the lab and the live
evaluation build their orchestrator here, and nowhere else. Another orchestrator is one new
adapter module implementing ``ecoscale.ports.Orchestrator`` plus one entry in ``KINDS``.
"""

from __future__ import annotations

from collections.abc import Callable

from ecoscale.config import LabelConfig, TargetConfig
from ecoscale.errors import InputError
from ecoscale.ports import Orchestrator


def _swarm(target: TargetConfig, labels: LabelConfig) -> Orchestrator:
    from ecoscale.adapters.swarm import DockerSwarm  # docker-py only when it is used

    return DockerSwarm(target.docker_host, labels)


KINDS: dict[str, Callable[[TargetConfig, LabelConfig], Orchestrator]] = {
    "swarm": _swarm,
}
"""Orchestrator kind (``target.kind``) -> how to build its adapter."""


def build_target(target: TargetConfig, labels: LabelConfig | None = None,
                 source: str = "the configuration") -> Orchestrator:
    """The orchestrator adapter that ``target`` names; an unknown kind is an InputError of
    ``source`` (the config file) that lists the known kinds."""
    make = KINDS.get(target.kind)
    if make is None:
        raise InputError(source, f"target.kind: unknown orchestrator '{target.kind}'; known "
                                 f"kinds: {', '.join(sorted(KINDS))}")
    return make(target, labels or LabelConfig())


def describe_target(target: TargetConfig) -> str:
    """Where the target is, for messages: the Docker API of a swarm, else its kind."""
    if target.kind == "swarm":
        return target.docker_host or "DOCKER_HOST or /var/run/docker.sock"
    return target.kind
