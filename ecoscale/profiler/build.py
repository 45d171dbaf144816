"""From raw measurements to a profile file the planner reads (pure apart from the clock
reading the caller passes in as ``created``)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ecoscale import __version__
from ecoscale.model.app import AppModel
from ecoscale.model.carbon import Hardware, carbon_constants
from ecoscale.model.latency import AppProfile, LatencyCurve
from ecoscale.model.placement import Placement
from ecoscale.model.spans import OWN_TIME_FLOOR_FRACTION, own_times, sub_paths
from ecoscale.model.topology import Topology
from ecoscale.profiler.experiments import REFERENCE, SLICE_S, PoolConfig, sliced_window
from ecoscale.profiler.fit import (
    KNEE_FACTOR,
    Point,
    SweepPoint,
    criticality,
    fit_curve,
    saturation_and_slo,
    served,
)
from ecoscale.profiler.store import E2E, Row

IDLE_SERVICE_P99_MS = 1.0
IDLE_SERVICE_SATURATION_QPS = 1e6


@dataclass(frozen=True)
class OwnTimeConversion:
    """How server-span rows became own time (``ecoscale.model.spans``), for the profile."""

    points: int
    """Measured points (experiment, load) converted."""
    derived: int
    """Per-service own times derived (services with a finite span, over the points)."""
    clamped: Mapping[str, int]
    """service -> points at which its own time was clamped at the floor."""

    def summary(self) -> dict[str, Any]:
        return {"points": self.points, "derived": self.derived,
                "clamped": sum(self.clamped.values()),
                "clamped_by_service": dict(sorted(self.clamped.items())),
                "floor": f"{OWN_TIME_FLOOR_FRACTION * 100:g} % of the service's span at the point"}


def own_time_rows(rows: Iterable[Row], topology: Topology
                  ) -> tuple[list[Row], OwnTimeConversion]:
    """The rows with each service's p99 replaced by its own time, derived per measured point
    (same experiment, same offered load) from the server spans of that point; end-to-end rows
    and the other columns stay as measured (the profile reads only p99)."""
    rows = list(rows)
    spans: dict[tuple[str, float], dict[str, float]] = {}
    for row in rows:
        if row.service != E2E:
            spans.setdefault((row.experiment, row.offered_qps), {})[row.service] = row.p99_ms
    paths = sub_paths(topology)
    own = {point: own_times(topology, measured, paths) for point, measured in spans.items()}
    clamped: dict[str, int] = {}
    for result in own.values():
        for service in result.clamped:
            clamped[service] = clamped.get(service, 0) + 1
    converted = [row if row.service == E2E or row.service not in topology.services else
                 replace(row, p99_ms=own[(row.experiment, row.offered_qps)].own_ms[row.service])
                 for row in rows]
    derived = sum(math.isfinite(v) for result in own.values() for v in result.own_ms.values())
    return converted, OwnTimeConversion(len(own), derived, clamped)


def service_latency_rows(rows: Iterable[Row], topology: Topology, pool: PoolConfig
                         ) -> tuple[list[Row], OwnTimeConversion | None]:
    """Rows whose per-service p99 is own time, the model's input: as measured where the
    pool's ``queries.service_latency`` is ``own``, derived from the spans (``own_time_rows``)
    where it is ``server-span``; the conversion's summary, or None."""
    if pool.service_latency == "server-span":
        return own_time_rows(rows, topology)
    return list(rows), None


SERVICE_LATENCY_SOURCES = {
    "own": "own time: queries.service_p99_ms as measured (each service without its "
           "downstream calls)",
    "server-span": "server spans (queries.service_p99_ms, downstream calls included), "
                   "converted to own time per measured point by inverting the model's "
                   "composition (ecoscale.model.spans); the raw CSV keeps the spans",
}
"""The profile's ``provenance.service_latency``: which latency the curves came from."""


def sweep_points(rows: Iterable[Row], experiment: str) -> list[SweepPoint]:
    return [SweepPoint(r.offered_qps, r.achieved_qps, r.errors, r.p99_ms)
            for r in rows if r.experiment == experiment and r.service == E2E]


def service_points(rows: Iterable[Row], topology: Topology, limits: Mapping[str, float]
                   | None = None) -> dict[str, dict[str, list[Point]]]:
    """service -> generation -> measured points (per-replica load, p99, utilisation).

    ``limits`` caps the sweep loads used per experiment ('all-new', 'all-old'): past its knee
    a sweep measures the whole pool overloaded, not one service's curve. A service alone on
    old always counts: it is exactly one service's behaviour on old."""
    visits = topology.visits_per_request()
    limits = limits or {}
    out: dict[str, dict[str, list[Point]]] = {s: {} for s in topology.services}
    for row in rows:
        if row.service == E2E or row.service not in out or row.experiment.startswith(REFERENCE):
            continue
        if row.experiment.startswith("alone-old:") and row.experiment[10:] != row.service:
            continue   # the others ran as in all-new, only perturbed by the one on old
        if row.offered_qps > limits.get(row.experiment, math.inf) * 1.0001:
            continue
        load = visits[row.service] * row.achieved_qps / max(row.replicas, 1)
        out[row.service].setdefault(row.generation, []).append(
            Point(load, row.p99_ms, row.cpu_utilisation))
    return out


def prune_measured(rows: list[Row], slo_ms: float, threshold: float, oldest: str,
                   peak_qps: float, newest: str = "new"
                   ) -> tuple[dict[str, float], dict[str, float]]:
    """(critical, non-critical) by each service's measured p99 rise on old at the peak (the
    pruning load), against threshold x SLO.

    The rise is the generational gap: the service's p99 at the peak in the all-old sweep
    minus its p99 at the same load in the all-new sweep. Only without that all-new point does
    it fall back to the rise within the all-old sweep from its lowest load. On a pool whose
    old services share a node, the rise within the all-old sweep measures that node's
    contention as much as the service (every service's tail grows with it), and in a short
    sweep noise can even make a CPU-heavy service's p99 fall with load; the gap at one load
    compares the same service under the same load on the two generations."""
    old_points: dict[str, list[Row]] = {}
    new_at_peak: dict[str, float] = {}
    for row in rows:
        if row.service == E2E or row.offered_qps > peak_qps * 1.0001:
            continue
        if row.experiment == "all-old" and row.generation == oldest:
            old_points.setdefault(row.service, []).append(row)
        elif (row.experiment == "all-new" and row.generation == newest
              and abs(row.offered_qps - peak_qps) <= 1e-6 * peak_qps
              and math.isfinite(row.p99_ms)):
            new_at_peak[row.service] = row.p99_ms
    critical, non_critical = {}, {}
    for service, measured in old_points.items():
        measured.sort(key=lambda r: r.offered_qps)
        finite = [r.p99_ms for r in measured if math.isfinite(r.p99_ms)]
        if finite and service in new_at_peak:
            rise = finite[-1] - new_at_peak[service]
        else:
            rise = (finite[-1] - finite[0]) if len(finite) >= 2 else 0.0
        (critical if rise >= threshold * slo_ms else non_critical)[service] = rise
    return critical, non_critical


def pruning_peak(rows: list[Row], pool: PoolConfig, slo_load: float) -> float:
    """The highest swept load at which the pruner compares all-old p99: the SLO load, or
    below it the last load the all-old deployment served before its knee (past the knee
    every service's tail explodes with the overloaded pool, critical or not)."""
    all_old = sorted(sweep_points(rows, "all-old"), key=lambda p: p.offered_qps)
    limit = slo_load
    if all_old:
        floor = all_old[0].e2e_p99_ms
        knee = [p.offered_qps for p in all_old
                if not served(p) or p.e2e_p99_ms > KNEE_FACTOR * floor]
        if knee:
            limit = min(limit, max([q for q in pool.loads_qps if q < knee[0]],
                                   default=pool.loads_qps[0]))
    return max((q for q in pool.loads_qps if q <= limit * 1.0001), default=pool.loads_qps[0])


def ranking_measured(rows: list[Row], critical: Iterable[str], slo_load_qps: float
                     ) -> list[tuple[str, float]]:
    """Measured e2e p99 rise at the SLO load with each critical service alone on old, against
    a baseline of all-new at the SLO load (ms): the median of the reference points measured
    before and after the alone points and of the all-new sweep interpolated at the SLO load.
    One stalled reference (a 167-ms point beside 45 and 49 ms in a run here) then leaves
    the baseline where the other two put it, instead of turning every rise negative."""
    baselines = [p.e2e_p99_ms for when in ("before", "after")
                 for p in sweep_points(rows, f"{REFERENCE}:{when}") if math.isfinite(p.e2e_p99_ms)]
    all_new = sorted(sweep_points(rows, "all-new"), key=lambda p: p.offered_qps)
    if all_new:
        baselines.append(float(np.interp(slo_load_qps, [p.achieved_qps for p in all_new],
                                         np.maximum.accumulate([p.e2e_p99_ms for p in all_new]))))
    base = float(np.median(baselines)) if baselines else math.nan
    rises = {}
    for service in critical:
        alone = sweep_points(rows, f"alone-old:{service}")
        if alone:
            rises[service] = alone[-1].e2e_p99_ms - base
    return criticality(rises)


def build_profile(rows: list[Row], topology: Topology, hardware: Hardware, pool: PoolConfig,
                  created: str, raw_csv_name: str, prune_threshold: float = 0.05,
                  power_source: str = "modelled") -> dict[str, Any]:
    """The profile document (profiles/<app>/<pool>.yaml)."""
    rows, conversion = service_latency_rows(rows, topology, pool)
    all_new = sweep_points(rows, "all-new")
    saturation, slo_load, slo_ms = saturation_and_slo(all_new)
    peak = pruning_peak(rows, pool, slo_load)
    # the all-new curves end at the point that set the saturation, by its offered load (it
    # achieved 95 % of it or more): comparing offered loads with the achieved saturation
    # would drop that point, and the fitted saturation would then fall below the SLO load
    new_limit = max((p.offered_qps for p in all_new if p.achieved_qps == saturation),
                    default=pool.loads_qps[0])
    points = service_points(rows, topology, {"all-new": new_limit, "all-old": peak})
    services: dict[str, dict[str, Any]] = {}
    fits: dict[str, dict[str, Any]] = {}
    for service in topology.services:
        services[service] = {}
        for generation in pool.generations:
            measured = [p for p in points[service].get(generation, [])
                        if math.isfinite(p.p99_ms) and p.load_qps > 0]
            if measured:
                curve = fit_curve(measured)
                services[service][generation] = {"saturation_qps": round(curve.saturation_qps, 3),
                                                 "points": [[round(v, 4) for v in row]
                                                            for row in curve.points]}
                fits.setdefault(service, {})[generation] = {
                    "queue_fit_a_ms": round(curve.fit_a_ms, 4),
                    "queue_fit_b_ms": round(curve.fit_b_ms, 4),
                    "rms_ms": round(curve.residual_ms, 4)}
            else:   # no request reached it in the sweeps (no endpoint of the mix calls it)
                util = [p.utilisation for p in points[service].get(generation, [])
                        if math.isfinite(p.utilisation)]
                idle = float(np.median(util)) if util else 0.0
                services[service][generation] = {
                    "saturation_qps": IDLE_SERVICE_SATURATION_QPS,
                    "points": [[0.0, IDLE_SERVICE_P99_MS, round(idle, 4)],
                               [1.0, IDLE_SERVICE_P99_MS, round(idle, 4)]]}
    critical, non_critical = prune_measured(rows, slo_ms, prune_threshold, pool.oldest, peak,
                                             pool.newest)
    ranking = ranking_measured(rows, critical, slo_load)
    document: dict[str, Any] = {
        "app": topology.app,
        "name": pool.name,
        "kind": "measured",
        "provenance": {
            "statement": f"MEASURED on pool '{pool.name}' by `ecoscale profile` "
                         f"(ecoscale {__version__}), {created}.",
            "pool": pool.name,
            "created": created,
            "emulation": pool.emulation or "none: real server generations",
            "power_source": power_source,
            "service_latency": SERVICE_LATENCY_SOURCES[pool.service_latency],
            "raw_measurements": raw_csv_name,
            "loads_qps": list(pool.loads_qps),
            "warmup_s": pool.warmup_s,
            "measure_s": pool.measure_s,
            "hardware_model": pool.hardware,
            "software": f"ecoscale {__version__}",
        },
        "slo_ms": round(slo_ms, 4),
        "slo_load_fraction": 0.75,
        "measured": {
            "saturation_qps": round(saturation, 3),
            "slo_load_qps": round(slo_load, 3),
            "slo_ms": round(slo_ms, 4),
            "slo_definition": "server-side end-to-end p99 "
                              + (f"(median of the p99s of the window's {SLICE_S}-s slices) "
                                 if sliced_window(pool.measure_s) else "(whole window) ")
                              + "of all-new at 75 % of the highest "
                              "load it served (achieved >= 95 % of offered, errors < 1 %) "
                              f"with p99 at most {KNEE_FACTOR:g}x its lowest-load p99",
            "pruning_peak_qps": peak,
            "non_critical": {s: round(r, 4) for s, r in non_critical.items()},
            "critical": {s: round(r, 4) for s, r in critical.items()},
            "ranking": [{"service": s, "e2e_rise_ms": round(r, 4)} for s, r in ranking],
            "queue_fits": fits,
        },
        "e2e_calibration": 1.0,
        "services": services,
    }
    if conversion is not None:
        document["measured"]["own_time"] = conversion.summary()
    if pool.replica_limits:
        document["replica_limits"] = dict(pool.replica_limits)
    # rounded down, against the SLO and its load as written: the model's all-new deployment
    # must meet the SLO at the SLO load, not miss it by a rounding error
    factor = calibration(document, topology, hardware, pool,
                         document["measured"]["slo_load_qps"], document["slo_ms"])
    if factor is None:
        document["measured"]["calibration_warning"] = (
            f"the model's all-new deployment saturates below the SLO load "
            f"({document['measured']['slo_load_qps']:g} req/s), so e2e_calibration stays 1.0 "
            "and the model is not matched to the measured SLO: measure the all-new sweep at "
            "loads up to and past its saturation (--loads), then --refit")
        factor = 1.0
    document["e2e_calibration"] = math.floor(factor * 1e6) / 1e6
    constants = carbon_constants(hardware)
    document["measured"]["carbon_constants"] = {
        "C": {g: round(c, 4) for g, c in constants.ratio.items()},
        "at": f"{constants.ci_g_per_kwh:g} gCO2e/kWh, {constants.utilisation:.0%} "
              f"utilisation, PUE {constants.pue:g} ({hardware.name}, modelled power)",
    }
    return document


def calibration(document: Mapping[str, Any], topology: Topology, hardware: Hardware,
                pool: PoolConfig, slo_load: float, slo_ms: float) -> float | None:
    """Measured SLO / modelled all-new p99 at the SLO load: the factor that maps the stage
    composition (sum of per-service p99s: conservative) onto what the pool measures, chosen
    so that the model's all-new deployment meets the SLO exactly at the SLO load, as the
    measurement defines it. None where the model has no finite p99 there (its curves
    saturate below the SLO load)."""
    profile = AppProfile(
        app=topology.app, name=pool.name, kind="measured",
        curves={s: {g: LatencyCurve.from_points(c["points"], c["saturation_qps"])
                    for g, c in per_gen.items()}
                for s, per_gen in document["services"].items()})
    sliced = Hardware(hardware.name, {g: hardware.generations[g] for g in pool.generations
                                      if g in hardware.generations},
                      hardware.pue, hardware.reference_ci_g_per_kwh,
                      hardware.reference_utilisation, pool.newest)
    model = AppModel(topology, profile, sliced)
    modelled = float(model.e2e_p99(Placement.uniform(topology.service_names, pool.newest),
                                   slo_load))
    return slo_ms / modelled if math.isfinite(modelled) and modelled > 0 else None
