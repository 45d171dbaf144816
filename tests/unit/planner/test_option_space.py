"""The one option space: which (generation, replicas) options a service may take, shared by
the search and the oracle."""

from __future__ import annotations

import math

import pytest

from ecoscale.model.app import default_slo
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.planner.evaluator import IncrementalEvaluator
from ecoscale.planner.oracle import options_for
from ecoscale.planner.search import CarbonTerms, SearchState, carbon_terms, option_space


def sp(text: str) -> ServicePlacement:
    generation, replicas = text.split("*")
    return ServicePlacement(generation, int(replicas))


@pytest.mark.parametrize("ratio,order,new_replicas,limits,expected", [
    ({"new": 1.0, "old": 2.81}, ("new", "old"), 1, {}, "new*1 old*1 old*2"),
    ({"new": 1.0, "old": 3.0}, ("new", "old"), 1, {}, "new*1 old*1 old*2 old*3"),
    ({"new": 1.0, "old": 2.999999999999}, ("new", "old"), 1, {}, "new*1 old*1 old*2 old*3"),
    ({"new": 1.0, "old": 2.81}, ("new", "old"), 1, {"old": 1}, "new*1 old*1"),
    ({"new": 1.0, "old": 2.81}, ("new", "old"), 3, {"new": 2}, "new*1 new*2 old*1 old*2"),
    ({"new": 1.0, "mid": 1.6, "old": 0.5}, ("new", "mid", "old"), 1, {},
     "new*1 mid*1 old*1"),
], ids=["floor-of-C", "C-exactly-3", "C-a-rounding-below-3", "profile-limit-on-old",
        "new-replicas-capped-by-the-profile", "three-generations-at-least-one-each"])
def test_option_space_follows_C_and_the_replica_limits(ratio, order, new_replicas, limits,
                                                        expected):
    terms = CarbonTerms(300.0, ratio, order, new_replicas, limits)
    assert option_space(terms) == tuple(sp(t) for t in expected.split())


@pytest.mark.parametrize("fraction", [0.3, 1.0, 1.3], ids=["low", "peak", "above-peak"])
@pytest.mark.parametrize("ci", [None, 600.0], ids=["reference-C", "dirty-grid-C"])
def test_search_and_oracle_draw_from_the_same_options(social_model, fraction, ci):
    terms = carbon_terms(social_model, ci)
    slo_ms, peak_qps, _ = default_slo(social_model)
    load = fraction * peak_qps
    start = IncrementalEvaluator(social_model, load,
                                 Placement.uniform(social_model.services, terms.newest))
    state = SearchState(social_model, load, slo_ms, terms, start, {}, budget=0,
                        least_critical_first=[], stages=[])
    space = option_space(terms)
    saturated_somewhere = False
    for service in social_model.services:
        searched = [option for _, option in state.options(service)]
        assert sorted(searched, key=space.index) == list(space), service
        oracle = [option for option, _, _ in options_for(social_model, service, load, terms)]
        fits = [o for o in space if math.isfinite(start.service_p99(service, o))]
        assert oracle == fits, service
        saturated_somewhere |= len(fits) < len(space)
    if fraction > 1:
        assert saturated_somewhere   # the oracle leaves out options that saturate

