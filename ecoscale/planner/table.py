"""The policy table: the durable contract between `ecoscale plan` and `ecoscale run`.

A ladder of load levels (and, for a C(t)-aware table, of carbon-intensity bands); each level
holds the placement planned to keep the SLO up to its load, with the reason for every
service's place. Hysteresis settings travel with the table so that the daemon does not flap.

Pure: building the table and converting it to and from plain data (YAML is written by
adapters/files.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from ecoscale.errors import InputError
from ecoscale.model.app import AppModel
from ecoscale.model.packing import PackedPlacement, Socket, pack, packed_e2e_p99_at, share_of
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.planner.rightsize import (
    ABOVE_CANDIDATES,
    LARGE_APP_BISECTIONS,
    LARGE_APP_PROBES,
    LARGE_APP_SERVICES,
    SOCKET_CAPACITIES,
    SPREAD_REPLICAS,
    TARGET_SOCKET_UTILISATION,
    pack_by_sensitivity,
    packed_capacity_qps,
    packed_rate_g_per_h,
    replica_limit,
    rightsize,
)
from ecoscale.planner.search import (
    SLO_TOLERANCE,
    CarbonTerms,
    Plan,
    carbon_terms,
    minnew,
    prune,
    rank,
)
from ecoscale.values import number_at

FORMAT_VERSION = 1
DEFAULT_FRACTIONS = tuple(round(0.05 * i, 2) for i in range(2, 21)) + (1.1, 1.2)
"""Load levels as fractions of the planning peak: 10 %, 15 %, ... 100 %, then 110 %, 120 %
(above the peak the table scales out on old servers before the closed loop needs to act)."""


@dataclass(frozen=True)
class Hysteresis:
    """When the daemon changes level. Thresholds are fractions of a level's capacity (the
    highest load its placement serves within the SLO, ``TableLevel.capacity``).

    The margin kept free for load growth adapts to the load: it is the largest relative rise
    of load over any ``growth_horizon_s`` seen in the last ``growth_window_s``, never more
    than ``up_fraction`` allows (the margin of a load that jumps, and the margin until the
    daemon has seen one horizon of history) and never less than ``calm_up_fraction`` allows
    (the margin of a calm load). A jump widens the margin at once; it narrows again only
    after ``growth_window_s`` without one.
    """

    up_fraction: float = 0.95
    """Go up to a level as soon as load exceeds this fraction of the current level's
    capacity (the most margin: 1 / up_fraction - 1 of the load, 5.3 %)."""
    down_fraction: float = 0.95
    """A lower level counts only while load stays under this fraction of its capacity
    (scaled like up_fraction when the margin adapts; equal to up_fraction: no band beside
    the stabilisation window)..."""
    down_stabilisation_s: float = 300.0
    """...for this long (s), before the daemon moves down."""
    calm_up_fraction: float = 0.99
    """The highest fraction of capacity the daemon runs a level at when the load is calm
    (the least margin: 1 %); equal to up_fraction: a fixed margin."""
    growth_horizon_s: float = 60.0
    """Time (s) from observing a load to running the placement for it, over which load
    growth is measured: the decision period plus the time a move takes."""
    growth_window_s: float = 1800.0
    """How long (s) the largest rise of load counts for the margin."""

    def problems(self) -> list[str]:
        out = []
        if not 0 < self.down_fraction <= self.up_fraction <= self.calm_up_fraction <= 1:
            out.append(f"hysteresis: need 0 < down_fraction <= up_fraction <= "
                       f"calm_up_fraction <= 1 (down_fraction {self.down_fraction:g}, "
                       f"up_fraction {self.up_fraction:g}, calm_up_fraction "
                       f"{self.calm_up_fraction:g}); fix the values or re-run `ecoscale plan`")
        if self.down_stabilisation_s < 0:
            out.append("hysteresis: down_stabilisation_s must be >= 0")
        if not self.growth_horizon_s > 0:
            out.append("hysteresis: growth_horizon_s must be > 0")
        if self.growth_window_s < 0:
            out.append("hysteresis: growth_window_s must be >= 0")
        return out


@dataclass(frozen=True)
class TableLevel:
    max_load_qps: float
    max_ci_g_per_kwh: float
    placement: Placement
    reasons: Mapping[str, str]
    p99_ms: float
    carbon_g_per_h: float
    feasible: bool
    evaluations: int = 0
    capacity_qps: float = math.nan
    """Highest front-end load (req/s) at which the placement keeps the planning SLO
    (>= max_load_qps); NaN when unknown (tables written before it, infeasible levels)."""
    socket_capacity: float = math.nan
    """A right-sized level (``placement`` a ``PackedPlacement``): the reserved share packed
    onto one socket at most (sockets); NaN for a level of dedicated slots."""

    @property
    def right_sized(self) -> bool:
        """True when the level's replicas hold shares and share sockets."""
        return isinstance(self.placement, PackedPlacement)

    @property
    def capacity(self) -> float:
        """The load (req/s) this level serves: its placement's capacity when known, else
        the load it was planned for."""
        return self.capacity_qps if math.isfinite(self.capacity_qps) else self.max_load_qps


@dataclass(frozen=True)
class PolicyTable:
    app: str
    slo_ms: float
    peak_qps: float
    newest: str
    levels: tuple[TableLevel, ...]
    """Sorted by intensity band, then by load."""
    ranking: tuple[tuple[str, float], ...]
    """Critical services, most critical first, with their e2e p99 rise (ms) alone on old."""
    non_critical: Mapping[str, float]
    critical: Mapping[str, float]
    hysteresis: Hysteresis = field(default_factory=Hysteresis)
    carbon_ratio: Mapping[str, float] = field(default_factory=dict)
    ci_aware: bool = False
    search: Mapping[str, object] = field(default_factory=dict)
    provenance: Mapping[str, object] = field(default_factory=dict)

    @cached_property
    def bands(self) -> tuple[float, ...]:
        """The intensity bands' upper limits (gCO2e/kWh), ascending."""
        return tuple(sorted({level.max_ci_g_per_kwh for level in self.levels}))

    @cached_property
    def _ladders(self) -> dict[float, tuple[int, ...]]:
        return {band: tuple(i for i, level in enumerate(self.levels)
                            if level.max_ci_g_per_kwh == band) for band in self.bands}

    @cached_property
    def generations(self) -> tuple[str, ...]:
        """Generations the table uses, newest first, then by descending carbon ratio C."""
        names = {p.generation for level in self.levels for _, p in level.placement.items}
        others = sorted(names - {self.newest}, key=lambda g: self.carbon_ratio.get(g, math.inf))
        return (self.newest, *others)

    def band_of(self, ci_g_per_kwh: float) -> float:
        """The band for an intensity; no data (NaN) picks the dirtiest band (fewest old
        replicas, i.e. toward new)."""
        bands = self.bands
        if not math.isfinite(ci_g_per_kwh):
            return bands[-1]
        return next((b for b in bands if ci_g_per_kwh <= b), bands[-1])

    def ladder(self, band: float) -> tuple[int, ...]:
        """Indices of the levels of one band, by ascending load."""
        return self._ladders[band]

    def index_for(self, load_qps: float, band: float, fraction: float = 1.0) -> int:
        """Lowest level of ``band`` whose max load, times ``fraction``, covers ``load_qps``;
        the top level when none does."""
        ladder = self.ladder(band)
        for i in ladder:
            if load_qps <= fraction * self.levels[i].max_load_qps:
                return i
        return ladder[-1]

    def serving_index(self, load_qps: float, band: float, margin: float = 0.0) -> int:
        """Lowest level of ``band`` whose capacity covers ``load_qps`` plus ``margin`` (a
        fraction of the load kept free for growth); the top level when none does."""
        rungs = self._capacities[band]
        needed = load_qps * (1.0 + margin)
        for i, capacity in rungs:
            if needed <= capacity:
                return i
        return rungs[-1][0]

    @cached_property
    def _capacities(self) -> dict[float, tuple[tuple[int, float], ...]]:
        return {band: tuple((i, self.levels[i].capacity) for i in ladder)
                for band, ladder in self._ladders.items()}

    @cached_property
    def right_sized(self) -> bool:
        """True when some level's replicas hold shares and share sockets (``plan
        --right-size``, the replay's ecoscale-packed)."""
        return any(level.right_sized for level in self.levels)

    def planned_capacity(self, band: float, service: str, placed: ServicePlacement,
                         share: float) -> float:
        """The highest capacity (req/s) among the levels of ``band`` that run ``service``
        as ``placed`` with ``share`` (sockets per replica; a plain level's replicas hold a
        whole socket; shares compared to SHARE_DIGITS decimals, as the file keeps them): the
        most load that setting was planned to serve; NaN when no level runs it."""
        return self._planned_capacities[band].get((service, placed, round(share, SHARE_DIGITS)),
                                                  math.nan)

    @cached_property
    def _planned_capacities(self) -> dict[float, dict[tuple[str, ServicePlacement, float],
                                                      float]]:
        out: dict[float, dict[tuple[str, ServicePlacement, float], float]] = {}
        for band, ladder in self._ladders.items():
            seen: dict[tuple[str, ServicePlacement, float], float] = {}
            for i in ladder:
                level = self.levels[i]
                for service, placed in level.placement.items:
                    key = (service, placed, round(share_of(level.placement, service),
                                                  SHARE_DIGITS))
                    seen[key] = max(seen.get(key, -math.inf), level.capacity)
            out[band] = seen
        return out

    @property
    def most_critical(self) -> tuple[str, ...]:
        return tuple(s for s, _ in self.ranking)

    @cached_property
    def escalation_order(self) -> tuple[str, ...]:
        """Services in the order the daemon brings them back to new on SLO misses: the
        critical ones, most critical first, then the pruned non-critical ones."""
        ranked = self.most_critical
        return ranked + tuple(s for s, _ in self.levels[0].placement.items if s not in ranked)


def build_table(
    model: AppModel,
    slo_ms: float,
    peak_qps: float,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    ci_bands: Sequence[float] | None = None,
    prune_threshold: float = 0.05,
    hysteresis: Hysteresis | None = None,
    provenance: Mapping[str, object] | None = None,
    headroom: float = 0.0,
    right_size: bool = False,
) -> PolicyTable:
    """Plan every level: prune and rank once at peak, then MinNew at each level's load.

    With ``right_size``, a last pass (``_right_size_levels``) gives every feasible level a
    right-sized packing: generation, replicas and each replica's share chosen together with
    the packing per generation, the SLO (less ``headroom``) kept at the level's load under
    the co-location model, and the capacity measured under it.

    ``headroom`` (0..1) is the share of the SLO kept free: levels are planned so that the
    modelled p99 stays under ``slo_ms * (1 - headroom)``, a margin for the gap between the
    profile and the live system; the table's SLO stays ``slo_ms``.

    Without ``ci_bands`` the carbon constants are taken at the hardware's reference
    intensity (the papers' constant C); with them, each band is planned with C at the band's
    upper intensity (C(t), conservative within the band).
    """
    if not 0.0 <= headroom < 1.0:
        raise ValueError(f"headroom must be in [0, 1), got {headroom:g}")
    plan_slo_ms = slo_ms * (1.0 - headroom)
    reference = carbon_terms(model)
    pruning = prune(model, peak_qps, slo_ms, reference, prune_threshold)
    ranking, rank_evaluations = rank(model, list(pruning.critical), peak_qps, reference)
    order = [s for s, _ in ranking]
    bands = [math.inf] if not ci_bands else sorted(ci_bands)
    levels = []
    evaluations = pruning.evaluations + rank_evaluations
    loads = [fraction * peak_qps for fraction in sorted(fractions)]
    limit = plan_slo_ms * (1 + SLO_TOLERANCE)
    coarse: dict[Placement, tuple[float, float, np.ndarray]] = {}   # bracket, p99 at loads
    planned: list[tuple[Plan, float, list[float], np.ndarray]] = []
    for band in bands:
        terms = reference if not math.isfinite(band) else carbon_terms(model, band)
        i = 0
        while i < len(loads):
            plan = minnew(model, loads[i], plan_slo_ms, order, pruning, terms)
            evaluations += plan.evaluations
            i += 1
            if not plan.feasible:
                planned.append((plan, band, [], np.array([])))
                continue
            if plan.placement not in coarse:
                coarse[plan.placement] = _bracket(model, plan.placement, limit, plan.load_qps,
                                                  loads)
            p99s = coarse[plan.placement][2]
            # the next levels whose load this placement serves take it as it is: cheapest
            # at the lower load, it is among the placements that hold at theirs (no move)
            same = [j for j in range(i, len(loads)) if p99s[j] <= limit]
            planned.append((plan, band, [loads[j] for j in same], p99s[same]))
            i += len(same)
    capacities = _refine(model, {p: (low, high) for p, (low, high, _) in coarse.items()},
                         limit)
    for plan, band, same_loads, same_p99s in planned:
        if not plan.feasible:
            levels.append(_level(plan, band, math.nan))
            continue
        capacity = max(capacities[plan.placement], plan.load_qps, *same_loads)
        levels.append(_level(plan, band, capacity))
        levels.extend(_same_as(model, plan, band, capacity, same_loads, same_p99s))
    packings_tried = 0
    if right_size:
        levels, packings_tried = _right_size_levels(model, levels, plan_slo_ms)
    n, k = pruning.search_space
    search = {
        "services": n,
        "critical": k,
        "space_before": f"2^{n}",
        "space_after": f"2^{k}",
        "latency_evaluations": evaluations,
        "levels": len(levels),
        "prune_threshold_ms": round(pruning.threshold_ms, 4),
    }
    if right_size:
        search["right_sized_levels"] = sum(level.right_sized for level in levels)
        search["packings_tried"] = packings_tried
    if headroom:
        search["headroom"] = headroom
        search["planned_to_p99_ms"] = round(plan_slo_ms, 4)
    return PolicyTable(
        app=model.topology.app,
        slo_ms=slo_ms,
        peak_qps=peak_qps,
        newest=reference.newest,
        levels=tuple(levels),
        ranking=tuple(ranking),
        non_critical=dict(pruning.non_critical),
        critical=dict(pruning.critical),
        hysteresis=hysteresis or Hysteresis(),
        carbon_ratio=dict(reference.ratio),
        ci_aware=bool(ci_bands),
        search=search,
        provenance=dict(provenance or {}),
    )


def _level(plan: Plan, band: float, capacity: float) -> TableLevel:
    return TableLevel(plan.load_qps, band, plan.placement, dict(plan.reasons), plan.p99_ms,
                      plan.carbon_g_per_h, plan.feasible, plan.evaluations, capacity)


def right_size_table(model: AppModel, table: PolicyTable) -> PolicyTable:
    """``table`` with the right-sizing pass run over its levels (as ``build_table`` with
    ``right_size``), planned to the SLO the table was planned to (its headroom kept)."""
    plan_slo_ms = float(table.search.get("planned_to_p99_ms", table.slo_ms))  # type: ignore[arg-type]
    levels, tried = _right_size_levels(model, table.levels, plan_slo_ms)
    search = {**table.search, "right_sized_levels": sum(lv.right_sized for lv in levels),
              "packings_tried": tried}
    return replace(table, levels=tuple(levels), search=search)


def _kept(model: AppModel, below: TableLevel, load_qps: float, ci: float) -> TableLevel:
    """A level at ``load_qps`` that keeps the right-sized level ``below`` as it is."""
    return TableLevel(
        load_qps, below.max_ci_g_per_kwh, below.placement,
        {s: f"{why} (packing of the level below: serves up to {below.capacity:.0f} req/s)"
         for s, why in below.reasons.items()},
        packed_e2e_p99_at(model, below.placement, load_qps),
        packed_rate_g_per_h(model, below.placement, load_qps, ci), True, 0,
        below.capacity_qps, below.socket_capacity)


def unpacked_view(table: PolicyTable) -> PolicyTable:
    """``table`` with every level's placement as generation and replicas only (what the
    decision function compares and moves); the shares and sockets stay in ``table``."""
    return replace(table, levels=tuple(replace(level, placement=Placement(level.placement.items))
                                       for level in table.levels))


def _right_size_levels(model: AppModel, levels: Sequence[TableLevel], plan_slo_ms: float,
                       ) -> tuple[list[TableLevel], int]:
    """Every feasible level right-sized (``planner.rightsize.rightsize``): candidates are
    its own plan, the next ABOVE_CANDIDATES distinct plans of the levels above it in its
    band (more replicas: slack a packing can spend), and every service on the cheapest
    generation with 1 .. SPREAD_REPLICAS replicas (each spread over shared sockets); the
    level below is kept as it is when it still keeps the SLO here at no more carbon (no
    move). A level no packing serves keeps its dedicated slots. Above LARGE_APP_SERVICES
    only the level's own plan is packed, by co-location sensitivity
    (``pack_by_sensitivity``, LARGE_APP_PROBES packings per level). Returns the levels and
    the packings tried."""
    large = len(model.services) > LARGE_APP_SERVICES
    cheapest = carbon_terms(model).cheapest
    spread = min(SPREAD_REPLICAS, replica_limit(model, cheapest))
    fraction = 0.5    # of the services a large app packs (pack_by_sensitivity)
    limit = plan_slo_ms * (1 + SLO_TOLERANCE)
    out: list[TableLevel] = []
    tried = 0
    previous: dict[float, TableLevel] = {}
    for index, level in enumerate(levels):
        if not level.feasible:
            out.append(level)
            continue
        band = level.max_ci_g_per_kwh
        ci = terms_for_band(model, band).ci_g_per_kwh
        load = level.max_load_qps
        bases = [level.placement]
        if not large:
            above = dict.fromkeys(lv.placement for lv in levels[index + 1:]
                                  if lv.feasible and lv.max_ci_g_per_kwh == band)
            bases += [p for p in above if p != level.placement][:ABOVE_CANDIDATES]
            bases += [Placement.uniform(model.services, cheapest, replicas)
                      for replicas in range(1, spread + 1)]
        below = previous.get(band)
        if large and below is not None and load <= below.capacity:
            # the packing below serves this load (its capacity, under the co-location
            # model): kept without a search, as build_table keeps a placement that serves
            out.append(_kept(model, below, load, ci))
            continue
        if large:
            chosen, found = pack_by_sensitivity(model, level.placement, load, plan_slo_ms,
                                                ci, start_fraction=fraction)
            fraction = found or fraction / 4
            tried += LARGE_APP_PROBES
        else:
            chosen = rightsize(model, load, plan_slo_ms, bases, ci, SOCKET_CAPACITIES)
            tried += chosen.tried if chosen is not None else len(bases) * len(
                SOCKET_CAPACITIES)
        if (not large and below is not None
                and packed_e2e_p99_at(model, below.placement, load) <= limit):
            kept = _kept(model, below, load, ci)
            if chosen is None or kept.carbon_g_per_h <= chosen.carbon_g_per_h + 1e-9:
                out.append(kept)
                continue
        if chosen is None:
            out.append(level)
            continue
        packed = chosen.plan.packed
        capacity = (packed_capacity_qps(model, packed, plan_slo_ms, load, LARGE_APP_BISECTIONS,
                                        below_qps=level.capacity) if large
                    else packed_capacity_qps(model, packed, plan_slo_ms, load))
        reasons = {}
        for service, placed in packed.items:
            origin = (level.reasons.get(service, "") if chosen.base == level.placement
                      else f"{placed}: as planned for a higher load (slack for packing)")
            reasons[service] = (f"{origin}; right-sized: share {packed.share(service):.3f} "
                                f"of a socket, packed at {chosen.capacity:.0%}")
        for service, added in chosen.plan.added:
            reasons[service] += f", +{added} replicas (co-location repair)"
        for service in chosen.plan.isolated:
            reasons[service] += ", sockets of its own (co-location repair)"
        right = TableLevel(load, band, packed, reasons, chosen.plan.p99_ms,
                           chosen.carbon_g_per_h, True, level.evaluations, capacity,
                           chosen.capacity)
        previous[band] = right
        out.append(right)
    return out, tried


def _same_as(model: AppModel, plan: Plan, band: float, capacity: float,
             loads: list[float], p99s: np.ndarray) -> list[TableLevel]:
    """Levels at higher ``loads`` that ``plan``'s placement serves (p99 ``p99s``)."""
    if not loads:
        return []
    at = np.asarray(loads, dtype=float)
    carbon = model.carbon(plan.placement, at, np.full_like(at, plan.ci_g_per_kwh), 1.0)
    grams_per_h = carbon.embodied_g + carbon.operational_g
    return [TableLevel(load, band, plan.placement,
                       {s: f"{why} (serves up to {capacity:.0f} req/s: as at "
                           f"{plan.load_qps:.0f})" for s, why in plan.reasons.items()},
                       float(p99), float(grams), True, 0, capacity)
            for load, p99, grams in zip(loads, p99s, grams_per_h, strict=True)]


CAPACITY_POINTS = 33
"""Loads per round of the capacity search: two rounds find a placement's capacity to
1/1,024 of the range from its planned load to its saturation, rounded down."""


def _bracket(model: AppModel, placement: Placement, limit_ms: float, from_qps: float,
             loads: Sequence[float]) -> tuple[float, float, np.ndarray]:
    """First round (one model evaluation): the loads between which the p99 of ``placement``
    crosses ``limit_ms``, searched from ``from_qps`` up to its saturation, and its p99 at
    ``loads``."""
    extra = np.asarray(loads, dtype=float)
    high = model.saturation_qps(placement)
    if not math.isfinite(high):
        return math.inf, math.inf, model.e2e_p99(placement, extra)
    grid = np.linspace(from_qps, high, CAPACITY_POINTS)
    p99 = model.e2e_p99(placement, np.concatenate([grid, extra]))
    held = p99[:CAPACITY_POINTS] <= limit_ms
    if not held[0]:   # misses at the lower end: nothing above it holds
        return float(from_qps), float(from_qps), p99[CAPACITY_POINTS:]
    first_miss = int(np.argmin(held)) if not held.all() else CAPACITY_POINTS - 1
    return float(grid[first_miss - 1]), float(grid[first_miss]), p99[CAPACITY_POINTS:]


def _refine(model: AppModel, brackets: Mapping[Placement, tuple[float, float]],
            limit_ms: float) -> dict[Placement, float]:
    """Second round for every placement at once: each service's latency curve is evaluated
    once per option over the loads of every placement that uses it (the cost of a model
    evaluation is per service, not per load), then composed per placement."""
    open_ = {p: np.linspace(low, high, CAPACITY_POINTS)
             for p, (low, high) in brackets.items() if math.isfinite(high) and high > low}
    out = {p: low for p, (low, _) in brackets.items()}
    if not open_:
        return out
    order = list(open_)
    per_service: dict[Placement, dict[str, np.ndarray]] = {p: {} for p in order}
    for service in model.services:
        by_option: dict[ServicePlacement, list[Placement]] = {}
        for placement in order:
            by_option.setdefault(placement[service], []).append(placement)
        for option, users in by_option.items():
            loads = np.concatenate([open_[p] for p in users])
            per_replica = model.service_load(service, loads) / option.replicas
            p99 = model.profile.curve(service, option.generation).p99(per_replica)
            for k, placement in enumerate(users):
                per_service[placement][service] = p99[k * CAPACITY_POINTS:
                                                      (k + 1) * CAPACITY_POINTS]
    for placement in order:
        grid = open_[placement]
        held = model.e2e.mix_p99(per_service[placement]) <= limit_ms
        model.evaluations += 1
        last = int(np.argmin(held)) - 1 if not held.all() else CAPACITY_POINTS - 1
        out[placement] = float(grid[max(last, 0)])
    return out


def capacity_qps(model: AppModel, placement: Placement, slo_ms: float,
                 from_qps: float) -> float:
    """Highest front-end load (req/s) at which ``placement`` keeps the modelled p99 within
    ``slo_ms``, searched from ``from_qps`` up to the placement's saturation (``from_qps``
    itself when the SLO does not hold there), to 1/1,024 of that range, rounded down."""
    limit = slo_ms * (1 + SLO_TOLERANCE)
    low, high, _ = _bracket(model, placement, limit, from_qps, ())
    return _refine(model, {placement: (low, high)}, limit)[placement]


def terms_for_band(model: AppModel, band: float) -> CarbonTerms:
    return carbon_terms(model) if not math.isfinite(band) else carbon_terms(model, band)


# ---- plain data (the YAML file) ------------------------------------------------------------
def _number(value: float) -> float | str:
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def table_to_data(table: PolicyTable) -> dict[str, object]:
    return {
        "ecoscale_policy_table": FORMAT_VERSION,
        "app": table.app,
        "slo_ms": round(table.slo_ms, 4),
        "peak_qps": round(table.peak_qps, 3),
        "newest_generation": table.newest,
        "ci_aware": table.ci_aware,
        "carbon_ratio_C": {g: round(c, 4) for g, c in table.carbon_ratio.items()},
        "hysteresis": {
            "up_fraction": table.hysteresis.up_fraction,
            "down_fraction": table.hysteresis.down_fraction,
            "down_stabilisation_s": table.hysteresis.down_stabilisation_s,
            "calm_up_fraction": table.hysteresis.calm_up_fraction,
            "growth_horizon_s": table.hysteresis.growth_horizon_s,
            "growth_window_s": table.hysteresis.growth_window_s,
        },
        "search": dict(table.search),
        "pruned_non_critical": {s: round(r, 4) for s, r in table.non_critical.items()},
        "critical": {s: round(r, 4) for s, r in table.critical.items()},
        "ranking": [{"service": s, "e2e_rise_ms": round(r, 4)} for s, r in table.ranking],
        "provenance": dict(table.provenance),
        "levels": [
            {
                "max_load_qps": round(level.max_load_qps, 3),
                **({"capacity_qps": round(level.capacity_qps, 3)}
                   if math.isfinite(level.capacity_qps) else {}),
                "max_ci_g_per_kwh": _number(level.max_ci_g_per_kwh),
                "feasible": level.feasible,
                "p99_ms_at_max_load": round(level.p99_ms, 4) if math.isfinite(level.p99_ms)
                else "inf",
                "carbon_g_per_h_at_max_load": round(level.carbon_g_per_h, 3),
                "placement": {
                    s: {"generation": p.generation, "replicas": p.replicas,
                        **({"share": round(level.placement.share(s), SHARE_DIGITS)}
                           if isinstance(level.placement, PackedPlacement) else {}),
                        "reason": level.reasons.get(s, "")}
                    for s, p in level.placement.items
                },
                **packing_data(level),
            }
            for level in table.levels
        ],
    }


SHARE_DIGITS = 6
"""Decimals of a share in the table file (a millionth of a socket)."""


def packing_data(level: TableLevel) -> dict[str, object]:
    """A right-sized level's packing: the socket capacity it was packed at and its sockets,
    each the list of the replicas on it (one service name per replica)."""
    if not isinstance(level.placement, PackedPlacement):
        return {}
    return {"socket_capacity": round(level.socket_capacity, 4)
            if math.isfinite(level.socket_capacity) else TARGET_SOCKET_UTILISATION,
            "sockets": [[name for name, _ in socket.replicas]
                        for socket in level.placement.sockets]}


MAX_REPLICAS = 10_000
"""Most replicas of one service a table may ask for (a larger count is a typo)."""


def _inf_text(value: object) -> object:
    """The text 'inf' that table_to_data writes for an open limit, as a float."""
    if isinstance(value, str) and value.strip().lower() in ("inf", ".inf", "+inf"):
        return math.inf
    return value


def table_from_data(data: object, source: str) -> PolicyTable:
    """Parse and validate a policy table, reporting every problem at once."""
    problems: list[str] = []
    if not isinstance(data, Mapping) or "levels" not in data:
        raise InputError(source, "not a policy table (no 'levels'); write one with "
                                 "`ecoscale plan`")
    if data.get("ecoscale_policy_table") != FORMAT_VERSION or isinstance(
            data.get("ecoscale_policy_table"), bool):
        problems.append(f"ecoscale_policy_table must be {FORMAT_VERSION} (this file says "
                        f"{data.get('ecoscale_policy_table')!r}); re-run `ecoscale plan`")
    slo_ms = number_at(data, "slo_ms", problems, above=0)
    raw_h = data.get("hysteresis") or {}
    if not isinstance(raw_h, Mapping):
        problems.append("hysteresis: expected a mapping of up_fraction, down_fraction, "
                        "down_stabilisation_s, calm_up_fraction, growth_horizon_s, "
                        "growth_window_s")
        raw_h = {}
    defaults = Hysteresis()
    up = number_at(raw_h, "up_fraction", problems, where="hysteresis.",
                   default=defaults.up_fraction, fallback=defaults.up_fraction)
    hysteresis = Hysteresis(
        up,
        number_at(raw_h, "down_fraction", problems, where="hysteresis.",
                  default=defaults.down_fraction, fallback=defaults.down_fraction),
        number_at(raw_h, "down_stabilisation_s", problems, where="hysteresis.",
                  default=defaults.down_stabilisation_s,
                  fallback=defaults.down_stabilisation_s, minimum=0, maximum=30 * 86400),
        # a table written before the margin adapted keeps it fixed
        number_at(raw_h, "calm_up_fraction", problems, where="hysteresis.", default=up,
                  fallback=up),
        number_at(raw_h, "growth_horizon_s", problems, where="hysteresis.",
                  default=defaults.growth_horizon_s, fallback=defaults.growth_horizon_s,
                  maximum=30 * 86400),
        number_at(raw_h, "growth_window_s", problems, where="hysteresis.",
                  default=defaults.growth_window_s, fallback=defaults.growth_window_s,
                  maximum=30 * 86400))
    problems.extend(hysteresis.problems())
    levels = []
    services: tuple[str, ...] | None = None
    raw_levels = data.get("levels")
    if not isinstance(raw_levels, list):
        problems.append("levels: expected a list of levels")
        raw_levels = []
    for index, raw in enumerate(raw_levels, start=1):
        level = _level_from_data(raw, f"level {index}: ", problems)
        if level is None:
            continue
        if services is None:
            services = tuple(level.placement)
        elif set(level.placement) != set(services):
            problems.append(f"level {index}: places other services than level 1")
        levels.append(level)
    if not raw_levels:
        problems.append("no levels")
    ranking = []
    for index, r in enumerate(data.get("ranking") or [], start=1):
        if not isinstance(r, Mapping) or "service" not in r:
            problems.append(f"ranking {index}: expected {{service, e2e_rise_ms}}")
            continue
        rise = number_at({"e2e_rise_ms": _inf_text(r.get("e2e_rise_ms"))}, "e2e_rise_ms",
                         problems, where=f"ranking {index}: ", default=0.0, allow_inf=True)
        ranking.append((str(r["service"]), rise))
    if services is not None:
        unknown = [s for s, _ in ranking if s not in services]
        if unknown:
            problems.append(f"ranking names services no level places: {', '.join(unknown)}")
    rises = {name: _number_map(data.get(name), name, problems, allow_inf=True)
             for name in ("pruned_non_critical", "critical")}
    ratio = _number_map(data.get("carbon_ratio_C"), "carbon_ratio_C", problems, above=0,
                        allow_inf=True)
    peak = number_at(data, "peak_qps", problems, default=None, above=0)
    ci_aware = data.get("ci_aware", False)
    if not isinstance(ci_aware, bool):
        problems.append(f"ci_aware must be true or false, got {ci_aware!r}")
    if problems:
        raise InputError(source, problems)
    levels.sort(key=lambda lv: (lv.max_ci_g_per_kwh, lv.max_load_qps))
    search = data.get("search")
    provenance = data.get("provenance")
    return PolicyTable(
        app=str(data.get("app", "")),
        slo_ms=slo_ms,
        peak_qps=float(peak) if peak is not None else levels[-1].max_load_qps,
        newest=str(data.get("newest_generation", "new")),
        levels=tuple(levels),
        ranking=tuple(ranking),
        non_critical=rises["pruned_non_critical"],
        critical=rises["critical"],
        hysteresis=hysteresis,
        carbon_ratio=ratio,
        ci_aware=bool(ci_aware),
        search=dict(search) if isinstance(search, Mapping) else {},
        provenance=dict(provenance) if isinstance(provenance, Mapping) else {},
    )


def _level_from_data(raw: object, where: str, problems: list[str]) -> TableLevel | None:
    """One level of a table file, or None (with the problems appended)."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("placement"), Mapping) or (
            not raw["placement"]):
        problems.append(f"{where}needs max_load_qps and placement "
                        "{service: {generation, replicas}}")
        return None
    before = len(problems)
    max_load = number_at(raw, "max_load_qps", problems, where=where, above=0)
    values = {key: _inf_text(raw.get(key))
              for key in ("max_ci_g_per_kwh", "p99_ms_at_max_load", "capacity_qps")}
    max_ci = number_at(values, "max_ci_g_per_kwh", problems, where=where, default=math.inf,
                       above=0, allow_inf=True)
    p99 = number_at(values, "p99_ms_at_max_load", problems, where=where, default=math.nan,
                    minimum=0, allow_inf=True)
    carbon = number_at(raw, "carbon_g_per_h_at_max_load", problems, where=where,
                       default=math.nan, minimum=0)
    capacity = number_at(values, "capacity_qps", problems, where=where, default=math.nan,
                         minimum=0, allow_inf=True)
    feasible = raw.get("feasible", True)
    if not isinstance(feasible, bool):
        problems.append(f"{where}feasible must be true or false, got {feasible!r}")
    items = []
    reasons = {}
    shares: dict[str, float] = {}
    for service, spec in raw["placement"].items():
        at = f"{where}placement.{service}."
        if not isinstance(spec, Mapping) or not isinstance(spec.get("generation"), str) or (
                not spec["generation"]):
            problems.append(f"{where}placement.{service}: needs generation (a name) and "
                            "replicas")
            continue
        replicas = number_at(spec, "replicas", problems, where=at, fallback=1, integer=True,
                             minimum=1, maximum=MAX_REPLICAS)
        items.append((str(service), ServicePlacement(spec["generation"], int(replicas))))
        reasons[str(service)] = str(spec.get("reason", ""))
        if "share" in spec:
            shares[str(service)] = number_at(spec, "share", problems, where=at, above=0,
                                             maximum=1, fallback=1.0)
    if len(problems) > before:
        return None
    placement = Placement(tuple(items))
    socket_capacity = math.nan
    if shares or "sockets" in raw:
        packed = _packed_from_data(raw, placement, shares, where, problems)
        if packed is None:
            return None
        placement, socket_capacity = packed
    return TableLevel(max_load, max_ci, placement, reasons, p99, carbon,
                      bool(feasible), capacity_qps=capacity, socket_capacity=socket_capacity)


def _packed_from_data(raw: Mapping, placement: Placement, shares: Mapping[str, float],
                      where: str, problems: list[str]) -> tuple[PackedPlacement, float] | None:
    """The right-sized placement of a level (every service with a ``share``): its
    ``sockets`` as written (each a list of replicas, one service name each, of one
    generation; every replica on one socket), or, without them, packed first-fit decreasing
    at ``socket_capacity`` (default TARGET_SOCKET_UTILISATION). None with the problems
    appended."""
    before = len(problems)
    missing = [s for s in placement if s not in shares]
    if missing:
        problems.append(f"{where}a right-sized level gives every service a share; missing "
                        f"for {', '.join(missing)}: add placement.<service>.share (sockets, "
                        "0..1) or remove the shares and sockets")
        return None
    socket_capacity = number_at(raw, "socket_capacity", problems, where=where,
                                default=TARGET_SOCKET_UTILISATION, above=0, maximum=1,
                                fallback=TARGET_SOCKET_UTILISATION)
    raw_sockets = raw.get("sockets")
    if raw_sockets is None:
        if len(problems) > before:
            return None
        return pack(placement, shares, socket_capacity), socket_capacity
    sockets = []
    counts: dict[str, int] = {}
    if not isinstance(raw_sockets, list):
        raw_sockets = [raw_sockets]
    for number, names in enumerate(raw_sockets, start=1):
        if not isinstance(names, list) or not names or not all(
                isinstance(n, str) and n in placement._index for n in names):
            problems.append(f"{where}sockets {number}: expected a list of the services of "
                            f"its replicas (names the level places), got {names!r}")
            continue
        generations = {placement[n].generation for n in names}
        if len(generations) > 1:
            problems.append(f"{where}sockets {number}: replicas of one generation share a "
                            f"socket, this one mixes {', '.join(sorted(generations))}")
            continue
        for name in names:
            counts[name] = counts.get(name, 0) + 1
        sockets.append(Socket(generations.pop(), tuple((n, shares[n]) for n in names)))
    wrong = [f"{s} ({counts.get(s, 0)} on sockets, {p.replicas} replicas)"
             for s, p in placement.items if counts.get(s, 0) != p.replicas]
    if wrong:
        problems.append(f"{where}sockets: every replica is on one socket; these differ: "
                        f"{', '.join(wrong)}; fix the sockets or the replicas")
    if len(problems) > before:
        return None
    return (PackedPlacement(placement.items, sockets=tuple(sockets),
                            shares=tuple((s, shares[s]) for s, _ in placement.items)),
            socket_capacity)


def _number_map(raw: object, name: str, problems: list[str], **bounds: object) -> dict[str, float]:
    """A mapping name -> number of a table file (absent: empty)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append(f"{name}: expected a mapping of name -> number")
        return {}
    values = {k: _inf_text(v) for k, v in raw.items()}
    return {str(k): number_at(values, k, problems, where=f"{name}.", **bounds) for k in raw}
