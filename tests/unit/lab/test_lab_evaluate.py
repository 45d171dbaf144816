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
