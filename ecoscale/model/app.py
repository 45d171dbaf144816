"""The application model: topology + latency profile + hardware -> p99 and carbon of a placement.

Pure and vectorised over time steps: loads and carbon intensities are arrays, one entry per
step. This is the one place where a placement's latency and carbon are computed; the
planner, the replay and the daemon's carbon accounting all call it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ecoscale.errors import InputError
from ecoscale.model.carbon import Hardware, carbon_of_slot_hours_g
from ecoscale.model.consistency import TableLike, check_profile, check_table
from ecoscale.model.latency import AppProfile, E2EModel
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.model.topology import Topology


@dataclass(frozen=True)
class CarbonBreakdown:
    """Carbon over the steps (g per step), split by kind and generation."""

    embodied_g: np.ndarray
    operational_g: np.ndarray
    by_generation_g: Mapping[str, np.ndarray]

    @property
    def total_g(self) -> np.ndarray:
        return self.embodied_g + self.operational_g


UTILISATION_SOURCES = ("measured", "modelled", "peak")
"""Where the utilisation of a running slot came from, in the order of ``utilisation_of``'s
rule."""

UTILISATION_RULE = (
    "CPU utilisation per slot: measured where the metrics carry it; else modelled from the "
    "profile at the measured front-end load; where neither is known, 1.0 (peak power, an upper "
    "bound: missing metrics never make a run look cleaner)")
"""The rule for missing utilisation, in words for reports (the daemon's, the evaluation's)."""


@dataclass(frozen=True)
class RanCarbon:
    """Carbon of the slots that ran over some hours, gCO2e by generation and kind, and how
    many slots took their utilisation from each of ``UTILISATION_SOURCES``."""

    embodied_g: Mapping[str, float]
    operational_g: Mapping[str, float]
    slots_by_source: Mapping[str, int]

    @property
    def total_g(self) -> float:
        return sum(self.embodied_g.values()) + sum(self.operational_g.values())


class AppModel:
    """Latency and carbon of placements of one application on one pool's hardware."""

    def __init__(self, topology: Topology, profile: AppProfile, hardware: Hardware):
        check_profile(profile, topology, hardware)
        self.topology = topology
        self.profile = profile
        self.hardware = hardware
        self.services = topology.service_names
        self.visits = topology.visits_per_request()
        self.e2e = E2EModel(topology, profile.e2e_calibration)
        self.evaluations = 0
        """Count of placement latency evaluations (one per placement x load array)."""

    # ---- latency -------------------------------------------------------------------------
    def service_load(self, service: str, frontend_qps: np.ndarray | float) -> np.ndarray:
        """Requests/s reaching ``service`` (all replicas) at front-end load ``frontend_qps``."""
        return np.asarray(frontend_qps, dtype=float) * self.visits[service]

    def service_p99(
        self, placement: Placement, frontend_qps: np.ndarray | float
    ) -> dict[str, np.ndarray]:
        out = {}
        for service, placed in placement.items:
            per_replica = self.service_load(service, frontend_qps) / placed.replicas
            out[service] = self.profile.curve(service, placed.generation).p99(per_replica)
        return out

    def e2e_p99(self, placement: Placement, frontend_qps: np.ndarray | float) -> np.ndarray:
        """End-to-end p99 of the request mix (ms) at each load."""
        self.evaluations += 1
        return self.e2e.mix_p99(self.service_p99(placement, frontend_qps))

    def utilisation(
        self, placement: Placement, frontend_qps: np.ndarray | float
    ) -> dict[str, np.ndarray]:
        """CPU utilisation of each replica's slot (0..1), per service."""
        out = {}
        for service, placed in placement.items:
            per_replica = self.service_load(service, frontend_qps) / placed.replicas
            out[service] = self.profile.curve(service, placed.generation).util(per_replica)
        return out

    def saturation_qps(self, placement: Placement) -> float:
        """Front-end load (req/s) at which the first service of ``placement`` saturates."""
        limits = [
            self.profile.curve(s, p.generation).saturation_qps * p.replicas / self.visits[s]
            for s, p in placement.items
            if self.visits[s] > 0
        ]
        return min(limits) if limits else float("inf")

    # ---- carbon --------------------------------------------------------------------------
    def carbon(
        self,
        placement: Placement,
        frontend_qps: np.ndarray,
        ci_g_per_kwh: np.ndarray,
        step_h: float,
    ) -> CarbonBreakdown:
        """Carbon (gCO2e per step) of running ``placement`` for steps of ``step_h`` hours."""
        qps = np.asarray(frontend_qps, dtype=float)
        ci = np.asarray(ci_g_per_kwh, dtype=float)
        embodied = np.zeros_like(qps)
        operational = np.zeros_like(qps)
        by_generation: dict[str, np.ndarray] = {}
        util = self.utilisation(placement, qps)
        for service, placed in placement.items:
            gen = self.hardware.generation(placed.generation)
            emb_g, op = carbon_of_slot_hours_g(gen, placed.replicas * step_h, util[service],
                                               ci, self.hardware.pue)
            emb = np.full_like(qps, emb_g)
            embodied += emb
            operational += op
            by_generation[placed.generation] = (
                by_generation.get(placed.generation, 0.0) + emb + op
            )
        return CarbonBreakdown(embodied, operational, by_generation)

    def service_carbon_g_per_h(
        self, service: str, placed: ServicePlacement, frontend_qps: float, ci_g_per_kwh: float
    ) -> float:
        """Carbon rate (gCO2e/h) of one service's replicas placed as ``placed``."""
        gen = self.hardware.generation(placed.generation)
        per_replica = self.visits[service] * frontend_qps / placed.replicas
        util = self.profile.curve(service, placed.generation).util_at(per_replica)
        embodied, operational = carbon_of_slot_hours_g(gen, placed.replicas, util, ci_g_per_kwh,
                                                       self.hardware.pue)
        return embodied + operational

    def carbon_rate_g_per_h(
        self, placement: Placement, frontend_qps: float, ci_g_per_kwh: float
    ) -> float:
        """Carbon rate (gCO2e/h) of ``placement`` at one load and intensity."""
        return sum(self.service_carbon_g_per_h(s, p, frontend_qps, ci_g_per_kwh)
                   for s, p in placement.items)

    # ---- what ran (the daemon's accounting, the live evaluation) ------------------------
    def utilisation_of(self, service: str, generation: str, replicas: int,
                       measured: float, frontend_qps: float) -> tuple[float, str]:
        """(CPU utilisation 0..1 of one slot, its source) by ``UTILISATION_RULE``.

        ``measured`` is NaN when the metrics lack it; ``replicas`` counts the service's
        running tasks on every generation (the load splits over all of them). Modelled beats
        zero because zero is idle power, which would make a run whose CPU series dropped out
        look cleaner than it was; and the profile at the measured load is what the replay
        charges, so measured and simulated carbon stay comparable. Without even a load the
        slot is charged at peak, an upper bound, as no data never counts as "SLO met".
        """
        if math.isfinite(measured):
            return measured, "measured"
        if math.isfinite(frontend_qps) and replicas > 0:
            per_replica = self.visits[service] * frontend_qps / replicas
            util = self.profile.curve(service, generation).util_at(per_replica)
            if math.isfinite(util):
                return util, "modelled"
        return 1.0, "peak"

    def carbon_of_what_ran(self, running: Mapping[str, Mapping[str, int]],
                           measured_utilisation: Mapping[tuple[str, str], float],
                           frontend_qps: float, ci_g_per_kwh: float, hours: float) -> RanCarbon:
        """Carbon (gCO2e) of the running tasks ``running`` (service -> generation -> tasks)
        over ``hours`` h at grid intensity ``ci_g_per_kwh``; ``hours`` = 1 gives rates (g/h).

        Utilisation per (service, generation) from ``measured_utilisation`` (0..1; absent or
        NaN: missing) by ``utilisation_of``. Services outside the topology and generations
        outside the hardware file are not counted.
        """
        embodied: dict[str, float] = {}
        operational: dict[str, float] = {}
        sources = dict.fromkeys(UTILISATION_SOURCES, 0)
        for service, tasks in running.items():
            if service not in self.visits:
                continue
            replicas = sum(tasks.values())
            for generation, count in tasks.items():
                if generation not in self.hardware.generations:
                    continue
                util, source = self.utilisation_of(
                    service, generation, replicas,
                    measured_utilisation.get((service, generation), math.nan), frontend_qps)
                sources[source] += count
                emb, op = carbon_of_slot_hours_g(self.hardware.generation(generation),
                                                 count * hours, util, ci_g_per_kwh,
                                                 self.hardware.pue)
                embodied[generation] = embodied.get(generation, 0.0) + emb
                operational[generation] = operational.get(generation, 0.0) + op
        return RanCarbon(embodied, operational, sources)

    # ---- sequences of placements (replay) ------------------------------------------------
    def evaluate_sequence(
        self,
        placements: Sequence[Placement],
        frontend_qps: np.ndarray,
        ci_g_per_kwh: np.ndarray,
        step_h: float,
        score: Score | None = None,
    ) -> tuple[np.ndarray, CarbonBreakdown]:
        """p99 (ms) and carbon per step when step i runs ``placements[i]``.

        Steps are grouped by placement so that each distinct placement is evaluated once,
        vectorised over its steps. ``score`` (placement, loads, intensities, step h) -> (p99,
        carbon) replaces the model's own (dedicated slots) for other accountings (packing).
        """
        qps = np.asarray(frontend_qps, dtype=float)
        ci = np.asarray(ci_g_per_kwh, dtype=float)
        groups: dict[Placement, list[int]] = {}
        for index, placement in enumerate(placements):
            groups.setdefault(placement, []).append(index)
        p99 = np.empty_like(qps)
        embodied = np.empty_like(qps)
        operational = np.empty_like(qps)
        by_generation: dict[str, np.ndarray] = {
            g: np.zeros_like(qps) for g in self.hardware.generations
        }
        for placement, indices in groups.items():
            idx = np.asarray(indices)
            if score is None:
                p99[idx] = self.e2e_p99(placement, qps[idx])
                part = self.carbon(placement, qps[idx], ci[idx], step_h)
            else:
                p99[idx], part = score(placement, qps[idx], ci[idx], step_h)
            embodied[idx] = part.embodied_g
            operational[idx] = part.operational_g
            for generation, grams in part.by_generation_g.items():
                by_generation[generation][idx] = grams
        return p99, CarbonBreakdown(embodied, operational, by_generation)



Score = Callable[[Placement, np.ndarray, np.ndarray, float], tuple[np.ndarray, CarbonBreakdown]]
"""How a placement scores over steps: (placement, loads req/s, intensities g/kWh, step h)
-> (p99 ms, carbon)."""


def default_slo(model: AppModel, slo_ms: float | None = None) -> tuple[float, float, str]:
    """(SLO ms, SLO load req/s, how it was set): the user's, the profile's, or the papers'
    definition: p99 of the all-new deployment at 75 % of its saturation load."""
    profile = model.profile
    newest = model.hardware.newest
    all_new = Placement.uniform(model.services, newest)
    saturation = model.saturation_qps(all_new)
    slo_load = profile.slo_load_qps or profile.slo_load_fraction * saturation
    if slo_ms is not None:
        if not slo_ms > 0:
            raise InputError("--slo-ms", f"must be > 0, got {slo_ms:g}")
        return float(slo_ms), slo_load, "given by the user (--slo-ms)"
    if profile.slo_ms is not None:
        return profile.slo_ms, slo_load, (f"from the profile {profile.name} (set at "
                                          f"{slo_load:.0f} req/s)")
    return (float(model.e2e_p99(all_new, slo_load)), slo_load,
            f"p99 of the all-{newest} deployment at {profile.slo_load_fraction:.0%} of its "
            f"saturation load ({slo_load:.0f} of {saturation:.0f} req/s)")


def check_table_fits(table: TableLike, model: AppModel, source: str) -> None:
    """The table at ``source`` against the model (topology, profile, hardware) it drives:
    `replay --table`, `run --check` and the daemon's start call this."""
    generations = [g for g in model.profile.generations if g in model.hardware.generations]
    check_table(table, model.topology, generations, model.hardware.newest, source)
