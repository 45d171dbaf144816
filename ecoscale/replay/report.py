"""Replay output: the terminal table, summary.csv, steps.csv, report.md and PNG plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ecoscale import __version__
from ecoscale.replay.engine import SUMMARY_COLUMNS, ReplayResult

OUTPUT_NAMES = ("summary.csv", "steps.csv", "report.md", "summary.png", "load.png",
                "carbon_intensity.png", "placement.png", "p99_vs_slo.png", "cumulative_carbon.png")
"""Every file name write_outputs may write (an output folder holds only these of a run)."""


def summary_table(result: ReplayResult) -> str:
    """The summary as an aligned text table, with SLO-violation minutes."""
    summary = result.summary()
    step_min = result.scenario.step_s / 60.0
    lines = [
        f"{'policy':<16}{'carbon kg':>11}{'embodied':>10}{'operat.':>10}{'saving %':>10}"
        f"{'SLO viol %':>12}{'viol min':>10}{'moves':>7}"
    ]
    for row in summary.itertuples(index=False):
        minutes = row.slo_violation_pct / 100 * result.scenario.steps * step_min
        lines.append(
            f"{row.policy:<16}{row.carbon_kg:>11.2f}{row.embodied_kg:>10.2f}"
            f"{row.operational_kg:>10.2f}{row.saving_vs_all_new_pct:>10.1f}"
            f"{row.slo_violation_pct:>12.2f}{minutes:>10.0f}{row.moves:>7d}"
        )
    return "\n".join(lines)


def provenance_lines(result: ReplayResult) -> list[str]:
    scenario = result.scenario
    lines = [f"- {key.replace('_', ' ')}: {value}" for key, value in scenario.provenance.items()]
    lines.append(f"- carbon accounting: per occupied slot, embodied amortised over the "
                 f"lifetime (second-life servers: zero) + modelled power x PUE x grid "
                 f"intensity; ecoscale {__version__}")
    lines.append("- SLO violation: a step whose modelled end-to-end p99 exceeds the SLO; "
                 "moves: service updates (a change of generation or replicas of one service)")
    return lines


def write_outputs(result: ReplayResult, out: Path, plots: bool = True) -> list[Path]:
    """Write summary.csv, steps.csv, report.md and (unless ``plots`` is False) PNGs."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    summary = result.summary()
    path = out / "summary.csv"
    summary.to_csv(path, index=False, columns=SUMMARY_COLUMNS, float_format="%.4f")
    written.append(path)
    steps = result.steps()
    path = out / "steps.csv"
    steps.to_csv(path, index=False, float_format="%.4f")
    written.append(path)
    if plots:
        written.extend(write_plots(result, steps, out))
    path = out / "report.md"
    path.write_text(report_markdown(result, [p.name for p in written]), encoding="utf-8")
    written.append(path)
    return written


def report_markdown(result: ReplayResult, files: list[str]) -> str:
    scenario = result.scenario
    start = f", starting {scenario.start}" if scenario.start else ""
    parts = [
        "# ecoscale replay",
        "",
        f"{scenario.steps} steps of {scenario.step_s:g} s{start}; "
        f"SLO {scenario.slo_ms:.2f} ms end-to-end p99.",
        "",
        "```",
        summary_table(result),
        "```",
        "",
        "## Where the numbers come from",
        *provenance_lines(result),
        "",
        "## Files",
        *[f"- `{name}`" for name in files],
        "",
    ]
    return "\n".join(parts)


def write_plots(result: ReplayResult, steps: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenario = result.scenario
    hours = np.arange(scenario.steps) * scenario.step_s / 3600.0
    written = []
    note = "modelled (see report.md)"

    def save(fig, name: str) -> None:
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(9, 3))
    ax.plot(hours, scenario.load_qps, color="tab:blue")
    ax.set(xlabel="hours", ylabel="front-end load (req/s)", title="Load (replayed trace)")
    save(fig, "load.png")

    fig, ax = plt.subplots(figsize=(9, 3))
    ax.plot(hours, scenario.carbon_g_per_kwh, color="tab:green")
    ax.set(xlabel="hours", ylabel="gCO2e/kWh", title="Grid carbon intensity")
    save(fig, "carbon_intensity.png")

    generations = list(scenario.model.hardware.generations)
    oldest = generations[-1]
    fig, ax = plt.subplots(figsize=(9, 4))
    for run in result.runs:
        frame = steps[steps.policy == run.name]
        ax.step(hours, frame[f"slots_{oldest}"].to_numpy(), where="post", label=run.name)
    ax.set(xlabel="hours", ylabel=f"slots on '{oldest}'",
           title=f"Placement: replicas on '{oldest}' servers per policy")
    ax.legend(fontsize=7, ncol=3)
    save(fig, "placement.png")

    fig, ax = plt.subplots(figsize=(9, 4))
    for run in result.runs:
        ax.plot(hours, np.minimum(run.p99_ms, scenario.slo_ms * 20), label=run.name, lw=0.8)
    ax.axhline(scenario.slo_ms, color="black", ls="--", label="SLO")
    ax.set_yscale("log")
    ax.set(xlabel="hours", ylabel="end-to-end p99 (ms)", title=f"p99 vs SLO, {note}")
    ax.legend(fontsize=7, ncol=3)
    save(fig, "p99_vs_slo.png")

    fig, ax = plt.subplots(figsize=(9, 4))
    for run in result.runs:
        ax.plot(hours, np.cumsum(run.embodied_g + run.operational_g) / 1000, label=run.name)
    ax.set(xlabel="hours", ylabel="kgCO2e", title=f"Cumulative carbon, {note}")
    ax.legend(fontsize=7, ncol=3)
    save(fig, "cumulative_carbon.png")
    return written
