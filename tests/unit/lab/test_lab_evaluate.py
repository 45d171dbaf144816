"""The pure parts of `ecoscale lab evaluate`: the compressed scenario and the control
settings that the live daemon and its simulation share."""

from dataclasses import replace

import pytest

from ecoscale.evaluation.evaluate import (
    EvaluationOptions,
    compressed_scenario,
    in_trace_time,
    live_control,
)


def test_compressed_scenario_has_one_step_per_period_and_the_asked_peak():
    options = EvaluationOptions(minutes=5.0, period_s=10.0, start="6h", duration="1d")
    scenario = compressed_scenario(options)
    assert scenario.steps == 30 and scenario.step_s == pytest.approx(86400 / 30)
    slo_load = float(scenario.load_qps.max())
    half = compressed_scenario(EvaluationOptions(minutes=5.0, period_s=10.0, start="6h",
                                                 duration="1d", peak_fraction=0.5))
    assert float(half.load_qps.max()) == pytest.approx(0.5 * slo_load)
    fixed = compressed_scenario(EvaluationOptions(minutes=5.0, period_s=10.0, start="6h",
                                                  duration="1d", peak_qps=40.0,
                                                  peak_fraction=0.5))
    assert float(fixed.load_qps.max()) == pytest.approx(40.0)


def test_simulated_daemon_holds_over_as_many_periods_as_the_live_one():
    live = live_control(10.0)
    trace = in_trace_time(live, speedup=288.0)
    assert trace.cooldown_s / 288.0 == live["cooldown_s"] == 60.0
    assert trace.escalation_hold_s == pytest.approx(6 * 2880.0)
    assert trace.max_old_moves_per_decision == live["max_old_moves_per_decision"] == 3
    assert trace.slo_miss_periods == 2 and not trace.problems()


def test_measured_carbon_models_a_missing_cpu_series_instead_of_idling_it():
    from ecoscale.evaluation.evaluate import PolicyTrace, measured_frame, utilisation_sources_text

    scenario = compressed_scenario(EvaluationOptions(minutes=5.0, period_s=10.0, start="6h",
                                                     duration="1d"))
    services = scenario.model.services
    running = {s: {"new": 1} for s in services}
    with_cpu = {s: 0.1 for s in services}
    without_one = {s: 0.1 for s in services[1:]}
    trace = PolicyTrace("all-new", rows=[
        {"period": 0, "running": running, "cpu": with_cpu, "measured_qps": 40.0,
         "measured_p99_ms": 5.0},
        {"period": 1, "running": running, "cpu": without_one, "measured_qps": 40.0,
         "measured_p99_ms": 5.0},
    ])
    frame = measured_frame(trace, scenario, {"new": 1.0})
    assert list(frame.util_measured_slots) == [len(services), len(services) - 1]
    assert list(frame.util_modelled_slots) == [0, 1]
    model = scenario.model
    step_h = scenario.step_s / 3600
    gen = model.hardware.generation("new")
    util = model.profile.curve(services[0], "new").util_at(model.visits[services[0]] * 40.0)
    ci = float(scenario.ci_g_per_kwh[1])
    idle_g = gen.power_w_at(0.0) * model.hardware.pue * ci / 1000 * step_h
    modelled_g = gen.power_w_at(util) * model.hardware.pue * ci / 1000 * step_h
    others_g = (len(services) - 1) * gen.power_w_at(0.1) * model.hardware.pue * ci / 1000 * step_h
    assert frame.operational_g[1] == pytest.approx(others_g + modelled_g)
    assert modelled_g != pytest.approx(idle_g)
    text = utilisation_sources_text(frame)
    assert f"modelled for 1 of {2 * len(services)} slot-periods" in text


# ---- the time scale: a period of >= 3 move times, <= 25 % load rise between decisions ------
import math  # noqa: E402
import re  # noqa: E402

from ecoscale.errors import UsageError  # noqa: E402
from ecoscale.evaluation.evaluate import simulate, time_scale  # noqa: E402
from ecoscale.evaluation.timescale import (  # noqa: E402
    LAB_MOVE_TIME_S,
    MAX_LOAD_RISE,
    choose_period,
    choose_time_scale,
    largest_rise,
)


@pytest.mark.parametrize("move_s,asked,expected", [
    (8.0, None, 24.0),        # the default: 3 move times
    (2.5, None, 8.0),         # rounded up to whole seconds
    (8.0, 30.0, 30.0),        # longer is fine
    (8.0, 24.0, 24.0),        # exactly 3 move times
    (8.0, 10.0, None),        # refused
    (0.0, None, None),        # no move time
], ids=["default", "rounded-up", "longer", "exactly-three", "too-short", "zero-move"])
def test_the_period_spans_three_move_times(move_s, asked, expected):
    if expected is None:
        with pytest.raises(UsageError) as error:
            choose_period(move_s, asked)
        if move_s > 0:   # the figure and the fix
            assert "3 x 8 s = 24 s" in str(error.value) and "--period-s 24" in str(error.value)
    else:
        assert choose_period(move_s, asked) == expected


@pytest.mark.parametrize("loads,expected", [
    ([10, 10, 10], (0.0, 0)),
    ([10, 12, 15, 15], (0.25, 2)),      # 12 -> 15
    ([10, 20, 5, 6], (1.0, 1)),         # a drop does not count, the rise does
    ([100, 1, 4], (0.0, 0)),            # under 5 % of the peak counts as 5: 1 -> 4 is no rise
    ([100, 1, 20], (3.0, 2)),           # 5 (the floor) -> 20
    ([5], (0.0, 0)),
], ids=["flat", "ramp", "drop-then-rise", "floored-both", "floored-start", "one-load"])
def test_largest_rise_between_two_periods(loads, expected):
    rise, at = largest_rise(loads)
    assert (rise, at) == (pytest.approx(expected[0]), expected[1])


def rises_by_step(step_s):
    """A toy window: the rise between decisions grows with the step (2 % per trace minute;
    over 6 h, 7.2 / periods)."""
    return 0.02 * step_s / 60.0, 3


@pytest.mark.parametrize("minutes,period,fits", [
    (12.0, None, True),     # 30 periods of 24 s over 6 h: 12-min steps, 24 % rise
    (6.0, None, False),     # 15 periods: 24-min steps, 48 %
    (12.0, 48.0, False),    # 15 periods of 48 s
], ids=["fits", "too-few-periods", "longer-period-fewer-periods"])
def test_a_step_with_too_large_a_rise_is_refused_with_the_minutes_that_fit(minutes, period,
                                                                           fits):
    args = (6 * 3600.0, minutes, 8.0, rises_by_step)
    if fits:
        scale = choose_time_scale(*args, period_s=period)
        assert scale.largest_rise <= MAX_LOAD_RISE and scale.period_s == 24.0
        assert scale.periods * scale.step_s == pytest.approx(6 * 3600.0)
        assert scale.minutes == pytest.approx(minutes)
        return
    with pytest.raises(UsageError) as error:
        choose_time_scale(*args, period_s=period)
    text = str(error.value)
    assert "more than 25 %" in text
    fix = float(re.search(r"--minutes ([0-9.]+)", text).group(1))
    scale = choose_time_scale(6 * 3600.0, fix, 8.0, rises_by_step, period_s=period)
    assert scale.largest_rise <= MAX_LOAD_RISE   # the fix it names works
    assert scale.periods == 29   # and is the fewest periods that do: 7.2 / 29 = 24.8 %


def test_a_window_too_steep_even_at_the_trace_step_names_a_calmer_window():
    with pytest.raises(UsageError, match="calmer window"):
        choose_time_scale(3600.0, 1.0, 8.0, lambda step: (1.0, 1), finest_step_s=60.0)


def test_the_shipped_defaults_fit_and_the_match_day_needs_the_minutes_it_names():
    scale = time_scale(EvaluationOptions())
    assert scale.period_s == 3 * LAB_MOVE_TIME_S
    assert 0 < scale.largest_rise <= MAX_LOAD_RISE
    with pytest.raises(UsageError) as error:
        time_scale(EvaluationOptions(start="1998-06-30T12:00", duration="6h", minutes=20.0))
    fix = float(re.search(r"--minutes ([0-9.]+)", str(error.value)).group(1))
    assert fix > 20.0
    fitted = EvaluationOptions(start="1998-06-30T12:00", duration="6h", minutes=fix)
    assert time_scale(fitted).largest_rise <= MAX_LOAD_RISE
    # the replayed window at that scale has the same figure as the choice
    scenario = compressed_scenario(replace(fitted, period_s=time_scale(fitted).period_s))
    assert largest_rise(scenario.load_qps)[0] == pytest.approx(time_scale(fitted).largest_rise)


def test_the_replay_only_run_uses_the_trend_and_the_chosen_time_scale():
    options = EvaluationOptions(policies=("all-new", "ecoscale"))
    scale, summary = simulate(options)
    assert scale.period_s == 24.0 and not math.isnan(scale.largest_rise)
    assert list(summary.policy) == ["all-new", "ecoscale"]
    off = simulate(replace(options, trend_periods=0))[1].set_index("policy")
    on = summary.set_index("policy")
    # the trend changes what the daemon does on this compressed day (README's figures)
    assert (on.loc["ecoscale", "carbon_kg"], on.loc["ecoscale", "moves"]) != (
        off.loc["ecoscale", "carbon_kg"], off.loc["ecoscale", "moves"])


def test_replay_only_without_all_new_still_reports_savings(capsys):
    from ecoscale.cli import main

    assert main(["lab", "evaluate", "--replay-only", "--policies", "ecoscale"]) == 0
    captured = capsys.readouterr()
    assert "all-new runs too, as the reference for savings" in captured.err
    row = next(line for line in captured.out.splitlines() if line.lstrip().startswith("ecoscale"))
    assert "nan" not in row.lower() and "-0.000" not in captured.out


def test_a_table_level_that_would_overcommit_a_slotted_lab_is_named_with_its_figure():
    from types import SimpleNamespace

    from ecoscale.evaluation.evaluate import overcommitting_levels
    from ecoscale.lab.config import LabConfig
    from ecoscale.model.placement import Placement, ServicePlacement

    def level(max_load_qps: float, replicas: int) -> SimpleNamespace:
        placement = Placement(items=tuple((f"s{i}", ServicePlacement("old", replicas))
                                          for i in range(10)))
        return SimpleNamespace(max_load_qps=max_load_qps, placement=placement)

    table = SimpleNamespace(levels=(level(20, 1), level(60, 4)))
    slotted = LabConfig.with_nodes(old_node_cpus=None, slot_cpus=0.05, state_dir="/tmp/l")
    # 2 host CPUs less 0.5 kept: 30 slots of 0.05; 10 x 1 fit, 10 x 4 do not
    found = overcommitting_levels(slotted, 2, {"ecoscale": table})
    assert found == ["ecoscale up to 60 req/s: 40 slots = 2.00 of 1.5 CPUs (old 40 x 0.05; 2 "
                     "host CPUs, 0.5 kept for dockerd, Prometheus, the gateway and the load "
                     "generator)"]
    assert overcommitting_levels(LabConfig(state_dir="/tmp/l"), 2, {"ecoscale": table}) == []
