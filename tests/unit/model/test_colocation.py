import numpy as np
import pytest

from ecoscale.model.colocation import equivalent_load_qps, shared_p99, shared_p99_at
from ecoscale.model.latency import LatencyCurve

CURVE = LatencyCurve.from_points([[0, 1.0, 0.0], [50, 2.0, 0.4], [80, 5.0, 0.7]], 100)


@pytest.mark.parametrize("load", [0.0, 10.0, 50.0, 79.0, 95.0], ids=lambda x: f"{x:g}qps")
def test_alone_it_is_the_single_service_curve(load):
    assert float(shared_p99(CURVE, load, 0.0)) == float(CURVE.p99(load))
    assert shared_p99_at(CURVE, load, 0.0) == pytest.approx(CURVE.p99_at(load))


@pytest.mark.parametrize("load,others,expected_load", [
    pytest.param(0.0, 0.3, 30.0, id="idle-replica-queues-behind-the-others"),
    pytest.param(20.0, 0.3, 50.0, id="own-load-plus-others-share-of-capacity"),
    pytest.param(20.0, -0.1, 20.0, id="negative-others-count-as-none"),
])
def test_others_take_their_share_of_the_replicas_capacity(load, others, expected_load):
    assert float(equivalent_load_qps(CURVE, load, others)) == pytest.approx(expected_load)
    assert float(shared_p99(CURVE, load, others)) == pytest.approx(float(CURVE.p99(expected_load)))


def _never_falls(values):
    return bool(np.all(values[1:] >= values[:-1]))   # inf >= inf holds, inf - inf does not


def test_monotone_in_own_load_and_in_the_others_utilisation():
    loads = np.linspace(0, 99, 60)
    for others in (0.0, 0.1, 0.3, 0.5):
        assert _never_falls(shared_p99(CURVE, loads, others))
    shares = np.linspace(0, 0.9, 40)
    for load in (0.0, 30.0, 60.0):
        assert _never_falls(shared_p99(CURVE, np.full_like(shares, load), shares))


@pytest.mark.parametrize("load,others", [(50.0, 0.5), (20.0, 0.9), (0.0, 1.0)],
                         ids=["half-and-half", "small-replica-full-socket", "socket-taken"])
def test_saturates_when_own_and_others_utilisation_reach_one(load, others):
    assert np.isinf(shared_p99(CURVE, load, others))
    assert np.isinf(shared_p99_at(CURVE, load, others))


def test_scalar_and_vector_agree(social_model):
    curve = social_model.profile.curve("nginx-thrift", "new")
    loads = np.array([0.0, 500.0, 2000.0, 3000.0])
    others = np.array([0.0, 0.2, 0.1, 0.05])
    vector = shared_p99(curve, loads, others)
    scalar = [shared_p99_at(curve, float(x), float(u)) for x, u in zip(loads, others, strict=True)]
    assert np.allclose(vector, scalar)
