"""The exact optimum placement at one load level, to measure how far the greedy plan is.

Formulation (a mixed-integer linear program, solved by HiGHS through scipy.optimize.milp):

- options o of service s: (generation g, replicas k), k = 1 .. floor(C_g) (the newest
  generation: 1 .. max_new_replicas), excluding options that saturate at this load;
  constants: p99[s,o] (ms) at this load, carbon[s,o] (gCO2e/h) at this load and intensity.
- binary x[s,o]; sum_o x[s,o] = 1 for every service.
- latency of s: l_s = sum_o p99[s,o] x[s,o].
- for every stage of every counted endpoint (those with >= 1 % of requests), a continuous
  m_stage >= cost of each call in it, where a call costs l_s plus the stages of its sub-path;
  an endpoint's stages sum to at most SLO / calibration. Minimising carbon never gains from
  a larger m, so sum-of-maxima <= SLO holds exactly as in the model.
- minimise sum carbon[s,o] x[s,o].

The same option space as the greedy search, so the ratio of the two is the greedy's loss.
``exhaustive`` enumerates every combination instead (tiny apps only, to check the ILP).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from operator import attrgetter

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from ecoscale.model.app import AppModel
from ecoscale.model.carbon import carbon_of_slot_hours_g
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.model.topology import Stage
from ecoscale.planner.search import SLO_TOLERANCE, CarbonTerms, option_space


@dataclass(frozen=True)
class OracleResult:
    placement: Placement | None
    carbon_g_per_h: float
    p99_ms: float
    status: str
    """'optimal', 'infeasible' or 'time limit'."""
    options: int
    seconds_limit: float | None = None


def options_for(model: AppModel, service: str, load_qps: float,
                terms: CarbonTerms) -> list[tuple[ServicePlacement, float, float]]:
    """(option, p99 ms, carbon gCO2e/h) of every non-saturating option of ``service``: the
    search's option space (``search.option_space``) less the options that saturate at
    ``load_qps`` (they can keep no SLO)."""
    out = []
    pue = model.hardware.pue
    for generation, group in itertools.groupby(option_space(terms),
                                               key=attrgetter("generation")):
        gen = model.hardware.generation(generation)
        curve = model.profile.curve(service, generation)
        options = list(group)
        replicas = np.array([option.replicas for option in options])
        loads = model.visits[service] * load_qps / replicas
        p99 = curve.p99(loads)
        embodied, operational = carbon_of_slot_hours_g(gen, replicas, curve.util(loads),
                                                       terms.ci_g_per_kwh, pue)
        carbon = embodied + operational
        for option, latency, grams in zip(options, p99, carbon, strict=True):
            if math.isfinite(latency):
                out.append((option, float(latency), float(grams)))
    return out


class _Builder:
    """Rows of the constraint matrix, one at a time."""

    def __init__(self, n_binary: int):
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.lb: list[float] = []
        self.ub: list[float] = []
        self.n = n_binary

    def new_var(self) -> int:
        self.n += 1
        return self.n - 1

    def row(self, terms: dict[int, float], lb: float, ub: float) -> None:
        index = len(self.lb)
        for col, val in terms.items():
            self.rows.append(index)
            self.cols.append(col)
            self.vals.append(val)
        self.lb.append(lb)
        self.ub.append(ub)


def optimal_placement(model: AppModel, load_qps: float, slo_ms: float, terms: CarbonTerms,
                      time_limit_s: float | None = 60.0) -> OracleResult:
    """The least-carbon placement that keeps the SLO at ``load_qps`` (MILP, HiGHS)."""
    per_service = {s: options_for(model, s, load_qps, terms) for s in model.services}
    if any(not options for options in per_service.values()):
        return OracleResult(None, math.inf, math.inf, "infeasible", 0)
    index: dict[str, list[int]] = {}
    costs: list[float] = []
    p99s: list[float] = []
    for service, options in per_service.items():
        index[service] = list(range(len(costs), len(costs) + len(options)))
        costs.extend(c for _, _, c in options)
        p99s.extend(p for _, p, _ in options)
    n_binary = len(costs)
    builder = _Builder(n_binary)
    for service in model.services:
        builder.row({i: 1.0 for i in index[service]}, 1.0, 1.0)

    def stage_vars(path: tuple[Stage, ...]) -> list[int]:
        variables = []
        for stage in path:
            m = builder.new_var()
            for call in stage:
                # m - l_s - sum(sub-path stages) >= 0
                terms_: dict[int, float] = {m: 1.0}
                for i in index[call.service]:
                    terms_[i] = terms_.get(i, 0.0) - p99s[i]
                for sub in stage_vars(call.path):
                    terms_[sub] = terms_.get(sub, 0.0) - 1.0
                builder.row(terms_, 0.0, math.inf)
            variables.append(m)
        return variables

    budget = slo_ms * (1 + SLO_TOLERANCE) / model.e2e.calibration
    for endpoint in model.e2e.counted:
        builder.row({m: 1.0 for m in stage_vars(endpoint.path)}, -math.inf, budget)
    n = builder.n
    c = np.zeros(n)
    c[:n_binary] = costs
    integrality = np.zeros(n)
    integrality[:n_binary] = 1
    upper = np.full(n, np.inf)
    upper[:n_binary] = 1
    matrix = coo_matrix((builder.vals, (builder.rows, builder.cols)),
                        shape=(len(builder.lb), n)).tocsr()
    options = {"time_limit": time_limit_s} if time_limit_s else {}
    result = milp(c, integrality=integrality, bounds=Bounds(np.zeros(n), upper),
                  constraints=LinearConstraint(matrix, builder.lb, builder.ub), options=options)
    if result.x is None:
        status = "time limit" if result.status == 1 else "infeasible"
        return OracleResult(None, math.inf, math.inf, status, n_binary, time_limit_s)
    chosen = {}
    for service, options_ in per_service.items():
        best = max(index[service], key=lambda i: result.x[i])
        chosen[service] = options_[index[service].index(best)][0]
    placement = Placement(tuple((s, chosen[s]) for s in model.services))
    status = "optimal" if result.status == 0 else "time limit"
    return OracleResult(placement, model.carbon_rate_g_per_h(placement, load_qps,
                                                              terms.ci_g_per_kwh),
                        float(model.e2e_p99(placement, load_qps)), status, n_binary, time_limit_s)


def exhaustive_placement(model: AppModel, load_qps: float, slo_ms: float,
                         terms: CarbonTerms) -> OracleResult:
    """Every combination of options (tiny apps only)."""
    per_service = [options_for(model, s, load_qps, terms) for s in model.services]
    best: tuple[float, Placement] | None = None
    count = 0
    for combo in itertools.product(*per_service):
        count += 1
        placement = Placement(tuple(zip(model.services, (o for o, _, _ in combo), strict=True)))
        carbon = sum(c for _, _, c in combo)
        if best is not None and carbon >= best[0]:
            continue
        if float(model.e2e_p99(placement, load_qps)) <= slo_ms * (1 + SLO_TOLERANCE):
            best = (carbon, placement)
    if best is None:
        return OracleResult(None, math.inf, math.inf, "infeasible", count)
    return OracleResult(best[1], model.carbon_rate_g_per_h(best[1], load_qps, terms.ci_g_per_kwh),
                        float(model.e2e_p99(best[1], load_qps)), "optimal", count)
