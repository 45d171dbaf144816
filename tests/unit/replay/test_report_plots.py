"""Replay outputs: every file named in OUTPUT_NAMES, titles that name the scenario, report.md
embedding the PNGs, and plots that show what the numbers say."""

import re

import matplotlib
import numpy as np
import pytest

from ecoscale.replay import plots
from ecoscale.replay.duplicates import likenesses
from ecoscale.replay.engine import replay
from ecoscale.replay.policies import DEFAULT_POLICY_NAMES, all_policies
from ecoscale.replay.report import (
    OUTPUT_NAMES,
    RIGHT_SIZED_POLICIES,
    report_markdown,
    write_outputs,
)
from ecoscale.replay.scenario import ReplayOptions, build_scenario

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NO_ORACLE = tuple(name for name in DEFAULT_POLICY_NAMES if name != "oracle"
                  and name not in RIGHT_SIZED_POLICIES)   # those: test_rightsized.py


@pytest.fixture(scope="module")
def result():
    """Three hours of the default window on the lab profile (rows that repeat, all-old
    violating at every step)."""
    scenario = build_scenario(ReplayOptions(profile="lab", duration="3h"))
    return replay(scenario, all_policies(scenario, names=NO_ORACLE))


@pytest.fixture(scope="module")
def written(result, tmp_path_factory):
    out = tmp_path_factory.mktemp("replay")
    return out, write_outputs(result, out)


def test_every_written_file_is_in_output_names(written):
    out, paths = written
    names = [p.name for p in paths]
    assert sorted(names) == sorted(OUTPUT_NAMES)
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_NAMES)


def test_summary_png_is_written(written):
    out, _ = written
    data = (out / "summary.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_report_embeds_every_png(written):
    out, paths = written
    report = (out / "report.md").read_text()
    embedded = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert sorted(embedded) == sorted(p.name for p in paths if p.suffix == ".png")
    assert report.index("(summary.png)") < report.index("```")   # the headline first
    assert "Rows with the same result" in report


def test_report_without_plots_links_no_image(result):
    report = report_markdown(result, ["summary.csv", "steps.csv"])
    assert "![" not in report


@pytest.mark.parametrize(("start", "steps", "step_s", "offset_s", "text"), [
    ("1998-07-01T00:00:00+00:00", 1440, 60.0, 0.0, "1998-07-01 00:00..23:59 UTC"),
    ("1998-06-30T00:00:00+00:00", 4320, 60.0, 0.0, "1998-06-30 00:00..07-02 23:59 UTC"),
    ("2021-12-31T12:00:00+00:00", 48, 3600.0, 0.0, "2021-12-31 12:00..2022-01-02 11:00 UTC"),
    (None, 24, 3600.0, 7200.0, "+2..+26 h of the trace"),
], ids=["one-day", "three-days", "new-year", "no-timestamps"])
def test_span_text(start, steps, step_s, offset_s, text):
    assert plots.span_text(start, steps, step_s, offset_s) == text


def test_scenario_title_names_app_profile_traces_region_and_dates(result):
    title = plots.scenario_title(result.scenario)
    for fragment in ("socialNetwork", "profile lab", "worldcup98", "1998-07-01 00:00..02:59",
                     "CISO", "2022-01-01 00:00..02:59"):
        assert fragment in title


def _texts(fig) -> str:
    parts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        parts += [ax.get_title(loc) for loc in ("left", "center", "right")]
        parts += [t.get_text() for t in ax.texts]
    return "\n".join(parts)


FIGURES = {
    "summary.png": lambda r, likes, groups: plots.summary_figure(plt, r, likes),
    "load.png": lambda r, likes, groups: plots.load_figure(plt, r),
    "carbon_intensity.png": lambda r, likes, groups: plots.carbon_figure(plt, r),
    "placement.png": lambda r, likes, groups: plots.placement_figure(plt, r, groups, {}),
    "p99_vs_slo.png": lambda r, likes, groups: plots.p99_figure(plt, r, groups, {}),
    "cumulative_carbon.png": lambda r, likes, groups: plots.cumulative_figure(plt, r, groups),
}


@pytest.fixture(scope="module")
def figures(result):
    likes = likenesses(result)
    groups = plots.groups(result, likes)
    made = {name: build(result, likes, groups) for name, build in FIGURES.items()}
    yield made
    for fig in made.values():
        plt.close(fig)


def test_every_plot_has_a_builder_here():
    assert set(FIGURES) == set(plots.PLOT_NAMES)


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_title_names_the_scenario(figures, result, name):
    assert plots.scenario_title(result.scenario) in _texts(figures[name])


def test_identical_runs_share_one_row(result, figures):
    groups = plots.groups(result, likenesses(result))
    labels = [plots.group_label(g) for g in groups]
    assert "all-new = hpa-cpu = carbon-ceiling" in labels
    assert "noscale = minnew" in labels and "ecoscale = ecoscale-ct" in labels
    assert len(figures["placement.png"].axes) == len(groups)
    titles = [ax.get_title("left") for ax in figures["p99_vs_slo.png"].axes]
    assert titles == labels


def test_p99_marks_the_violating_steps(result, figures):
    run = next(r for r in result.runs if r.name == "all-old")
    count = int(result.violations(run).sum())
    assert count > 0
    assert f"violates {count} of {result.scenario.steps}" in _texts(figures["p99_vs_slo.png"])
    assert _texts(figures["p99_vs_slo.png"]).count("never violates") == 3
    for ax in figures["p99_vs_slo.png"].axes:
        assert ax.get_yscale() == "linear"
        low, high = ax.get_ylim()
        assert low < result.scenario.slo_ms < high <= 1.6 * result.scenario.slo_ms


def test_placement_shows_every_generation_a_row_uses(figures):
    by_title = {ax.get_title("left"): ax for ax in figures["placement.png"].axes}
    assert len(by_title["noscale = minnew"].collections) == 2     # new and old
    assert len(by_title["all-old"].collections) == 1
    assert len(by_title["all-new = hpa-cpu = carbon-ceiling"].collections) == 1


def test_cumulative_carbon_ends_with_total_and_saving(result, figures):
    text = _texts(figures["cumulative_carbon.png"])
    summary = result.summary().set_index("policy")
    for policy in ("all-old", "noscale", "ecoscale"):
        row = summary.loc[policy]
        assert f"{row.carbon_kg:.2f} kg, saves {row.saving_vs_all_new_pct:.1f} %" in text


def test_summary_marks_the_papers_point_and_every_result(result, figures):
    text = _texts(figures["summary.png"])
    assert "papers' MinNew, Google trace: 67.3 %, 2.56 %" in text
    assert "papers' MinNew, Wikipedia trace: 72 %" in text
    summary = result.summary().set_index("policy")
    ecoscale = summary.loc["ecoscale"]
    # points at one position share a label ("noscale, minnew, ecoscale, ecoscale-ct: ..."
    # when ecoscale comes within a rounding of noscale); runs that repeat join with "="
    assert re.search(rf"ecoscale(, | = )ecoscale-ct: {ecoscale.saving_vs_all_new_pct:.1f} %, "
                     rf"{ecoscale.slo_violation_pct:.2f} %", text)
    assert "all-old" in text


@pytest.mark.parametrize(("positions", "gap", "low", "high"), [
    ([0.0, 0.1, 0.2], 1.0, -100.0, 100.0),
    ([5.0, 1.0, 1.0, 9.0], 2.0, -100.0, 100.0),
    ([0.0, 10.0], 1.0, -100.0, 100.0),
    ([9.5, 9.6, 9.7], 1.0, 0.0, 10.0),
    ([0.1, 0.2, 0.3], 1.0, 0.0, 10.0),
], ids=["crowded", "unsorted-ties", "already-apart", "against-the-top", "against-the-bottom"])
def test_spread_keeps_order_gap_and_bounds(positions, gap, low, high):
    moved = plots.spread(positions, gap, low=low, high=high)
    order = np.argsort(positions, kind="stable")
    placed = np.array(moved)[order]
    assert np.all(np.diff(placed) >= gap - 1e-9)
    assert low - 1e-9 <= placed.min() and placed.max() <= high + 1e-9
    if all(abs(a - b) >= gap for i, a in enumerate(positions) for b in positions[i + 1:]):
        assert moved == positions


def test_summary_says_why_a_policy_has_no_point(social_model):
    from ecoscale.model.placement import Placement
    from ecoscale.replay.baselines import StaticPolicy
    from ecoscale.replay.engine import Scenario

    scenario = Scenario(social_model, np.full(4, 500.0), np.full(4, 200.0), 60.0, slo_ms=1e9)
    alone = replay(scenario, [StaticPolicy("all-old", Placement.uniform(social_model.services,
                                                                        "old"))])
    fig = plots.summary_figure(plt, alone, likenesses(alone))
    try:
        assert "no saving for all-old" in _texts(fig)
    finally:
        plt.close(fig)
