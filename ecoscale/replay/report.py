"""Replay output: the terminal table, summary.csv, steps.csv, report.md and PNG plots."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

from ecoscale import __version__
from ecoscale.replay.duplicates import (
    CLOSE_CARBON_FRACTION,
    CLOSE_VIOLATION_PP,
    Likeness,
    likenesses,
)
from ecoscale.replay.engine import SUMMARY_COLUMNS, ReplayResult
from ecoscale.replay.plots import PLOT_NAMES, scenario_title, write_plots

RIGHT_SIZED_POLICIES = ("right-sized-new", "ecoscale-packed")

DATA_NAMES = ("summary.csv", "steps.csv", "report.md")
OUTPUT_NAMES = DATA_NAMES + PLOT_NAMES
"""Every file name write_outputs may write into its folder."""
NOTE_WIDTH = 100
PLOT_CAPTIONS = {
    "summary.png": "Carbon saving vs all-new against SLO-violation time, per policy, with the "
                   "papers' MinNew result",
    "load.png": "The replayed load",
    "carbon_intensity.png": "The grid carbon intensity, with the bands the carbon-aware "
                            "policies switch on",
    "placement.png": "Slots (replicas) per generation over time, per policy",
    "p99_vs_slo.png": "Modelled end-to-end p99 against the SLO; steps over it in red",
    "cumulative_carbon.png": "Cumulative carbon, each line ending with its total and saving",
}

def summary_table(result: ReplayResult) -> str:
    """The summary as an aligned text table, with SLO-violation minutes; rows that repeat
    an earlier row are marked in a last column and explained under the table."""
    likes = likenesses(result)
    lines = table_lines(result, likes)
    notes = duplicate_notes(likes)
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def table_lines(result: ReplayResult, likes: list[Likeness]) -> list[str]:
    """The aligned rows of the summary, the last column marking repeating rows; 'saving %'
    is against all-new, 'rs-new %' against right-sized-new ('-' when it did not run)."""
    summary = result.summary()
    marks = {like.policy: like.mark for like in likes}
    step_min = result.scenario.step_s / 60.0
    lines = [
        f"{'policy':<16}{'carbon kg':>10}{'embodied':>9}{'operat.':>9}{'saving %':>9}"
        f"{'rs-new %':>9}{'SLO viol %':>11}{'viol min':>9}{'moves':>6}  same as"
    ]
    for row in summary.itertuples(index=False):
        minutes = row.slo_violation_pct / 100 * result.scenario.steps * step_min
        sized = row.saving_vs_right_sized_new_pct
        sized_text = f"{sized:.1f}" if math.isfinite(sized) else "-"
        lines.append(
            f"{row.policy:<16}{row.carbon_kg:>10.2f}{row.embodied_kg:>9.2f}"
            f"{row.operational_kg:>9.2f}{row.saving_vs_all_new_pct:>9.1f}{sized_text:>9}"
            f"{row.slo_violation_pct:>11.2f}{minutes:>9.0f}{row.moves:>6d}  "
            f"{marks.get(row.policy, '')}".rstrip()
        )
    return lines


def _marks_legend() -> str:
    return (f"=: the same placements at every step, or the same figures; ~: carbon within "
            f"{100 * CLOSE_CARBON_FRACTION:g} % and SLO-violation time within "
            f"{CLOSE_VIOLATION_PP:g} points")


def duplicate_notes(likes: list[Likeness], width: int = NOTE_WIDTH) -> list[str]:
    """The 'same as' column explained: one wrapped paragraph per repeating row."""
    if not likes:
        return []
    lines = textwrap.wrap(f"Rows with the same result ({_marks_legend()}):", width,
                          break_on_hyphens=False)
    for like in likes:
        lines.extend(textwrap.wrap(like.sentence(), width, initial_indent="- ",
                                   subsequent_indent="  ", break_on_hyphens=False))
    return lines


def provenance_lines(result: ReplayResult) -> list[str]:
    scenario = result.scenario
    lines = [f"- {key.replace('_', ' ')}: {value}" for key, value in scenario.provenance.items()]
    lines.append(f"- carbon accounting: per occupied slot, embodied amortised over the "
                 f"lifetime (second-life servers: zero) + modelled power x PUE x grid "
                 f"intensity; ecoscale {__version__}")
    if any(run.name in RIGHT_SIZED_POLICIES for run in result.runs):
        lines.append("- right-sized policies (right-sized-new, ecoscale-packed): replicas hold "
                     "a share of a socket (their utilisation) and share sockets; a socket in "
                     "use is charged once (embodied + power at its total utilisation), an "
                     "empty one not at all (it serves other tenants); latency from the "
                     "co-location model (a replica queues at its own utilisation plus its "
                     "socket's other replicas'); 'rs-new %': saving against right-sized-new")
    lines.append("- SLO violation: a step whose modelled end-to-end p99 exceeds the SLO; "
                 "moves: service updates (a change of generation or replicas of one service)")
    return lines


def write_outputs(result: ReplayResult, out: Path, plots: bool = True) -> list[Path]:
    """Write summary.csv, steps.csv, report.md and (unless ``plots`` is False) the PNGs of
    PLOT_NAMES into ``out``; every name is in OUTPUT_NAMES."""
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
        written.extend(write_plots(result, likenesses(result), out))
    path = out / "report.md"
    path.write_text(report_markdown(result, [p.name for p in written]), encoding="utf-8")
    written.append(path)
    return written


def report_markdown(result: ReplayResult, files: list[str]) -> str:
    """report.md: the table, the duplicate rows explained, the plots embedded, provenance."""
    scenario = result.scenario
    start = f", starting {scenario.start}" if scenario.start else ""
    images = [name for name in PLOT_NAMES if name in files]
    parts = [
        "# ecoscale replay",
        "",
        scenario_title(scenario),
        "",
        f"{scenario.steps} steps of {scenario.step_s:g} s{start}; "
        f"SLO {scenario.slo_ms:.2f} ms end-to-end p99.",
        "",
    ]
    if "summary.png" in images:
        parts += [f"![{PLOT_CAPTIONS['summary.png']}](summary.png)", ""]
    likes = likenesses(result)
    parts += ["```", *table_lines(result, likes), "```", ""]
    if likes:
        parts += ["## Rows with the same result", "", f"{_marks_legend()}.", "",
                  *[f"- {like.sentence()}" for like in likes], ""]
    if any(name != "summary.png" for name in images):
        parts += ["## Plots", ""]
        for name in images:
            if name == "summary.png":
                continue
            parts += [f"### {PLOT_CAPTIONS.get(name, name)}", "", f"![{name}]({name})", ""]
    parts += [
        "## Where the numbers come from",
        *provenance_lines(result),
        "",
        "## Files",
        *[f"- `{name}`" for name in files],
        "",
    ]
    return "\n".join(parts)
