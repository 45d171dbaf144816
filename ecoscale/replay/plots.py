"""PNG plots of a replay: the headline figure and what happened over time.

Every title names the app, the profile, the load trace and the grid region with their dates.
Policies that ran the same placements at every step share one line (or one row), labelled
"a = b"; every other policy keeps one colour, line style and marker in every plot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ecoscale.replay.baselines import HpaCpuPolicy
from ecoscale.replay.duplicates import Likeness
from ecoscale.replay.engine import PolicyRun, ReplayResult, Scenario
from ecoscale.replay.policies import EcoscalePolicy

PLOT_NAMES = ("summary.png", "load.png", "carbon_intensity.png", "placement.png",
              "p99_vs_slo.png", "cumulative_carbon.png")
PAPERS_MINNEW = (
    # (trace, saving vs all-new %, SLO-violation time %): EcoScale (YArch 2024), MinNew
    ("Google trace", 67.3, 2.56),
    ("Wikipedia trace", 72.0, 2.56),
)
"""The papers' result for MinNew; the violation time (2.56 %) is reported once for both."""
STYLES = {
    "all-new": {"color": "#222222", "ls": "-", "lw": 2.4, "marker": "s"},
    "all-old": {"color": "#8c8c8c", "ls": "-", "lw": 1.4, "marker": "v"},
    "hpa-cpu": {"color": "#1f77b4", "ls": "--", "lw": 1.6, "marker": "^"},
    "carbon-ceiling": {"color": "#17becf", "ls": ":", "lw": 2.2, "marker": "<"},
    "noscale": {"color": "#9467bd", "ls": "-", "lw": 1.6, "marker": "D"},
    "minnew": {"color": "#8c564b", "ls": "--", "lw": 1.6, "marker": "d"},
    "ecoscale": {"color": "#2ca02c", "ls": "-", "lw": 2.6, "marker": "o"},
    "ecoscale-ct": {"color": "#bcbd22", "ls": "--", "lw": 1.8, "marker": "P"},
    "oracle": {"color": "#d62728", "ls": ":", "lw": 2.0, "marker": "X"},
    "ecoscale-packed": {"color": "#00695c", "ls": "-.", "lw": 2.4, "marker": "h"},
    "oracle-packed": {"color": "#7f0000", "ls": ":", "lw": 2.0, "marker": "x"},
}
_SPARE = ["#e377c2", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a"]
GENERATION_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]
P99_AXIS_TOP = 1.5
"""The p99 plot's axis ends at this multiple of the SLO; higher values show at the top."""
DPI = 90


def style(name: str) -> dict:
    """Colour, line style, width and marker of a policy (stable across plots)."""
    if name in STYLES:
        return dict(STYLES[name])
    spare = _SPARE[sum(map(ord, name)) % len(_SPARE)]
    return {"color": spare, "ls": "-.", "lw": 1.6, "marker": "X"}


def _line(name: str) -> dict:
    s = style(name)
    return {"color": s["color"], "ls": s["ls"], "lw": s["lw"]}


# ---- titles ------------------------------------------------------------------------------

def span_text(start: str | None, steps: int, step_s: float, offset_s: float = 0.0) -> str:
    """'1998-07-01 00:00..23:59 UTC' (first to last step), or '+0..+24 h' without a start."""
    if start is None:
        first = offset_s / 3600
        return f"+{first:g}..+{first + steps * step_s / 3600:g} h of the trace"
    begin = pd.Timestamp(start)
    end = begin + pd.Timedelta(seconds=(steps - 1) * step_s)
    if end.date() == begin.date():
        tail = end.strftime("%H:%M")
    elif end.year == begin.year:
        tail = end.strftime("%m-%d %H:%M")
    else:
        tail = end.strftime("%Y-%m-%d %H:%M")
    return f"{begin.strftime('%Y-%m-%d %H:%M')}..{tail} UTC"


def scenario_title(scenario: Scenario) -> str:
    """App, profile, load trace and grid region with their dates: the line under a title."""
    app = scenario.model.topology.app
    profile = scenario.model.profile.name
    load = scenario.load_trace or "load trace"
    grid = scenario.carbon_trace or "carbon trace"
    return (f"{app} (profile {profile}); load {load}, "
            f"{span_text(scenario.start, scenario.steps, scenario.step_s, scenario.load_offset_s)}"
            f"; grid {grid}, {span_text(scenario.carbon_start, scenario.steps, scenario.step_s)}")


def hours_label(scenario: Scenario, start: str | None = "load") -> str:
    """'hours from 1998-07-01 00:00 UTC': the load window's start, or ``start``."""
    start = scenario.start if start == "load" else start
    if start is None:
        return "hours from the window's start"
    return f"hours from {pd.Timestamp(start).strftime('%Y-%m-%d %H:%M')} UTC"


# ---- groups of identical runs -------------------------------------------------------------

def groups(result: ReplayResult, likes: Sequence[Likeness]) -> list[list[PolicyRun]]:
    """Runs grouped with the earlier run whose placements they repeat at every step."""
    same = {like.policy: like.like for like in likes if like.kind == "same placements"}
    by_name = {run.name: run for run in result.runs}
    out: dict[str, list[PolicyRun]] = {}
    for run in result.runs:
        leader = same.get(run.name, run.name)
        out.setdefault(leader, []).append(by_name[run.name])
    return list(out.values())


def group_label(group: Sequence[PolicyRun]) -> str:
    return " = ".join(run.name for run in group)


def spread(positions: Sequence[float], gap: float, low: float, high: float) -> list[float]:
    """Positions moved apart to at least ``gap`` from each other (order kept), kept within
    [low, high] where there is room (above ``high`` when there is not)."""
    order = sorted(range(len(positions)), key=lambda i: positions[i])
    placed = [float(positions[i]) for i in order]

    def push_up() -> None:
        for i in range(1, len(placed)):
            placed[i] = max(placed[i], placed[i - 1] + gap)

    push_up()
    if placed and placed[-1] > high:
        placed[-1] = high
        for i in range(len(placed) - 2, -1, -1):
            placed[i] = min(placed[i], placed[i + 1] - gap)
    if placed and placed[0] < low:
        placed[0] = low
        push_up()
    out = [0.0] * len(positions)
    for rank, i in enumerate(order):
        out[i] = placed[rank]
    return out


# ---- the plots -----------------------------------------------------------------------------

def write_plots(result: ReplayResult, likes: Sequence[Likeness], out: Path) -> list[Path]:
    """Write every PNG of PLOT_NAMES into ``out``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    run_groups = groups(result, likes)
    close = {like.policy: like for like in likes if like.kind != "same placements"}

    def save(fig, name: str) -> None:
        path = out / name
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
        written.append(path)

    save(summary_figure(plt, result, likes), "summary.png")
    save(load_figure(plt, result), "load.png")
    save(carbon_figure(plt, result), "carbon_intensity.png")
    save(placement_figure(plt, result, run_groups, close), "placement.png")
    save(p99_figure(plt, result, run_groups, close), "p99_vs_slo.png")
    save(cumulative_figure(plt, result, run_groups), "cumulative_carbon.png")
    return written


def _edge_aware(fraction: float) -> str:
    """Horizontal alignment of a text at ``fraction`` of the x axis that stays inside."""
    return "left" if fraction < 0.3 else "right" if fraction > 0.7 else "center"


def _hours(scenario: Scenario) -> np.ndarray:
    return np.arange(scenario.steps) * scenario.step_s / 3600.0


def _titled(fig, ax, what: str, scenario: Scenario) -> None:
    ax.set_title(f"{what}\n{scenario_title(scenario)}", fontsize=9.5, loc="left")


def summary_figure(plt, result: ReplayResult, likes: Sequence[Likeness]):
    """Carbon saving vs all-new (y) against SLO-violation time (x), one point per result:
    every policy at left, the region around the papers' point zoomed at right."""
    scenario = result.scenario
    points = _summary_points(result)
    same = {(like.policy, like.like) for like in likes if like.kind == "same placements"}

    def joined(names: list[str]) -> str:
        """'a = b' for runs with the same placements, 'a, b' for the same figures only."""
        if all((name, names[0]) in same for name in names[1:]):
            return " = ".join(names)
        return ", ".join(names)
    fig, (whole, zoom) = plt.subplots(1, 2, figsize=(12, 5.6),
                                      gridspec_kw={"width_ratios": [1, 1.25]})
    fig.subplots_adjust(left=0.06, right=0.98, top=0.83, bottom=0.16, wspace=0.12)
    papers_y = [saving for _, saving, _ in PAPERS_MINNEW]
    papers_x = max(violation for *_, violation in PAPERS_MINNEW)
    box_x = (-0.3, max(5.8, papers_x * 2.3))
    ours = [y for (x, y), names in points.items() if x <= box_x[1]
            and any(n.startswith("ecoscale") or n == "oracle" for n in names)]
    box_y = (min([min(papers_y) - 8, *[y - 4 for y in ours]]),
             max([max(papers_y), *ours]) + 4)
    inside = {key for key in points if box_x[0] <= key[0] <= box_x[1]
              and box_y[0] <= key[1] <= box_y[1]}

    # left: every policy (x: linear to 5 %, logarithmic above)
    linthresh = 5.0
    whole.set_xscale("symlog", linthresh=linthresh, linscale=1.0)
    xs = [x for x, _ in points] + [papers_x]
    ys = [y for _, y in points] + papers_y
    ticks = [t for t in (0, 1, 2, 5, 10, 20, 50, 100) if t <= max(max(xs) * 1.3, 10)]
    whole.set_xlim(-0.5, max(max(xs) * 2.2, 20))
    whole.set_xticks(ticks)
    whole.set_xticklabels([f"{t:g}" for t in ticks])
    whole.set_ylim(min(min(ys) - 8, -5), max(max(ys) + 8, 80))
    whole.add_patch(plt.Rectangle((box_x[0], box_y[0]), box_x[1] - box_x[0],
                                  box_y[1] - box_y[0], fill=False, ec="#555555", lw=0.8,
                                  ls="--"))
    whole.text(box_x[1], box_y[0], " zoomed\n at right", fontsize=7, color="#555555",
               va="top")
    _draw_papers(whole, ms=11)
    labels = []
    for (x, y), names in points.items():
        _draw_point(whole, x, y, names[0], ms=8)
        if (x, y) not in inside:
            labels.append((x, y, joined(names), style(names[0])["color"]))
    _label_points(fig, whole, labels, cluster_px=70)
    unplotted = [row.policy for row in result.summary().itertuples(index=False)
                 if not np.isfinite(row.saving_vs_all_new_pct)]
    if unplotted:
        whole.text(0.5, 0.35, f"no saving for {', '.join(unplotted)}:\nthe reference "
                   "(all-new) was not replayed", transform=whole.transAxes, ha="center",
                   fontsize=8.5, color="#b22222", wrap=True)
    whole.axhline(0, color="#999999", lw=0.8)
    whole.set_xlabel(f"time in SLO violation (% of steps; linear to {linthresh:g} %, "
                     "log above)")
    whole.set_ylabel("carbon saving vs all-new (%)")
    whole.grid(True, alpha=0.3)
    whole.set_title("every policy", fontsize=9)

    # right: near the papers' point, linear, with the figures
    zoom.set_xlim(*box_x)
    zoom.set_ylim(*box_y)
    best_saving, best_violation = PAPERS_MINNEW[0][1], PAPERS_MINNEW[0][2]
    zoom.fill_between([box_x[0], best_violation], best_saving, box_y[1], color="#2ca02c",
                      alpha=0.09, lw=0)
    _draw_papers(zoom, ms=15)
    labels = []
    for (x, y), names in points.items():
        if (x, y) in inside:
            _draw_point(zoom, x, y, names[0], ms=10)
            labels.append((x, y, f"{joined(names)}: {y:.1f} %, {x:.2f} %",
                           style(names[0])["color"]))
    for trace, saving, violation in PAPERS_MINNEW:
        labels.append((violation, saving, f"papers' MinNew, {trace}: {saving:g} %, "
                                          f"{violation:g} %", "#8a6d00"))
    _label_points(fig, zoom, labels, cluster_px=150)
    zoom.set_xlabel("time in SLO violation (% of steps)")
    zoom.grid(True, alpha=0.3)
    zoom.set_title(f"zoom; green: better than the papers' MinNew, {PAPERS_MINNEW[0][0]} "
                   f"({best_saving:g} %, {best_violation:g} %)", fontsize=9)
    fig.text(0.06, 0.955, "Carbon saving vs SLO-violation time, per policy (better: up and "
             f"left)\n{scenario_title(scenario)}", fontsize=10, va="top")
    fig.text(0.98, 0.015, "Stars: EcoScale papers (YArch 2024), MinNew on socialNetwork; the "
             "2.56 % violation time is reported once for both traces. Replay figures are "
             "modelled (report.md).", fontsize=7, ha="right", color="#555555")
    return fig


def _summary_points(result: ReplayResult) -> dict[tuple[float, float], list[str]]:
    """(violation %, saving %) as printed -> the policies at that point."""
    points: dict[tuple[float, float], list[str]] = {}
    for row in result.summary().itertuples(index=False):
        saving = row.saving_vs_all_new_pct
        if not np.isfinite(saving):
            continue
        key = (round(float(row.slo_violation_pct), 2), round(float(saving), 1))
        points.setdefault(key, []).append(row.policy)
    return points


def _draw_point(ax, x: float, y: float, name: str, ms: float) -> None:
    s = style(name)
    ax.plot([x], [y], marker=s["marker"], ms=ms, ls="none", color=s["color"], mec="white",
            mew=0.8, zorder=3)


def _draw_papers(ax, ms: float) -> None:
    for trace, saving, violation in PAPERS_MINNEW:
        filled = trace == PAPERS_MINNEW[0][0]
        ax.plot([violation], [saving], marker="*", ms=ms, ls="none", zorder=4,
                mfc="#ffd700" if filled else "none", mec="#8a6d00", mew=1.2)


def _label_points(fig, ax, labels: list[tuple[float, float, str, str]],
                  cluster_px: float) -> None:
    """Labels to the right of their points; labels of points closer than ``cluster_px``
    in x are moved apart vertically and joined to their point by a thin line."""
    if not labels:
        return
    to_pixels = ax.transData.transform
    from_pixels = ax.transData.inverted().transform
    pixels = [to_pixels((x, y)) for x, y, _, _ in labels]
    clusters: list[list[int]] = []
    for i in sorted(range(len(labels)), key=lambda i: pixels[i][0]):
        if clusters and pixels[i][0] - pixels[clusters[-1][0]][0] < cluster_px:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    bbox = ax.get_window_extent()
    for cluster in clusters:
        ys = spread([pixels[i][1] for i in cluster], 14.0, bbox.y0 + 8, bbox.y1 - 8)
        x_text = max(pixels[i][0] for i in cluster) + 16
        for i, y_pixel in zip(cluster, ys, strict=True):
            x, y, text, colour = labels[i]
            x_data, y_data = from_pixels((x_text, y_pixel))
            ax.annotate(text, (x, y), xytext=(x_data, y_data), fontsize=8, color=colour,
                        va="center", annotation_clip=False,
                        arrowprops={"arrowstyle": "-", "color": colour, "lw": 0.6,
                                    "alpha": 0.7, "shrinkA": 0, "shrinkB": 4})


def load_figure(plt, result: ReplayResult):
    scenario = result.scenario
    hours = _hours(scenario)
    fig, ax = plt.subplots(figsize=(10, 3.4))
    fig.subplots_adjust(left=0.08, right=0.97, top=0.8, bottom=0.16)
    ax.plot(hours, scenario.load_qps, color="tab:blue", lw=1.2)
    peak = int(np.argmax(scenario.load_qps))
    top = float(scenario.load_qps[peak])
    ax.annotate(f"peak {top:.0f} req/s at {hours[peak]:.1f} h: the plans (noscale, minnew, "
                "the ecoscale tables) are made for it", (hours[peak], top),
                xytext=(hours[peak], top * 1.12), fontsize=8, va="bottom",
                ha=_edge_aware(hours[peak] / max(float(hours[-1]), 1e-9)),
                arrowprops={"arrowstyle": "->", "lw": 0.7})
    ax.set_ylim(0, top * 1.3)
    ax.set_xlim(0, hours[-1] + scenario.step_s / 3600)
    ax.set(xlabel=hours_label(scenario), ylabel="front-end load (req/s)")
    ax.grid(True, alpha=0.3)
    _titled(fig, ax, "Load: the replayed trace, normalised and scaled to its peak", scenario)
    return fig


def carbon_figure(plt, result: ReplayResult):
    scenario = result.scenario
    hours = _hours(scenario)
    ci = scenario.ci_g_per_kwh
    fig, ax = plt.subplots(figsize=(10, 3.4))
    fig.subplots_adjust(left=0.08, right=0.97, top=0.8, bottom=0.16)
    ax.step(hours, ci, where="post", color="tab:green", lw=1.3)
    low, high = float(np.nanmin(ci)), float(np.nanmax(ci))
    pad = max((high - low) * 0.15, 10.0)
    ax.set_ylim(max(low - pad, 0), high + pad)
    ymin, ymax = ax.get_ylim()
    drawn_bands = False
    for run in result.runs:
        policy = run.policy
        if isinstance(policy, EcoscalePolicy) and policy.table.ci_aware and not drawn_bands:
            drawn_bands = True
            edges = [b for b in policy.table.bands if ymin < b < ymax]
            for band in edges:
                ax.axhline(band, color="tab:green", lw=0.7, ls=":", alpha=0.8)
            if edges:
                ax.plot([], [], color="tab:green", lw=0.7, ls=":",
                        label=f"{run.name}: band edges (one ladder per band)")
        if isinstance(policy, HpaCpuPolicy) and policy.carbon_bands:
            for band in policy.carbon_bands:
                if ymin < band.max_ci_g_per_kwh < ymax:
                    ax.axhline(band.max_ci_g_per_kwh, color="tab:cyan", lw=1.0, ls="--")
                    ax.text(0.995, band.max_ci_g_per_kwh, f"{run.name}: above "
                            f"{band.max_ci_g_per_kwh:.0f} g/kWh, at most "
                            f"{_plural(_next_ceiling(policy, band), 'replica')}",
                            fontsize=7, color="#0e7c86", va="bottom", ha="right",
                            transform=ax.get_yaxis_transform())
    if drawn_bands:
        ax.legend(fontsize=7, loc="lower left", frameon=False)
    ax.set_xlim(0, hours[-1] + scenario.step_s / 3600)
    ax.set(xlabel=hours_label(scenario, scenario.carbon_start) + ", aligned with the load "
           "window's start", ylabel="grid intensity (gCO2e/kWh)")
    ax.grid(True, alpha=0.3, axis="x")
    _titled(fig, ax, "Grid carbon intensity (hourly fuel mix x life-cycle factors)", scenario)
    return fig


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _next_ceiling(policy, band) -> int:
    bands = list(policy.carbon_bands)
    index = bands.index(band)
    return bands[index + 1].max_replicas if index + 1 < len(bands) else band.max_replicas


def placement_figure(plt, result: ReplayResult, run_groups: list[list[PolicyRun]],
                     close: dict[str, Likeness]):
    """One row per distinct run: slots (replicas) on each generation over time, stacked."""
    scenario = result.scenario
    hours = _hours(scenario)
    generations = list(scenario.model.hardware.generations)
    colours = {g: GENERATION_COLOURS[i % len(GENERATION_COLOURS)]
               for i, g in enumerate(generations)}
    slots = {group[0].name: slots_per_generation(group[0], generations)
             for group in run_groups}
    top = max(float(sum(s[g] for g in generations).max()) for s in slots.values())
    fig, axes = _multiples(plt, scenario, len(run_groups),
                           "Placement: slots (replicas; right-sized rows: sockets in use) per "
                           "generation, stacked, per policy")
    for ax, group in zip(axes, run_groups, strict=True):
        run = group[0]
        base = np.zeros(scenario.steps)
        for g in generations:
            values = slots[run.name][g]
            if values.any():
                ax.fill_between(hours, base, base + values, step="post", color=colours[g],
                                alpha=0.85, lw=0, label=g)
            base = base + values
        ax.set_ylim(0, top * 1.1)
        ax.set_yticks([0, int(top)])
        _row_label(ax, group, close)
        means = ", ".join(f"{g} {slots[run.name][g].mean():.1f}" for g in generations)
        ax.text(1.01, 0.5, f"mean slots:\n{means}\nmoves {int(run.moves.sum())}",
                transform=ax.transAxes, fontsize=7, va="center")
        ax.grid(True, alpha=0.3, axis="x")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[g]) for g in generations]
    axes[0].legend(handles, [f"slots or sockets on {g}" for g in generations], fontsize=7.5,
                   ncol=len(generations), loc="lower right", bbox_to_anchor=(1.0, 1.0),
                   frameon=False)
    return fig


def slots_per_generation(run: PolicyRun, generations: Sequence[str]) -> dict[str, np.ndarray]:
    """generation -> slots (replicas) the run used there at each step."""
    distinct: dict[int, dict[str, int]] = {}   # by object: policies repeat their objects
    for placement in run.placements:
        if id(placement) not in distinct:
            distinct[id(placement)] = placement.slots()
    rows = [distinct[id(p)] for p in run.placements]
    return {g: np.array([row.get(g, 0) for row in rows]) for g in generations}


def _row_label(ax, group: Sequence[PolicyRun], close: dict[str, Likeness]) -> None:
    """The policies of one row (and the row it is close to), above it at the left."""
    text = group_label(group)
    like = close.get(group[0].name)
    if like is not None:
        text += f"   (close to {like.like}: differs at {like.differing_steps} steps)"
    ax.set_title(text, loc="left", fontsize=8.5, color=style(group[0].name)["color"],
                 fontweight="bold", pad=2)


def _multiples(plt, scenario: Scenario, rows: int, what: str):
    """A column of ``rows`` panels sharing the time axis, titled at the top left."""
    height = 1.0 + 1.15 * rows
    fig, axes = plt.subplots(rows, 1, figsize=(10, height), sharex=True, squeeze=False)
    fig.subplots_adjust(left=0.08, right=0.84, top=1 - 0.8 / height, bottom=0.5 / height,
                        hspace=0.42)
    fig.text(0.02, 1 - 0.12 / height, f"{what}\n{scenario_title(scenario)}", fontsize=9.5,
             va="top")
    hours = _hours(scenario)
    axes[-1, 0].set_xlim(0, hours[-1] + scenario.step_s / 3600)
    axes[-1, 0].set_xlabel(hours_label(scenario))
    return fig, axes[:, 0]


def p99_figure(plt, result: ReplayResult, run_groups: list[list[PolicyRun]],
               close: dict[str, Likeness]):
    """One row per distinct run: modelled p99 on a linear axis up to P99_AXIS_TOP x SLO,
    violating steps shaded red, off-scale values drawn at the top."""
    scenario = result.scenario
    hours = _hours(scenario)
    slo = scenario.slo_ms
    axis_top = slo * P99_AXIS_TOP
    axis_low = p99_axis_low(result)
    fig, axes = _multiples(plt, scenario, len(run_groups),
                           f"Modelled end-to-end p99 vs the SLO (ms; linear axis "
                           f"{axis_low:g}..{axis_top:.0f} = {P99_AXIS_TOP:g} x SLO, higher "
                           "values drawn at the top); red: steps over the SLO")
    step_min = scenario.step_s / 60
    for ax, group in zip(axes, run_groups, strict=True):
        run = group[0]
        violated = result.violations(run)
        p99 = np.where(np.isfinite(run.p99_ms), run.p99_ms, np.inf)
        ax.fill_between(hours, axis_low, axis_top, where=violated, step="post", color="#d62728",
                        alpha=0.18, lw=0)
        ax.plot(hours, np.clip(p99, axis_low, axis_top), color=style(run.name)["color"],
                lw=1.0)
        ax.axhline(slo, color="black", ls="--", lw=0.9)
        ax.set_ylim(axis_low, axis_top + (axis_top - axis_low) * 0.02)
        ax.set_yticks([axis_low, slo, axis_top])
        ax.set_yticklabels([f"{axis_low:.0f}", f"SLO {slo:.1f}", f"{axis_top:.0f}"],
                           fontsize=7.5)
        _row_label(ax, group, close)
        count = int(violated.sum())
        note = (f"violates {count} of {scenario.steps}\nsteps ({100 * count / scenario.steps:.1f}"
                f" %, {count * step_min:.0f} min)" if count else "never violates")
        off = int(np.count_nonzero(p99 > axis_top))
        if off:
            worst = float(np.max(p99))
            worst_text = "no finite p99 (saturated)" if not np.isfinite(worst) else \
                f"max {worst:.0f} ms"
            note += f"\n{off} steps off scale,\n{worst_text}"
        ax.text(1.01, 0.5, note, transform=ax.transAxes, fontsize=7, va="center",
                color="#b22222" if count else "#1a6b1a")
        ax.grid(True, alpha=0.3, axis="x")
    return fig


def p99_axis_low(result: ReplayResult) -> float:
    """Bottom of the p99 axis (ms): a round number under the 1st percentile of every
    run's finite p99 and under 90 % of the SLO, never below 0."""
    values = np.concatenate([run.p99_ms[np.isfinite(run.p99_ms)] for run in result.runs])
    if not values.size:
        return 0.0
    low = float(np.percentile(values, 1)) * 0.9
    slo = result.scenario.slo_ms
    low = min(low, slo * 0.9)
    magnitude = 10 ** math.floor(math.log10(max(slo, 1e-9)))
    return max(0.0, math.floor(low / magnitude * 2) * magnitude / 2)


def cumulative_figure(plt, result: ReplayResult, run_groups: list[list[PolicyRun]]):
    """Cumulative carbon per distinct run, each line ending with its total and saving."""
    scenario = result.scenario
    hours = _hours(scenario)
    summary = result.summary().set_index("policy")
    fig, ax = plt.subplots(figsize=(10, 5))
    fig.subplots_adjust(left=0.08, right=0.64, top=0.86, bottom=0.11)
    ends = []
    for group in run_groups:
        run = group[0]
        total = np.cumsum(run.embodied_g + run.operational_g) / 1000
        ax.plot(hours, total, **_line(run.name))
        saving = summary.loc[run.name, "saving_vs_all_new_pct"]
        saving_text = f", saves {saving:.1f} %" if np.isfinite(saving) else ""
        ends.append((float(total[-1]), f"{group_label(group)}: {total[-1]:.2f} kg"
                                       f"{saving_text}", style(run.name)["color"]))
    top = max(e[0] for e in ends)
    ax.set_ylim(0, top * 1.05)
    ax.set_xlim(hours[0], hours[-1])
    gap = top * 1.05 * 0.055
    ys = spread([e[0] for e in ends], gap, 0.0, top * 1.05)
    for (value, text, colour), y in zip(ends, ys, strict=True):
        ax.annotate(text, (hours[-1], value), xytext=(hours[-1] * 1.03, y),
                    annotation_clip=False, fontsize=8, color=colour, va="center",
                    arrowprops={"arrowstyle": "-", "color": colour, "lw": 0.6})
    ax.set(xlabel=hours_label(scenario), ylabel="cumulative carbon (kgCO2e, modelled)")
    ax.grid(True, alpha=0.3)
    _titled(fig, ax, "Cumulative carbon (embodied + operational); saving vs all-new",
            scenario)
    return fig
