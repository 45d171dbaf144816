"""Rows that repeat an earlier row: found from the runs, marked in the table, explained."""

import numpy as np
import pytest

from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.replay.baselines import StaticPolicy, baseline_policies
from ecoscale.replay.duplicates import likenesses
from ecoscale.replay.engine import Scenario, replay
from ecoscale.replay.policies import DEFAULT_POLICY_NAMES, all_policies
from ecoscale.replay.report import summary_table
from ecoscale.replay.scenario import ReplayOptions, build_scenario

NO_ORACLE = tuple(name for name in DEFAULT_POLICY_NAMES if name != "oracle")


@pytest.fixture(scope="module")
def lab_result():
    """Three hours of the default window on the lab profile, where four rows repeat."""
    scenario = build_scenario(ReplayOptions(profile="lab", duration="3h"))
    return replay(scenario, all_policies(scenario, names=NO_ORACLE))


def _peak_cpu_text(result) -> str:
    """What the table must say of HPA: the highest per-replica CPU it observed."""
    scenario = result.scenario
    placement = Placement.uniform(scenario.model.services, "new")
    util = scenario.model.utilisation(placement, scenario.load_qps[:-1])
    return f"{100 * max(float(np.max(u)) for u in util.values()):.0f} %"


@pytest.mark.parametrize(("policy", "like", "fragments"), [
    ("hpa-cpu", "all-new", ["HPA never scaled", "under the 66 %", "PEAK"]),
    ("carbon-ceiling", "all-new", ["HPA never scaled", "nothing to cap"]),
    ("minnew", "noscale", ["planned once for the peak", "MinNew found nothing to move",
                           "replica_limits"]),
    ("ecoscale-ct", "ecoscale", ["bands the carbon trace visited", "ecoscale's"]),
], ids=["hpa-never-scaled", "ceiling-nothing-to-cap", "minnew-nothing-to-move",
        "ct-same-ladder"])
def test_repeating_rows_name_the_row_and_why(lab_result, policy, like, fragments):
    found = {item.policy: item for item in likenesses(lab_result)}
    assert found[policy].like == like
    assert found[policy].kind == "same placements"
    for fragment in fragments:
        expected = _peak_cpu_text(lab_result) if fragment == "PEAK" else fragment
        assert expected in found[policy].sentence()


def test_distinct_rows_carry_no_note(lab_result):
    found = {item.policy: item for item in likenesses(lab_result)}
    assert {"hpa-cpu", "carbon-ceiling", "minnew", "ecoscale-ct"} <= set(found)
    assert not {"all-new", "all-old", "noscale"} & set(found)
    summary = lab_result.summary().set_index("policy")
    for name in set(found) - {"hpa-cpu", "carbon-ceiling", "minnew", "ecoscale-ct"}:
        # any other row noted is only close to an earlier one, by the figures it quotes
        item = found[name]
        assert item.kind == "close"
        change = summary.carbon_kg[name] / summary.carbon_kg[item.like] - 1
        assert abs(change) <= 0.005 and abs(100 * change - item.carbon_change_pct) < 1e-6


def test_table_marks_and_explains_repeating_rows(lab_result):
    table = summary_table(lab_result)
    rows = {line.split()[0]: line for line in table.splitlines()[1:10] if line.strip()}
    assert rows["hpa-cpu"].endswith("= all-new")
    assert rows["minnew"].endswith("= noscale")
    assert not rows["all-old"].endswith("all-new")
    assert "Rows with the same result" in table
    assert "- minnew = noscale: the same placements at every step" in table
    assert max(len(line) for line in table.splitlines()) <= 100


def test_one_carbon_band_is_said(social_model):
    steps = 12
    load = np.linspace(600.0, 2400.0, steps)
    scenario = Scenario(social_model, load, np.full(steps, 222.0), 300.0, slo_ms=13.68)
    result = replay(scenario, all_policies(scenario, names=("ecoscale", "ecoscale-ct")))
    found = {item.policy: item for item in likenesses(result)}
    assert found["ecoscale-ct"].like == "ecoscale"
    assert "stayed in one band" in found["ecoscale-ct"].reason
    assert "222 g/kWh" in found["ecoscale-ct"].reason


def test_a_ceiling_that_blocks_hpa_is_not_called_hpa_never_scaling(social_model):
    steps = 30
    scenario = Scenario(social_model, np.full(steps, 3000.0), np.full(steps, 400.0), 60.0,
                        slo_ms=1e9)
    result = replay(scenario, baseline_policies(social_model.services, ["new"], "new"))
    found = {item.policy: item for item in likenesses(result)}
    assert "hpa-cpu" not in found or found["hpa-cpu"].kind == "close"
    ceiling = found["carbon-ceiling"]
    assert ceiling.like == "all-new" and ceiling.kind == "same placements"
    assert "HPA wanted to scale out" in ceiling.reason and "400 g/kWh" in ceiling.reason
    assert "never scaled" not in ceiling.reason


def test_close_rows_say_how_close(social_model):
    steps = 30
    load = np.concatenate([np.full(25, 1500.0), np.full(5, 3000.0)])
    scenario = Scenario(social_model, load, np.full(steps, 150.0), 60.0, slo_ms=1e9)
    result = replay(scenario, baseline_policies(social_model.services, ["new"], "new"))
    hpa = next(item for item in likenesses(result) if item.policy == "hpa-cpu")
    assert hpa.kind == "close" and hpa.like == "all-new" and hpa.differing_steps > 0
    assert "HPA scaled out only" in hpa.reason
    summary = result.summary().set_index("policy")
    change = 100 * (summary.loc["hpa-cpu", "carbon_kg"] / summary.loc["all-new", "carbon_kg"] - 1)
    assert hpa.carbon_change_pct == pytest.approx(change)
    assert hpa.mark == "~ all-new"


def test_two_static_policies_with_one_placement(social_model):
    placement = Placement.uniform(social_model.services, "old", 2)
    other = placement.with_service("nginx-thrift", ServicePlacement("new", 1))
    scenario = Scenario(social_model, np.full(5, 500.0), np.full(5, 200.0), 60.0, slo_ms=1e9)
    result = replay(scenario, [StaticPolicy("a", placement), StaticPolicy("b", other),
                               StaticPolicy("c", placement)])
    found = {item.policy: item for item in likenesses(result)}
    assert set(found) == {"c"}
    assert found["c"].like == "a"
    assert "one placement throughout" in found["c"].reason
    assert "old: 26 services/52 slots" in found["c"].reason
