import itertools
import math

import pytest
from test_planner import toy_model

from ecoscale.model.packing import PackedPlacement, Socket, packed_e2e_p99_at
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.planner.oracle import packed_optimum
from ecoscale.planner.rightsize import MIN_SHARE, packed_rate_g_per_h, rightsize
from ecoscale.planner.search import carbon_terms


def _partitions(items):
    """Every set partition of ``items`` (a list)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in _partitions(rest):
        for i in range(len(partition)):
            yield partition[:i] + [[first, *partition[i]]] + partition[i + 1:]
        yield [[first], *partition]


def _brute_force(model, load, slo, ci):
    """The least carbon over every generation per service (one replica each) and every way
    of putting the replicas on sockets (shares within one socket): exhaustive."""
    best = math.inf
    for generations in itertools.product(("new", "old"), repeat=len(model.services)):
        placement = Placement(tuple((s, ServicePlacement(g, 1))
                                    for s, g in zip(model.services, generations, strict=True)))
        shares = {}
        for service, placed in placement.items:
            curve = model.profile.curve(service, placed.generation)
            shares[service] = max(curve.util_at(model.visits[service] * load), MIN_SHARE)
        groups = {g: [s for s, p in placement.items if p.generation == g] for g in ("new", "old")}
        for new_part in _partitions(groups["new"]):
            for old_part in _partitions(groups["old"]):
                sockets = [Socket(g, tuple((s, shares[s]) for s in block))
                           for g, part in (("new", new_part), ("old", old_part))
                           for block in part]
                if any(socket.reserved > 1 + 1e-9 for socket in sockets):
                    continue
                packed = PackedPlacement(placement.items, sockets=tuple(sockets),
                                         shares=tuple(shares.items()))
                if packed_e2e_p99_at(model, packed, load) <= slo * (1 + 1e-9):
                    best = min(best, packed_rate_g_per_h(model, packed, load, ci))
    return best


@pytest.fixture(scope="module")
def toy():
    model = toy_model()
    slo = float(model.e2e_p99(Placement.uniform(model.services, "new"), 675)[()]) * 1.15
    return model, slo


@pytest.mark.parametrize("load", [150.0, 400.0, 675.0], ids=["low", "mid", "slo-load"])
def test_the_packed_oracle_equals_exhaustive_search(toy, load):
    model, slo = toy
    terms = carbon_terms(model)
    exact = _brute_force(model, load, slo, terms.ci_g_per_kwh)
    result = packed_optimum(model, load, slo, terms, math.inf, time_limit_s=30,
                            max_replicas=1)
    assert result.status == "optimal"
    assert result.p99_ms <= slo * (1 + 1e-9)       # checked under the model itself
    assert result.carbon_g_per_h >= exact - 1e-6     # nothing beats the exhaustive optimum
    assert result.carbon_g_per_h <= exact * 1.01     # chords only just above the curve
    assert result.bound_g_per_h <= result.carbon_g_per_h + 1e-9


@pytest.mark.parametrize("load", [150.0, 500.0], ids=["low", "high"])
def test_the_packed_oracle_is_no_worse_than_the_right_sizing_pass(toy, load):
    model, slo = toy
    terms = carbon_terms(model)
    bases = [Placement.uniform(model.services, g, k) for g in ("new", "old") for k in (1, 2)]
    heuristic = rightsize(model, load, slo, bases, terms.ci_g_per_kwh)
    assert heuristic is not None
    result = packed_optimum(model, load, slo, terms, heuristic.carbon_g_per_h, time_limit_s=30)
    assert result.status == "optimal"
    assert result.carbon_g_per_h <= heuristic.carbon_g_per_h * (1 + 1e-4)
    counts = {}
    for socket in result.placement.sockets:
        names = [name for name, _ in socket.replicas]
        assert len(names) == len(set(names))         # a service's replicas apart
        assert socket.reserved <= 1 + 1e-9
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    assert counts == {s: p.replicas for s, p in result.placement.items}


def test_an_slo_nothing_keeps_is_infeasible(toy):
    model, _ = toy
    result = packed_optimum(model, 400.0, 0.1, carbon_terms(model), math.inf, time_limit_s=10)
    assert result.placement is None and result.status == "infeasible"
