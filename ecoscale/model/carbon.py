"""Carbon model: per-slot carbon rate of a server generation, the two constants, grid intensity.

R_g(t) = E_g / L_g + P_g(u) * PUE * CI(t)      [gCO2e/h per slot]

with E_g the embodied carbon of one slot (gCO2e; zero for a second-life server), L_g its
lifetime (h), P_g(u) = idle + (peak - idle) * u its power (W) at CPU utilisation u (0..1),
PUE the facility overhead and CI the grid intensity (gCO2e/kWh).

Pure: no I/O. Arrays in, arrays out, so that a replay computes a week in one call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ecoscale.errors import InputError

HOURS_PER_YEAR = 8760.0
MAX_CARBON_RATIO = 100.0
"""Cap on C_g: a second-life slot on a 0 g/kWh grid emits nothing, and C = R_new / 0 would
let one service take any number of old replicas (the planner takes floor(C))."""

# Median life-cycle emission factors, gCO2e/kWh (IPCC AR5 WG3 Annex III); oil 650 as used by
# Electricity Maps (IPCC gives none); "other" 230 = biomass, a conservative choice.
IPCC_AR5_FACTORS_G_PER_KWH: Mapping[str, float] = {
    "COL": 820.0,
    "NG": 490.0,
    "OIL": 650.0,
    "SUN": 48.0,
    "WAT": 24.0,
    "NUC": 12.0,
    "WND": 11.0,
    "OTH": 230.0,
}
IPCC_AR5_FACTORS_NAME = "IPCC AR5 WG3 Annex III medians (oil 650, other 230)"


@dataclass(frozen=True)
class Generation:
    """A server generation, described per slot (one replica of one service)."""

    name: str
    server: str
    slots_per_node: int
    second_life: bool
    embodied_kg_per_node: float
    lifetime_years: float
    idle_w_per_slot: float
    peak_w_per_slot: float
    embodied_parts_kg: Mapping[str, float] = field(default_factory=dict)
    power_curve: tuple[tuple[float, float], ...] = ()
    """(utilisation 0..1, fraction of peak power) points; empty: linear from idle to peak."""

    @property
    def embodied_kg_per_slot(self) -> float:
        """Embodied carbon charged to one slot, kgCO2e (zero for a second-life server)."""
        if self.second_life:
            return 0.0
        return self.embodied_kg_per_node / self.slots_per_node

    @property
    def embodied_g_per_h(self) -> float:
        """Amortised embodied carbon of one slot, gCO2e/h."""
        return self.embodied_kg_per_slot * 1000.0 / (self.lifetime_years * HOURS_PER_YEAR)

    def power_w(self, utilisation: np.ndarray | float) -> np.ndarray:
        """Power of one slot at CPU utilisation ``utilisation`` (0..1, clipped), W: the power
        curve times the peak when there is a curve, else linear from idle to peak."""
        u = np.clip(np.asarray(utilisation, dtype=float), 0.0, 1.0)
        if self.power_curve:
            points, fractions = zip(*self.power_curve, strict=True)
            return self.peak_w_per_slot * np.interp(u, points, fractions)
        return self.idle_w_per_slot + (self.peak_w_per_slot - self.idle_w_per_slot) * u

    def power_w_at(self, utilisation: float) -> float:
        """``power_w`` for one utilisation, without numpy overhead (W)."""
        u = min(max(utilisation, 0.0), 1.0)
        if not self.power_curve:
            return self.idle_w_per_slot + (self.peak_w_per_slot - self.idle_w_per_slot) * u
        for (u0, f0), (u1, f1) in zip(self.power_curve, self.power_curve[1:], strict=False):
            if u <= u1:
                return self.peak_w_per_slot * (f0 + (f1 - f0) * (u - u0) / (u1 - u0))
        return self.peak_w_per_slot * self.power_curve[-1][1]


@dataclass(frozen=True)
class Hardware:
    """The generations of a pool and the conditions at which C is quoted."""

    name: str
    generations: Mapping[str, Generation]
    pue: float
    reference_ci_g_per_kwh: float
    reference_utilisation: float
    newest: str
    source: str = ""

    def generation(self, name: str) -> Generation:
        try:
            return self.generations[name]
        except KeyError:
            known = ", ".join(self.generations) or "none"
            raise InputError(self.source or self.name,
                             f"the hardware file describes no generation '{name}' (it has "
                             f"{known}); add it there, or fix the name in the file that uses "
                             "it (profile or policy table)") from None


def carbon_of_slot_hours_g(
    generation: Generation, slot_hours: np.ndarray | float, utilisation: np.ndarray | float,
    ci_g_per_kwh: np.ndarray | float, pue: float,
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Carbon of what ran: ``slot_hours`` slot-hours of ``generation`` at CPU utilisation
    ``utilisation`` (0..1, clipped) under grid intensity ``ci_g_per_kwh`` (gCO2e/kWh), as
    (embodied, operational) gCO2e: E/L [g/h] * slot-h, and P(u) [W] * PUE * CI / 1000 * slot-h.

    The one place where E/L + P(u) * PUE * CI is written. With ``slot_hours`` = replicas it is
    a rate (gCO2e/h). Plain floats in, plain floats out (no numpy overhead: the planner calls
    it per option); any array argument makes both results arrays (the replay: one call per
    placement over all its steps).
    """
    if (isinstance(utilisation, np.ndarray) or isinstance(ci_g_per_kwh, np.ndarray)
            or isinstance(slot_hours, np.ndarray)):
        power_w = generation.power_w(utilisation)
        operational = slot_hours * (power_w * pue * np.asarray(ci_g_per_kwh, dtype=float)
                                    / 1000.0)
        embodied = slot_hours * generation.embodied_g_per_h
        return embodied, operational
    operational_g_per_h = generation.power_w_at(utilisation) * pue * ci_g_per_kwh / 1000.0
    return slot_hours * generation.embodied_g_per_h, slot_hours * operational_g_per_h


def carbon_rate_g_per_h(
    generation: Generation, utilisation: np.ndarray | float, ci_g_per_kwh: np.ndarray | float,
    pue: float,
) -> np.ndarray:
    """Total carbon rate of one slot R_g = E/L + P(u) * PUE * CI, gCO2e/h."""
    embodied, operational = carbon_of_slot_hours_g(
        generation, 1.0, np.asarray(utilisation, dtype=float), ci_g_per_kwh, pue)
    return embodied + operational


@dataclass(frozen=True)
class CarbonConstants:
    """Per-slot carbon rates at given conditions, and C_g = R_newest / R_g per generation."""

    rate_g_per_h: Mapping[str, float]
    ratio: Mapping[str, float]
    """C_g: how many slots of generation g emit as much as one slot of the newest one."""
    ci_g_per_kwh: float
    utilisation: float
    pue: float


def carbon_constants(
    hardware: Hardware, ci_g_per_kwh: float | None = None, utilisation: float | None = None,
    pue: float | None = None,
) -> CarbonConstants:
    """The two constants (C_new, C_old, ...) and C at the reference or given conditions."""
    ci = hardware.reference_ci_g_per_kwh if ci_g_per_kwh is None else ci_g_per_kwh
    u = hardware.reference_utilisation if utilisation is None else utilisation
    p = hardware.pue if pue is None else pue
    rates = {
        name: float(carbon_rate_g_per_h(gen, u, ci, p))
        for name, gen in hardware.generations.items()
    }
    newest = rates[hardware.newest]
    ratio = {name: min(newest / rate, MAX_CARBON_RATIO) if rate > 0 else MAX_CARBON_RATIO
             for name, rate in rates.items()}
    return CarbonConstants(rates, ratio, ci, u, p)


def ratio_over_time(
    hardware: Hardware, generation: str, ci_g_per_kwh: np.ndarray, utilisation: float | None = None
) -> np.ndarray:
    """C(t) = R_newest(t) / R_generation(t) along a carbon-intensity series (dimensionless)."""
    u = hardware.reference_utilisation if utilisation is None else utilisation
    newest = carbon_rate_g_per_h(hardware.generation(hardware.newest), u, ci_g_per_kwh,
                                 hardware.pue)
    other = carbon_rate_g_per_h(hardware.generation(generation), u, ci_g_per_kwh, hardware.pue)
    return newest / other


def intensity_from_fuel_mix(
    generation_mwh: Mapping[str, np.ndarray], factors: Mapping[str, float]
) -> np.ndarray:
    """Grid intensity (gCO2e/kWh) as the generation-weighted mean of life-cycle factors.

    ``generation_mwh`` maps a fuel code to its generation per interval (MWh); negative values
    (storage charging, net imports) are not generation and count as zero.
    """
    missing = [fuel for fuel in generation_mwh if fuel not in factors]
    if missing:
        raise InputError("carbon factors", [
            f"no emission factor for fuel '{fuel}'; add it to the factor set" for fuel in missing
        ])
    weighted = None
    total = None
    for fuel, values in generation_mwh.items():
        mwh = np.clip(np.asarray(values, dtype=float), 0.0, None)
        weighted = mwh * factors[fuel] if weighted is None else weighted + mwh * factors[fuel]
        total = mwh if total is None else total + mwh
    if weighted is None or total is None:
        raise InputError("carbon factors", "no fuel columns to weigh")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, weighted / np.where(total > 0, total, 1.0), np.nan)
