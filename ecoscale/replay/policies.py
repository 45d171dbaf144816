"""Every policy a replay compares, built for one scenario.

Baselines (what a user would pick instead): all-new, all-old, hpa-cpu, carbon-ceiling.
The papers' static plans, planned for the peak: noscale, minnew. ecoscale: the policy table
driven by the daemon's own decision function; ecoscale-ct: the same with a C(t)-aware table
(one ladder per carbon-intensity band). right-sized-new and ecoscale-packed: replicas sized
from their utilisation and packed onto shared sockets (replay/rightsized.py). oracle: the
exact optimum for each step's true load and intensity (it sees the future step; no policy
can beat it within the model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ecoscale.control.decide import ControlSettings, ControlState, decide
from ecoscale.control.policy import Cause, Decision, Observation, changed_moves
from ecoscale.model.app import CarbonBreakdown
from ecoscale.model.packing import evaluate_packed_sequence
from ecoscale.model.placement import Placement
from ecoscale.planner.oracle import optimal_placement, packed_optimum
from ecoscale.planner.rightsize import rightsize
from ecoscale.planner.search import carbon_terms, minnew, noscale, prune, rank
from ecoscale.planner.table import PolicyTable, build_table, right_size_table, unpacked_view
from ecoscale.replay.baselines import StaticPolicy, baseline_policies
from ecoscale.replay.engine import Scenario
from ecoscale.replay.rightsized import PackedPolicy, RightSizedNewPolicy

POLICY_NAMES = ("all-new", "all-old", "hpa-cpu", "carbon-ceiling", "right-sized-new", "noscale",
                "minnew", "ecoscale", "ecoscale-ct", "ecoscale-packed", "oracle", "oracle-packed")
DEFAULT_POLICY_NAMES = tuple(name for name in POLICY_NAMES if name != "oracle-packed")
"""What a replay runs without --policies: oracle-packed solves a MILP per load bucket (up
to ORACLE_PACKED_TIME_LIMIT_S each), minutes rather than seconds, so it runs when named."""
ORACLE_PACKED_TIME_LIMIT_S = 30.0
"""Time limit (s) of one packed-oracle MILP (one load and intensity bucket)."""
CI_BAND_WIDTH_G_PER_KWH = 50.0


@dataclass(frozen=True)
class EcoscalePolicy:
    """The daemon's decision function over a policy table."""

    name: str
    table: PolicyTable
    settings: ControlSettings = field(default_factory=ControlSettings)
    feedback: frozenset[str] = frozenset({"p99"})

    def initial_state(self) -> ControlState:
        return ControlState()

    def decide(self, observation: Observation, state: ControlState) -> tuple[Decision, Any]:
        return decide(observation, state, self.table, self.settings)

    def initial_placement(self, load_qps: float, ci_g_per_kwh: float) -> Placement:
        """What runs when the replay starts, as if the daemon had been running before the
        window (as `ecoscale lab evaluate` starts it): the level for the first load with
        the full up margin."""
        table = self.table
        band = table.band_of(ci_g_per_kwh)
        margin = 1.0 / table.hysteresis.up_fraction - 1.0
        return table.levels[table.serving_index(load_qps, band, margin)].placement


class _StepBuckets:
    """The oracles' buckets: loads rounded up to ``load_quantum`` of the trace's peak
    (latency grows with load, so a solution for the bucket's top keeps every step of the
    bucket feasible) and intensities to the nearest ``ci_quantum_g_per_kwh`` (intensity
    changes only the objective), so that one MILP serves every step of its bucket."""

    feedback: frozenset[str] = frozenset()
    lowest_load_bucket = 0

    def __init__(self, scenario: Scenario, name: str, load_quantum: float,
                 ci_quantum_g_per_kwh: float):
        self.name = name
        self.scenario = scenario
        peak = float(np.max(scenario.load_qps))
        self.load_step = max(peak * load_quantum, 1e-9)
        self.ci_step = ci_quantum_g_per_kwh
        self.solved: dict[tuple[int, int], Placement] = {}

    def key(self, load_qps: float, ci: float) -> tuple[int, int]:
        """(load bucket, intensity bucket) of a load (req/s) and an intensity (g/kWh)."""
        return (max(self.lowest_load_bucket, math.ceil(load_qps / self.load_step - 1e-9)),
                round(ci / self.ci_step))

    def key_at(self, observation: Observation) -> tuple[int, int]:
        """The bucket of the scenario's step at the observation's time (the true load)."""
        step = int(round(observation.clock_s / self.scenario.step_s))
        return self.key(float(self.scenario.load_qps[step]),
                        float(self.scenario.ci_g_per_kwh[step]))

    def initial_state(self) -> None:
        return None


class OraclePolicy(_StepBuckets):
    """The least-carbon placement that keeps the SLO at each step's true load (MILP),
    one per bucket (``_StepBuckets``)."""

    def __init__(self, scenario: Scenario, name: str = "oracle", load_quantum: float = 0.02,
                 ci_quantum_g_per_kwh: float = 50.0):
        super().__init__(scenario, name, load_quantum, ci_quantum_g_per_kwh)

    def placement_for(self, load_qps: float, ci: float) -> Placement:
        """The optimum of the bucket of ``load_qps`` (req/s) at ``ci`` (g/kWh)."""
        return self.solved_for(self.key(load_qps, ci))

    def solved_for(self, key: tuple[int, int]) -> Placement:
        """The optimum at the top of bucket ``key``, solved once."""
        if key not in self.solved:
            model = self.scenario.model
            terms = carbon_terms(model, key[1] * self.ci_step)
            result = optimal_placement(model, key[0] * self.load_step, self.scenario.slo_ms,
                                       terms)
            self.solved[key] = result.placement or Placement.uniform(model.services,
                                                                     terms.newest)
        return self.solved[key]

    def decide(self, observation: Observation, state: Any) -> tuple[Decision, Any]:
        placement = self.solved_for(self.key_at(observation))
        return Decision(placement, changed_moves(observation.current, placement, Cause.OPTIMUM,
                                                 "exact optimum for this step")), state


class OraclePackedPolicy(_StepBuckets):
    """``oracle-packed``: the least-carbon right-sized placement (generation, replicas,
    shares and packing) that keeps the SLO under the co-location model at each step's true
    load (``planner.oracle.packed_optimum``), bucketed as ``OraclePolicy`` is.

    Every bucket the trace visits is solved up front, by ascending load, each within
    ``time_limit_s``; the first bucket not proven optimal stops the solving (higher loads
    only get harder) and ``finished`` is False: the row is then not shown, and ``note``
    says how far it got (the replay never shows a row that is not the optimum)."""

    lowest_load_bucket = 1

    def __init__(self, scenario: Scenario, table: PolicyTable, name: str = "oracle-packed",
                 load_quantum: float = 0.02, ci_quantum_g_per_kwh: float = 50.0,
                 time_limit_s: float = ORACLE_PACKED_TIME_LIMIT_S):
        super().__init__(scenario, name, load_quantum, ci_quantum_g_per_kwh)
        self.gaps: dict[tuple[int, int], float] = {}
        model = scenario.model
        keys = sorted({self.key(float(q), float(c)) for q, c in
                       zip(scenario.load_qps, scenario.ci_g_per_kwh, strict=True)})
        bases = [level.placement for level in table.levels if level.feasible]
        bases.append(Placement.uniform(model.services, carbon_terms(model).cheapest))
        self.finished = True
        self.note = ""
        for key in keys:
            load, ci = key[0] * self.load_step, key[1] * self.ci_step
            terms = carbon_terms(model, ci)
            known = rightsize(model, load, scenario.slo_ms,
                              [b for b in bases if model.saturation_qps(b) > load], ci)
            upper = known.carbon_g_per_h if known is not None else math.inf
            result = packed_optimum(model, load, scenario.slo_ms, terms, upper, time_limit_s)
            if result.status != "optimal" or result.placement is None:
                self.finished = False
                done = (key[0] - 1) * self.load_step
                self.note = (
                    f"oracle-packed: not shown: the MILP did not prove the optimum at "
                    f"{load:.0f} req/s, {ci:.0f} g/kWh within {time_limit_s:g} s "
                    f"({result.status}; {result.binaries} binaries"
                    + (f"; best found {result.carbon_g_per_h:.1f} gCO2e/h, lower bound "
                       f"{result.bound_g_per_h:.1f}" if math.isfinite(result.carbon_g_per_h)
                       else "") + (f"; the right-sizing pass {upper:.1f}"
                                   if math.isfinite(upper) else "")
                    + f"); it finished {len(self.solved)} of {len(keys)} buckets"
                    + (f", every bucket up to {done:.0f} req/s: a trace scaled to that "
                       "peak (--peak-qps) shows the row" if self.solved and done > 0
                       else ""))
                break
            self.solved[key] = result.placement
            self.gaps[key] = result.gap

    def decide(self, observation: Observation, state: Any) -> tuple[Decision, Any]:
        placement = self.solved[self.key_at(observation)]
        return Decision(placement, changed_moves(observation.current, placement, Cause.OPTIMUM,
                                                 "exact packed optimum for this step")), state

    def evaluate_sequence(self, placements: list[Placement], frontend_qps: np.ndarray,
                          ci_g_per_kwh: np.ndarray, step_h: float
                          ) -> tuple[np.ndarray, CarbonBreakdown]:
        """Scores steps under the co-location model (the replay calls this)."""
        return evaluate_packed_sequence(self.scenario.model, placements, frontend_qps,
                                        ci_g_per_kwh, step_h)


def for_period(table: PolicyTable, period_s: float) -> PolicyTable:
    """``table`` for a daemon deciding every ``period_s``: load growth is measured over at
    least one period (a growth horizon shorter than the period would see no history)."""
    hysteresis = table.hysteresis
    if hysteresis.growth_horizon_s >= period_s:
        return table
    return replace(table, hysteresis=replace(hysteresis, growth_horizon_s=period_s))


def planning_peak(scenario: Scenario) -> float:
    return float(np.max(scenario.load_qps))


def static_plans(scenario: Scenario) -> list[StaticPolicy]:
    """The papers' NoScale and MinNew, planned once for the trace's peak, constant C."""
    model = scenario.model
    peak = planning_peak(scenario)
    terms = carbon_terms(model)
    pruning = prune(model, peak, scenario.slo_ms, terms)
    ranking = [s for s, _ in rank(model, list(pruning.critical), peak, terms)[0]]
    plan_noscale, _ = noscale(model, peak, scenario.slo_ms, ranking, pruning, terms)
    plan_minnew = minnew(model, peak, scenario.slo_ms, ranking, pruning, terms)
    return [StaticPolicy("noscale", plan_noscale.placement),
            StaticPolicy("minnew", plan_minnew.placement)]


MAX_CI_BANDS = 20
"""Most intensity bands planned for ecoscale-ct (each band plans a whole ladder)."""


def ci_bands(scenario: Scenario, width: float = CI_BAND_WIDTH_G_PER_KWH) -> list[float]:
    """Upper limits of intensity bands covering the scenario's carbon trace: ``width`` wide,
    widened by whole multiples when more than MAX_CI_BANDS would be needed (a trace with
    one wild hour must not plan thousands of ladders). Non-finite intensities are ignored."""
    values = np.asarray(scenario.ci_g_per_kwh, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return [math.inf]
    low = math.floor(float(np.min(values)) / width) * width
    high = math.ceil(float(np.max(values)) / width) * width
    width *= max(1, math.ceil((high - low) / width / MAX_CI_BANDS))
    bands = list(np.arange(low + width, high + width / 2, width))
    return [float(b) for b in bands][:MAX_CI_BANDS] + [math.inf]


def all_policies(scenario: Scenario, table: PolicyTable | None = None,
                 names: tuple[str, ...] = DEFAULT_POLICY_NAMES,
                 ct_table: PolicyTable | None = None,
                 settings: ControlSettings | None = None,
                 notes: list[str] | None = None) -> list[Any]:
    """The policies named in ``names``, in report order; ``table`` and ``ct_table`` are
    the policy tables of ecoscale and ecoscale-ct (default: planned for the scenario; a
    right-sized ``table``, from ``plan --right-size``, is ecoscale-packed's as it is, and
    ecoscale runs its ladder on dedicated slots: ``unpacked_view``), ``settings`` their
    control settings (default: ControlSettings()). A policy that cannot run (oracle-packed
    where its MILP does not finish) is left out, with the reason appended to ``notes``."""
    model = scenario.model
    wanted = set(names)
    policies: list[Any] = [
        p for p in baseline_policies(model.services, model.profile.generations,
                                     model.hardware.newest)
        if p.name in wanted
    ]
    if wanted & {"noscale", "minnew"}:
        policies.extend(p for p in static_plans(scenario) if p.name in wanted)
    peak = planning_peak(scenario)
    if "right-sized-new" in wanted and model.hardware.newest in model.profile.generations:
        policies.append(RightSizedNewPolicy("right-sized-new", model, scenario.slo_ms, peak,
                                            model.hardware.newest))
    if wanted & {"ecoscale", "ecoscale-packed", "oracle-packed"}:
        table = table or build_table(model, scenario.slo_ms, peak)
    sized = None
    if table is not None and table.right_sized:
        # a right-sized table (plan --right-size) is what ecoscale-packed runs; ecoscale
        # runs the same ladder on dedicated slots
        sized, table = table, unpacked_view(table)
    if "ecoscale" in wanted:
        policies.append(EcoscalePolicy("ecoscale", for_period(table, scenario.step_s),
                                       settings or ControlSettings()))
    if "ecoscale-ct" in wanted:
        ct_table = ct_table or build_table(model, scenario.slo_ms, peak,
                                           ci_bands=ci_bands(scenario))
        policies.append(EcoscalePolicy("ecoscale-ct", for_period(ct_table, scenario.step_s),
                                       settings or ControlSettings()))
    if "ecoscale-packed" in wanted:
        sized = sized or right_size_table(model, table)
        inner = EcoscalePolicy("ecoscale", for_period(sized, scenario.step_s),
                               settings or ControlSettings())
        policies.append(PackedPolicy("ecoscale-packed", inner, model))
    if "oracle" in wanted:
        policies.append(OraclePolicy(scenario))
    if "oracle-packed" in wanted:
        packed_oracle = OraclePackedPolicy(scenario, table)
        if packed_oracle.finished:
            policies.append(packed_oracle)
        elif notes is not None:
            notes.append(packed_oracle.note)
    order = {name: i for i, name in enumerate(POLICY_NAMES)}
    return sorted(policies, key=lambda p: order.get(p.name, len(order)))
