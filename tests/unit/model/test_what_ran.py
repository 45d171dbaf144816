"""Carbon of what ran (the daemon's accounting, the live evaluation) and the one rule for
missing utilisation: measured, else modelled from the profile at the measured load, else peak."""

import math

import numpy as np
import pytest

from ecoscale.model.app import UTILISATION_SOURCES
from ecoscale.model.placement import Placement

SERVICE = "nginx-thrift"


@pytest.mark.parametrize("measured,qps,replicas,source", [
    pytest.param(0.4, 1000.0, 2, "measured", id="measured-wins"),
    pytest.param(0.0, math.nan, 2, "measured", id="measured-zero-is-a-number"),
    pytest.param(math.nan, 1000.0, 2, "modelled", id="missing-cpu-modelled-at-load"),
    pytest.param(math.nan, math.nan, 2, "peak", id="no-cpu-no-load-peak"),
    pytest.param(math.nan, 1000.0, 0, "peak", id="no-replicas-peak"),
])
def test_utilisation_rule(social_model, measured, qps, replicas, source):
    util, got = social_model.utilisation_of(SERVICE, "old", replicas, measured, qps)
    assert got == source
    if source == "measured":
        assert util == measured
    elif source == "modelled":
        per_replica = social_model.visits[SERVICE] * qps / replicas
        assert util == social_model.profile.curve(SERVICE, "old").util_at(per_replica)
        assert 0.0 < util < 1.0
    else:
        assert util == 1.0


def test_what_ran_without_cpu_is_what_the_replay_charges(social_model):
    placement = Placement.uniform(social_model.services, "old", 2)
    running = {s: {"old": 2} for s in social_model.services}
    ran = social_model.carbon_of_what_ran(running, {}, 1000.0, 300.0, hours=0.5)
    replayed = social_model.carbon(placement, np.array([1000.0]), np.array([300.0]), 0.5)
    assert ran.total_g == pytest.approx(float(replayed.total_g[0]), rel=1e-12)
    assert ran.slots_by_source == {"measured": 0, "modelled": 2 * len(running), "peak": 0}
    assert ran.embodied_g == {"old": 0.0}


def test_what_ran_counts_sources_and_leaves_out_the_unknown(social_model, hardware):
    running = {SERVICE: {"new": 1, "old": 1}, "not-in-topology": {"new": 5},
               "user-service": {"ancient": 3}}
    measured = {(SERVICE, "new"): 0.25}
    ran = social_model.carbon_of_what_ran(running, measured, math.nan, 200.0, hours=2.0)
    assert ran.slots_by_source == {"measured": 1, "modelled": 0, "peak": 1}
    assert set(ran.slots_by_source) == set(UTILISATION_SOURCES)
    new, old = hardware.generations["new"], hardware.generations["old"]
    assert ran.embodied_g["new"] == pytest.approx(2.0 * new.embodied_g_per_h)
    assert ran.operational_g["new"] == pytest.approx(
        2.0 * new.power_w_at(0.25) * hardware.pue * 0.2)
    assert ran.operational_g["old"] == pytest.approx(2.0 * old.power_w_at(1.0) * hardware.pue
                                                     * 0.2)
    assert "ancient" not in ran.operational_g


def test_rates_are_one_hour_of_what_ran(social_model):
    running = {s: {"new": 1} for s in social_model.services}
    rate = social_model.carbon_of_what_ran(running, {}, 800.0, 250.0, hours=1.0)
    expected = social_model.carbon_rate_g_per_h(
        Placement.uniform(social_model.services, "new"), 800.0, 250.0)
    assert rate.total_g == pytest.approx(expected, rel=1e-12)
