import csv

import numpy as np
import pytest

from ecoscale.cli import main
from ecoscale.model.placement import Placement
from ecoscale.replay.baselines import HpaCpuPolicy, StaticPolicy, baseline_policies
from ecoscale.replay.engine import SUMMARY_COLUMNS, Scenario, replay
from ecoscale.replay.scenario import ReplayOptions, build_scenario, parse_duration_s


@pytest.fixture(scope="module")
def default_result():
    """The default window and traces with the calibrated profile (the papers' figures)."""
    scenario = build_scenario(ReplayOptions(profile="calibrated"))
    return replay(scenario, baseline_policies(scenario.model.services, ["new", "old"]))


def test_the_default_profile_is_the_one_measured_on_the_lab():
    scenario = build_scenario(ReplayOptions(duration="2h"))
    assert scenario.model.profile.kind == "measured"
    assert scenario.model.profile.name == "lab"
    assert "MEASURED" in scenario.provenance["profile_statement"]
    result = replay(scenario, baseline_policies(scenario.model.services, ["new", "old"]))
    rows = result.summary().set_index("policy")
    assert rows.loc["all-new", "slo_violation_pct"] == 0.0   # all-new meets its own SLO


def test_default_replay_shape(default_result):
    scenario = default_result.scenario
    assert scenario.steps == 1440 and scenario.step_s == 60
    assert float(scenario.load_qps.max()) == pytest.approx(3000.0)
    summary = default_result.summary()
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert list(summary.policy) == ["all-new", "all-old", "hpa-cpu", "carbon-ceiling"]


def test_all_old_saves_much_carbon_and_violates_often(default_result):
    rows = default_result.summary().set_index("policy")
    assert rows.loc["all-new", "slo_violation_pct"] == 0.0
    assert rows.loc["all-new", "saving_vs_all_new_pct"] == 0.0
    # the papers: all-old violates the SLO about 2/3 of a diurnal day
    assert 50.0 <= rows.loc["all-old", "slo_violation_pct"] <= 80.0
    assert rows.loc["all-old", "saving_vs_all_new_pct"] >= 60.0
    assert rows.loc["all-old", "embodied_kg"] == 0.0  # second-life servers


def test_carbon_adds_up(default_result):
    rows = default_result.summary().set_index("policy")
    for policy in rows.index:
        row = rows.loc[policy]
        assert row.carbon_kg == pytest.approx(row.embodied_kg + row.operational_kg)
    steps = default_result.steps()
    per_policy = steps.groupby("policy").carbon_g.sum() / 1000
    for policy in rows.index:
        assert per_policy[policy] == pytest.approx(rows.loc[policy, "carbon_kg"])


def test_hpa_scales_the_bottleneck_at_peak_and_back(default_result):
    run = next(r for r in default_result.runs if r.name == "hpa-cpu")
    replicas = np.array([p["post-storage-service"].replicas for p in run.placements])
    assert replicas.max() >= 2 and replicas[-1] == 1
    assert all(p.generation == "new" for placement in run.placements for _, p in placement.items)


def test_carbon_ceiling_caps_replicas_when_the_grid_is_dirty(social_model):
    load = np.full(30, 3000.0)   # heavy enough for HPA to want 2 replicas of post-storage
    scenario = Scenario(social_model, load, np.full(30, 400.0), 60.0, slo_ms=1e9)
    services = social_model.services
    hpa = HpaCpuPolicy("hpa", services)
    capped = baseline_policies(services, ["new"])[-1]
    result = replay(scenario, [hpa, capped])
    slots = {run.name: max(sum(p.replicas for _, p in pl.items) for pl in run.placements)
             for run in result.runs}
    assert slots["hpa"] > len(services)
    assert slots["carbon-ceiling"] == len(services)   # above 250 g/kWh: one replica each


def test_moves_count_service_updates(social_model):
    services = social_model.services
    a = Placement.uniform(services, "new")
    b = Placement.uniform(services, "old")

    class Flip:
        name = "flip"
        feedback = frozenset()

        def initial_state(self):
            return 0

        def decide(self, observation, state):
            from ecoscale.control.policy import Decision
            return Decision(a if state % 2 == 0 else b), state + 1

    scenario = Scenario(social_model, np.full(4, 100.0), np.full(4, 200.0), 60.0, slo_ms=50)
    result = replay(scenario, [Flip(), StaticPolicy("s", a)])
    summary = result.summary().set_index("policy")
    assert summary.loc["flip", "moves"] == 3 * len(services)
    assert summary.loc["s", "moves"] == 0


@pytest.mark.parametrize("text,seconds", [("60s", 60), ("1m", 60), ("24h", 86400), ("7d", 604800),
                                          ("90", 90), ("1w", 604800)])
def test_durations(text, seconds):
    assert parse_duration_s(text) == seconds


def test_cli_replay_writes_everything(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["replay", "--profile", "calibrated", "--duration", "6h", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "all-old" in printed and "Where the numbers come from" in printed
    assert "CALIBRATED, NOT MEASURED" in printed and "modelled" in printed
    with open(out / "summary.csv") as handle:
        header = next(csv.reader(handle))
    assert header == SUMMARY_COLUMNS
    for name in ("steps.csv", "report.md", "load.png", "carbon_intensity.png", "placement.png",
                 "p99_vs_slo.png", "cumulative_carbon.png"):
        assert (out / name).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "IPCC AR5" in report and "power source" in report


@pytest.mark.parametrize("args,fragment", [
    (["--load-trace", "nope"], "no shipped load trace"),
    (["--app", "nope"], "shipped apps"),
    (["--step", "fast"], "not a duration"),
    (["--policies", "all-new,magic"], "unknown policies magic"),
    (["--peak-qps", "-5"], "must be a number > 0"),
    (["--start", "1999-01-01"], "outside the trace"),
])
def test_cli_replay_bad_input_is_a_clear_error(tmp_path, capsys, args, fragment):
    try:
        code = main(["replay", "--no-plots", "--out", str(tmp_path), *args])
    except SystemExit as exc:   # a bad flag value: argparse's usage error
        code = exc.code
    assert code == 2
    assert fragment in capsys.readouterr().err


def test_other_app_and_traces_replay(tmp_path):
    code = main(["replay", "--no-plots", "--out", str(tmp_path), "--load-trace", "google2011",
                 "--carbon-trace", "ERCO", "--duration", "12h", "--policies", "all-new,all-old"])
    assert code == 0
