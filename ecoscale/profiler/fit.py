"""Fitting measured sweeps into a latency profile (pure).

Per service and generation, the measured points (per-replica load, p99, CPU utilisation)
become a LatencyCurve: the points themselves (p99 made non-decreasing in load, as a queue's
is), a zero-load point, and a saturation throughput from a least-squares fit of the queueing
shape p99(x) = a + b / (1 - x / mu) over a grid of mu (a, b >= 0 by non-negative least
squares). Utilisation is fitted as a line through the origin.

The application's saturation is the highest load the all-new deployment still served
(achieved >= 95 % of offered, errors < 1 %) before its latency left the flat part of the
curve (p99 at most KNEE_FACTOR times the p99 at the lowest load): past the knee latency
grows without bound even while throughput still keeps up. The SLO is the all-new
end-to-end p99 at 75 % of it, interpolated between measured points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

MIN_SATURATION_FACTOR = 1.05
MAX_SATURATION_FACTOR = 50.0
SERVED_FRACTION = 0.95
MAX_ERROR_FRACTION = 0.01
KNEE_FACTOR = 4.0


@dataclass(frozen=True)
class Point:
    """One service's measurement at one load point."""

    load_qps: float
    """Per-replica load, req/s."""
    p99_ms: float
    utilisation: float


@dataclass(frozen=True)
class FittedCurve:
    points: list[list[float]]
    """[[load req/s, p99 ms, utilisation], ...] as the profile file stores them."""
    saturation_qps: float
    fit_a_ms: float
    fit_b_ms: float
    residual_ms: float


def fit_saturation(loads: np.ndarray, p99: np.ndarray) -> tuple[float, float, float, float]:
    """(mu, a, b, rms residual): the queueing shape's best mu on a log grid."""
    top = float(loads.max())
    if top <= 0:
        return math.inf, float(p99.min()), 0.0, 0.0
    best = (math.inf, float(np.median(p99)), 0.0, math.inf)
    for mu in top * np.geomspace(MIN_SATURATION_FACTOR, MAX_SATURATION_FACTOR, 80):
        design = np.column_stack([np.ones_like(loads), 1.0 / (1.0 - loads / mu)])
        coef, residual = nnls(design, p99)
        rms = residual / math.sqrt(len(loads))
        if rms < best[3] - 1e-12:
            best = (float(mu), float(coef[0]), float(coef[1]), float(rms))
    return best


def fit_curve(points: Sequence[Point]) -> FittedCurve:
    """A profile curve from measured points of one service on one generation."""
    usable = sorted((p for p in points if math.isfinite(p.p99_ms) and p.p99_ms > 0
                     and math.isfinite(p.load_qps)), key=lambda p: p.load_qps)
    if not usable:
        raise ValueError("no usable measurement")
    loads = np.array([p.load_qps for p in usable])
    p99 = np.maximum.accumulate(np.array([p.p99_ms for p in usable]))
    util = np.array([p.utilisation if math.isfinite(p.utilisation) else math.nan
                     for p in usable])
    finite = np.isfinite(util) & (loads > 0)
    slope = float(np.sum(util[finite] * loads[finite]) / np.sum(loads[finite] ** 2)) if \
        finite.any() else 0.0
    mu, a, b, rms = fit_saturation(loads, p99)
    if b <= 1e-9 * max(a, 1e-9):   # no queueing seen: saturation lies far beyond the sweep
        mu = math.inf
    rows: list[list[float]] = []
    if loads[0] > 0:
        rows.append([0.0, float(min(p99[0], a + b) if b or a else p99[0]), 0.0])
    for x, y in zip(loads, p99, strict=True):
        if rows and x <= rows[-1][0]:
            rows[-1][1] = max(rows[-1][1], float(y))
            continue
        rows.append([float(x), float(y), float(min(max(slope * x, 0.0), 1.0))])
    if len(rows) == 1:   # a single load: add a second point at the same latency
        rows.append([rows[0][0] + 1.0, rows[0][1], rows[0][2]])
    saturation = max(mu, rows[-1][0] * MIN_SATURATION_FACTOR) if math.isfinite(mu) else \
        rows[-1][0] * MAX_SATURATION_FACTOR
    return FittedCurve(rows, float(saturation), a, b, rms)


@dataclass(frozen=True)
class SweepPoint:
    """One load point of a sweep, as the raw CSV holds it."""

    offered_qps: float
    achieved_qps: float
    errors: float
    """Fraction of requests that failed (0..1)."""
    e2e_p99_ms: float


def served(point: SweepPoint) -> bool:
    return (point.achieved_qps >= SERVED_FRACTION * point.offered_qps
            and point.errors < MAX_ERROR_FRACTION and math.isfinite(point.e2e_p99_ms))


def saturation_and_slo(points: Sequence[SweepPoint], fraction: float = 0.75,
                       knee_factor: float = KNEE_FACTOR) -> tuple[float, float, float]:
    """(saturation req/s, SLO load req/s, SLO ms) from the all-new sweep.

    Saturation: the highest load served before the knee; when no point passed the knee, the
    sweep did not reach saturation and the highest achieved load is a lower bound."""
    ordered = sorted(points, key=lambda p: p.offered_qps)
    served_points = [p for p in ordered if served(p)]
    if not served_points:
        raise ValueError("the all-new deployment served none of the sweep's loads; lower "
                         "the load range")
    floor = served_points[0].e2e_p99_ms
    before_knee = []
    for point in served_points:
        if point.e2e_p99_ms > knee_factor * floor:
            break
        before_knee.append(point)
    served_points = before_knee or served_points[:1]
    saturation = max(p.achieved_qps for p in served_points)
    slo_load = fraction * saturation
    loads = np.array([p.achieved_qps for p in served_points])
    p99 = np.maximum.accumulate(np.array([p.e2e_p99_ms for p in served_points]))
    slo_ms = float(np.interp(slo_load, loads, p99))
    return float(saturation), float(slo_load), slo_ms


def criticality(rise_ms: Mapping[str, float]) -> list[tuple[str, float]]:
    """Services by measured e2e p99 rise alone on old, most critical first."""
    return sorted(rise_ms.items(), key=lambda item: (-item[1], item[0]))
