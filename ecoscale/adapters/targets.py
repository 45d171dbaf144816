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
KEPT_ORDER_NOTE = ("update order kept where a host-mode port is published (a start-first "
                   "task on the same node could not bind it, and the update would hang): "
                   "a move of these stops a task before its replacement runs")
SHOWN = 5
"""Names listed one by one in a fix (the rest are counted)."""


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
    unmapped: tuple[tuple[str, str, str], ...]
    """(topology service, the orchestrator's name the mapping looked for, a close match
    among the services the topology does not name or '')."""
    unnamed: tuple[str, ...]
    """The orchestrator's names of mapped or labelled services outside the topology."""
    ambiguous: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(topology service, the orchestrator's names of every service mapping to it) where
    more than one does: ecoscale would manage the first by name only."""

    @property
    def ok(self) -> bool:
        return not self.unmapped and not self.ambiguous

    @property
    def stop_first(self) -> tuple[str, ...]:
        """Services whose own order is stop-first: ecoscale's moves run start-first."""
        return tuple(s.service for s in self.mapped if s.update_order == "stop-first")

    @property
    def kept_order(self) -> tuple[str, ...]:
        """Services whose own order a move keeps (they publish a host-mode port)."""
        return tuple(s.service for s in self.mapped if "(kept:" in s.update_order)

    def fix(self) -> str:
        """What maps the unmapped services: a ``target.services`` entry for each that has a
        close match, else which Swarm service the mapping looked for."""
        matched = [(s, close) for s, _, close in self.unmapped if close]
        unmatched = [(s, wanted) for s, wanted, close in self.unmapped if not close]
        parts = []
        if matched:
            entries = ", ".join(f"{s}: {close}" for s, close in matched)
            parts.append(f"add under target: `services: {{{entries}}}` (check each is its "
                         "Swarm service)")
        if unmatched:
            shown = ", ".join(f"{wanted}" for _, wanted in unmatched[:SHOWN])
            more = f" and {len(unmatched) - SHOWN} more" if len(unmatched) > SHOWN else ""
            example = unmatched[0][0]
            parts.append(f"no Swarm service {shown}{more}: deploy them, or name each one's "
                         f"Swarm service under target: `services: {{{example}: "
                         "<swarm service>}` (`docker service ls` lists them)")
        for service, names in self.ambiguous:
            parts.append(f"{len(names)} Swarm services map to {service} ({', '.join(names)}): "
                         "remove the others, or name one under target: `services: "
                         f"{{{service}: <swarm service>}}` and take the others' ecoscale "
                         "labels off")
        return "; ".join(parts)

    def problem(self) -> str:
        """What makes the report fail, in one line ('' when ``ok``)."""
        parts = []
        if self.unmapped:
            names = [s for s, _, _ in self.unmapped]
            more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
            parts.append(f"{len(names)} topology services unmapped: "
                         f"{', '.join(names[:SHOWN])}{more}")
        if self.ambiguous:
            parts.append(f"{len(self.ambiguous)} mapped by more than one Swarm service: "
                         f"{', '.join(s for s, _ in self.ambiguous)}")
        return "; ".join(parts)

    def lines(self) -> list[str]:
        """The report: a table (one row per topology service), then what is unmapped on
        either side and the update-order note."""
        header = ("SERVICE", "SWARM SERVICE", "GENERATION", "REPLICAS", "UPDATE ORDER")
        rows = [header]
        for s in self.mapped:
            generation = (UNSET if not s.generation else s.generation
                          if s.generation_source == "constraint" else f"{s.generation} (tasks)")
            replicas = UNSET if s.replicas is None else f"{s.running}/{s.replicas}"
            rows.append((s.service, s.target_name, generation, replicas, s.update_order))
        rows += [(service, UNSET, UNSET, UNSET, UNSET) for service, _, _ in self.unmapped]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                 for row in rows]
        total = len(self.mapped) + len(self.unmapped)
        lines.append(f"{len(self.mapped)} of {total} topology services mapped ({self.mapping})"
                     + (f"; {len(self.unmapped)} unmapped" if self.unmapped else ""))
        if not self.ok:
            lines.append(f"  fix: {self.fix()}")
        for service, names in self.ambiguous:
            lines.append(f"{len(names)} Swarm services map to {service}: {', '.join(names)} "
                         f"(ecoscale would manage {names[0]} only)")
        if self.unnamed:
            lines.append(f"not in the topology, left alone ({len(self.unnamed)}): "
                         f"{', '.join(self.unnamed)}")
        if self.stop_first:
            lines.append(f"{STOP_FIRST_NOTE} ({len(self.stop_first)} services: "
                         f"{', '.join(self.stop_first)})")
        if self.kept_order:
            lines.append(f"{KEPT_ORDER_NOTE} ({len(self.kept_order)} services: "
                         f"{', '.join(self.kept_order)})")
        return lines

    def as_dict(self) -> dict[str, Any]:
        """For --json."""
        return {
            "mapping": self.mapping, "ok": self.ok,
            "services": [asdict(s) for s in self.mapped],
            "unmapped": [{"service": s, "looked_for": wanted, "close_match": close or None}
                         for s, wanted, close in self.unmapped],
            "fix": self.fix() if self.unmapped else "",
            "not_in_topology": list(self.unnamed),
            "stop_first": list(self.stop_first),
            "order_kept": list(self.kept_order),
            "ambiguous": {service: list(names) for service, names in self.ambiguous},
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
    others = {name: m.target_name for name, m in state.services.items() if name not in wanted}
    unnamed = sorted(others.values())
    for service in services:
        found = state.services.get(service)
        if found is None:   # a close match by name (without the stack prefix), each once
            close = difflib.get_close_matches(service, list(others), n=1, cutoff=0.6)
            unmapped.append((service, target.target_name(service),
                             others.pop(close[0]) if close else ""))
            continue
        placed = found.placement
        mapped.append(AdoptedService(
            service, found.target_name, placed.generation if placed else "",
            found.placement_source if placed else "",
            placed.replicas if placed else found.replicas, sum(found.running.values()),
            found.update_order or "unknown"))
    ambiguous = tuple((s, state.ambiguous[s]) for s in services if s in state.ambiguous)
    return Adoption(describe_mapping(target, labels), tuple(mapped), tuple(unmapped),
                    tuple(unnamed), ambiguous)
