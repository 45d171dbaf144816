"""Checking the co-location latency model against a measurement (pure).

The check (``ecoscale lab colocation``) runs the profiler's own experiments: at each
front-end load, each chosen service alone on the oldest generation with the others on the
newest (``alone-old:<s>``, as in the criticality ranking), then all of them together there
(``colocated-old:<a>+<b>``). On the lab the old node is one CFS quota over all its
containers: exactly one shared socket.

From those raw rows (``profiler.store.Row``):

- each service's **alone curve** is fitted from its alone points as a profile curve is
  (``profiler.fit.fit_curve``, per-replica loads as ``profiler.build.service_points`` counts
  them);
- at each co-located point, each service's p99 is predicted with
  ``model.colocation.shared_p99`` from its alone curve, its own per-replica load there and
  the utilisation the other services on the socket add, taken two ways: **measured** (their
  CPU in that same window) and **modelled** (their alone curves' utilisation at their loads,
  what the planner uses); the alone curve at the same load (no interference) is kept too;
- the **error** is predicted minus measured, in ms and % of measured: negative is
  optimistic (the model promises less latency than the socket gives, which would break the
  SLO), positive pessimistic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ecoscale.model.colocation import shared_p99_at
from ecoscale.model.latency import LatencyCurve
from ecoscale.model.topology import Topology
from ecoscale.profiler.build import service_points
from ecoscale.profiler.experiments import Experiment
from ecoscale.profiler.fit import fit_curve
from ecoscale.profiler.store import Row

ALONE = "alone-old"
COLOCATED = "colocated-old"

BASES = ("measured", "modelled", "alone")
"""How the others' utilisation enters a prediction: measured in the co-located window,
modelled from their alone curves, or ignored (the alone curve: no interference)."""


def alone_name(service: str) -> str:
    """The experiment that puts ``service`` alone on old (the profiler's own name)."""
    return f"{ALONE}:{service}"


def colocated_name(services: Sequence[str]) -> str:
    """The experiment that puts ``services`` together on old."""
    return f"{COLOCATED}:{'+'.join(services)}"


def colocation_plan(services: Sequence[str], loads_qps: Sequence[float]) -> list[Experiment]:
    """Load by load (front-end req/s, ascending): each service alone on old, then all of
    them together, so that the alone and co-located points of one load are measured
    minutes apart, not a whole run (a busy shared machine drifts over minutes)."""
    plan = []
    for load in loads_qps:
        at = (float(load),)
        plan += [Experiment(alone_name(s), (s,), at) for s in services]
        plan.append(Experiment(colocated_name(services), tuple(services), at))
    return plan


def check_services(services: Sequence[str], topology: Topology) -> list[str]:
    """Problems of a service list for the check (empty when it is fine), each with a fix."""
    problems = []
    unknown = [s for s in services if s not in topology.services]
    if unknown:
        problems.append(f"{', '.join(unknown)}: not a service of {topology.app}; choose "
                        f"from {', '.join(topology.service_names)}")
    if len(set(services)) != len(services):
        problems.append("a service is named twice; name each once")
    if len(set(services)) < 2:
        problems.append("name at least two services to put together on one socket")
    if topology.frontend in services:
        problems.append(f"{topology.frontend} is the front end (its latency is its own work "
                        "only); choose services it calls")
    return problems


def alone_curves(rows: Iterable[Row], topology: Topology, services: Sequence[str],
                 generation: str) -> dict[str, LatencyCurve]:
    """service -> its curve on ``generation`` fitted from its alone points; a service
    without a usable alone point is left out."""
    rows = list(rows)
    curves = {}
    for service in services:
        own = [r for r in rows if r.experiment == alone_name(service)]
        points = service_points(own, topology)[service].get(generation, [])
        usable = [p for p in points if math.isfinite(p.p99_ms) and p.p99_ms > 0
                  and p.load_qps > 0]
        if usable:
            fitted = fit_curve(usable)
            curves[service] = LatencyCurve.from_points(fitted.points, fitted.saturation_qps,
                                                       where=f"alone curve of {service}")
    return curves


@dataclass(frozen=True)
class ColocatedPoint:
    """One service at one co-located load point: measured and predicted p99."""

    service: str
    offered_qps: float
    """Front-end load offered (req/s)."""
    load_qps: float
    """The service's per-replica load achieved in the window (req/s)."""
    utilisation: float
    """Its own measured CPU utilisation of the socket (0..1)."""
    others_measured: float
    """Utilisation the other services on the socket added, measured (0..1)."""
    others_modelled: float
    """The same from their alone curves at their measured loads (0..1)."""
    measured_p99_ms: float
    predicted_ms: Mapping[str, float]
    """basis (BASES) -> predicted p99 (ms)."""

    def error_ms(self, basis: str) -> float:
        """Predicted minus measured (ms): negative is optimistic."""
        return self.predicted_ms[basis] - self.measured_p99_ms

    def error_pct(self, basis: str) -> float:
        """``error_ms`` in % of the measured p99; NaN without a measurement."""
        if not (math.isfinite(self.measured_p99_ms) and self.measured_p99_ms > 0):
            return math.nan
        return 100.0 * self.error_ms(basis) / self.measured_p99_ms


def colocated_points(rows: Iterable[Row], topology: Topology, services: Sequence[str],
                     generation: str, curves: Mapping[str, LatencyCurve],
                     socket_per_slot: float = 1.0) -> list[ColocatedPoint]:
    """Every service with a curve at every finished load of the co-located experiment,
    ordered by load then service.

    ``socket_per_slot``: one slot's CPUs over the socket's (the utilisations of the rows
    are of a slot; the model wants the socket's). On the lab both are one host CPU."""
    name = colocated_name(services)
    rows = [r for r in rows if r.experiment == name]
    out = []
    for offered in sorted({r.offered_qps for r in rows}):
        at = [r for r in rows if r.offered_qps == offered]
        points = {s: per[generation][0] for s, per in service_points(at, topology).items()
                  if per.get(generation)}
        used = {s: _finite(p.utilisation) * socket_per_slot for s, p in points.items()}
        modelled = {s: curves[s].util_at(points[s].load_qps) * socket_per_slot
                    for s in points if s in curves}
        for service in services:
            if service not in curves or service not in points:
                continue
            own = points[service]
            measured = sum(u for s, u in used.items() if s != service)
            from_curves = sum(u for s, u in modelled.items() if s != service)
            curve = curves[service]
            predicted = {"measured": shared_p99_at(curve, own.load_qps, measured),
                         "modelled": shared_p99_at(curve, own.load_qps, from_curves),
                         "alone": curve.p99_at(own.load_qps)}
            out.append(ColocatedPoint(service, offered, own.load_qps, used[service],
                                      measured, from_curves, own.p99_ms, predicted))
    return out


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


@dataclass(frozen=True)
class ErrorSummary:
    """% errors of one basis: statistics over the points with a finite error, and the
    points predicted saturated (inf) although the measurement was finite."""

    basis: str
    points: int
    """Points with a finite error."""
    median_abs_pct: float
    max_abs_pct: float
    median_pct: float
    """Signed median: below zero the model is optimistic on most points."""
    optimistic: int
    """Points predicted below the measurement."""
    saturated: int = 0
    """Points predicted at saturation (inf) with a finite measurement: pessimistic."""

    @property
    def direction(self) -> str:
        if not self.points:
            return "no points"
        return "optimistic" if self.median_pct < 0 else "pessimistic"


def summarise(points: Sequence[ColocatedPoint], basis: str) -> ErrorSummary:
    """Median and largest absolute % error, signed median, optimistic and saturated counts
    of ``basis``."""
    errors = np.array([p.error_pct(basis) for p in points], dtype=float)
    saturated = int(np.sum(np.isposinf(errors)))
    errors = errors[np.isfinite(errors)]
    if not len(errors):
        return ErrorSummary(basis, 0, math.nan, math.nan, math.nan, 0, saturated)
    return ErrorSummary(basis, len(errors), float(np.median(np.abs(errors))),
                        float(np.max(np.abs(errors))), float(np.median(errors)),
                        int(np.sum(errors < 0)), saturated)


TABLE_COLUMNS = ("service", "offered_qps", "load_qps", "utilisation", "others_measured",
                 "others_modelled", "measured_p99_ms", "predicted_measured_ms",
                 "error_measured_ms", "error_measured_pct", "predicted_modelled_ms",
                 "error_modelled_ms", "error_modelled_pct", "alone_p99_ms", "error_alone_pct")
"""Columns of the error table (``table_rows``, the command's CSV)."""


def table_rows(points: Sequence[ColocatedPoint]) -> list[dict[str, float | str]]:
    """The error table, one dict per point with TABLE_COLUMNS."""
    return [{"service": p.service, "offered_qps": p.offered_qps, "load_qps": p.load_qps,
             "utilisation": p.utilisation, "others_measured": p.others_measured,
             "others_modelled": p.others_modelled, "measured_p99_ms": p.measured_p99_ms,
             "predicted_measured_ms": p.predicted_ms["measured"],
             "error_measured_ms": p.error_ms("measured"),
             "error_measured_pct": p.error_pct("measured"),
             "predicted_modelled_ms": p.predicted_ms["modelled"],
             "error_modelled_ms": p.error_ms("modelled"),
             "error_modelled_pct": p.error_pct("modelled"),
             "alone_p99_ms": p.predicted_ms["alone"], "error_alone_pct": p.error_pct("alone")}
            for p in points]


def format_table(points: Sequence[ColocatedPoint]) -> str:
    """The error table and its summary as fixed-width text (terminal and report)."""
    lines = [f"{'service':<24} {'front':>6} {'x':>6} {'U_o':>5} {'measured':>9} "
             f"{'pred(U_o meas.)':>16} {'err %':>7} {'pred(U_o model)':>16} {'err %':>7} "
             f"{'alone':>8} {'err %':>7}",
             f"{'':<24} {'req/s':>6} {'req/s':>6} {'meas':>5} {'p99 ms':>9} {'ms':>16} "
             f"{'':>7} {'ms':>16} {'':>7} {'ms':>8}"]
    for p in points:
        lines.append(
            f"{p.service:<24} {p.offered_qps:>6g} {p.load_qps:>6.1f} {p.others_measured:>5.2f} "
            f"{p.measured_p99_ms:>9.1f} {p.predicted_ms['measured']:>16.1f} "
            f"{p.error_pct('measured'):>+7.1f} {p.predicted_ms['modelled']:>16.1f} "
            f"{p.error_pct('modelled'):>+7.1f} {p.predicted_ms['alone']:>8.1f} "
            f"{p.error_pct('alone'):>+7.1f}")
    lines.append("")
    for basis in BASES:
        s = summarise(points, basis)
        what = {"measured": "co-location model, others' utilisation measured",
                "modelled": "co-location model, others' utilisation from their curves",
                "alone": "alone curve (no interference)"}[basis]
        saturated = (f"; {s.saturated} more predicted saturated (inf)" if s.saturated
                     else "")
        lines.append(f"{what}: median |error| {s.median_abs_pct:.1f} %, max "
                     f"{s.max_abs_pct:.1f} %, median {s.median_pct:+.1f} % ({s.direction}: "
                     f"{s.optimistic} of {s.points} points below the measurement{saturated})")
    return "\n".join(lines)
