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
from dataclasses import dataclass, field
from functools import cached_property

from ecoscale.errors import InputError
from ecoscale.model.app import AppModel
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.planner.search import (
    CarbonTerms,
    Plan,
    Pruning,
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
    up_fraction: float = 0.95
    """Go up to a level when load exceeds this fraction of the current level's max load."""
    down_fraction: float = 0.85
    """A lower level counts only while load stays under this fraction of its max load..."""
    down_stabilisation_s: float = 300.0
    """...for this long (s), before the daemon moves down."""

    def problems(self) -> list[str]:
        out = []
        if not 0 < self.down_fraction < self.up_fraction <= 1:
            out.append("hysteresis: need 0 < down_fraction < up_fraction <= 1")
        if self.down_stabilisation_s < 0:
            out.append("hysteresis: down_stabilisation_s must be >= 0")
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
) -> PolicyTable:
    """Plan every level: prune and rank once at peak, then MinNew at each level's load.

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
    for band in bands:
        terms = reference if not math.isfinite(band) else carbon_terms(model, band)
        for fraction in sorted(fractions):
            plan = minnew(model, fraction * peak_qps, plan_slo_ms, order, pruning, terms)
            evaluations += plan.evaluations
            levels.append(_level(plan, band))
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


def _level(plan: Plan, band: float) -> TableLevel:
    return TableLevel(plan.load_qps, band, plan.placement, dict(plan.reasons), plan.p99_ms,
                      plan.carbon_g_per_h, plan.feasible, plan.evaluations)


def terms_for_band(model: AppModel, band: float) -> CarbonTerms:
    return carbon_terms(model) if not math.isfinite(band) else carbon_terms(model, band)


def pruning_of(table: PolicyTable) -> Pruning:
    return Pruning(table.critical, table.non_critical,
                   float(table.search.get("prune_threshold_ms", 0.0)), 0)


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
        },
        "search": dict(table.search),
        "pruned_non_critical": {s: round(r, 4) for s, r in table.non_critical.items()},
        "critical": {s: round(r, 4) for s, r in table.critical.items()},
        "ranking": [{"service": s, "e2e_rise_ms": round(r, 4)} for s, r in table.ranking],
        "provenance": dict(table.provenance),
        "levels": [
            {
                "max_load_qps": round(level.max_load_qps, 3),
                "max_ci_g_per_kwh": _number(level.max_ci_g_per_kwh),
                "feasible": level.feasible,
                "p99_ms_at_max_load": round(level.p99_ms, 4) if math.isfinite(level.p99_ms)
                else "inf",
                "carbon_g_per_h_at_max_load": round(level.carbon_g_per_h, 3),
                "placement": {
                    s: {"generation": p.generation, "replicas": p.replicas,
                        "reason": level.reasons.get(s, "")}
                    for s, p in level.placement.items
                },
            }
            for level in table.levels
        ],
    }


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
                        "down_stabilisation_s")
        raw_h = {}
    hysteresis = Hysteresis(
        number_at(raw_h, "up_fraction", problems, where="hysteresis.", default=0.95,
                  fallback=0.95),
        number_at(raw_h, "down_fraction", problems, where="hysteresis.", default=0.85,
                  fallback=0.85),
        number_at(raw_h, "down_stabilisation_s", problems, where="hysteresis.",
                  default=300.0, fallback=300.0, minimum=0, maximum=30 * 86400))
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
    values = {key: _inf_text(raw.get(key)) for key in ("max_ci_g_per_kwh", "p99_ms_at_max_load")}
    max_ci = number_at(values, "max_ci_g_per_kwh", problems, where=where, default=math.inf,
                       above=0, allow_inf=True)
    p99 = number_at(values, "p99_ms_at_max_load", problems, where=where, default=math.nan,
                    minimum=0, allow_inf=True)
    carbon = number_at(raw, "carbon_g_per_h_at_max_load", problems, where=where,
                       default=math.nan, minimum=0)
    feasible = raw.get("feasible", True)
    if not isinstance(feasible, bool):
        problems.append(f"{where}feasible must be true or false, got {feasible!r}")
    items = []
    reasons = {}
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
    if len(problems) > before:
        return None
    return TableLevel(max_load, max_ci, Placement(tuple(items)), reasons, p99, carbon,
                      bool(feasible))


def _number_map(raw: object, name: str, problems: list[str], **bounds: object) -> dict[str, float]:
    """A mapping name -> number of a table file (absent: empty)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append(f"{name}: expected a mapping of name -> number")
        return {}
    values = {k: _inf_text(v) for k, v in raw.items()}
    return {str(k): number_at(values, k, problems, where=f"{name}.", **bounds) for k in raw}
