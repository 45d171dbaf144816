"""The pure parts of `ecoscale lab evaluate`: the compressed scenario and the control
settings that the live daemon and its simulation share."""

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
