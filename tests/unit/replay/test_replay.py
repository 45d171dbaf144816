import csv

import numpy as np
import pytest

from ecoscale.cli import main
from ecoscale.model.placement import Placement
from ecoscale.model.trace import parse_duration_s
from ecoscale.replay.baselines import HpaCpuPolicy, StaticPolicy, baseline_policies
from ecoscale.replay.engine import SUMMARY_COLUMNS, Scenario, replay
from ecoscale.replay.scenario import ReplayOptions, build_scenario


@pytest.fixture(scope="module")
def default_result():
    """The default window and traces with the calibrated profile (the papers' figures)."""
    scenario = build_scenario(ReplayOptions(profile="calibrated"))
    return replay(scenario, baseline_policies(scenario.model.services, ["new", "old"], "new"))


def test_the_default_profile_is_calibrated_and_lab_is_one_flag_away():
    scenario = build_scenario(ReplayOptions(duration="2h"))
    assert scenario.model.profile.name == "calibrated"
    assert scenario.model.profile.kind != "measured"
    lab = build_scenario(ReplayOptions(duration="2h", profile="lab"))
    assert lab.model.profile.kind == "measured"
    assert lab.model.profile.name == "lab"
    assert "MEASURED" in lab.provenance["profile_statement"]
    result = replay(lab, baseline_policies(lab.model.services, ["new", "old"], "new"))
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
    hpa = HpaCpuPolicy("hpa", services, "new")
    capped = baseline_policies(services, ["new"], "new")[-1]
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


@pytest.mark.parametrize("args,fragment,code", [
    pytest.param(["--load-trace", "nope"], "no shipped load trace", 1, id="unknown-trace"),
    pytest.param(["--app", "nope"], "shipped apps", 1, id="unknown-app"),
    pytest.param(["--step", "fast"], "not a duration", 2, id="bad-step"),
    pytest.param(["--policies", "all-new,magic"], "unknown policies magic", 2,
                 id="unknown-policy"),
    pytest.param(["--peak-qps", "-5"], "must be a number > 0", 2, id="negative-peak"),
    pytest.param(["--start", "1999-01-01"], "outside the trace", 1, id="window-outside"),
])
def test_cli_replay_bad_input_is_a_clear_error(tmp_path, capsys, args, fragment, code):
    """Runtime errors (a file or trace that is not there) exit 1, usage errors exit 2."""
    assert main(["replay", "--no-plots", "--out", str(tmp_path), *args]) == code
    assert fragment in capsys.readouterr().err


def test_other_app_and_traces_replay(tmp_path):
    code = main(["replay", "--no-plots", "--out", str(tmp_path), "--load-trace", "google2011",
                 "--carbon-trace", "ERCO", "--duration", "12h", "--policies", "all-new,all-old"])
    assert code == 0


# ecoscale against the per-step oracle on the default window (calibrated profile, CISO,
# one-minute steps). Google 2011's hourly load is smooth: the growth margin shrinks to 1 %
# and ecoscale comes within 1 % of the oracle. WorldCup98's per-minute load jumps 2.8 % a
# minute (median; 11 % at the 99th percentile) while one more old slot costs ~1.5 % of the
# carbon: a daemon that sees last minute's load must keep the full margin and a 300 s
# window, which leaves ~1.4 % (the oracle knows each minute's load; 2.6 % before levels
# knew their capacity). The bounds are the measured figures, rounded up.
# On Texas' (ERCO) dirtier grid the same holds; the papers' 67.3 % saving is for CISO (on
# ERCO even the oracle saves less on Google's load).
ORACLE_CASES = [("google2011", "CISO", 1.0), ("worldcup98", "CISO", 1.5),
                ("google2011", "ERCO", 1.0), ("worldcup98", "ERCO", 1.5)]


@pytest.fixture(scope="module", params=ORACLE_CASES, ids=[f"{c[0]}-{c[1]}" for c in ORACLE_CASES])
def against_oracle(request):
    from ecoscale.replay.policies import all_policies

    trace, grid, bound_pct = request.param
    scenario = build_scenario(ReplayOptions(profile="calibrated", load_trace=trace,
                                            carbon_trace=grid))
    result = replay(scenario, all_policies(scenario, names=("all-new", "ecoscale", "oracle")))
    return result, grid, bound_pct


def test_ecoscale_comes_close_to_the_per_step_oracle(against_oracle):
    result, grid, bound_pct = against_oracle
    rows = result.summary().set_index("policy")
    above_pct = 100 * (rows.loc["ecoscale", "carbon_kg"] / rows.loc["oracle", "carbon_kg"] - 1)
    assert 0 <= above_pct <= bound_pct
    if grid == "CISO":
        assert rows.loc["ecoscale", "saving_vs_all_new_pct"] >= 67.3     # the papers' figure
    assert rows.loc["ecoscale", "slo_violation_pct"] == 0.0          # and the papers' 2.56 %
    assert rows.loc["oracle", "slo_violation_pct"] == 0.0


def test_ecoscale_starts_at_its_level_as_if_it_had_been_running(against_oracle):
    result, _, _ = against_oracle
    run = next(r for r in result.runs if r.name == "ecoscale")
    # no ramp from all-new at the window's start (8 moves toward old a decision, the rate
    # limit, used to keep 18 services on new servers in the first minute): the table's level
    assert all(p.generation == "old" for _, p in run.placements[0].items)
    assert run.moves[:5].sum() == 0


@pytest.mark.parametrize("period_s,expected_s", [(30.0, 60.0), (60.0, 60.0), (300.0, 300.0)],
                         ids=["shorter", "equal", "longer"])
def test_the_growth_horizon_spans_at_least_one_replay_step(period_s, expected_s):
    # with 5-minute steps a 60 s horizon would never see two observations: full margin always
    from ecoscale.planner.table import Hysteresis, PolicyTable
    from ecoscale.replay.policies import for_period

    table = PolicyTable("toy", 10.0, 100.0, "new", (), (), {}, {}, hysteresis=Hysteresis())
    assert for_period(table, period_s).hysteresis.growth_horizon_s == expected_s
