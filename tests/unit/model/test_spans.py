"""Own time from server spans (ecoscale.model.spans): the inverse of the model's composition."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ecoscale.adapters.files import load_topology
from ecoscale.model.latency import E2EModel
from ecoscale.model.spans import OWN_TIME_FLOOR_FRACTION, own_times
from ecoscale.model.topology import Topology, parse_topology
from ecoscale.testing import server_spans


def _topology(endpoints: dict, services: dict) -> Topology:
    return parse_topology({"app": "t", "frontend": "fe", "services": services,
                           "endpoints": endpoints}, "test")


NESTED = _topology(
    services={"fe": {"kind": "logic", "calls": ["a", "b"]},
              "a": {"kind": "logic", "calls": ["c", "d"]},
              "b": {"kind": "logic", "calls": ["c"]},
              "c": {"kind": "logic", "calls": ["d"]},
              "d": {"kind": "redis"}},
    endpoints={
        # c is called with a sub-path here and as a leaf in 'flat': its span mixes both
        "deep": {"share": 0.3, "http": "GET /deep", "path": [
            ["fe"], [{"a": [[{"c": [["d"]]}, "d"]]}, "b"]]},
        # flat: the front end calls every stage itself
        "flat": {"share": 0.6, "http": "GET /flat", "path": [["fe"], ["b"], ["c"], ["d"]]},
        # the front end's own stage carries a sub-path (run locally, not over HTTP)
        "local": {"share": 0.1, "http": "GET /local", "path": [
            [{"fe": [["a"], [{"b": [["c"]]}]]}]]},
    })
RARE = _topology(
    services={"fe": {"kind": "logic", "calls": ["a", "b"]},
              "a": {"kind": "logic", "calls": ["b"]},
              "b": {"kind": "logic"}},
    endpoints={   # an endpoint under 1 % of requests is not in the model's mix
        "main": {"share": 0.995, "http": "GET /", "path": [["fe"], [{"a": [["b"]]}]]},
        "rare": {"share": 0.005, "http": "GET /r", "path": [["fe"], ["b"], ["a"], ["b"]]},
    })
TOPOLOGIES = {
    **{app: load_topology(app) for app in ("socialNetwork", "hotelReservation",
                                           "mediaMicroservices")},
    "nested": NESTED, "rare-endpoint": RARE}


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_own_times_invert_the_models_composition(name, seed):
    topology = TOPOLOGIES[name]
    rng = np.random.default_rng(seed)
    own = {s: float(rng.uniform(0.2, 5.0)) for s in topology.services}
    spans = server_spans(topology, own)
    # the front end's span is the whole request: far above its own time
    assert spans[topology.frontend] > 2 * own[topology.frontend]
    derived = own_times(topology, spans, floor_fraction=0.0)
    assert derived.clamped == ()
    assert derived.own_ms == pytest.approx(own, rel=1e-9, abs=1e-9)
    # and the model, fed the derived own times, gives back the measured request latency
    assert float(E2EModel(topology).mix_p99(derived.own_ms)) == pytest.approx(
        spans[topology.frontend], rel=1e-9)


@pytest.mark.parametrize("name", ["socialNetwork", "nested"])
def test_own_times_above_the_floor_are_exact_at_the_default_floor(name):
    topology = TOPOLOGIES[name]
    own = dict.fromkeys(topology.services, 2.0)
    spans = server_spans(topology, own)
    below = {s for s in own if own[s] < OWN_TIME_FLOOR_FRACTION * spans[s]}
    derived = own_times(topology, spans)
    assert set(derived.clamped) == below
    if not below:
        assert derived.own_ms == pytest.approx(own, rel=1e-9)


def test_a_difference_below_the_floor_is_clamped_and_reported():
    topology = TOPOLOGIES["nested"]
    own = dict.fromkeys(topology.services, 1.0)
    spans = server_spans(topology, own)
    # p99s of parallel callees add up to more than the p99 of what they do together: a
    # measured span can lie below the sum of its callees'
    noisy = {**spans, "fe": 0.7 * spans["fe"]}
    assert noisy["fe"] < spans["fe"] - own["fe"]          # below what the callees take
    derived = own_times(topology, noisy)
    assert derived.clamped == ("fe",)
    assert derived.own_ms["fe"] == pytest.approx(OWN_TIME_FLOOR_FRACTION * noisy["fe"])
    assert derived.own_ms["a"] == pytest.approx(1.0)     # callees are not touched by it


def test_a_service_without_a_span_adds_nothing_below_its_callers():
    topology = TOPOLOGIES["nested"]
    own = dict.fromkeys(topology.services, 1.0)
    spans = {**server_spans(topology, own), "d": math.nan}
    derived = own_times(topology, spans)
    assert math.isnan(derived.own_ms["d"])
    # c's only sub-path is [d]: without d's span, c keeps what it measured in part of it
    assert derived.own_ms["c"] > own["c"]
    assert all(math.isfinite(v) for s, v in derived.own_ms.items() if s != "d")
