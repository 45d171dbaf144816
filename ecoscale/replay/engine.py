"""Trace replay: drive each policy over a simulated clock and score carbon and SLO.

At the start of step i a policy observes what a live daemon would see then: the load and
p99 of step i-1 (measured over the last window, under the placement that ran), the current
carbon intensity, and the placement that runs. Its decision runs during step i, whose
latency and carbon the model computes at step i's true load. Steps are then evaluated
vectorised, grouped by placement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ecoscale.control.policy import Observation, Policy
from ecoscale.model.app import AppModel
from ecoscale.model.placement import Placement

SUMMARY_COLUMNS = [
    "policy",
    "carbon_kg",
    "embodied_kg",
    "operational_kg",
    "saving_vs_all_new_pct",
    "slo_violation_pct",
    "moves",
    "saving_vs_right_sized_new_pct",
]
"""summary.csv's columns, in order (new columns go at the end)."""
RIGHT_SIZED_REFERENCE = "right-sized-new"
"""The second reference for savings: what an operator would run instead (replay/rightsized)."""
SLO_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Scenario:
    """Everything a replay needs, already aligned to one step grid."""

    model: AppModel
    load_qps: np.ndarray
    """Front-end load per step, req/s."""
    ci_g_per_kwh: np.ndarray
    """Grid intensity per step, gCO2e/kWh."""
    step_s: float
    slo_ms: float
    start: str | None = None
    """ISO time (UTC) of the first step of the load trace, when known."""
    provenance: Mapping[str, Any] = field(default_factory=dict)
    load_trace: str = ""
    """Name of the load trace (shipped name or file), for titles."""
    load_offset_s: float = 0.0
    """Where the replayed window starts in the load trace, s from its first value."""
    carbon_trace: str = ""
    """Name of the carbon trace: the grid region (e.g. CISO) or file, for titles."""
    carbon_start: str | None = None
    """ISO time (UTC) of the carbon trace at the first step, when known."""

    @property
    def steps(self) -> int:
        return len(self.load_qps)


@dataclass(frozen=True)
class PolicyRun:
    name: str
    placements: list[Placement]
    p99_ms: np.ndarray
    embodied_g: np.ndarray
    operational_g: np.ndarray
    by_generation_g: Mapping[str, np.ndarray]
    moves: np.ndarray
    """Service updates made at each step (placement changes, counted per service)."""
    reasons: list[list[str]]
    policy: Any = field(default=None, compare=False, repr=False)
    """The policy object that ran (its settings explain results, e.g. duplicate rows)."""


@dataclass(frozen=True)
class ReplayResult:
    scenario: Scenario
    runs: list[PolicyRun]
    references: list[PolicyRun] = field(default_factory=list)
    """Runs made only as references for savings (right-sized-new when not asked for):
    they have no row."""

    def summary(self) -> pd.DataFrame:
        """One row per policy with exactly SUMMARY_COLUMNS."""
        base = next((r for r in self.runs if r.name == "all-new"), None)
        base_kg = (base.embodied_g.sum() + base.operational_g.sum()) / 1000 if base else math.nan
        sized = next((r for r in [*self.runs, *self.references]
                      if r.name == RIGHT_SIZED_REFERENCE), None)
        # summed as each row's total is, so that right-sized-new's own saving is exactly 0
        sized_kg = (sized.embodied_g.sum() / 1000 + sized.operational_g.sum() / 1000 if sized
                    else math.nan)
        rows = []
        for run in self.runs:
            embodied = run.embodied_g.sum() / 1000
            operational = run.operational_g.sum() / 1000
            total = embodied + operational
            rows.append({
                "policy": run.name,
                "carbon_kg": total,
                "embodied_kg": embodied,
                "operational_kg": operational,
                "saving_vs_all_new_pct": 100 * (1 - total / base_kg) if base_kg else math.nan,
                "slo_violation_pct": 100 * float(np.mean(self.violations(run))),
                "moves": int(run.moves.sum()),
                "saving_vs_right_sized_new_pct": (100 * (1 - total / sized_kg) if sized_kg
                                                  else math.nan),
            })
        return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)

    def violations(self, run: PolicyRun) -> np.ndarray:
        return ~(run.p99_ms <= self.scenario.slo_ms * (1 + SLO_TOLERANCE))

    def steps(self) -> pd.DataFrame:
        """Tidy per-step table: one row per (policy, step)."""
        scenario = self.scenario
        time_s = np.arange(scenario.steps) * scenario.step_s
        frames = []
        generations = list(scenario.model.hardware.generations)
        for run in self.runs:
            frame = pd.DataFrame({
                "policy": run.name,
                "step": np.arange(scenario.steps),
                "time_s": time_s,
                "load_qps": scenario.load_qps,
                "carbon_intensity_g_per_kwh": scenario.ci_g_per_kwh,
                "p99_ms": run.p99_ms,
                "slo_ms": scenario.slo_ms,
                "slo_violated": self.violations(run),
                "carbon_g": run.embodied_g + run.operational_g,
                "embodied_g": run.embodied_g,
                "operational_g": run.operational_g,
                "moves": run.moves,
            })
            # counted once per placement object (policies return the same objects again)
            counted: dict[int, tuple[dict[str, int], dict[str, int]]] = {}
            for placement in run.placements:
                if id(placement) not in counted:
                    services: dict[str, int] = {}
                    for _, placed in placement.items:
                        services[placed.generation] = services.get(placed.generation, 0) + 1
                    counted[id(placement)] = (services, placement.slots())
            per_step = [counted[id(placement)] for placement in run.placements]
            for generation in generations:
                frame[f"services_on_{generation}"] = [s.get(generation, 0) for s, _ in per_step]
                frame[f"slots_{generation}"] = [slots.get(generation, 0) for _, slots in per_step]
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)


def _moves(placements: Sequence[Placement]) -> np.ndarray:
    moves = np.zeros(len(placements), dtype=int)
    for i in range(1, len(placements)):
        if placements[i] is not placements[i - 1] and placements[i] != placements[i - 1]:
            moves[i] = len(placements[i - 1].changes(placements[i]))
    return moves


class _Feedback:
    """What a live daemon would measure, computed once per distinct placement for all steps."""

    def __init__(self, model: AppModel, load: np.ndarray):
        self.model = model
        self.load = load
        self._p99: dict[Placement, np.ndarray] = {}
        self._util: dict[Placement, dict[str, np.ndarray]] = {}

    def p99(self, placement: Placement, step: int) -> float:
        if placement not in self._p99:
            self._p99[placement] = self.model.e2e_p99(placement, self.load)
        return float(self._p99[placement][step])

    def utilisation(self, placement: Placement, step: int) -> dict[str, float]:
        if placement not in self._util:
            self._util[placement] = self.model.utilisation(placement, self.load)
        return {s: float(u[step]) for s, u in self._util[placement].items()}


def run_policy(scenario: Scenario, policy: Policy) -> PolicyRun:
    """Drive one policy over the scenario's steps; then score every step."""
    model = scenario.model
    load = scenario.load_qps
    ci = scenario.ci_g_per_kwh
    state = policy.initial_state()
    # what runs before the first decision: the policy's own start (a daemon that ran before
    # the window), else all on the newest generation
    start = getattr(policy, "initial_placement", None)
    current = (start(float(load[0]), float(ci[0])) if start is not None
               else Placement.uniform(model.services, model.hardware.newest))
    placements: list[Placement] = []
    reasons: list[list[str]] = []
    feedback = _Feedback(model, load)
    wants_p99 = "p99" in policy.feedback
    wants_util = "utilisation" in policy.feedback
    for i in range(scenario.steps):
        seen = max(i - 1, 0)
        observation = Observation(
            clock_s=i * scenario.step_s,
            qps=float(load[seen]),
            p99_ms=feedback.p99(current, seen) if i > 0 and wants_p99 else math.nan,
            ci_g_per_kwh=float(ci[i]),
            current=current,
            utilisation=feedback.utilisation(current, seen) if i > 0 and wants_util else {},
        )
        decision, state = policy.decide(observation, state)
        current = decision.placement
        placements.append(current)
        reasons.append(list(decision.reasons.values()))
    # a policy whose placements need their own scoring (right-sized, packed) brings it
    evaluate = getattr(policy, "evaluate_sequence", model.evaluate_sequence)
    p99_ms, carbon = evaluate(placements, load, ci, scenario.step_s / 3600.0)
    return PolicyRun(
        name=policy.name,
        placements=placements,
        p99_ms=p99_ms,
        embodied_g=carbon.embodied_g,
        operational_g=carbon.operational_g,
        by_generation_g=carbon.by_generation_g,
        moves=_moves(placements),
        reasons=reasons,
        policy=policy,
    )


def replay(scenario: Scenario, policies: Sequence[Policy],
           references: Sequence[Policy] = ()) -> ReplayResult:
    """Run ``policies`` (one summary row each) and ``references`` (savings only, no row)."""
    names = [p.name for p in policies]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"policy names must be unique, repeated: {sorted(duplicates)}")
    return ReplayResult(scenario, [run_policy(scenario, policy) for policy in policies],
                        [run_policy(scenario, policy) for policy in references
                         if policy.name not in names])
