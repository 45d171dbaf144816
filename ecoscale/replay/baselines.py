"""What a user would pick instead of ecoscale: static placements and replica autoscalers.

- ``all-new`` / ``all-old``: one replica of every service on one generation, always.
- ``hpa-cpu``: Kubernetes HPA's rule on new servers only: desired = ceil(replicas * u / target)
  when u / target leaves the tolerance band; scale-down takes the highest recommendation of
  the stabilisation window (K8s defaults: tolerance 0.1, window 300 s).
- ``carbon-ceiling``: the carbon-aware KEDA operator's method on top of hpa-cpu: the current
  grid intensity selects a band, and the band caps every service's replica count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecoscale.control.policy import Cause, Decision, Observation, changed_moves
from ecoscale.model.placement import Placement, ServicePlacement


@dataclass(frozen=True)
class StaticPolicy:
    """Always the same placement."""

    name: str
    placement: Placement
    feedback: frozenset[str] = frozenset()

    def initial_state(self) -> None:
        return None

    def decide(self, observation: Observation, state: Any) -> tuple[Decision, Any]:
        moves = changed_moves(observation.current, self.placement, Cause.STATIC,
                              f"static {self.name}")
        return Decision(self.placement, moves), state


@dataclass(frozen=True)
class CarbonBand:
    """Up to ``max_ci_g_per_kwh`` (gCO2e/kWh), at most ``max_replicas`` per service."""

    max_ci_g_per_kwh: float
    max_replicas: int


DEFAULT_CARBON_BANDS = (
    CarbonBand(200.0, 10),
    CarbonBand(250.0, 2),
    CarbonBand(math.inf, 1),
)


@dataclass(frozen=True)
class HpaCpuPolicy:
    """HPA-like CPU-threshold replica scaling on one generation (the newest, for the
    baselines)."""

    name: str
    services: tuple[str, ...]
    generation: str
    target_utilisation: float = 0.6
    tolerance: float = 0.1
    min_replicas: int = 1
    max_replicas: int = 10
    scale_down_window_s: float = 300.0
    carbon_bands: Sequence[CarbonBand] = field(default_factory=tuple)
    feedback: frozenset[str] = frozenset({"utilisation"})

    def initial_state(self) -> tuple[tuple[float, np.ndarray], ...]:
        """Recent (time s, desired replicas per service) recommendations, oldest first."""
        return ()

    def ceiling(self, ci_g_per_kwh: float) -> int:
        """Replica ceiling for the intensity (max_replicas when no bands or no data)."""
        if not self.carbon_bands or not math.isfinite(ci_g_per_kwh):
            return self.max_replicas
        for band in self.carbon_bands:
            if ci_g_per_kwh <= band.max_ci_g_per_kwh:
                return min(band.max_replicas, self.max_replicas)
        return self.max_replicas

    def decide(self, observation: Observation, state: Any) -> tuple[Decision, Any]:
        now = observation.clock_s
        current = observation.current
        replicas = np.array([
            p.replicas if (p := current[s]).generation == self.generation else 1
            for s in self.services
        ])
        util = np.array([observation.utilisation.get(s, math.nan) for s in self.services])
        ratio = util / self.target_utilisation
        act = np.isfinite(ratio) & (np.abs(ratio - 1.0) > self.tolerance)
        desired = np.where(act, np.ceil(replicas * np.where(act, ratio, 1.0)), replicas)
        recent = tuple(
            (t, d) for t, d in state if now - t < self.scale_down_window_s
        ) + ((now, desired),)
        # scale down only to the highest recommendation of the stabilisation window
        highest = np.max(np.vstack([d for _, d in recent]), axis=0)
        desired = np.where(desired < replicas, highest, desired)
        ceiling = self.ceiling(observation.ci_g_per_kwh)
        wanted = desired
        desired = np.clip(desired, self.min_replicas, ceiling).astype(int)
        if np.array_equal(desired, replicas) and all(
            p.generation == self.generation for _, p in current.items
        ):
            return Decision(current), recent
        placement = Placement(tuple(
            (s, ServicePlacement(self.generation, int(r)))
            for s, r in zip(self.services, desired, strict=True)
        ))
        if placement == current:
            return Decision(current), recent
        reason = f"CPU utilisation vs target {self.target_utilisation:.0%}"
        if self.carbon_bands:
            reason += f", carbon ceiling {ceiling} at {observation.ci_g_per_kwh:.0f} g/kWh"
        capped = {s: int(w) for s, w, d in zip(self.services, wanted, desired, strict=True)
                  if w != d}
        return Decision(placement, changed_moves(current, placement, Cause.CPU, reason,
                                                 capped)), recent


def baseline_policies(services: Sequence[str], generations: Sequence[str],
                      newest: str) -> list[Any]:
    """all-new, all-old, hpa-cpu and carbon-ceiling for an app's services: all-new and the
    HPA rules on ``newest`` (the hardware's newest generation), all-old on the last of the
    profile's ``generations`` other than ``newest`` (its oldest; no all-old with one)."""
    services = tuple(services)
    policies: list[Any] = [StaticPolicy("all-new", Placement.uniform(services, newest))]
    older = [g for g in generations if g != newest]
    if older:
        policies.append(StaticPolicy("all-old", Placement.uniform(services, older[-1])))
    policies.append(HpaCpuPolicy("hpa-cpu", services, newest))
    policies.append(HpaCpuPolicy("carbon-ceiling", services, newest,
                                 carbon_bands=DEFAULT_CARBON_BANDS))
    return policies
