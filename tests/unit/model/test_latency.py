import numpy as np
import pytest

from ecoscale.errors import InputError
from ecoscale.model.latency import E2EModel, LatencyCurve
from ecoscale.model.topology import parse_topology

CURVE = LatencyCurve.from_points([[0, 1.0, 0.0], [50, 2.0, 0.4], [80, 5.0, 0.7]], 100)


@pytest.mark.parametrize("load,expected", [
    pytest.param(0, 1.0, id="idle"),
    pytest.param(25, 1.5, id="interpolated"),
    pytest.param(80, 5.0, id="last-point"),
    pytest.param(90, 5.0 * 20 / 10, id="queue-beyond-last-point"),
    pytest.param(100, np.inf, id="saturated"),
    pytest.param(150, np.inf, id="beyond-saturation"),
])
def test_curve_p99(load, expected):
    assert float(CURVE.p99(load)) == pytest.approx(expected)


def test_curve_grows_without_bound_towards_saturation():
    values = CURVE.p99(np.array([85, 95, 99, 99.9]))
    assert np.all(np.diff(values) > 0)
    assert values[-1] > 100 * values[0] / 10


def test_curve_utilisation_extrapolates_and_clips():
    assert float(CURVE.util(25)) == pytest.approx(0.2)
    assert float(CURVE.util(90)) == pytest.approx(0.8)
    assert float(CURVE.util(1000)) == 1.0


@pytest.mark.parametrize("points,sat,fragment", [
    ([[0, 1, 0], [0, 2, 0.1]], 10, "increase strictly"),
    ([[0, 1, 0], [5, 2, 1.5]], 10, "0..1"),
    ([[0, 1, 0], [5, 2, 0.5]], 5, "must exceed the last load point"),
    ([[0, 1, 0]], 5, "at least two rows"),
])
def test_bad_curves_are_rejected(points, sat, fragment):
    with pytest.raises(InputError, match=fragment):
        LatencyCurve.from_points(points, sat, "svc on old")


def test_profile_replica_limits_are_read_and_checked():
    from ecoscale.adapters.files import parse_profile

    curve = {"saturation_qps": 100, "points": [[0, 1, 0], [50, 2, 0.5]]}
    data = {"services": {"fe": {"new": curve, "old": curve}}}
    assert parse_profile(data, "p.yaml").replica_limits == {}
    limited = parse_profile({**data, "replica_limits": {"old": 1}}, "p.yaml")
    assert limited.replica_limits == {"old": 1}
    for bad in ({"old": 0}, {"old": 1.5}, ["old"]):
        with pytest.raises(InputError, match="replica_limits"):
            parse_profile({**data, "replica_limits": bad}, "p.yaml")


TOY = parse_topology({
    "app": "toy",
    "frontend": "fe",
    "services": {
        "fe": {"kind": "logic", "calls": ["a", "b", "c"]},
        "a": {"kind": "logic", "calls": ["db"]},
        "b": {"kind": "logic"},
        "c": {"kind": "logic"},
        "db": {"kind": "mongodb"},
    },
    "endpoints": {
        # fe, then a (which calls db) in parallel with b, then c
        "main": {"share": 0.995, "http": "GET /", "path": [["fe"], [{"a": [["db"]]}, "b"], ["c"]]},
        "rare": {"share": 0.005, "http": "GET /rare", "path": [["fe"], ["b"]]},
    },
}, "toy")


def test_composition_sums_stage_maxima():
    p99 = {"fe": np.array([1.0, 1.0]), "a": np.array([2.0, 2.0]), "db": np.array([3.0, 0.5]),
           "b": np.array([4.0, 4.0]), "c": np.array([0.5, 0.5])}
    model = E2EModel(TOY)
    # step 0: fe 1 + max(a 2 + db 3, b 4) + c 0.5 = 6.5; step 1: 1 + max(2.5, 4) + 0.5 = 5.5
    assert model.endpoint_p99("main", p99) == pytest.approx([6.5, 5.5])


def test_mix_ignores_endpoints_under_one_percent_and_applies_calibration():
    p99 = {"fe": np.array([1.0]), "a": np.array([1.0]), "db": np.array([1.0]),
           "b": np.array([100.0]), "c": np.array([1.0])}
    model = E2EModel(TOY, calibration=2.0)
    # "rare" (0.5 % of requests) would be 101 ms alone; "main" is 1 + 100 + 1
    assert model.mix_p99(p99) == pytest.approx([2.0 * 102.0])
