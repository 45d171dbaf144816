"""The trend-aware load estimate in the replay: the daemon's decision function over a ramp."""

from dataclasses import replace

import numpy as np
import pytest

from ecoscale.control.decide import ControlSettings
from ecoscale.model.app import default_slo
from ecoscale.planner.table import build_table
from ecoscale.replay.engine import Scenario, replay
from ecoscale.replay.policies import EcoscalePolicy, for_period

STEP_S = 60.0


@pytest.fixture(scope="module")
def ramp(social_model):
    """A ramp from 30 % to the SLO load in 20 steps, then flat; the table planned for it."""
    slo_ms, slo_load, _ = default_slo(social_model, None)
    load = np.concatenate([np.linspace(0.3, 1.0, 20), np.full(5, 1.0)]) * slo_load
    scenario = Scenario(social_model, load, np.full(len(load), 200.0), STEP_S, slo_ms)
    table = for_period(build_table(social_model, slo_ms, slo_load), STEP_S)
    return scenario, table


def first_changes(run):
    """Steps at which the placement changed."""
    return [i for i in range(1, len(run.placements)) if run.placements[i] != run.placements[i - 1]]


@pytest.mark.parametrize("trend_periods", [1, 3], ids=["one-period", "three-periods"])
def test_the_trend_goes_up_a_period_before_the_measured_load(ramp, trend_periods):
    scenario, table = ramp
    off = EcoscalePolicy("off", table, ControlSettings())
    on = EcoscalePolicy("on", table, replace(ControlSettings(), trend_periods=trend_periods))
    runs = {run.name: run for run in replay(scenario, [off, on]).runs}
    measured, projected = first_changes(runs["off"]), first_changes(runs["on"])
    assert measured, "the ramp must take the measured load up at least one level"
    # every level the measured load reaches, the projection reaches one step earlier
    assert projected[:len(measured)] == [i - 1 for i in measured]
    # and it ends where the measured load ends (the projection never goes further)
    assert runs["on"].placements[-1] == runs["off"].placements[-1]


def test_the_trend_off_is_the_measured_load(ramp):
    scenario, table = ramp
    plain = EcoscalePolicy("plain", table)
    off = EcoscalePolicy("off", table, ControlSettings(trend_periods=0))
    a, b = replay(scenario, [plain, off]).runs
    assert a.placements == b.placements


def test_the_replay_passes_its_control_settings_to_both_ecoscale_policies(ramp):
    from ecoscale.replay.policies import all_policies

    scenario, table = ramp
    settings = ControlSettings(trend_periods=2)
    policies = all_policies(scenario, table, names=("ecoscale", "ecoscale-ct"),
                            ct_table=table, settings=settings)
    assert [p.settings.trend_periods for p in policies] == [2, 2]
    assert [p.settings for p in all_policies(scenario, table, names=("ecoscale",))] == [
        ControlSettings()]


@pytest.mark.parametrize("argv,expected", [([], 0), (["--trend-periods", "3"], 3)],
                         ids=["default-off", "three"])
def test_replay_flag_sets_the_trend_window(argv, expected):
    from ecoscale.cli import build_parser

    assert build_parser().parse_args(["replay", *argv]).trend_periods == expected
