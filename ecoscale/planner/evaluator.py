"""Incremental end-to-end latency at one load level, for the placement search.

The search changes one service at a time; only the endpoints whose paths contain that service
are recomputed. Every evaluation of a candidate placement is counted, so that a plan can
report the search effort it spent.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import numpy as np

from ecoscale.model.app import AppModel
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.model.topology import Stage


def _services_in(path: tuple[Stage, ...]) -> set[str]:
    out: set[str] = set()
    for stage in path:
        for call in stage:
            out.add(call.service)
            out |= _services_in(call.path)
    return out


class IncrementalEvaluator:
    """End-to-end p99 (ms) of placements at a fixed front-end load ``load_qps`` (req/s)."""

    def __init__(self, model: AppModel, load_qps: float, placement: Placement):
        self.model = model
        self.load_qps = float(load_qps)
        counted = model.e2e.counted
        self._paths = [e.path for e in counted]
        self._endpoints_of: dict[str, list[int]] = {s: [] for s in model.services}
        self._members: list[set[str]] = []
        for index, path in enumerate(self._paths):
            members = _services_in(path)
            self._members.append(members)
            for service in members:
                self._endpoints_of[service].append(index)
        self._neighbours: dict[str, list[str]] = {}
        self._p99_cache: dict[tuple[str, ServicePlacement], float] = {}
        self.evaluations = 0
        self._placed = placement.as_dict()
        self._order = tuple(placement)
        self._position = {s: i for i, s in enumerate(self._order)}
        self._service_p99 = {s: self.service_p99(s, p) for s, p in placement.items}
        self._endpoint_ms = np.array([self._path_ms(p) for p in self._paths])

    def service_p99(self, service: str, placed: ServicePlacement) -> float:
        """p99 (ms) of ``service`` placed as ``placed`` at this load (cached)."""
        key = (service, placed)
        value = self._p99_cache.get(key)
        if value is None:
            load = self.model.visits[service] * self.load_qps / placed.replicas
            value = self.model.profile.curve(service, placed.generation).p99_at(load)
            self._p99_cache[key] = value
        return value

    def _path_ms(self, path: tuple[Stage, ...], p99: Mapping[str, float] | None = None) -> float:
        p99 = self._service_p99 if p99 is None else p99
        total = 0.0
        for stage in path:
            slowest = 0.0
            for call in stage:
                cost = p99[call.service]
                if call.path:
                    cost += self._path_ms(call.path, p99)
                if cost > slowest:
                    slowest = cost
            total += slowest
        return total

    def neighbours(self, service: str) -> list[str]:
        """Services that share a counted endpoint with ``service`` (in topology order)."""
        if service not in self._neighbours:
            near: set[str] = set()
            for index in self._endpoints_of[service]:
                near |= self._members[index]
            near.discard(service)
            self._neighbours[service] = sorted(near, key=self._position.__getitem__)
        return self._neighbours[service]

    def neighbours_of(self, services: Collection[str]) -> list[str]:
        """Services outside ``services`` that share a counted endpoint with any of them (in
        topology order)."""
        if len(services) == 1:
            return self.neighbours(next(iter(services)))
        near = {n for s in services for n in self.neighbours(s)} - set(services)
        return sorted(near, key=self._position.__getitem__)

    @property
    def placement(self) -> Placement:
        return Placement(tuple((s, self._placed[s]) for s in self._order))

    def placed(self, service: str) -> ServicePlacement:
        return self._placed[service]

    @property
    def p99_ms(self) -> float:
        """End-to-end p99 (ms) of the current placement."""
        return self.model.e2e.calibration * float(self._endpoint_ms.max())

    def try_change(self, service: str, placed: ServicePlacement) -> float:
        """End-to-end p99 (ms) if ``service`` were placed as ``placed``; changes nothing."""
        self.evaluations += 1
        old = self._service_p99[service]
        new = self.service_p99(service, placed)
        if new == old:
            return self.p99_ms
        self._service_p99[service] = new
        try:
            affected = self._endpoints_of[service]
            values = self._endpoint_ms.copy()
            for index in affected:
                values[index] = self._path_ms(self._paths[index])
        finally:
            self._service_p99[service] = old
        if not math.isfinite(new):
            return math.inf
        return self.model.e2e.calibration * float(values.max())

    def apply(self, service: str, placed: ServicePlacement) -> None:
        """Make the change permanent."""
        self._service_p99[service] = self.service_p99(service, placed)
        for index in self._endpoints_of[service]:
            self._endpoint_ms[index] = self._path_ms(self._paths[index])
        self._placed[service] = placed
