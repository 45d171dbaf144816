"""Rows of a replay that give the same result as an earlier row, and why.

Two policies are *the same* when they ran the same placement at every step (or, with
different placements, printed the same figures); *close* when their carbon differs by less
than ``CLOSE_CARBON_FRACTION`` and their SLO-violation time by less than
``CLOSE_VIOLATION_PP``. The reason is computed from the runs (their placements, the
policies' settings and the model), never written in advance.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.planner.search import carbon_terms
from ecoscale.planner.table import terms_for_band
from ecoscale.replay.baselines import HpaCpuPolicy
from ecoscale.replay.engine import SLO_TOLERANCE, PolicyRun, ReplayResult
from ecoscale.replay.policies import EcoscalePolicy

CLOSE_CARBON_FRACTION = 0.005
"""Carbon within 0.5 % of another row's counts as close."""
CLOSE_VIOLATION_PP = 0.1
"""SLO-violation time within 0.1 percentage points counts as close."""


@dataclass(frozen=True)
class Likeness:
    """``policy`` gives the same (or a close) result as the earlier row ``like``."""

    policy: str
    like: str
    kind: str
    """'same placements', 'same figures' or 'close'."""
    differing_steps: int
    """Steps at which the two ran different placements."""
    reason: str
    """Why, computed from the runs."""
    carbon_change_pct: float = 0.0
    """Carbon of ``policy`` relative to ``like``'s, %."""
    violation_change_pp: float = 0.0
    """SLO-violation time of ``policy`` minus ``like``'s, percentage points."""

    @property
    def mark(self) -> str:
        """Short form for a table column: '= all-new' or '~ all-new'."""
        return f"{'~' if self.kind == 'close' else '='} {self.like}"

    def sentence(self) -> str:
        if self.kind == "same placements":
            head = f"{self.policy} = {self.like}: the same placements at every step"
        elif self.kind == "same figures":
            head = (f"{self.policy} = {self.like}: the same figures (placements differ at "
                    f"{self.differing_steps} steps)")
        else:
            violation = ("the same SLO-violation time" if abs(self.violation_change_pp) < 0.005
                         else f"SLO-violation time {self.violation_change_pp:+.2f} points")
            change = self.carbon_change_pct
            digits = 2 if abs(change) < 0.1 else 1
            head = (f"{self.policy} ~ {self.like}: carbon {change:+.{digits}f} %, "
                    f"{violation}")
        return f"{head}; {self.reason}"


_FOUND: dict[int, tuple[weakref.ref, list[Likeness]]] = {}


def likenesses(result: ReplayResult) -> list[Likeness]:
    """For each row that repeats (or nearly repeats) an earlier row, which and why
    (computed once per result: the table, the plots and the report ask for them)."""
    known = _FOUND.get(id(result))
    if known is not None and known[0]() is result:
        return list(known[1])
    found = _likenesses(result)
    _FOUND[id(result)] = (weakref.ref(result, lambda _: _FOUND.pop(id(result), None)), found)
    return list(found)


def _likenesses(result: ReplayResult) -> list[Likeness]:
    runs = result.runs
    summary = result.summary().set_index("policy")
    out: list[Likeness] = []
    for position, run in enumerate(runs):
        earlier = runs[:position]
        if not earlier:
            continue
        differing = {other.name: _differing_steps(other, run) for other in earlier}
        same = [other for other in earlier if not differing[other.name]]
        if same:
            like = same[0]
            out.append(Likeness(run.name, like.name, "same placements", 0,
                                explain(result, like, run, exact=True)))
            continue
        printed = _printed(summary.loc[run.name])
        same_figures = [o for o in earlier if _printed(summary.loc[o.name]) == printed]
        if same_figures:
            like = same_figures[0]
            out.append(Likeness(run.name, like.name, "same figures", len(differing[like.name]),
                                explain(result, like, run, exact=False)))
            continue
        close = [o for o in earlier if _close(summary.loc[o.name], summary.loc[run.name])]
        if close:
            like = min(close, key=lambda o: len(differing[o.name]))
            mine, theirs = summary.loc[run.name], summary.loc[like.name]
            out.append(Likeness(
                run.name, like.name, "close", len(differing[like.name]),
                explain(result, like, run, exact=False),
                carbon_change_pct=100 * (float(mine.carbon_kg) / float(theirs.carbon_kg) - 1),
                violation_change_pp=float(mine.slo_violation_pct - theirs.slo_violation_pct)))
    return out


def _printed(row: pd.Series) -> tuple:
    """The figures as the terminal table prints them."""
    return (round(float(row.carbon_kg), 2), round(float(row.saving_vs_all_new_pct), 1)
            if math.isfinite(row.saving_vs_all_new_pct) else None,
            round(float(row.slo_violation_pct), 2), int(row.moves))


def _close(a: pd.Series, b: pd.Series) -> bool:
    return (abs(float(b.carbon_kg) - float(a.carbon_kg))
            <= CLOSE_CARBON_FRACTION * max(float(a.carbon_kg), 1e-12)
            and abs(float(b.slo_violation_pct) - float(a.slo_violation_pct))
            <= CLOSE_VIOLATION_PP)


def _differing_steps(a: PolicyRun, b: PolicyRun) -> list[int]:
    return [i for i, (pa, pb) in enumerate(zip(a.placements, b.placements, strict=True))
            if pa != pb]


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.0f} %"


def _range(values: np.ndarray) -> str:
    """'138-305' (or one number when all are equal), rounded to whole units."""
    low, high = f"{float(np.min(values)):.0f}", f"{float(np.max(values)):.0f}"
    return low if low == high else f"{low}-{high}"


def clock(result: ReplayResult, step: int) -> str:
    """A step as a time of the load trace ('15:20 UTC', or '+15.3 h' without timestamps)."""
    scenario = result.scenario
    if scenario.start is None:
        return f"+{step * scenario.step_s / 3600:.1f} h"
    when = pd.Timestamp(scenario.start) + pd.Timedelta(seconds=step * scenario.step_s)
    days = (when.normalize() - pd.Timestamp(scenario.start).normalize()).days
    return when.strftime("%H:%M") + (f" (day {days + 1})" if days else "") + " UTC"


def explain(result: ReplayResult, like: PolicyRun, run: PolicyRun, exact: bool) -> str:
    """Why ``run`` repeats ``like``: the first explainer that applies, else the facts."""
    for explainer in (_hpa_reason, _minnew_reason, _carbon_bands_reason):
        reason = explainer(result, like, run, exact)
        if reason:
            return reason
    return _generic_reason(result, like, run, exact)


# ---- HPA and the carbon ceiling ----------------------------------------------------------

def _hpa_reason(result: ReplayResult, like: PolicyRun, run: PolicyRun, exact: bool) -> str:
    policy = run.policy
    if not isinstance(policy, HpaCpuPolicy):
        return ""
    scenario = result.scenario
    threshold = policy.target_utilisation * (1 + policy.tolerance)
    target = (f"{_pct(threshold)} that makes HPA scale out ({_pct(policy.target_utilisation)} "
              f"target + {_pct(policy.tolerance)} tolerance)")
    scaled = _scaled_services(run, policy.generation)
    if not scaled:
        observed = max(scenario.steps - 1, 1)   # HPA sees the step before it decides
        placement = run.placements[0]
        util = scenario.model.utilisation(placement, scenario.load_qps[:observed])
        service, peak = max(((s, float(np.max(u))) for s, u in util.items()),
                            key=lambda item: item[1])
        step = int(np.argmax(util[service]))
        seen = f"per-replica CPU peaked at {_pct(peak)} ({service}, {clock(result, step)})"
        if peak <= threshold:
            reason = f"HPA never scaled: {seen}, under the {target}"
            if policy.carbon_bands:
                reason += "; so the carbon ceiling had nothing to cap"
            return reason
        if policy.carbon_bands:
            ci = scenario.ci_g_per_kwh
            ceilings = np.array([policy.ceiling(float(c)) for c in ci])
            return (f"HPA wanted to scale out ({seen}, over the {target}), but the carbon "
                    f"ceiling capped every service at {_range(ceilings)} (replicas, at "
                    f"{_range(ci)} g/kWh)")
        return f"HPA never scaled ({seen}; the {target})"
    like_policy = like.policy
    if (isinstance(like_policy, HpaCpuPolicy) and policy.carbon_bands
            and not like_policy.carbon_bands):
        return _ceiling_reason(result, like, run, policy, exact)
    parts = [f"{s} (up to {top} replicas, at {count} of {scenario.steps} steps)"
             for s, (top, count) in scaled.items()]
    return (f"HPA scaled out only {', '.join(parts)}, when its per-replica CPU passed the "
            f"{target}")


def _scaled_services(run: PolicyRun, generation: str) -> dict[str, tuple[int, int]]:
    """service -> (most replicas, steps with more than one) on ``generation``."""
    out: dict[str, tuple[int, int]] = {}
    for service in run.placements[0]:
        replicas = np.array([p[service].replicas if p[service].generation == generation else 1
                             for p in run.placements])
        if replicas.max() > 1:
            out[service] = (int(replicas.max()), int(np.count_nonzero(replicas > 1)))
    return out


def _ceiling_reason(result: ReplayResult, like: PolicyRun, run: PolicyRun,
                    policy: HpaCpuPolicy, exact: bool) -> str:
    ci = result.scenario.ci_g_per_kwh
    ceilings = np.array([policy.ceiling(float(c)) for c in ci])
    most = max((top for top, _ in _scaled_services(like, policy.generation).values()),
               default=1)
    if exact:
        return (f"the carbon ceiling never capped: {like.name} ran at most {most} replicas "
                f"of a service, and the ceiling was at least {int(ceilings.min())} at every "
                f"step ({_range(ci)} g/kWh)")
    capped = _differing_steps(like, run)
    at = ceilings[capped]
    return (f"the carbon ceiling capped replicas at {len(capped)} steps only (ceiling "
            f"{int(at.min())} at {_range(ci[capped])} g/kWh), where {like.name} wanted up to "
            f"{most}")


# ---- NoScale vs MinNew -------------------------------------------------------------------

def _minnew_reason(result: ReplayResult, like: PolicyRun, run: PolicyRun, exact: bool) -> str:
    if not (exact and run.name == "minnew" and like.name == "noscale"):
        return ""
    scenario = result.scenario
    model = scenario.model
    placement = run.placements[0]
    if any(p != placement for p in run.placements):
        return ""
    peak = float(np.max(scenario.load_qps))
    terms = carbon_terms(model)
    on_newest = [s for s, p in placement.items if p.generation == terms.newest]
    head = f"both planned once for the peak ({peak:.0f} req/s)"
    if not on_newest:
        return f"{head}: NoScale already puts every service on {terms.cheapest}"
    tried = []
    for service in on_newest:
        current = model.service_carbon_g_per_h(service, placement[service], peak,
                                               terms.ci_g_per_kwh)
        for generation in terms.order[1:]:
            for replicas in range(1, terms.max_replicas(generation) + 1):
                option = ServicePlacement(generation, replicas)
                p99 = float(model.e2e_p99(placement.with_service(service, option), peak))
                carbon = model.service_carbon_g_per_h(service, option, peak, terms.ci_g_per_kwh)
                tried.append((service, option, p99, carbon < current))
    fits = [t for t in tried if t[2] <= scenario.slo_ms * (1 + SLO_TOLERANCE)]
    limits = _replica_limit_text(terms)
    names = ", ".join(on_newest[:5]) + (f" and {len(on_newest) - 5} more"
                                         if len(on_newest) > 5 else "")
    if not fits:
        service, option, p99, _ = min(tried, key=lambda t: t[2])
        return (f"{head}, MinNew found nothing to move: each of the {len(on_newest)} services "
                f"NoScale keeps on {terms.newest} ({names}) misses the SLO at the peak on "
                f"{'/'.join(terms.order[1:])} with {limits}; closest: {service} as {option}, "
                f"p99 {p99:.1f} ms > SLO {scenario.slo_ms:.1f} ms")
    if not any(cheaper for *_, cheaper in fits):
        return (f"{head}, MinNew found nothing to move: of the services NoScale keeps on "
                f"{terms.newest} ({names}), those that keep the SLO elsewhere with {limits} "
                f"would emit more carbon there")
    return f"{head}, MinNew found no move that keeps the SLO at the peak and lowers carbon"


def _replica_limit_text(terms) -> str:
    parts = []
    for generation in terms.order[1:]:
        allowed = terms.max_replicas(generation)
        floor_c = max(1, int(math.floor(terms.ratio[generation] + 1e-9)))
        text = f"up to {allowed} replica{'s' if allowed > 1 else ''}"
        if allowed < floor_c:
            text += (f" (floor(C) = {floor_c}, capped by the profile's replica_limits "
                     f"{generation}: {allowed})")
        parts.append(text)
    return ", ".join(parts)


# ---- ecoscale vs ecoscale-ct (C(t) bands) ------------------------------------------------

def _carbon_bands_reason(result: ReplayResult, like: PolicyRun, run: PolicyRun,
                         exact: bool) -> str:
    policy = run.policy
    if not (isinstance(policy, EcoscalePolicy) and policy.table.ci_aware):
        return ""
    scenario = result.scenario
    table = policy.table
    ci = scenario.ci_g_per_kwh
    visited = sorted({table.band_of(float(c)) for c in ci})
    span = f"{_range(ci)} g/kWh"
    ladders = {band: _ladder(table, band) for band in visited}
    base = like.policy.table if isinstance(like.policy, EcoscalePolicy) else None
    base_ladder = _ladder(base, base.bands[0]) if base is not None and len(base.bands) == 1 \
        else None
    if len(visited) == 1:
        reason = (f"the carbon trace stayed in one band of the C(t) table ({span}, band up "
                  f"to {_band_text(visited[0])}), so {run.name} followed one ladder")
    elif len(set(ladders.values())) == 1:
        reason = (f"the C(t) table holds the same placements in all {len(visited)} bands the "
                  f"carbon trace visited ({span})")
        allowed = _allowed_per_band(scenario.model, visited)
        if allowed:
            reason += f": {allowed}"
    else:
        differ = _differing_steps(like, run)
        reason = (f"the C(t) table's ladders differ across the {len(visited)} bands the "
                  f"carbon trace visited ({span})")
        if exact:
            return reason + ", but not at the loads and intensities the trace reached"
        return reason + "; " + _difference_text(result, like, run, differ)
    if base_ladder is not None and all(ladder == base_ladder for ladder in ladders.values()):
        reason += f", and that ladder is {like.name}'s"
    elif not exact:
        reason += "; " + _difference_text(result, like, run, _differing_steps(like, run))
    return reason


def _ladder(table, band: float) -> tuple[tuple[float, Placement], ...]:
    return tuple((round(table.levels[i].max_load_qps, 6), table.levels[i].placement)
                 for i in table.ladder(band))


def _band_text(band: float) -> str:
    return "the top" if math.isinf(band) else f"{band:.0f} g/kWh"


def _allowed_per_band(model, bands: Sequence[float]) -> str:
    """'every band allows old at most 1 replica (the profile's replica_limits)' when the
    bands allow the same replicas per generation, else ''."""
    per_band = []
    for band in bands:
        terms = terms_for_band(model, band)
        per_band.append({g: terms.max_replicas(g) for g in terms.order[1:]})
    if any(allowed != per_band[0] for allowed in per_band):
        return ""
    limits = model.profile.replica_limits
    parts = []
    for generation, allowed in per_band[0].items():
        text = f"{generation} at most {allowed} replica{'s' if allowed > 1 else ''}"
        if generation in limits and limits[generation] == allowed:
            text += " (the profile's replica_limits)"
        parts.append(text)
    return ("C(t) changes how many old replicas may replace a new one, and every band "
            f"allows the same: {', '.join(parts)}")


# ---- anything else -----------------------------------------------------------------------

def _difference_text(result: ReplayResult, like: PolicyRun, run: PolicyRun,
                     differ: Sequence[int]) -> str:
    if not differ:
        return "no step differs"
    first = differ[0]
    changes = like.placements[first].changes(run.placements[first])
    shown = ", ".join(f"{s} {a} -> {b}" for s, a, b in changes[:3])
    more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
    return (f"placements differ at {len(differ)} of {result.scenario.steps} steps (first at "
            f"{clock(result, first)}: {shown}{more})")


def _generic_reason(result: ReplayResult, like: PolicyRun, run: PolicyRun, exact: bool) -> str:
    if exact:
        if all(p == run.placements[0] for p in run.placements):
            return f"both ran one placement throughout ({run.placements[0].describe()})"
        return f"{run.name} made the same decisions as {like.name}"
    return _difference_text(result, like, run, _differing_steps(like, run))
