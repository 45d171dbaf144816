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
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from ecoscale.model.app import AppModel
from ecoscale.model.carbon import carbon_of_slot_hours_g
from ecoscale.model.latency import LatencyCurve
from ecoscale.model.packing import PackedPlacement, Socket, packed_e2e_p99_at
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.model.topology import Stage
from ecoscale.planner.rightsize import MIN_SHARE, packed_rate_g_per_h
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


def bound_end_to_end(builder: _Builder, model: AppModel, slo_ms: float,
                     minus_latency: Callable[[str], dict[int, float]]) -> None:
    """Rows that keep every counted endpoint's modelled p99 within the SLO: a variable per
    stage at least each of its calls' latency plus the call's own sub-stages, and the sum
    over an endpoint's stages within the budget. ``minus_latency(service)``: the terms of
    minus the service's latency (ms) in the builder's variables."""

    def stage_vars(path: tuple[Stage, ...]) -> list[int]:
        variables = []
        for stage in path:
            m = builder.new_var()
            for call in stage:
                # m - latency(call) - sum(sub-path stages) >= 0
                row: dict[int, float] = {m: 1.0}
                for col, coef in minus_latency(call.service).items():
                    row[col] = row.get(col, 0.0) + coef
                for sub in stage_vars(call.path):
                    row[sub] = row.get(sub, 0.0) - 1.0
                builder.row(row, 0.0, math.inf)
            variables.append(m)
        return variables

    budget = slo_ms * (1 + SLO_TOLERANCE) / model.e2e.calibration
    for endpoint in model.e2e.counted:
        builder.row({m: 1.0 for m in stage_vars(endpoint.path)}, -math.inf, budget)


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

    bound_end_to_end(builder, model, slo_ms,
                     lambda service: {i: -p99s[i] for i in index[service]})
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


# ---- the extended oracle: generation, replicas, shares and the packing together -----------

PACKED_MAX_REPLICAS = 3
"""Most replicas of one service the packed oracle considers per generation (with the
profile's ``replica_limits``): the right-sizing pass's plans on the shipped apps use at most
two per service, so three keeps the oracle's space a superset of theirs."""
TAIL_SAMPLES = 8
"""Points sampled on a curve's queueing tail (beyond its last measured load, up to
TAIL_END of saturation) for the co-location constraints: between them the MILP reads the
chord, slightly above the curve (conservative)."""
TAIL_END = 0.995
"""The highest equivalent load (fraction of saturation) a replica may run at in the packed
oracle: its p99 is unbounded at saturation."""


@dataclass(frozen=True)
class PackedOracleResult:
    """The packed oracle's answer at one load and intensity."""

    placement: PackedPlacement | None
    carbon_g_per_h: float
    """Carbon rate of ``placement`` at the load, under the packed accounting (gCO2e/h)."""
    p99_ms: float
    """Its end-to-end p99 under the co-location model (ms)."""
    status: str
    """'optimal', 'time limit' (``placement`` the best found, ``bound_g_per_h`` below it),
    'infeasible' or 'time limit, none found'."""
    bound_g_per_h: float
    """HiGHS's lower bound on the least carbon (gCO2e/h): equal to ``carbon_g_per_h`` at
    optimality."""
    binaries: int
    seconds_limit: float | None = None

    @property
    def gap(self) -> float:
        """Relative gap between the placement and the bound (0 at optimality)."""
        if not math.isfinite(self.carbon_g_per_h) or self.carbon_g_per_h <= 0:
            return math.inf
        return max(0.0, 1.0 - self.bound_g_per_h / self.carbon_g_per_h)


def _chords(curve: LatencyCurve, own_qps: float, reach: float
            ) -> tuple[list[tuple[float, float]], float]:
    """Lines (intercept ms, slope ms per unit of the others' utilisation) whose maximum is
    the co-location p99 of a replica at per-replica load ``own_qps`` (req/s) as a function
    of the others' utilisation V (``model.colocation``: p99(own + V * mu)): the chords of the
    curve between its measured points and TAIL_SAMPLES points of its tail, exact at those
    points and on the measured (piecewise-linear) range where it is convex, above the curve
    elsewhere; and the largest V allowed (TAIL_END of saturation)."""
    mu = curve.saturation_qps
    v_max = (TAIL_END * mu - own_qps) / mu
    end = min(TAIL_END * mu, own_qps + (1.0 - reach) * mu)
    points = [own_qps] + [x for x in curve.load_qps.tolist() if own_qps < x < end] + [end]
    last = float(curve.load_qps[-1])
    start = max(last, own_qps)
    if end > start:
        points += [start + (end - start) * (i / TAIL_SAMPLES) ** 0.5
                   for i in range(1, TAIL_SAMPLES + 1)]
    points = sorted(set(points))
    vs = [(x - own_qps) / mu for x in points]
    ps = [curve.p99_at(x) for x in points]
    lines = []
    for i in range(len(vs) - 1):
        slope = (ps[i + 1] - ps[i]) / max(vs[i + 1] - vs[i], 1e-12)
        lines.append((ps[i] - slope * vs[i], slope))
    if not lines:
        lines.append((ps[0], 0.0))
    return lines, v_max


def packed_optimum(model: AppModel, load_qps: float, slo_ms: float, terms: CarbonTerms,
                   upper_g_per_h: float, time_limit_s: float | None = 60.0,
                   max_replicas: int = PACKED_MAX_REPLICAS) -> PackedOracleResult:
    """The least-carbon right-sized placement that keeps ``slo_ms`` at ``load_qps`` (req/s)
    under the co-location model, at the intensity of ``terms``: a MILP (HiGHS) over every
    service's (generation, replicas) option, every replica's socket and so the packing.

    Formulation. Binary x[s,o] (service s takes option o = (generation g, k replicas)), binary
    a[s,o,b] (a replica of s in option o on socket b of g; at most one per service and
    socket), binary open[b]; continuous U[b] (the socket's utilisation) and L[s] (the p99 of
    s, ms). Rows: sum_o x = 1; sum_b a[s,o,b] = k x[s,o]; sum of shares on b <= open[b] (a
    replica's share is its utilisation, at least MIN_SHARE); U[b] = sum of utilisations on
    b; for every line of ``_chords``: L[s] >= c + m (U[b] - u_o) when a[s,o,b] = 1 (big-M),
    and U[b] - u_o <= its largest V; the stage rows of ``optimal_placement`` on L. Carbon is
    linear: per socket in use its embodied share and idle power once, plus every replica's
    dynamic power (the power model is linear in utilisation), so the objective is exact.
    Sockets per generation are bounded by ``upper_g_per_h`` (the carbon of a known packing,
    e.g. the right-sizing pass's): an optimum costs no more, so it opens at most
    (upper - least dynamic carbon) / fixed carbon of a socket; open sockets come first
    (symmetry). The result is checked under the model itself (``packed_e2e_p99_at``)."""
    ci = terms.ci_g_per_kwh
    pue = model.hardware.pue
    services = model.services
    options: dict[str, list[tuple[ServicePlacement, float, float, float, LatencyCurve]]] = {}
    for service in services:
        found = []
        for generation in terms.order:
            curve = model.profile.curve(service, generation)
            limit = min(max_replicas, terms.replica_limits.get(generation, max_replicas))
            for replicas in range(1, limit + 1):
                own = model.visits[service] * load_qps / replicas
                if own >= TAIL_END * curve.saturation_qps:
                    continue
                util = curve.util_at(own)
                gen = model.hardware.generation(generation)
                dynamic = replicas * (gen.power_w_at(util) - gen.power_w_at(0.0)) * pue * ci / 1e3
                found.append((ServicePlacement(generation, replicas), own, util, dynamic, curve))
        if not found:
            return PackedOracleResult(None, math.inf, math.inf, "infeasible", math.inf, 0,
                                      time_limit_s)
        options[service] = found
    fixed = {}
    for generation in terms.order:
        gen = model.hardware.generation(generation)
        fixed[generation] = gen.embodied_g_per_h + gen.power_w_at(0.0) * pue * ci / 1e3
    least_dynamic = sum(min(o[3] for o in found) for found in options.values())
    sockets_of: dict[str, list[int]] = {}
    builder = _Builder(0)
    x_index: dict[tuple[str, int], int] = {}
    costs: dict[int, float] = {}
    for service, found in options.items():
        for i, option in enumerate(found):
            x_index[service, i] = builder.new_var()
            costs[x_index[service, i]] = option[3]
    for generation in terms.order:
        most = sum(o[0].replicas for found in options.values() for o in found
                   if o[0].generation == generation) or 0
        room = (upper_g_per_h - least_dynamic) / max(fixed[generation], 1e-9) + 1e-9
        count = max(0, min(most, math.floor(room))) if math.isfinite(room) else most
        sockets_of[generation] = [builder.new_var() for _ in range(count)]
        for b in sockets_of[generation]:
            costs[b] = fixed[generation]
    util_var = {b: builder.new_var() for bs in sockets_of.values() for b in bs}
    latency = {service: builder.new_var() for service in services}
    a_index: dict[tuple[str, int, int], int] = {}
    for service, found in options.items():
        for i, option in enumerate(found):
            for b in sockets_of[option[0].generation]:
                a_index[service, i, b] = builder.new_var()
    binaries = list(x_index.values()) + [b for bs in sockets_of.values() for b in bs] + list(
        a_index.values())
    for service, found in options.items():
        builder.row({x_index[service, i]: 1.0 for i in range(len(found))}, 1.0, 1.0)
        for i, option in enumerate(found):
            row = {a_index[service, i, b]: 1.0 for b in sockets_of[option[0].generation]}
            row[x_index[service, i]] = -float(option[0].replicas)
            builder.row(row, 0.0, 0.0)
        for bs in sockets_of.values():
            for b in bs:
                row = {a_index[service, i, b]: 1.0 for i in range(len(found))
                       if (service, i, b) in a_index}
                if row:
                    builder.row(row, -math.inf, 1.0)
    for bs in sockets_of.values():
        for b, nxt in zip(bs, bs[1:], strict=False):
            builder.row({b: 1.0, nxt: -1.0}, 0.0, math.inf)
            builder.row({util_var[b]: 1.0, util_var[nxt]: -1.0}, 0.0, math.inf)
        for b in bs:
            shares: dict[int, float] = {b: -1.0}
            used: dict[int, float] = {util_var[b]: -1.0}
            for (service, i, socket), a in a_index.items():
                if socket == b:
                    util = options[service][i][2]
                    shares[a] = max(util, MIN_SHARE)
                    used[a] = util
            builder.row(shares, -math.inf, 0.0)
            builder.row(used, 0.0, 0.0)
    for (service, i, b), a in a_index.items():
        placed, own, util, _, curve = options[service][i]
        lines, v_max = _chords(curve, own, util)
        for intercept, slope in lines:
            big_m = intercept + max(slope, 0.0) * (1.0 - util)
            # L - slope * U - big_m * a >= intercept - slope * util - big_m
            builder.row({latency[service]: 1.0, util_var[b]: -slope, a: -big_m},
                        intercept - slope * util - big_m, math.inf)
        if util + v_max < 1.0:
            # U <= util + v_max when a = 1 (U <= 1 always)
            slack = 1.0 - util - v_max
            builder.row({util_var[b]: 1.0, a: slack}, -math.inf, 1.0)

    bound_end_to_end(builder, model, slo_ms, lambda service: {latency[service]: -1.0})
    n = builder.n
    c = np.zeros(n)
    for col, cost in costs.items():
        c[col] = cost
    integrality = np.zeros(n)
    integrality[binaries] = 1
    upper = np.full(n, np.inf)
    upper[binaries] = 1
    for b in util_var.values():
        upper[b] = 1.0
    matrix = coo_matrix((builder.vals, (builder.rows, builder.cols)),
                        shape=(len(builder.lb), n)).tocsr()
    settings = {"time_limit": time_limit_s} if time_limit_s else {}
    result = milp(c, integrality=integrality, bounds=Bounds(np.zeros(n), upper),
                  constraints=LinearConstraint(matrix, builder.lb, builder.ub),
                  options=settings)
    bound = getattr(result, "mip_dual_bound", None)
    bound = float(bound) if bound is not None else math.nan
    if result.x is None:
        status = "time limit, none found" if result.status == 1 else "infeasible"
        return PackedOracleResult(None, math.inf, math.inf, status,
                                  bound if status != "infeasible" else math.inf,
                                  len(binaries), time_limit_s)
    solution = result.x
    items = []
    share_of = {}
    chosen_index = {}
    for service, found in options.items():
        i = max(range(len(found)), key=lambda j: solution[x_index[service, j]])
        chosen_index[service] = i
        items.append((service, found[i][0]))
        share_of[service] = max(found[i][2], MIN_SHARE)
    sockets = []
    for generation, bs in sockets_of.items():
        for b in bs:
            on = tuple((s, share_of[s]) for s in services
                       if (s, chosen_index[s], b) in a_index
                       and solution[a_index[s, chosen_index[s], b]] > 0.5)
            if on:
                sockets.append(Socket(generation, on))
    packed = PackedPlacement(tuple(items), sockets=tuple(sockets),
                             shares=tuple((s, share_of[s]) for s, _ in items))
    carbon = packed_rate_g_per_h(model, packed, load_qps, ci)
    p99 = packed_e2e_p99_at(model, packed, load_qps)
    status = "optimal" if result.status == 0 else "time limit"
    if not math.isfinite(bound):
        bound = carbon if status == "optimal" else math.nan
    return PackedOracleResult(packed, carbon, p99, status, min(bound, carbon), len(binaries),
                              time_limit_s)
