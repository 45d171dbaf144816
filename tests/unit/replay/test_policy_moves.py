"""The replay's own policies give every move a structured cause, as ecoscale's decide does."""

import math

import numpy as np
import pytest

from ecoscale.control.policy import Cause, Observation
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.replay.baselines import DEFAULT_CARBON_BANDS, HpaCpuPolicy, StaticPolicy
from ecoscale.replay.engine import Scenario
from ecoscale.replay.policies import OraclePolicy

SERVICES = ("a", "b")


def observe(current, utilisation=None, ci=150.0, load=100.0):
    return Observation(clock_s=0.0, qps=load, p99_ms=math.nan, ci_g_per_kwh=ci,
                       current=current, utilisation=utilisation or {})


def moves_of(decision):
    return {s: (m.cause, m.before, m.after, m.capped, m.wanted_replicas)
            for s, m in decision.moves.items()}


NEW1, NEW2 = ServicePlacement("new", 1), ServicePlacement("new", 2)
OLD1 = ServicePlacement("old", 1)
ALL_NEW, ALL_OLD = Placement.uniform(SERVICES, "new"), Placement.uniform(SERVICES, "old")
# policy, what runs, utilisation, intensity (g/kWh), the moves it decides
CASES = [
    pytest.param(StaticPolicy("all-new", ALL_NEW), ALL_OLD, {}, 150.0,
                 {s: (Cause.STATIC, OLD1, NEW1, False, None) for s in SERVICES},
                 id="static"),
    pytest.param(StaticPolicy("all-new", ALL_NEW), ALL_NEW, {}, 150.0, {}, id="static-holds"),
    pytest.param(HpaCpuPolicy("hpa-cpu", SERVICES, "new"), ALL_NEW, {"a": 0.9, "b": 0.6}, 150.0,
                 {"a": (Cause.CPU, NEW1, NEW2, False, None)}, id="hpa-scales-out"),
    pytest.param(HpaCpuPolicy("carbon-ceiling", SERVICES, "new", carbon_bands=DEFAULT_CARBON_BANDS),
                 ALL_OLD, {"a": 0.9, "b": 0.6}, 400.0,
                 {"a": (Cause.CPU, OLD1, NEW1, True, 2), "b": (Cause.CPU, OLD1, NEW1, False,
                                                               None)},
                 id="carbon-ceiling-caps"),
]


@pytest.mark.parametrize("policy,current,utilisation,ci,expected", CASES)
def test_baselines_give_each_move_a_cause(policy, current, utilisation, ci, expected):
    decision, _ = policy.decide(observe(current, utilisation, ci), policy.initial_state())
    assert moves_of(decision) == expected
    assert decision.reasons == {s: m.reason for s, m in decision.moves.items()}
    for service, move in decision.moves.items():
        assert move.reason.startswith(f"{current[service]} -> {decision.placement[service]}: ")


def test_the_oracle_moves_for_the_optimum(social_model):
    scenario = Scenario(social_model, np.full(2, 500.0), np.full(2, 200.0), 60.0, slo_ms=50.0)
    oracle = OraclePolicy(scenario)
    current = Placement.uniform(social_model.services, "new")
    decision, _ = oracle.decide(observe(current, load=500.0, ci=200.0), None)
    changed = {s for s, _, _ in current.changes(decision.placement)}
    assert changed and set(decision.moves) == changed
    assert {m.cause for m in decision.moves.values()} == {Cause.OPTIMUM}
