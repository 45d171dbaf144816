"""The plan as text: pruned set, ranking, search effort, and one line per level."""

from __future__ import annotations

import math

from ecoscale.model.app import AppModel
from ecoscale.planner.oracle import optimal_placement
from ecoscale.planner.table import PolicyTable, terms_for_band


def plan_text(model: AppModel, table: PolicyTable, oracle: bool = False) -> str:
    search = table.search
    lines = [
        f"ecoscale plan: {table.app}, SLO {table.slo_ms:.2f} ms p99, planning peak "
        f"{table.peak_qps:.0f} req/s",
        "C (slots of each generation that emit as much as one newest slot): "
        + ", ".join(f"{g} {c:.2f}" for g, c in table.carbon_ratio.items()),
        f"search space: {search['space_before']} placements -> {search['space_after']} after "
        f"pruning; {search['latency_evaluations']} latency evaluations for "
        f"{search['levels']} levels",
        f"non-critical (pruned, stay on old; own p99 rise at peak < "
        f"{search['prune_threshold_ms']} ms): {', '.join(table.non_critical) or '-'}",
        "criticality ranking (e2e p99 rise alone on old at peak): "
        + ", ".join(f"{s} {r:+.2f} ms" for s, r in table.ranking),
        "",
        f"{'band g/kWh':>10} {'max req/s':>10} {'on new':>7} {'slots':>6} {'p99 ms':>8} "
        f"{'gCO2e/h':>9}" + (f" {'oracle':>9} {'gap %':>6}" if oracle else ""),
    ]
    for level in table.levels:
        on_new = sum(1 for _, p in level.placement.items if p.generation == table.newest)
        slots = sum(p.replicas for _, p in level.placement.items)
        band = "-" if not math.isfinite(level.max_ci_g_per_kwh) else f"{level.max_ci_g_per_kwh:g}"
        line = (f"{band:>10} {level.max_load_qps:>10.0f} {on_new:>7d} {slots:>6d} "
                f"{level.p99_ms:>8.2f} {level.carbon_g_per_h:>9.1f}")
        if not level.feasible:
            line += "  (SLO cannot hold)"
        if oracle:
            terms = terms_for_band(model, level.max_ci_g_per_kwh)
            best = optimal_placement(model, level.max_load_qps, table.slo_ms, terms)
            if best.placement is not None:
                gap = 100 * (level.carbon_g_per_h / best.carbon_g_per_h - 1)
                line += f" {best.carbon_g_per_h:>9.1f} {gap:>6.2f}"
            else:
                line += f" {best.status:>9}"
        lines.append(line)
    return "\n".join(lines)
