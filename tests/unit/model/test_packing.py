import numpy as np
import pytest

from ecoscale.model.packing import (
    FIT_TOLERANCE,
    WHOLE_SOCKET,
    PackedPlacement,
    Socket,
    as_packed,
    evaluate_packed_sequence,
    first_fit_decreasing,
    merged,
    one_per_socket,
    pack,
    packed_carbon,
    packed_e2e_p99,
    packed_e2e_p99_at,
    socket_utilisation,
)
from ecoscale.model.placement import Placement, ServicePlacement


def _keys(bins):
    return [[key for key, _ in bin_] for bin_ in bins]


@pytest.mark.parametrize("sizes,capacity,expected", [
    pytest.param([("a", 0.5), ("b", 0.5)], 1.0, [["a", "b"]], id="two-halves-fill-one-bin"),
    pytest.param([("a", 0.2), ("b", 0.6), ("c", 0.5), ("d", 0.1)], 0.7,
                 [["b", "d"], ["c", "a"]], id="largest-first-then-first-fit"),
    pytest.param([("a", 0.4), ("b", 0.4), ("c", 0.4)], 0.7, [["a"], ["b"], ["c"]],
                 id="nothing-pairs-under-capacity"),
    pytest.param([("a", 0.9), ("b", 0.1)], 0.7, [["a"], ["b"]], id="oversized-item-alone"),
    pytest.param([("a", 0.3), ("b", 0.3), ("c", 0.1)], 0.7, [["a", "b", "c"]],
                 id="sum-equal-to-capacity-fits"),
    pytest.param([], 0.7, [], id="no-items"),
])
def test_first_fit_decreasing_hand_cases(sizes, capacity, expected):
    assert _keys(first_fit_decreasing(sizes, capacity)) == expected


def test_first_fit_decreasing_keeps_equal_keys_apart_unless_told():
    sizes = [("a", 0.2), ("a", 0.2), ("b", 0.2)]
    assert _keys(first_fit_decreasing(sizes, 0.7)) == [["a", "b"], ["a"]]
    assert _keys(first_fit_decreasing(sizes, 0.7, apart=False)) == [["a", "a", "b"]]


def test_first_fit_decreasing_bins_respect_capacity():
    rng = np.random.default_rng(7)
    sizes = [(i, float(s)) for i, s in enumerate(rng.uniform(0.01, 0.5, 60))]
    bins = first_fit_decreasing(sizes, 0.7)
    assert sorted(k for b in bins for k, _ in b) == list(range(60))
    assert all(sum(s for _, s in b) <= 0.7 + 1e-9 for b in bins)
    # first fit decreasing uses at most 11/9 OPT + 1 bins; OPT >= total / capacity
    assert len(bins) <= 11 / 9 * sum(s for _, s in sizes) / 0.7 + 1 + 1


PLACEMENT = Placement((("a", ServicePlacement("new", 2)), ("b", ServicePlacement("new", 1)),
                       ("c", ServicePlacement("old", 1))))


def test_pack_per_generation_with_dedicated_services():
    packed = pack(PLACEMENT, {"a": 0.3, "b": 0.3, "c": 0.2}, 0.7)
    assert packed.slots() == {"new": 2, "old": 1}
    assert sorted(len(s.replicas) for s in packed.sockets if s.generation == "new") == [1, 2]
    alone = pack(PLACEMENT, {"a": 0.3, "b": 0.3, "c": 0.2}, 0.7, frozenset({"b"}))
    assert [s.replicas for s in alone.sockets if ("b", 0.3) in s.replicas] == [(("b", 0.3),)]
    assert alone.slots() == {"new": 3, "old": 1}
    assert packed.items == PLACEMENT.items and packed.share("a") == 0.3


def test_packed_placements_differ_by_sockets_and_shares():
    shares = {"a": 0.3, "b": 0.3, "c": 0.2}
    packed = pack(PLACEMENT, shares, 0.7)
    spread = one_per_socket(PLACEMENT, shares)
    assert packed != spread and hash(packed) != hash(spread)
    assert packed == pack(PLACEMENT, shares, 0.7)
    assert packed != PLACEMENT
    resized = pack(PLACEMENT, {**shares, "c": 0.25}, 0.7)
    assert [name for name, _, _ in packed.changes(resized)] == ["c"]
    assert packed.changes(pack(PLACEMENT, shares, 0.7)) == []


def test_one_replica_per_socket_scores_as_the_app_model(social_model):
    model = social_model
    placement = Placement.uniform(model.services, "new").with_service(
        "nginx-thrift", ServicePlacement("new", 2)).with_service(
        "post-storage-service", ServicePlacement("old", 2))
    spread = one_per_socket(placement, {s: 0.1 for s in model.services})
    qps = np.array([300.0, 1500.0, 2800.0])
    ci = np.array([100.0, 250.0, 400.0])
    assert np.allclose(packed_e2e_p99(model, spread, qps), model.e2e_p99(placement, qps))
    ours = packed_carbon(model, spread, qps, ci, 1 / 60)
    theirs = model.carbon(placement, qps, ci, 1 / 60)
    assert np.allclose(ours.embodied_g, theirs.embodied_g)
    assert np.allclose(ours.operational_g, theirs.operational_g)
    assert packed_e2e_p99_at(model, spread, 1500.0) == pytest.approx(
        float(model.e2e_p99(placement, 1500.0)))


def test_a_shared_socket_is_charged_once_and_slows_its_replicas(social_model):
    model = social_model
    placement = Placement.uniform(model.services, "new")
    shares = {s: 0.05 for s in model.services}
    spread = one_per_socket(placement, shares)
    together = PackedPlacement(placement.items, sockets=(Socket("new", tuple(
        (s, 0.05) for s in model.services)),), shares=tuple(shares.items()))
    qps, ci = np.array([200.0]), np.array([250.0])
    spread_c = packed_carbon(model, spread, qps, ci, 1.0)
    together_c = packed_carbon(model, together, qps, ci, 1.0)
    new = model.hardware.generation("new")
    assert together_c.embodied_g[0] == pytest.approx(new.embodied_g_per_h)
    assert spread_c.embodied_g[0] == pytest.approx(len(model.services) * new.embodied_g_per_h)
    assert together_c.operational_g[0] < spread_c.operational_g[0]
    total = socket_utilisation(model, together, qps)[0]
    assert total[0] == pytest.approx(sum(float(u[0]) for u in model.utilisation(placement,
                                                                                 qps).values()))
    assert packed_e2e_p99(model, together, qps)[0] > packed_e2e_p99(model, spread, qps)[0]


def test_evaluate_packed_sequence_mixes_plain_and_packed(social_model):
    model = social_model
    plain = Placement.uniform(model.services, "new")
    packed = pack(plain, {s: 0.2 for s in model.services}, 0.7)
    qps = np.array([500.0, 900.0, 1200.0, 800.0])
    ci = np.full(4, 200.0)
    p99, carbon = evaluate_packed_sequence(model, [plain, packed, plain, packed], qps, ci, 0.1)
    assert p99[0] == pytest.approx(float(model.e2e_p99(plain, 500.0)))
    assert p99[1] == pytest.approx(float(packed_e2e_p99(model, packed, np.array([900.0]))[0]))
    assert carbon.total_g[3] == pytest.approx(
        float(packed_carbon(model, packed, qps[3:], ci[3:], 0.1).total_g[0]))
    assert carbon.by_generation_g["new"] == pytest.approx(carbon.total_g)


def _first_fit_scan(sizes, capacity, apart=True):
    """The plain first-fit-decreasing scan (the reference for the fast one)."""
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i][1])
    bins, totals, keys = [], [], []
    for i in order:
        key, size = sizes[i]
        for b, total in enumerate(totals):
            if total + size <= capacity + FIT_TOLERANCE and not (apart and key in keys[b]):
                bins[b].append((key, size))
                totals[b] = total + size
                keys[b].add(key)
                break
        else:
            bins.append([(key, size)])
            totals.append(size)
            keys.append({key})
    return bins


@pytest.mark.parametrize("seed,items,capacity,apart", [
    (1, 0, 0.7, True), (2, 1, 0.7, True), (3, 40, 0.7, True), (4, 300, 0.5, True),
    (5, 300, 1.0, False), (6, 300, 0.3, True), (7, 2000, 0.7, True),
], ids=["empty", "one", "forty", "300-at-50%", "300-not-apart", "oversized", "2000"])
def test_first_fit_decreasing_equals_the_plain_scan(seed, items, capacity, apart):
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, max(items // 3, 1), size=items)
    sizes = [(f"s{k}", float(round(v, 3))) for k, v in
             zip(keys, rng.uniform(0.005, 0.6, size=items), strict=True)]
    assert first_fit_decreasing(sizes, capacity, apart) == _first_fit_scan(sizes, capacity, apart)


OLD1, OLD2, NEW1 = (ServicePlacement("old", 1), ServicePlacement("old", 2),
                    ServicePlacement("new", 1))


def test_merged_takes_the_services_with_their_sockets_and_leaves_the_rest_in_place():
    base = pack(Placement((("a", OLD1), ("b", OLD2), ("c", OLD1))),
                {"a": 0.3, "b": 0.2, "c": 0.3}, 0.7)
    other = pack(Placement((("a", NEW1), ("b", OLD1), ("c", OLD1))),
                 {"a": 0.5, "b": 0.4, "c": 0.1}, 0.7)
    out = merged(base, other, {"a", "b"})
    assert out.items == (("a", NEW1), ("b", OLD1), ("c", OLD1))
    assert dict(out.shares) == {"a": 0.5, "b": 0.4, "c": 0.3}
    kept = [tuple(r for r in s.replicas if r[0] == "c") for s in base.sockets]
    taken = [tuple(r for r in s.replicas if r[0] in "ab") for s in other.sockets]
    assert [s.replicas for s in out.sockets] == [r for r in kept + taken if r]
    assert sorted(name for s in out.sockets for name, _ in s.replicas) == ["a", "b", "c"]


def test_merged_counts_a_plain_placement_as_whole_sockets():
    plain = Placement((("a", OLD2), ("b", OLD1)))
    assert as_packed(plain).sockets == (Socket("old", (("a", WHOLE_SOCKET),)),
                                        Socket("old", (("a", WHOLE_SOCKET),)),
                                        Socket("old", (("b", WHOLE_SOCKET),)))
    sized = pack(Placement((("a", OLD1), ("b", OLD1))), {"a": 0.2, "b": 0.2}, 0.7)
    out = merged(plain, sized, {"b"})
    assert out.share("a") == WHOLE_SOCKET and out.share("b") == 0.2
    assert len(out.sockets) == 3


def test_changes_asked_twice_give_the_same_answer_and_follow_the_other_placement():
    a = pack(Placement((("a", OLD1), ("b", OLD1))), {"a": 0.2, "b": 0.2}, 0.7)
    b = pack(Placement((("a", OLD1), ("b", OLD1))), {"a": 0.3, "b": 0.2}, 0.7)
    c = pack(Placement((("a", OLD2), ("b", OLD1))), {"a": 0.2, "b": 0.4}, 0.7)
    first = a.changes(b)
    first.clear()                                      # the caller's list, not the cache
    assert a.changes(b) == [("a", OLD1, OLD1)]
    assert a.changes(c) == [("a", OLD1, OLD2), ("b", OLD1, OLD1)]
    assert a.changes(b) == [("a", OLD1, OLD1)]
