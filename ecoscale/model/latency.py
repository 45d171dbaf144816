"""Latency model: per-service p99 vs per-replica load, and end-to-end p99 over stages.

A service's curve on a generation is a set of measured (or calibrated) points
(per-replica load in requests/s, p99 in ms, CPU utilisation of the slot 0..1), interpolated
linearly between points. Between the last point and the saturation throughput the p99 grows
like a queue, p99(x) = p_last * (sat - x_last) / (sat - x); at or beyond saturation it is
unbounded (inf).

End-to-end p99 of an endpoint: a call costs the callee's own p99 plus its sub-path; a stage
costs the slowest of its parallel calls; a path costs the sum of its stages (the sum of
stage maxima: conservative, as the papers compose). The mix p99 is the slowest endpoint
among those that carry at least 1 % of requests (an endpoint with less cannot move the 99th
percentile of the mix on its own), times a calibration factor fitted to a measured e2e p99.

Pure and vectorised: loads are numpy arrays (one entry per replay step).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ecoscale.errors import InputError
from ecoscale.model.topology import Stage, Topology
from ecoscale.values import BadNumber, number

MIX_QUANTILE_SHARE = 0.01


@dataclass(frozen=True)
class LatencyCurve:
    """p99 (ms) and CPU utilisation vs per-replica load (req/s) of one service on one generation."""

    load_qps: np.ndarray
    p99_ms: np.ndarray
    utilisation: np.ndarray
    saturation_qps: float

    @classmethod
    def from_points(
        cls, points: object, saturation_qps: object, where: str = "curve"
    ) -> LatencyCurve:
        """Build from rows [load_qps, p99_ms, utilisation]; checks order and ranges."""
        problems: list[str] = []
        if not isinstance(points, list | tuple) or len(points) < 2 or any(
                not isinstance(row, list | tuple) or len(row) != 3 for row in points):
            raise InputError(where, "points must be at least two rows [load_qps, p99_ms, util]")
        names = ("load_qps", "p99_ms", "utilisation")
        checked = []
        for i, row in enumerate(points, start=1):
            try:
                checked.append([number(value, f"points row {i}: {name}")
                                for name, value in zip(names, row, strict=True)])
            except BadNumber as exc:
                problems.append(str(exc))
        try:
            saturation_qps = number(saturation_qps, "saturation_qps", above=0)
        except BadNumber as exc:
            problems.append(str(exc))
        if problems:
            raise InputError(where, problems)
        rows = np.asarray(checked, dtype=float)
        load, p99, util = rows[:, 0], rows[:, 1], rows[:, 2]
        if np.any(np.diff(load) <= 0):
            problems.append("load_qps must increase strictly from row to row")
        if np.any(load < 0) or np.any(p99 <= 0):
            problems.append("load_qps must be >= 0 and p99_ms > 0")
        falls = np.nonzero(np.diff(p99) < 0)[0]
        if len(falls):
            i = int(falls[0])
            problems.append(f"p99_ms falls from {p99[i]:g} to {p99[i + 1]:g} ms as load rises "
                            f"from {load[i]:g} to {load[i + 1]:g} req/s (rows {i + 1}, {i + 2}); "
                            "a latency curve must not fall with load: re-measure, or raise the "
                            "lower point")
        if np.any(util < 0) or np.any(util > 1):
            problems.append("utilisation must lie in 0..1")
        if not saturation_qps > load[-1]:
            problems.append(
                f"saturation_qps ({saturation_qps:g}) must exceed the last load point "
                f"({load[-1]:g}): no finite p99 can be measured at saturation"
            )
        if problems:
            raise InputError(where, problems)
        return cls(load, p99, util, float(saturation_qps))  # type: ignore[arg-type]

    def p99(self, load_qps: np.ndarray | float) -> np.ndarray:
        """p99 latency (ms) at per-replica load ``load_qps`` (req/s); inf at saturation."""
        x = np.asarray(load_qps, dtype=float)
        inside = np.interp(x, self.load_qps, self.p99_ms)
        x_last, p_last = self.load_qps[-1], self.p99_ms[-1]
        with np.errstate(divide="ignore", invalid="ignore"):
            queue = p_last * (self.saturation_qps - x_last) / (self.saturation_qps - x)
        out = np.where(x <= x_last, inside, queue)
        return np.where(x >= self.saturation_qps, np.inf, out)

    @cached_property
    def _lists(self) -> tuple[list[float], list[float], list[float]]:
        return (self.load_qps.tolist(), self.p99_ms.tolist(), self.utilisation.tolist())

    def p99_at(self, load_qps: float) -> float:
        """p99 (ms) at one load (req/s): the same curve as ``p99``, without numpy overhead."""
        xs, ys, _ = self._lists
        if load_qps >= self.saturation_qps:
            return math.inf
        if load_qps > xs[-1]:
            return ys[-1] * (self.saturation_qps - xs[-1]) / (self.saturation_qps - load_qps)
        return _interp(xs, ys, load_qps)

    def util_at(self, load_qps: float) -> float:
        """Slot utilisation (0..1) at one load (req/s), as ``util`` without numpy overhead."""
        xs, _, us = self._lists
        if load_qps > xs[-1]:
            value = us[-1] + (us[-1] - us[-2]) / (xs[-1] - xs[-2]) * (load_qps - xs[-1])
        else:
            value = _interp(xs, us, load_qps)
        return min(max(value, 0.0), 1.0)

    def util(self, load_qps: np.ndarray | float) -> np.ndarray:
        """CPU utilisation of the slot (0..1) at per-replica load ``load_qps`` (req/s)."""
        x = np.asarray(load_qps, dtype=float)
        inside = np.interp(x, self.load_qps, self.utilisation)
        slope = (self.utilisation[-1] - self.utilisation[-2]) / (
            self.load_qps[-1] - self.load_qps[-2]
        )
        beyond = self.utilisation[-1] + slope * (x - self.load_qps[-1])
        return np.clip(np.where(x <= self.load_qps[-1], inside, beyond), 0.0, 1.0)


def _interp(xs: list[float], ys: list[float], x: float) -> float:
    """Linear interpolation in sorted ``xs``, clamped at both ends (as np.interp)."""
    if x <= xs[0]:
        return ys[0]
    i = bisect.bisect_right(xs, x)
    if i >= len(xs):
        return ys[-1]
    x0, x1 = xs[i - 1], xs[i]
    return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - x0) / (x1 - x0)


@dataclass(frozen=True)
class AppProfile:
    """Per-service latency curves on each generation, with where they came from."""

    app: str
    name: str
    kind: str
    """'calibrated' (fitted to published figures) or 'measured' (profiled on a pool)."""
    curves: Mapping[str, Mapping[str, LatencyCurve]]
    """service -> generation -> curve."""
    e2e_calibration: float = 1.0
    slo_ms: float | None = None
    slo_load_fraction: float = 0.75
    slo_load_qps: float | None = None
    """The load at which the SLO was set (measured profiles), req/s."""
    provenance: Mapping[str, object] = field(default_factory=dict)
    replica_limits: Mapping[str, int] = field(default_factory=dict)
    """generation -> most replicas of one service that add capacity on the profiled pool
    (its CPUs there / one replica's CPUs); a generation not listed: no limit."""
    file: str = ""
    """The file it was read from ("" when built in memory)."""

    @property
    def generations(self) -> tuple[str, ...]:
        first = next(iter(self.curves.values()))
        return tuple(first)

    def curve(self, service: str, generation: str) -> LatencyCurve:
        return self.curves[service][generation]


def parse_replica_limits(raw: object) -> tuple[dict[str, int], list[str]]:
    """``replica_limits`` of a profile or pool config (generation -> integer >= 1; absent:
    none), with the problems found."""
    raw = raw or {}
    if not isinstance(raw, Mapping):
        return {}, ["replica_limits: generation -> an integer >= 1"]
    problems: list[str] = []
    limits = {}
    for generation, value in raw.items():
        try:
            limits[str(generation)] = int(number(value, f"replica_limits.{generation}",
                                                 integer=True, minimum=1, maximum=10_000))
        except BadNumber as exc:
            problems.append(str(exc))
    return (limits if not problems else {}), problems


class E2EModel:
    """Composes per-service p99 arrays into end-to-end p99 over the topology's stages."""

    def __init__(self, topology: Topology, calibration: float = 1.0):
        self.topology = topology
        self.calibration = calibration
        self.counted = tuple(
            e for e in topology.endpoints if e.share >= MIX_QUANTILE_SHARE
        ) or topology.endpoints

    def endpoint_p99(self, name: str, service_p99: Mapping[str, np.ndarray]) -> np.ndarray:
        endpoint = next(e for e in self.topology.endpoints if e.name == name)
        return self.calibration * path_latency(endpoint.path, service_p99)

    def mix_p99(self, service_p99: Mapping[str, np.ndarray]) -> np.ndarray:
        """p99 of the request mix (ms): slowest endpoint with >= 1 % of requests."""
        result = None
        for endpoint in self.counted:
            latency = path_latency(endpoint.path, service_p99)
            result = latency if result is None else np.maximum(result, latency)
        assert result is not None
        return self.calibration * result


def path_latency(path: tuple[Stage, ...], service_p99: Mapping[str, np.ndarray | float]
                 ) -> np.ndarray:
    """p99 (ms) of ``path`` from per-service own p99s: the sum over stages of the slowest
    call, a call costing its callee's own p99 plus its sub-path (the module's composition)."""
    total: np.ndarray | float = 0.0
    for stage in path:
        slowest: np.ndarray | float = 0.0
        for call in stage:
            cost = service_p99[call.service]
            if call.path:
                cost = cost + path_latency(call.path, service_p99)
            slowest = np.maximum(slowest, cost)
        total = total + slowest
    return np.asarray(total, dtype=float)
