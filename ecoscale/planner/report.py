"""The plan as text and as data: pruned set, ranking, search effort, and one row per level.

Pure: no I/O. The CLI prints :func:`plan_text` (or :func:`plan_data` as JSON with --json)
and :func:`plan_warnings` on stderr.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from typing import Any

from ecoscale.model.app import AppModel
from ecoscale.model.packing import PackedPlacement
from ecoscale.planner.oracle import optimal_placement
from ecoscale.planner.table import PolicyTable, TableLevel, packing_data, terms_for_band

WIDTH = 100
"""Characters per line of the plan's text (long lists wrap at this width)."""
PEAK_TOLERANCE = 1e-9

MEETS_ALL = "ok"
MEETS_SLO_NOT_HEADROOM = "meets SLO, not the headroom"
MISSES_SLO = "SLO cannot hold even with all on new"


@dataclass(frozen=True)
class LevelRow:
    """One level of the table, as the plan reports it."""

    level: TableLevel
    on_new: int
    """Services on the newest generation."""
    slots: int
    """Replicas over all services."""
    status: str
    """MEETS_ALL, MEETS_SLO_NOT_HEADROOM or MISSES_SLO."""
    within_peak: bool
    """The level's load is at most the planning peak."""
    oracle_g_per_h: float | None = None
    """The exact optimum's carbon at this level (gCO2e/h), when asked for and found."""
    oracle_status: str = ""

    @property
    def gap_pct(self) -> float | None:
        if self.oracle_g_per_h is None or not self.oracle_g_per_h > 0:
            return None
        return 100 * (self.level.carbon_g_per_h / self.oracle_g_per_h - 1)


def planned_target_ms(table: PolicyTable) -> float:
    """The p99 the levels were planned to (ms): the SLO less the headroom."""
    target = table.search.get("planned_to_p99_ms")
    return float(target) if isinstance(target, int | float) else table.slo_ms


def level_status(level: TableLevel, slo_ms: float) -> str:
    """Whether a level met its planned target, only the SLO, or neither."""
    if level.feasible:
        return MEETS_ALL
    if level.p99_ms <= slo_ms * (1 + 1e-9):
        return MEETS_SLO_NOT_HEADROOM
    return MISSES_SLO


def level_rows(model: AppModel, table: PolicyTable, oracle: bool = False) -> list[LevelRow]:
    """Every level with its counts and status; with ``oracle``, the MILP's optimum too."""
    rows = []
    target = planned_target_ms(table)
    for level in table.levels:
        on_new = sum(1 for _, p in level.placement.items if p.generation == table.newest)
        slots = sum(p.replicas for _, p in level.placement.items)
        best_g: float | None = None
        best_status = ""
        if oracle:
            terms = terms_for_band(model, level.max_ci_g_per_kwh)
            best = optimal_placement(model, level.max_load_qps, target, terms)
            if best.placement is not None:
                best_g = float(best.carbon_g_per_h)
            else:
                best_status = str(best.status)
        rows.append(LevelRow(
            level=level, on_new=on_new, slots=slots,
            status=level_status(level, table.slo_ms),
            within_peak=level.max_load_qps <= table.peak_qps * (1 + PEAK_TOLERANCE),
            oracle_g_per_h=best_g, oracle_status=best_status,
        ))
    return rows


def _wrapped(label: str, items: list[str], width: int) -> list[str]:
    text = f"{label}: " + (", ".join(items) or "-")
    return textwrap.wrap(text, width=width, subsequent_indent="    ", break_on_hyphens=False)


def plan_text(model: AppModel, table: PolicyTable, oracle: bool = False,
              rows: list[LevelRow] | None = None, width: int = WIDTH) -> str:
    """The plan for a terminal: long lists wrapped at ``width``, levels in aligned columns."""
    rows = rows if rows is not None else level_rows(model, table, oracle)
    oracle = oracle or any(r.oracle_g_per_h is not None or r.oracle_status for r in rows)
    search = table.search
    target = planned_target_ms(table)
    head = (f"ecoscale plan: {table.app}, SLO {table.slo_ms:.2f} ms p99, planning peak "
            f"{table.peak_qps:.0f} req/s")
    if target < table.slo_ms:
        head += (f", levels planned to {target:.2f} ms (headroom "
                 f"{search.get('headroom', 0):g})")
    lines = textwrap.wrap(head, width=width, subsequent_indent="    ")
    lines += _wrapped("C (slots of each generation that emit as much as one newest slot)",
                      [f"{g} {c:.2f}" for g, c in table.carbon_ratio.items()], width)
    lines += textwrap.wrap(
        f"search space: {search['space_before']} placements -> {search['space_after']} after "
        f"pruning; {search['latency_evaluations']} latency evaluations for "
        f"{search['levels']} levels", width=width, subsequent_indent="    ")
    lines += _wrapped(f"non-critical (pruned, stay on old; own p99 rise at peak < "
                      f"{search['prune_threshold_ms']} ms)", list(table.non_critical), width)
    lines.append("criticality ranking (e2e p99 rise alone on old at peak, most critical "
                 "first):")
    lines += _ranking_columns(table.ranking, width)
    lines.append("")
    sized = any(row.level.right_sized for row in rows)
    count = ("replicas", 8) if sized else ("slots", 6)   # a right-sized replica is no slot
    header = (f"{'band g/kWh':>10} {'max req/s':>10} {'on new':>7} {count[0]:>{count[1]}} "
              f"{'p99 ms':>8} "
              f"{'gCO2e/h':>9}" + (f" {'oracle':>11} {'gap %':>6}" if oracle else "")
              + (f" {'packed':>6} {'sockets':<16}" if sized else "") + "  status")
    lines.append(header)
    above = any(not r.within_peak and r.status != MEETS_ALL for r in rows)
    for row in rows:
        level = row.level
        band = ("-" if not math.isfinite(level.max_ci_g_per_kwh)
                else f"{level.max_ci_g_per_kwh:g}")
        line = (f"{band:>10} {level.max_load_qps:>10.0f} {row.on_new:>7d} "
                f"{row.slots:>{count[1]}d} "
                f"{level.p99_ms:>8.2f} {level.carbon_g_per_h:>9.1f}")
        if oracle:
            gap = row.gap_pct
            if row.oracle_g_per_h is not None and gap is not None:
                line += f" {row.oracle_g_per_h:>11.1f} {gap:>6.2f}"
            else:
                line += f" {row.oracle_status or '-':>11} {'-':>6}"
        if sized:
            line += f" {_packed_at(level):>6} {_sockets_text(level):<16}"
        status = row.status if row.within_peak or row.status == MEETS_ALL else (
            f"{row.status} (> peak)")
        lines.append(f"{line}  {status}")
    if above:
        lines.append("(> peak): a level above the planning peak, planned for load spikes")
    if sized:
        lines += _shares_lines(rows, width)
    return "\n".join(lines)


def _packed_at(level: TableLevel) -> str:
    """The socket capacity a right-sized level was packed at ('70%'), or '-'."""
    if not level.right_sized or not math.isfinite(level.socket_capacity):
        return "-"
    return f"{level.socket_capacity:.0%}"


def _sockets_text(level: TableLevel) -> str:
    """Sockets in use per generation of a right-sized level ('old 14, new 2'), or
    'dedicated' for a level of one socket per replica."""
    if not isinstance(level.placement, PackedPlacement):
        return "dedicated"
    return ", ".join(f"{g} {n}" for g, n in sorted(level.placement.slots().items()))


def _shares_lines(rows: list[LevelRow], width: int) -> list[str]:
    """Per right-sized level, each service's replicas and share of a socket (sockets)."""
    lines = ["", *textwrap.wrap("right-sized levels, per service: replicas x generation, and "
                                "each replica's share of one socket (its CPU reservation)",
                                width=width)]
    for row in rows:
        level = row.level
        if not isinstance(level.placement, PackedPlacement):
            continue
        cells = [f"{s} {p.replicas}x{p.generation} {level.placement.share(s):.3f}"
                 for s, p in level.placement.items]
        lines += _wrapped(f"{_level_name(level)}, {_sockets_text(level)} sockets at "
                          f"{_packed_at(level)}", cells, width)
    return lines


def _ranking_columns(ranking: tuple[tuple[str, float], ...], width: int) -> list[str]:
    """The ranking as '1. service +x.xx ms' cells in as many columns as fit in ``width``."""
    if not ranking:
        return ["  -"]
    cells = [f"{i}. {service} {rise:+.2f} ms" for i, (service, rise) in
             enumerate(ranking, start=1)]
    cell_width = max(len(c) for c in cells) + 3
    columns = max(1, (width - 2) // cell_width)
    rows = math.ceil(len(cells) / columns)
    lines = []
    for r in range(rows):
        picked = [cells[c * rows + r] for c in range(columns) if c * rows + r < len(cells)]
        lines.append("  " + "".join(cell.ljust(cell_width) for cell in picked).rstrip())
    return lines


def plan_warnings(table: PolicyTable, rows: list[LevelRow]) -> list[str]:
    """One warning per kind of level within the planning peak that misses its target."""
    warnings = []
    target = planned_target_ms(table)
    missed = [r for r in rows if r.within_peak and r.status == MISSES_SLO]
    short = [r for r in rows if r.within_peak and r.status == MEETS_SLO_NOT_HEADROOM]

    def loads(selected: list[LevelRow]) -> str:
        return ", ".join(_level_name(r.level) for r in selected)

    if missed:
        warnings.append(f"{len(missed)} level(s) within the planning peak cannot keep the "
                        f"SLO ({table.slo_ms:.2f} ms) even with all on new: {loads(missed)}; "
                        "lower --peak-qps or raise --slo-ms")
    if short:
        warnings.append(f"{len(short)} level(s) within the planning peak meet the SLO but not "
                        f"the headroom target ({target:.2f} ms): {loads(short)}; lower "
                        "--headroom or --peak-qps")
    return warnings


def _level_name(level: TableLevel) -> str:
    band = "" if not math.isfinite(level.max_ci_g_per_kwh) else (
        f" at <= {level.max_ci_g_per_kwh:g} g/kWh")
    return f"{level.max_load_qps:.0f} req/s{band}"


def _sockets_data(level: TableLevel) -> dict[str, Any]:
    """A right-sized level's packing for --json: as the table file has it (socket capacity,
    each socket's replicas), and the sockets in use per generation."""
    if not isinstance(level.placement, PackedPlacement):
        return {}
    return {**packing_data(level), "sockets_in_use": level.placement.slots()}


def plan_data(table: PolicyTable, rows: list[LevelRow]) -> dict[str, Any]:
    """The plan as JSON-ready data: the search summary and every level (``--json``)."""
    def finite(value: float) -> float | None:
        return float(value) if math.isfinite(value) else None

    return {
        "app": table.app,
        "slo_ms": table.slo_ms,
        "planned_to_p99_ms": planned_target_ms(table),
        "peak_qps": table.peak_qps,
        "newest_generation": table.newest,
        "ci_aware": table.ci_aware,
        "carbon_ratio_C": dict(table.carbon_ratio),
        "search": dict(table.search),
        "non_critical": dict(table.non_critical),
        "ranking": [{"service": s, "e2e_rise_ms": r} for s, r in table.ranking],
        "levels": [{
            "max_load_qps": r.level.max_load_qps,
            "max_ci_g_per_kwh": finite(r.level.max_ci_g_per_kwh),
            "feasible": r.level.feasible,
            "status": r.status,
            "within_peak": r.within_peak,
            "p99_ms": finite(r.level.p99_ms),
            "carbon_g_per_h": r.level.carbon_g_per_h,
            "on_new": r.on_new,
            "slots": r.slots,
            "oracle_g_per_h": r.oracle_g_per_h,
            "gap_pct": r.gap_pct,
            "placement": {s: {"generation": p.generation, "replicas": p.replicas,
                              **({"share": r.level.placement.share(s)}
                                 if isinstance(r.level.placement, PackedPlacement) else {})}
                          for s, p in r.level.placement.items},
            **_sockets_data(r.level),
        } for r in rows],
        "warnings": plan_warnings(table, rows),
    }
