import copy

import pytest

from ecoscale.adapters.files import load_topology
from ecoscale.errors import InputError
from ecoscale.model.topology import parse_topology

APPS = ["socialNetwork", "hotelReservation", "mediaMicroservices"]


@pytest.mark.parametrize("app", APPS)
def test_shipped_topologies_load_and_cover_their_endpoints(app):
    topology = load_topology(app)
    assert topology.frontend in topology.services
    assert abs(sum(e.share for e in topology.endpoints) - 1) < 1e-9
    visits = topology.visits_per_request()
    assert visits[topology.frontend] == pytest.approx(1.0)


def test_social_network_visits_follow_the_mix():
    visits = load_topology("socialNetwork").visits_per_request()
    # post-storage-service is on every endpoint's path; user-timeline on 30 % + 10 %.
    assert visits["post-storage-service"] == pytest.approx(1.0)
    assert visits["user-timeline-service"] == pytest.approx(0.4)
    assert visits["home-timeline-service"] == pytest.approx(0.7)
    assert visits["media-frontend"] == 0.0
    assert len(load_topology("socialNetwork").services) == 26


BASE = {
    "app": "toy",
    "frontend": "fe",
    "services": {
        "fe": {"kind": "logic", "calls": ["a", "b"]},
        "a": {"kind": "logic", "calls": ["db"]},
        "b": {"kind": "logic", "calls": ["a"]},
        "db": {"kind": "mongodb"},
    },
    "endpoints": {
        "read": {"share": 0.7, "http": "GET /r", "path": [["fe"], ["a", "b"], ["db"]]},
        "write": {"share": 0.3, "http": "POST /w", "path": [["fe"], [{"b": [["a"]]}]]},
    },
}


def broken(change):
    data = copy.deepcopy(BASE)
    change(data)
    return data


CASES = [
    pytest.param(lambda d: d["services"]["a"]["calls"].append("ghost"),
                 ["calls unknown service 'ghost'"], id="unknown-service-in-calls"),
    pytest.param(lambda d: d["endpoints"]["read"]["path"].append(["nowhere"]),
                 ["unknown service 'nowhere'"], id="unknown-service-in-path"),
    pytest.param(lambda d: d["endpoints"]["write"]["path"].__setitem__(1, [{"a": [["fe"]]}]),
                 ["cycle inside the path"], id="cycle-back-to-frontend"),
    pytest.param(lambda d: d["endpoints"]["write"]["path"].__setitem__(
        1, [{"b": [[{"a": [["b"]]}]]}]), ["cycle inside the path: b -> a -> b"], id="cycle-nested"),
    pytest.param(lambda d: d["endpoints"]["write"]["path"].__setitem__(1, [{"db": [["a"]]}]),
                 ["unknown callee 'a'"], id="unknown-callee"),
    pytest.param(lambda d: d["endpoints"]["read"].__setitem__("share", 0.6),
                 ["shares sum to 0.9"], id="shares-not-one"),
    pytest.param(lambda d: d["services"]["db"].__setitem__("kind", "oracle"),
                 ["kind 'oracle'"], id="unknown-kind"),
]


@pytest.mark.parametrize("change,expected", CASES)
def test_each_problem_is_reported(change, expected):
    with pytest.raises(InputError) as info:
        parse_topology(broken(change), "toy.yaml")
    text = str(info.value)
    assert "toy.yaml" in text
    for fragment in expected:
        assert fragment in text


def test_every_problem_is_reported_at_once():
    def many(d):
        d["services"]["a"]["calls"].append("ghost")
        d["endpoints"]["read"]["share"] = 0.5
        d["endpoints"]["write"]["path"][1] = [{"db": [["a"]]}]

    with pytest.raises(InputError) as info:
        parse_topology(broken(many), "toy.yaml")
    # ghost; db is no callee of fe; a is no callee of db; shares 0.8
    assert len(info.value.problems) == 4
    assert "4 problems" in str(info.value)


def test_valid_toy_parses():
    topology = parse_topology(copy.deepcopy(BASE), "toy.yaml")
    assert topology.visits_per_request() == pytest.approx(
        {"fe": 1.0, "a": 1.0, "b": 1.0, "db": 0.7}
    )


@pytest.mark.parametrize("notes, expected", [
    (None, ()),
    (["from DeathStarBench"], ("from DeathStarBench",)),
    ("one line", ("one line",)),
], ids=["absent", "list", "text"])
def test_notes_absent_are_empty_not_the_text_of_an_empty_tuple(notes, expected):
    data = copy.deepcopy(BASE)
    data.pop("notes", None)
    if notes is not None:
        data["notes"] = notes
    assert parse_topology(data, "tiny.yaml").notes == expected
