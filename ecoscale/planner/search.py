"""The papers' search, step by step: prune, rank, NoScale, MinNew.

1. Pruner: in the all-old sweep, a service whose own p99 rises by less than
   ``threshold x SLO`` from low load to peak is non-critical: it stays on old servers and
   leaves the search (2^N placements become 2^K, K = critical services).
2. Ranking: the rise of end-to-end p99 when a critical service alone runs on old.
3. NoScale: everything on old; move the most critical service to new until the SLO holds.
4. MinNew: the least critical service still on new tries old with 1, 2, ... up to floor(C)
   replicas; it stays there if the SLO holds and its carbon does not grow; then the next.

Beyond the papers: any number of generations (a service may land on any generation cheaper
than the newest, with up to floor(C_g) replicas, C_g = R_newest / R_g), and C from the
carbon intensity of the moment (C(t)) when the caller passes it.

Pure: an AppModel and numbers in, plans out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ecoscale.model.app import AppModel
from ecoscale.model.carbon import carbon_constants
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.model.topology import Stage
from ecoscale.planner.evaluator import IncrementalEvaluator

SLO_TOLERANCE = 1e-9


@dataclass(frozen=True)
class CarbonTerms:
    """What the search needs of the carbon model at one grid intensity."""

    ci_g_per_kwh: float
    ratio: Mapping[str, float]
    """C_g per generation (newest: 1)."""
    order: tuple[str, ...]
    """Generations from the most to the least carbon per slot (newest first)."""
    max_new_replicas: int = 1
    replica_limits: Mapping[str, int] = field(default_factory=dict)
    """generation -> most replicas that add capacity on the profiled pool (the profile's)."""

    @property
    def newest(self) -> str:
        return self.order[0]

    @property
    def cheapest(self) -> str:
        return self.order[-1]

    def max_replicas(self, generation: str) -> int:
        """floor(C_g): how many replicas of g may replace one newest replica; never more
        than add capacity on the pool (``replica_limits``)."""
        if generation == self.newest:
            wanted = self.max_new_replicas
        else:
            wanted = max(1, int(math.floor(self.ratio[generation] + 1e-9)))
        return min(wanted, self.replica_limits.get(generation, wanted))


def carbon_terms(model: AppModel, ci_g_per_kwh: float | None = None,
                 max_new_replicas: int = 1) -> CarbonTerms:
    """C_g at the hardware's reference conditions, or at ``ci_g_per_kwh`` (C(t))."""
    constants = carbon_constants(model.hardware, ci_g_per_kwh)
    generations = [g for g in model.profile.generations if g in constants.rate_g_per_h]
    order = tuple(sorted(generations, key=lambda g: -constants.rate_g_per_h[g]))
    return CarbonTerms(constants.ci_g_per_kwh, dict(constants.ratio), order, max_new_replicas,
                       dict(model.profile.replica_limits))


@dataclass(frozen=True)
class Pruning:
    critical: Mapping[str, float]
    """Critical services -> rise of their own p99 on old from low load to peak (ms)."""
    non_critical: Mapping[str, float]
    threshold_ms: float
    evaluations: int

    @property
    def search_space(self) -> tuple[int, int]:
        """(N, K): the search has 2^N placements before pruning and 2^K after."""
        return len(self.critical) + len(self.non_critical), len(self.critical)


def prune(model: AppModel, peak_qps: float, slo_ms: float, terms: CarbonTerms,
          threshold: float = 0.05, low_fraction: float = 0.05) -> Pruning:
    """Split services into critical and non-critical by their all-old p99 rise at peak."""
    critical, non_critical = {}, {}
    for service in model.services:
        curve = model.profile.curve(service, terms.cheapest)
        load = model.visits[service] * peak_qps
        rise = float(curve.p99(load)) - float(curve.p99(load * low_fraction))
        (non_critical if rise < threshold * slo_ms else critical)[service] = rise
    return Pruning(critical, non_critical, threshold * slo_ms, len(model.services))


def rank(model: AppModel, services: Sequence[str], peak_qps: float,
         terms: CarbonTerms) -> tuple[list[tuple[str, float]], int]:
    """Critical services, most critical first: e2e p99 rise (ms) when alone on the cheapest
    generation at peak. Returns the ranking and the latency evaluations spent."""
    all_new = Placement.uniform(model.services, terms.newest)
    evaluator = IncrementalEvaluator(model, peak_qps, all_new)
    base = evaluator.p99_ms
    rises = [
        (s, evaluator.try_change(s, ServicePlacement(terms.cheapest, 1)) - base) for s in services
    ]
    rises.sort(key=lambda item: (-item[1], item[0]))
    return rises, evaluator.evaluations


@dataclass(frozen=True)
class Plan:
    """A placement for one load level, why each service is where it is, and what it costs."""

    load_qps: float
    placement: Placement
    p99_ms: float
    feasible: bool
    carbon_g_per_h: float
    reasons: Mapping[str, str]
    evaluations: int
    ci_g_per_kwh: float
    note: str = ""
    ratio: Mapping[str, float] = field(default_factory=dict)


def _ok(p99: float, slo_ms: float) -> bool:
    return p99 <= slo_ms * (1 + SLO_TOLERANCE)


def noscale(model: AppModel, load_qps: float, slo_ms: float, ranking: Sequence[str],
            pruning: Pruning, terms: CarbonTerms) -> tuple[Plan, IncrementalEvaluator]:
    """Greedy without scaling: all on the cheapest generation, then the most critical
    services to the newest one until the SLO holds at ``load_qps``."""
    start = Placement.uniform(model.services, terms.cheapest)
    evaluator = IncrementalEvaluator(model, load_qps, start)
    reasons = {s: f"non-critical: own p99 rises {rise:.2f} ms on {terms.cheapest} at peak "
                  f"(< {pruning.threshold_ms:.2f} ms)" for s, rise in pruning.non_critical.items()}
    for s in ranking:
        reasons[s] = f"critical, tolerates {terms.cheapest}: SLO holds with it there"
    fallback = sorted(pruning.non_critical, key=lambda s: -pruning.non_critical[s])
    newest = ServicePlacement(terms.newest, 1)
    evaluator.evaluations += 1
    p99 = evaluator.p99_ms
    order = list(ranking) + fallback
    for position, service in enumerate(order):
        if _ok(p99, slo_ms):
            break
        evaluator.apply(service, newest)
        p99 = evaluator.p99_ms
        label = "critical" if service in pruning.critical else "un-pruned (critical ones did " \
                                                               "not suffice)"
        reasons[service] = (f"{label} #{position + 1}: moved to {terms.newest}, SLO missed "
                            f"with it on {terms.cheapest}")
    note = "" if _ok(p99, slo_ms) else "planned p99 target cannot hold here with all on new"
    plan = Plan(load_qps, evaluator.placement, p99, _ok(p99, slo_ms),
                model.carbon_rate_g_per_h(evaluator.placement, load_qps, terms.ci_g_per_kwh),
                reasons, evaluator.evaluations, terms.ci_g_per_kwh, note, dict(terms.ratio))
    return plan, evaluator


def _options(model: AppModel, service: str, load_qps: float,
             terms: CarbonTerms) -> list[tuple[float, ServicePlacement]]:
    """(carbon gCO2e/h, option) of every option of ``service``, cheapest first."""
    out = []
    for generation in terms.order:
        for replicas in range(1, terms.max_replicas(generation) + 1):
            option = ServicePlacement(generation, replicas)
            out.append((model.service_carbon_g_per_h(service, option, load_qps,
                                                     terms.ci_g_per_kwh), option))
    return sorted(out, key=lambda item: item[0])


def _rescue(evaluator: IncrementalEvaluator, order: Sequence[str], slo_ms: float,
            options: Callable[[str], list[tuple[float, ServicePlacement]]],
            reasons: dict[str, str]) -> None:
    """When even the newest generation misses the SLO (load above the all-new SLO load),
    give the most critical services their fastest option (more replicas) until it holds."""
    for service in order:
        if _ok(evaluator.p99_ms, slo_ms):
            return
        fastest = min(options(service),
                      key=lambda item: (evaluator.service_p99(service, item[1]), item[0]))[1]
        if evaluator.service_p99(service, fastest) < evaluator.service_p99(
            service, evaluator.placed(service)
        ):
            evaluator.apply(service, fastest)
            reasons[service] = f"scaled out to {fastest}: the SLO misses even on the newest"


def parallel_stages(model: AppModel) -> list[tuple[str, ...]]:
    """The distinct services of every stage with two or more parallel calls, over the
    counted endpoints and their sub-paths (in topology order, each stage once)."""
    found: dict[tuple[str, ...], None] = {}

    def walk(path: Sequence[Stage]) -> None:
        for stage in path:
            names = tuple(dict.fromkeys(call.service for call in stage))
            if len(names) >= 2:
                found.setdefault(names, None)
            for call in stage:
                walk(call.path)

    for endpoint in model.e2e.counted:
        walk(endpoint.path)
    return list(found)


def minnew(model: AppModel, load_qps: float, slo_ms: float, ranking: Sequence[str],
           pruning: Pruning, terms: CarbonTerms, max_passes: int | None = None,
           pair_budget: int | None = None) -> Plan:
    """Carbon-aware scaling on top of NoScale at ``load_qps``.

    The papers' single pass moves each service still on new (least critical first) to old
    with the fewest replicas (up to floor(C)) that keep the SLO. Beyond the papers:
    - the pass repeats (also trying fewer replicas for services already on old), since each
      move to several old replicas frees latency budget for the services tried before it;
    - when a pass changes nothing, repair moves: a service goes to a cheaper option and the
      services that share an endpoint with it scale out, best latency gain per gCO2e/h
      first, until the SLO holds, when together they save carbon (bounded by
      ``pair_budget`` evaluations, default 2,000 + 2 per service); then stage moves: the
      parallel calls of one stage one step cheaper together, compensated the same way;
    - passes repeat until none changes anything, at most ``max_passes`` (default 30 for
      apps up to 200 services, fewer above, down to 6: each pass costs O(services)
      latency evaluations);
    - above the all-new SLO load, scaling out rescues the SLO before carbon is minimised.
    """
    if max_passes is None:
        max_passes = max(6, min(30, 6000 // max(len(model.services), 1)))
    base, evaluator = noscale(model, load_qps, slo_ms, ranking, pruning, terms)
    reasons = dict(base.reasons)
    ci = terms.ci_g_per_kwh
    cheapest_single = ServicePlacement(terms.cheapest, 1)
    by_rise = sorted(pruning.non_critical, key=lambda s: -pruning.non_critical[s])
    most_critical_first = list(ranking) + by_rise
    order = list(reversed(most_critical_first))
    known: dict[str, list[tuple[float, ServicePlacement]]] = {}
    cost: dict[str, dict[ServicePlacement, float]] = {}

    def options(service: str) -> list[tuple[float, ServicePlacement]]:
        """The service's options with their carbon, cheapest first (computed on first use)."""
        if service not in known:
            known[service] = _options(model, service, load_qps, terms)
            cost[service] = {o: c for c, o in known[service]}
        return known[service]

    if not base.feasible:
        _rescue(evaluator, most_critical_first, slo_ms, options, reasons)
        if not _ok(evaluator.p99_ms, slo_ms):
            return base
    budget = pair_budget if pair_budget is not None else 2000 + 2 * len(model.services)

    def accept(service: str, option: ServicePlacement, why: str) -> None:
        current = evaluator.placed(service)
        evaluator.apply(service, option)
        c = terms.ratio[option.generation]
        reasons[service] = (f"{option} keeps the SLO at {load_qps:.0f} req/s ({why}); "
                            f"{option.replicas} <= floor(C={c:.2f}); {cost[service][option]:.1f}"
                            f" < {cost[service][current]:.1f} gCO2e/h as {current}")

    def single_pass() -> bool:
        changed = False
        for service in order:   # least critical first
            current = evaluator.placed(service)
            if current == cheapest_single:
                continue
            for price, option in options(service):
                if price >= cost[service][current]:
                    break
                if _ok(evaluator.try_change(service, option), slo_ms):
                    accept(service, option, "scaling")
                    changed = True
                    break
        return changed

    def compensate(group: list[tuple[str, ServicePlacement]], spent: int
                   ) -> tuple[bool, int]:
        """Move every service of ``group`` to its (cheaper) option; if that breaks the SLO,
        scale out services sharing an endpoint with them, best latency gain per added
        gCO2e/h first, until it holds; keep it all if the added carbon stays under the
        saving, else put everything back."""
        held_before = {service: evaluator.placed(service) for service, _ in group}
        saving = sum(cost[s][held_before[s]] - cost[s][o] for s, o in group)
        partners = evaluator.neighbours_of(held_before)
        for service, option in group:
            evaluator.apply(service, option)
        changed: list[tuple[str, ServicePlacement, ServicePlacement]] = []
        extra = 0.0
        partner_set = set(partners)
        partner_stages = [st for st in stages if partner_set.issuperset(st)]
        while not _ok(evaluator.p99_ms, slo_ms):
            base = evaluator.p99_ms
            best: tuple[float, list[tuple[str, ServicePlacement, ServicePlacement]],
                        float] | None = None
            for partner in partners:
                held = evaluator.placed(partner)
                for partner_price, faster in options(partner):
                    add = partner_price - cost[partner][held]
                    if faster == held or extra + add > saving + 1e-9:
                        continue
                    if spent >= budget:
                        break
                    spent += 1
                    gain = base - evaluator.try_change(partner, faster)
                    if gain > 0:
                        score = gain / max(add, 1e-9)
                        if best is None or score > best[0]:
                            best = (score, [(partner, held, faster)], add)
            # the parallel calls of a stage scaled out together: a stage waits for its
            # slowest call, so speeding up one call alone gains nothing
            for stage in partner_stages:
                if spent >= budget:
                    break
                moves = []
                for member in stage:
                    held = evaluator.placed(member)
                    now_ms = evaluator.service_p99(member, held)
                    faster = next((o for _, o in options(member)
                                   if evaluator.service_p99(member, o) < now_ms), None)
                    if faster is not None:
                        moves.append((member, held, faster))
                add = sum(cost[m][f] - cost[m][h] for m, h, f in moves)
                if len(moves) < 2 or extra + add > saving + 1e-9:
                    continue
                spent += len(moves)
                for member, _, faster in moves:
                    evaluator.apply(member, faster)
                gain = base - evaluator.p99_ms
                for member, held, _ in reversed(moves):
                    evaluator.apply(member, held)
                if gain > 0:
                    score = gain / max(add, 1e-9)
                    if best is None or score > best[0]:
                        best = (score, moves, add)
            if best is None:
                break
            _, moves, add = best
            for partner, held, faster in moves:
                evaluator.apply(partner, faster)
                changed.append((partner, held, faster))
            extra += add
        if _ok(evaluator.p99_ms, slo_ms) and saving > extra + 1e-9:
            names = ", ".join(f"{p} {a}" for p, _, a in changed) or "nothing else"
            moved = ", ".join(s for s, _ in group)
            for partner, held, faster in changed:
                reasons[partner] = (f"{faster}: scaled out so that {moved} can take cheaper "
                                    f"options (was {held})")
            for service, option in group:
                reasons[service] = (f"{option} keeps the SLO at {load_qps:.0f} req/s with "
                                    f"{names} changed (with {moved}): saves {saving:.1f} "
                                    f"gCO2e/h for +{extra:.1f}")
            return True, spent
        for partner, held, _ in reversed(changed):
            evaluator.apply(partner, held)
        for service, _ in reversed(group):
            evaluator.apply(service, held_before[service])
        return False, spent

    def repair_pass(spent: int) -> tuple[bool, int]:
        """One service at a time to a cheaper option, compensated (``compensate``)."""
        movable = [s for s in model.services if evaluator.placed(s) != cheapest_single]
        for s in movable:
            options(s)
        for service in sorted(movable, key=lambda s: -cost[s][evaluator.placed(s)]):
            current = evaluator.placed(service)
            for price, option in options(service):
                if price >= cost[service][current]:
                    break
                accepted, spent = compensate([(service, option)], spent)
                if accepted:
                    return True, spent
                if spent >= budget:
                    return False, spent
        return False, spent

    def stage_pass(spent: int) -> tuple[bool, int]:
        """The parallel calls of one stage one step cheaper together, compensated: a
        stage's latency is its slowest call's, so lowering one call alone never pays."""
        for stage in stages:
            steps = {}
            for service in stage:
                current = evaluator.placed(service)
                cheaper = [o for price, o in options(service) if price < cost[service][current]]
                if cheaper:
                    steps[service] = cheaper[-1]   # the next cheaper option
            # every member that can step down, and those sharing one current option
            groups = [list(steps)]
            for option in dict.fromkeys(evaluator.placed(s) for s in steps):
                same = [s for s in steps if evaluator.placed(s) == option]
                if len(same) < len(steps):
                    groups.append(same)
            for group in groups:
                if len(group) < 2:
                    continue
                accepted, spent = compensate([(s, steps[s]) for s in group], spent)
                if accepted:
                    return True, spent
                if spent >= budget:
                    return False, spent
        return False, spent

    def boost_pass(spent: int) -> tuple[bool, int]:
        """Scale one service out (or up a generation) and let every service that then fits a
        cheaper option take it; keep the lot if the total carbon falls."""
        movable = {s for s in model.services if evaluator.placed(s) != cheapest_single}
        candidates = {n for s in movable for n in evaluator.neighbours(s)}
        for service in (s for s in model.services if s in candidates):
            held = evaluator.placed(service)
            others = [o for o in evaluator.neighbours(service) if o in movable]
            if not others:
                continue
            for price, faster in options(service):
                add = price - cost[service][held]
                if faster == held or add <= 0:
                    continue
                if evaluator.service_p99(service, faster) >= evaluator.service_p99(service, held):
                    continue
                evaluator.apply(service, faster)
                moved: list[tuple[str, ServicePlacement, ServicePlacement, float]] = []
                for other in others:
                    before = evaluator.placed(other)
                    if before == cheapest_single:
                        continue
                    for other_price, cheaper in options(other):
                        if other_price >= cost[other][before] or spent >= budget:
                            break
                        spent += 1
                        if _ok(evaluator.try_change(other, cheaper), slo_ms):
                            evaluator.apply(other, cheaper)
                            moved.append((other, before, cheaper,
                                          cost[other][before] - other_price))
                            break
                saved = sum(m[3] for m in moved)
                if moved and saved > add + 1e-9:
                    reasons[service] = (f"{faster}: scaled out so that "
                                        f"{', '.join(m[0] for m in moved)} can take cheaper "
                                        f"options (saves {saved:.1f}, costs {add:.1f} gCO2e/h)")
                    for other, _before, cheaper, _ in moved:
                        reasons[other] = f"{cheaper}: room made by {service} as {faster}"
                    return True, spent
                for other, before, _, _ in reversed(moved):
                    evaluator.apply(other, before)
                evaluator.apply(service, held)
                if spent >= budget:
                    return False, spent
        return False, spent

    stages = parallel_stages(model)
    spent = 0
    for _ in range(max_passes):
        if single_pass():
            continue
        changed, spent = repair_pass(spent)
        if not changed:
            changed, spent = stage_pass(spent)
        if not changed:
            changed, spent = boost_pass(spent)
        if not changed:
            break
    placement = evaluator.placement
    p99 = evaluator.p99_ms
    return Plan(load_qps, placement, p99, _ok(p99, slo_ms),
                model.carbon_rate_g_per_h(placement, load_qps, ci), reasons,
                evaluator.evaluations, ci, base.note if not _ok(p99, slo_ms) else "",
                dict(terms.ratio))
