"""The one factory of orchestrator adapters: ``target: {kind: ..., ...}`` -> an Orchestrator.

The daemon (daemon/wiring.py), the profiler (profiler/main.py), the lab and the live
evaluation build their orchestrator here, and nowhere else. Another orchestrator is one new
adapter module implementing ``ecoscale.ports.Orchestrator`` plus one entry in ``KINDS`` (and
its name in ``ecoscale.config.TARGET_KINDS``, which the config parser checks).

``adoption`` is the report of what the target's name mapping finds for a topology (``ecoscale
adopt``, ``run --check``, ``profile --check``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ecoscale.config import LabelConfig, TargetConfig
from ecoscale.errors import InputError
from ecoscale.ports import ClusterState, Orchestrator


def _swarm(target: TargetConfig, labels: LabelConfig) -> Orchestrator:
    from ecoscale.adapters.swarm import DockerSwarm  # docker-py only when it is used

    return DockerSwarm(target.docker_host, labels, target=target)


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


# ---- the adoption report: what a mapping finds ---------------------------------------------
UNSET = "<none>"
"""A cell with no value (kubectl's convention)."""
STOP_FIRST_NOTE = "update order stop-first: ecoscale's moves run start-first"


@dataclass(frozen=True)
class AdoptedService:
    """One topology service as the orchestrator runs it."""

    service: str
    target_name: str
    generation: str
    """'' when unknown (no generation constraint and no running task)."""
    generation_source: str
    """``constraint``, ``tasks`` (unconstrained: where most tasks run) or ''."""
    replicas: int | None
    """Desired replicas; None for a global service."""
    running: int
    """Running tasks, every generation."""
    update_order: str


@dataclass(frozen=True)
class Adoption:
    """What the target's mapping finds for a topology: the services it maps, the topology
    services it does not (with the ``services:`` entry that would fix each) and the
    orchestrator's services that the topology does not name (left alone)."""

    mapping: str
    """How names are mapped, for the reader (``stack socialnetwork``, ``labels ...``)."""
    mapped: tuple[AdoptedService, ...]
    unmapped: tuple[tuple[str, str], ...]
    """(topology service, the orchestrator's service to name in ``target.services``: a
    close match among the unnamed ones, else the name the mapping looked for)."""
    unnamed: tuple[str, ...]
    """The orchestrator's names of mapped or labelled services outside the topology."""

    @property
    def ok(self) -> bool:
        return not self.unmapped

    @property
    def stop_first(self) -> tuple[str, ...]:
        return tuple(s.service for s in self.mapped if s.update_order == "stop-first")

    def fix(self) -> str:
        """The ``target.services`` entries that map the unmapped services."""
        entries = ", ".join(f"{service}: {name}" for service, name in self.unmapped)
        return f"add under target: `services: {{{entries}}}` (each its Swarm service; " \
               "`docker service ls` lists them)"

    def lines(self) -> list[str]:
        """The report: a table (one row per topology service), then what is unmapped on
        either side and the update-order note."""
        header = ("SERVICE", "SWARM SERVICE", "GENERATION", "REPLICAS", "UPDATE ORDER")
        rows = [header]
        for s in self.mapped:
            generation = (UNSET if not s.generation else s.generation
                          if s.generation_source == "constraint" else f"{s.generation} (tasks)")
            replicas = "global" if s.replicas is None else f"{s.running}/{s.replicas}"
            rows.append((s.service, s.target_name, generation, replicas, s.update_order))
        rows += [(service, UNSET, UNSET, UNSET, UNSET) for service, _ in self.unmapped]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                 for row in rows]
        total = len(self.mapped) + len(self.unmapped)
        lines.append(f"{len(self.mapped)} of {total} topology services mapped ({self.mapping})"
                     + (f"; unmapped: {', '.join(s for s, _ in self.unmapped)}"
                        if self.unmapped else ""))
        if self.unmapped:
            lines.append(f"  fix: {self.fix()}")
        if self.unnamed:
            lines.append(f"not in the topology, left alone ({len(self.unnamed)}): "
                         f"{', '.join(self.unnamed)}")
        if self.stop_first:
            lines.append(f"{STOP_FIRST_NOTE} ({len(self.stop_first)} services: "
                         f"{', '.join(self.stop_first)})")
        return lines

    def as_dict(self) -> dict[str, Any]:
        """For --json."""
        return {
            "mapping": self.mapping, "ok": self.ok,
            "services": [asdict(s) for s in self.mapped],
            "unmapped": [{"service": s, "swarm_service": n} for s, n in self.unmapped],
            "fix": self.fix() if self.unmapped else "",
            "not_in_topology": list(self.unnamed),
            "stop_first": list(self.stop_first),
        }


def describe_mapping(target: TargetConfig, labels: LabelConfig) -> str:
    """How the target maps names, in words."""
    parts = []
    if target.services:
        parts.append(f"{len(target.services)} by target.services")
    if target.stack:
        parts.append(f"stack {target.stack}: {target.stack}_<service>")
    parts.append(f"labels {labels.managed}=true")
    return ", ".join(parts)


def adoption(services: Sequence[str], state: ClusterState, target: TargetConfig,
             labels: LabelConfig | None = None) -> Adoption:
    """The adoption report of topology ``services`` on one read of the orchestrator."""
    labels = labels or LabelConfig()
    wanted = set(services)
    mapped = []
    unmapped = []
    unnamed = sorted(m.target_name for name, m in state.services.items() if name not in wanted)
    for service in services:
        found = state.services.get(service)
        if found is None:
            close = difflib.get_close_matches(
                target.target_name(service), unnamed, n=1, cutoff=0.6) if unnamed else []
            unmapped.append((service, close[0] if close else target.target_name(service)))
            continue
        placed = found.placement
        mapped.append(AdoptedService(
            service, found.target_name, placed.generation if placed else "",
            found.placement_source if placed else "",
            placed.replicas if placed else None, sum(found.running.values()),
            found.update_order or "unknown"))
    return Adoption(describe_mapping(target, labels), tuple(mapped), tuple(unmapped),
                    tuple(unnamed))
