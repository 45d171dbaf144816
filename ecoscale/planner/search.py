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
carbon intensity of the moment (C(t)) when the caller passes it. ``option_space`` is the one
list of (generation, replicas) options a service may take; the oracle uses it too.

MinNew is a ``SearchState`` (the current placement, cached option costs, reasons, the
evaluation budget) and named passes, each a function state -> "changed anything":

0. ``rescue_pass``, once, only above the all-new SLO load: the most critical services take
   their fastest option until the SLO holds (carbon is minimised only under a kept SLO).
1. ``scale_pass``: the papers' move, least critical first: each service to its cheapest
   option that keeps the SLO. It repeats, since a service scaled out on old frees latency
   budget for those tried before it.
2. ``repair_pass``: one service to a cheaper option, the services sharing an endpoint with
   it scaled out to pay for it (``compensate``), kept if the carbon falls.
3. ``stage_pass``: the parallel calls of one stage one step cheaper together, compensated
   the same way (a stage waits for its slowest call: lowering one call alone never pays).
4. ``boost_pass``: one service scaled out so that its neighbours fit cheaper options.

A round runs the passes in that order until one changes something; rounds repeat until none
does (or ``max_passes``). The order goes from the cheapest pass to the dearest: scale costs
one evaluation per option tried and only ever lowers carbon; repair, stage and boost try
moves that first add carbon (a scale-out) and spend a shared evaluation budget, so they run
only when scale is stuck, the single-service repair before the wider stage move, and boost,
which speculates on a scale-out helping others, last. After any change the round starts again
from scale, the cheap pass, since the change may free room for it.

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
    generation at peak (inf where all-new itself saturates at the peak: no placement serves
    it, and each service is as critical as the next). Returns the ranking and the latency
    evaluations spent."""
    all_new = Placement.uniform(model.services, terms.newest)
    evaluator = IncrementalEvaluator(model, peak_qps, all_new)
    base = evaluator.p99_ms

    def rise(service: str) -> float:
        after = evaluator.try_change(service, ServicePlacement(terms.cheapest, 1))
        return after - base if math.isfinite(base) else math.inf   # never inf - inf = NaN

    rises = [(s, rise(s)) for s in services]
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


def option_space(terms: CarbonTerms) -> tuple[ServicePlacement, ...]:
    """Every (generation, replicas) option a service may take: each generation in
    ``terms.order`` (newest first) with 1 .. ``terms.max_replicas(g)`` replicas (floor(C_g);
    on the newest, ``max_new_replicas``; never above the profile's ``replica_limits``).

    The one option space: the search (``SearchState.options``) and the oracle
    (``oracle.options_for``) both draw from it."""
    return tuple(ServicePlacement(generation, replicas) for generation in terms.order
                 for replicas in range(1, terms.max_replicas(generation) + 1))


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


Move = tuple[str, ServicePlacement, ServicePlacement]
"""(service, placed before, placed after)."""


@dataclass
class SearchState:
    """One MinNew search at one load level: the current placement (held by ``evaluator``,
    which also caches per-service p99), each service's options with their carbon (computed on
    first use), the reasons so far, and the latency evaluations the compensated passes
    (repair, stage, boost) may spend between them (``budget``, of which ``spent`` are)."""

    model: AppModel
    load_qps: float
    slo_ms: float
    terms: CarbonTerms
    evaluator: IncrementalEvaluator
    reasons: dict[str, str]
    budget: int
    least_critical_first: list[str]
    stages: list[tuple[str, ...]]
    """``parallel_stages`` of the model."""
    spent: int = 0
    cheapest_single: ServicePlacement = field(init=False)
    """One replica on the cheapest generation: nothing is cheaper."""
    space: tuple[ServicePlacement, ...] = field(init=False)
    """``option_space(terms)``."""
    _options: dict[str, list[tuple[float, ServicePlacement]]] = field(
        default_factory=dict, init=False, repr=False)
    _cost: dict[str, dict[ServicePlacement, float]] = field(default_factory=dict, init=False,
                                                            repr=False)

    def __post_init__(self) -> None:
        self.cheapest_single = ServicePlacement(self.terms.cheapest, 1)
        self.space = option_space(self.terms)

    @property
    def exhausted(self) -> bool:
        """True when the compensated passes have spent their budget."""
        return self.spent >= self.budget

    def holds(self, p99_ms: float) -> bool:
        """True if an end-to-end p99 (ms) keeps the SLO."""
        return _ok(p99_ms, self.slo_ms)

    def options(self, service: str) -> list[tuple[float, ServicePlacement]]:
        """(carbon gCO2e/h, option) of every option of ``service`` (``option_space``),
        cheapest first (ties in option-space order)."""
        known = self._options.get(service)
        if known is None:
            known = sorted(((self.model.service_carbon_g_per_h(service, option, self.load_qps,
                                                               self.terms.ci_g_per_kwh), option)
                            for option in self.space), key=lambda item: item[0])
            self._options[service] = known
            self._cost[service] = {o: c for c, o in known}
        return known

    def cost(self, service: str, option: ServicePlacement) -> float:
        """Carbon (gCO2e/h) of ``service`` placed as ``option`` at this load."""
        if service not in self._cost:
            self.options(service)
        return self._cost[service][option]

    def placed_cost(self, service: str) -> float:
        """Carbon (gCO2e/h) of ``service`` as it is placed now."""
        return self.cost(service, self.evaluator.placed(service))


def rescue_pass(state: SearchState, most_critical_first: Sequence[str]) -> None:
    """When even the newest generation misses the SLO (load above the all-new SLO load),
    give the most critical services their fastest option (more replicas) until it holds."""
    evaluator = state.evaluator
    for service in most_critical_first:
        if state.holds(evaluator.p99_ms):
            return
        fastest = min(state.options(service),
                      key=lambda item: (evaluator.service_p99(service, item[1]), item[0]))[1]
        if evaluator.service_p99(service, fastest) < evaluator.service_p99(
            service, evaluator.placed(service)
        ):
            evaluator.apply(service, fastest)
            state.reasons[service] = f"scaled out to {fastest}: the SLO misses even on the newest"


def scale_pass(state: SearchState) -> bool:
    """The papers' MinNew move, least critical first: each service takes its cheapest
    option, cheaper than where it is, that keeps the SLO. True if any service moved."""
    evaluator = state.evaluator
    changed = False
    for service in state.least_critical_first:
        current = evaluator.placed(service)
        if current == state.cheapest_single:
            continue
        for price, option in state.options(service):
            if price >= state.cost(service, current):
                break
            if state.holds(evaluator.try_change(service, option)):
                evaluator.apply(service, option)
                ratio = state.terms.ratio[option.generation]
                state.reasons[service] = (
                    f"{option} keeps the SLO at {state.load_qps:.0f} req/s (scaling); "
                    f"{option.replicas} <= floor(C={ratio:.2f}); "
                    f"{state.cost(service, option):.1f} < {state.cost(service, current):.1f} "
                    f"gCO2e/h as {current}")
                changed = True
                break
    return changed


_Candidate = tuple[float, list[Move], float]
"""(latency gain ms per added gCO2e/h, the moves, the carbon they add gCO2e/h)."""


def _best_single_move(state: SearchState, partners: Sequence[str], base_ms: float,
                      extra_g_per_h: float, saving_g_per_h: float,
                      best: _Candidate | None) -> _Candidate | None:
    """The faster option of one partner with the best latency gain per added carbon, if it
    beats ``best``, while the carbon added in all (``extra_g_per_h`` so far) stays within
    the saving (one evaluation each, while the budget lasts)."""
    evaluator = state.evaluator
    for partner in partners:
        held = evaluator.placed(partner)
        for partner_price, faster in state.options(partner):
            add = partner_price - state.cost(partner, held)
            if faster == held or extra_g_per_h + add > saving_g_per_h + 1e-9:
                continue
            if state.exhausted:
                break
            state.spent += 1
            gain = base_ms - evaluator.try_change(partner, faster)
            if gain > 0:
                score = gain / max(add, 1e-9)
                if best is None or score > best[0]:
                    best = (score, [(partner, held, faster)], add)
    return best


def _best_stage_move(state: SearchState, stages: Sequence[tuple[str, ...]], base_ms: float,
                     extra_g_per_h: float, saving_g_per_h: float,
                     best: _Candidate | None) -> _Candidate | None:
    """The parallel calls of a stage scaled out together (each to its cheapest faster
    option), if that beats ``best``: a stage waits for its slowest call, so speeding up one
    call alone gains nothing."""
    evaluator = state.evaluator
    for stage in stages:
        if state.exhausted:
            break
        moves = []
        for member in stage:
            held = evaluator.placed(member)
            now_ms = evaluator.service_p99(member, held)
            faster = next((o for _, o in state.options(member)
                           if evaluator.service_p99(member, o) < now_ms), None)
            if faster is not None:
                moves.append((member, held, faster))
        add = sum(state.cost(m, f) - state.cost(m, h) for m, h, f in moves)
        if len(moves) < 2 or extra_g_per_h + add > saving_g_per_h + 1e-9:
            continue
        state.spent += len(moves)
        for member, _, faster in moves:
            evaluator.apply(member, faster)
        gain = base_ms - evaluator.p99_ms
        for member, held, _ in reversed(moves):
            evaluator.apply(member, held)
        if gain > 0:
            score = gain / max(add, 1e-9)
            if best is None or score > best[0]:
                best = (score, moves, add)
    return best


def compensate(state: SearchState, group: Sequence[tuple[str, ServicePlacement]]) -> bool:
    """Move every service of ``group`` to its (cheaper) option; if that breaks the SLO,
    scale out services sharing an endpoint with them, best latency gain per added gCO2e/h
    first, until it holds; keep it all if the added carbon stays under the saving, else put
    everything back. True if kept."""
    evaluator = state.evaluator
    held_before = {service: evaluator.placed(service) for service, _ in group}
    saving = sum(state.cost(s, held_before[s]) - state.cost(s, o) for s, o in group)
    partners = evaluator.neighbours_of(held_before)
    for service, option in group:
        evaluator.apply(service, option)
    changed: list[Move] = []
    extra = 0.0
    partner_set = set(partners)
    partner_stages = [stage for stage in state.stages if partner_set.issuperset(stage)]
    while not state.holds(evaluator.p99_ms):
        base_ms = evaluator.p99_ms
        best = _best_single_move(state, partners, base_ms, extra, saving, None)
        best = _best_stage_move(state, partner_stages, base_ms, extra, saving, best)
        if best is None:
            break
        _, moves, add = best
        for partner, held, faster in moves:
            evaluator.apply(partner, faster)
            changed.append((partner, held, faster))
        extra += add
    if state.holds(evaluator.p99_ms) and saving > extra + 1e-9:
        names = ", ".join(f"{p} {a}" for p, _, a in changed) or "nothing else"
        moved = ", ".join(s for s, _ in group)
        for partner, held, faster in changed:
            state.reasons[partner] = (f"{faster}: scaled out so that {moved} can take cheaper "
                                      f"options (was {held})")
        for service, option in group:
            state.reasons[service] = (f"{option} keeps the SLO at {state.load_qps:.0f} req/s "
                                      f"with {names} changed (with {moved}): saves "
                                      f"{saving:.1f} gCO2e/h for +{extra:.1f}")
        return True
    for partner, held, _ in reversed(changed):
        evaluator.apply(partner, held)
    for service, _ in reversed(group):
        evaluator.apply(service, held_before[service])
    return False


def repair_pass(state: SearchState) -> bool:
    """One service at a time (the dearest first) to a cheaper option, compensated
    (``compensate``). True at the first move kept."""
    evaluator = state.evaluator
    movable = [s for s in state.model.services if evaluator.placed(s) != state.cheapest_single]
    for service in sorted(movable, key=lambda s: -state.placed_cost(s)):
        current_cost = state.placed_cost(service)
        for price, option in state.options(service):
            if price >= current_cost:
                break
            if compensate(state, [(service, option)]):
                return True
            if state.exhausted:
                return False
    return False


def stage_pass(state: SearchState) -> bool:
    """The parallel calls of one stage one step cheaper together, compensated: a stage's
    latency is its slowest call's, so lowering one call alone never pays. Tried per stage:
    every member that can step down, then those sharing one current option. True at the
    first move kept."""
    evaluator = state.evaluator
    for stage in state.stages:
        steps = {}
        for service in stage:
            current_cost = state.placed_cost(service)
            cheaper = [o for price, o in state.options(service) if price < current_cost]
            if cheaper:
                steps[service] = cheaper[-1]   # the next cheaper option
        groups = [list(steps)]
        for option in dict.fromkeys(evaluator.placed(s) for s in steps):
            same = [s for s in steps if evaluator.placed(s) == option]
            if len(same) < len(steps):
                groups.append(same)
        for group in groups:
            if len(group) < 2:
                continue
            if compensate(state, [(s, steps[s]) for s in group]):
                return True
            if state.exhausted:
                return False
    return False


def _step_down(state: SearchState, others: Sequence[str]
               ) -> list[tuple[str, ServicePlacement, ServicePlacement, float]]:
    """Each of ``others`` to its cheapest cheaper option that keeps the SLO (applied; one
    evaluation each, while the budget lasts): (service, before, after, gCO2e/h saved)."""
    evaluator = state.evaluator
    moved = []
    for other in others:
        before = evaluator.placed(other)
        if before == state.cheapest_single:
            continue
        before_cost = state.cost(other, before)
        for other_price, cheaper in state.options(other):
            if other_price >= before_cost or state.exhausted:
                break
            state.spent += 1
            if state.holds(evaluator.try_change(other, cheaper)):
                evaluator.apply(other, cheaper)
                moved.append((other, before, cheaper, before_cost - other_price))
                break
    return moved


def boost_pass(state: SearchState) -> bool:
    """Scale one service out (or up a generation) and let every service sharing an endpoint
    with it that then fits a cheaper option take it; keep the lot if the total carbon falls.
    True at the first boost kept."""
    evaluator = state.evaluator
    services = state.model.services
    movable = {s for s in services if evaluator.placed(s) != state.cheapest_single}
    candidates = {n for s in movable for n in evaluator.neighbours(s)}
    for service in (s for s in services if s in candidates):
        held = evaluator.placed(service)
        others = [o for o in evaluator.neighbours(service) if o in movable]
        if not others:
            continue
        for price, faster in state.options(service):
            add = price - state.cost(service, held)
            if faster == held or add <= 0:
                continue
            if evaluator.service_p99(service, faster) >= evaluator.service_p99(service, held):
                continue
            evaluator.apply(service, faster)
            moved = _step_down(state, others)
            saved = sum(m[3] for m in moved)
            if moved and saved > add + 1e-9:
                state.reasons[service] = (
                    f"{faster}: scaled out so that {', '.join(m[0] for m in moved)} can take "
                    f"cheaper options (saves {saved:.1f}, costs {add:.1f} gCO2e/h)")
                for other, _before, cheaper, _ in moved:
                    state.reasons[other] = f"{cheaper}: room made by {service} as {faster}"
                return True
            for other, before, _, _ in reversed(moved):
                evaluator.apply(other, before)
            evaluator.apply(service, held)
            if state.exhausted:
                return False
    return False


PASSES: tuple[Callable[[SearchState], bool], ...] = (scale_pass, repair_pass, stage_pass,
                                                     boost_pass)
"""MinNew's passes in the order they are tried (the module docstring says why)."""


def minnew(model: AppModel, load_qps: float, slo_ms: float, ranking: Sequence[str],
           pruning: Pruning, terms: CarbonTerms, max_passes: int | None = None,
           pair_budget: int | None = None) -> Plan:
    """Carbon-aware scaling on top of NoScale at ``load_qps`` (req/s), SLO ``slo_ms`` (ms).

    Above the all-new SLO load ``rescue_pass`` first scales out until the SLO holds (if it
    cannot, the NoScale plan is returned). Then rounds of ``PASSES``: each round runs the
    passes in order until one changes the placement, and the rounds stop when none does, or
    after ``max_passes`` rounds (default 30 for apps up to 200 services, fewer above, down
    to 6: each round costs O(services) latency evaluations). The compensated passes (repair,
    stage, boost) share ``pair_budget`` latency evaluations (default 2,000 + 2 per service).
    """
    if max_passes is None:
        max_passes = max(6, min(30, 6000 // max(len(model.services), 1)))
    base, evaluator = noscale(model, load_qps, slo_ms, ranking, pruning, terms)
    by_rise = sorted(pruning.non_critical, key=lambda s: -pruning.non_critical[s])
    most_critical_first = list(ranking) + by_rise
    state = SearchState(
        model, load_qps, slo_ms, terms, evaluator, dict(base.reasons),
        budget=pair_budget if pair_budget is not None else 2000 + 2 * len(model.services),
        least_critical_first=list(reversed(most_critical_first)),
        stages=parallel_stages(model))
    if not base.feasible:
        rescue_pass(state, most_critical_first)
        if not state.holds(evaluator.p99_ms):
            return base
    for _ in range(max_passes):
        if not any(run(state) for run in PASSES):
            break
    placement = evaluator.placement
    p99 = evaluator.p99_ms
    feasible = state.holds(p99)
    return Plan(load_qps, placement, p99, feasible,
                model.carbon_rate_g_per_h(placement, load_qps, terms.ci_g_per_kwh),
                state.reasons, evaluator.evaluations, terms.ci_g_per_kwh,
                "" if feasible else base.note, dict(terms.ratio))
