"""Topology inference from spans: stages from timing, the flat form, the mix, the kinds, and
findings that name the trace and the span for what cannot be placed."""

from __future__ import annotations

import pytest

from ecoscale.adapters.files import load_topology
from ecoscale.model.topology import Call, parse_topology
from ecoscale.model.topology_inference import (
    Span,
    infer_topology,
    normal_form,
    path_data,
    topology_data,
)
from ecoscale.testing_traces import synthesize

FE = "fe"


def sp(sid: str, parent: str, service: str, start: float, end: float, trace: str = "t1",
       op: str = "", **extra: str) -> Span:
    return Span(trace, sid, parent, service, op or f"{service}-op", start, end - start, **extra)


def root(trace: str = "t1", op: str = "read", end: float = 100.0) -> Span:
    return Span(trace, f"{trace}-root", "", FE, op, 0.0, end, http="GET /r")


def one_path(spans: list[Span]) -> list:
    result = infer_topology(spans, "toy")
    assert result.findings == (), [f.line() for f in result.findings]
    assert result.topology is not None, result.problems
    (endpoint,) = result.topology.endpoints
    return path_data(endpoint.path)


R = "t1-root"


@pytest.mark.parametrize("children,expected", [
    pytest.param([sp("a", R, "a", 10, 30), sp("b", R, "b", 40, 60)],
                 [[FE], ["a"], ["b"]], id="sequential-calls-are-stages"),
    pytest.param([sp("a", R, "a", 10, 30), sp("b", R, "b", 30, 60)],
                 [[FE], ["a"], ["b"]], id="touching-is-sequential"),
    pytest.param([sp("b", R, "b", 20, 60), sp("a", R, "a", 10, 50)],
                 [[FE], ["a", "b"]], id="overlapping-calls-are-one-stage"),
    pytest.param([sp("a", R, "a", 10, 80), sp("c", "a", "c", 20, 40), sp("b", R, "b", 15, 70)],
                 [[FE], [{"a": [["c"]]}, "b"]], id="sub-path-during-a-parallel-call-nests"),
    pytest.param([sp("a", R, "a", 10, 90), sp("c", "a", "c", 60, 80), sp("b", R, "b", 15, 50)],
                 [[FE], ["a", "b"], ["c"]], id="sub-path-after-the-stage-is-a-later-stage"),
    pytest.param([sp("a", R, "a", 10, 90), sp("c", "a", "c", 20, 40), sp("d", "a", "d", 60, 80),
                  sp("b", R, "b", 15, 50)],
                 [[FE], [{"a": [["c"]]}, "b"], ["d"]], id="only-the-late-part-is-lifted"),
    pytest.param([sp("a", R, "a", 10, 90), sp("c", "a", "c", 20, 40), sp("d", "c", "d", 25, 35)],
                 [[FE], ["a"], ["c"], ["d"]], id="a-call-alone-is-written-flat"),
    pytest.param([sp("cl", R, FE, 5, 95), sp("a", "cl", "a", 10, 90)],
                 [[FE], ["a"]], id="client-span-of-the-caller-is-merged"),
    pytest.param([sp("db", R, FE, 10, 30, remote_service="users-db")],
                 [[FE], ["users-db"]], id="client-span-to-an-untraced-service"),
    pytest.param([sp("a", R, "a", 10, 90), sp("a2", "a", "a", 20, 80), sp("c", "a2", "c", 30, 40)],
                 [[FE], ["a"], ["c"]], id="internal-span-is-part-of-its-service"),
])
def test_stages_come_from_timing(children, expected):
    assert one_path([root(), *children]) == expected


GOOD = [root("t0"), sp("a0", "t0-root", "a", 10, 30, trace="t0")]


@pytest.mark.parametrize("bad,kind,span", [
    pytest.param([root(), sp("a", "gone", "a", 10, 30)], "orphan", "a", id="orphan"),
    pytest.param([root(), sp("a", R, "a", -5, 30)], "skew", "a", id="skew-starts-early"),
    pytest.param([root(), sp("a", R, "a", 10, 130)], "skew", "a", id="skew-ends-late"),
    pytest.param([root(), sp("a", R, "a", 10, 90), sp("b", "a", "b", 20, 80),
                  sp("a2", "b", "a", 30, 40)], "cycle", "a2", id="service-cycle"),
    pytest.param([root(), sp("x", "y", "a", 10, 20), sp("y", "x", "b", 10, 20)], "cycle", "x",
                 id="parent-ids-loop"),
    pytest.param([root(), sp("a", R, "", 10, 30)], "no-service", "a", id="no-service-name"),
    pytest.param([root(), Span("t1", "t1-second", "", FE, "read", 0, 50)], "roots", R,
                 id="two-roots"),
    pytest.param([root(), sp("a", R, "a", 10, 30), sp("a", R, "b", 40, 60)], "duplicate", "a",
                 id="two-spans-one-id"),
])
def test_what_cannot_be_placed_is_a_finding_naming_trace_and_span(bad, kind, span):
    result = infer_topology([*GOOD, *bad], "toy")
    found = [f for f in result.findings if f.trace_id == "t1"]
    assert [f.kind for f in found] == [kind], [f.line() for f in found]
    assert found[0].span_id == span
    assert f"trace t1 span {span}" in found[0].line()
    assert result.topology is not None                       # the good trace still counts
    assert path_data(result.topology.endpoints[0].path) == [[FE], ["a"]]


def test_a_very_deep_trace_is_a_finding_not_a_crash():
    """1,000 spans of one service nested in one another (deeper than Python's recursion)."""
    deep = [root()] + [sp(f"s{n}", f"s{n - 1}" if n else R, "a", n, 99 - n / 100)
                       for n in range(1000)]
    result = infer_topology([*GOOD, *deep], "toy")
    (finding,) = result.findings
    assert (finding.kind, finding.trace_id) == ("depth", "t1")
    assert result.topology is not None


def test_the_same_span_twice_is_one_span():
    spans = [root(), sp("a", R, "a", 10, 30)]
    assert one_path(spans + spans) == [[FE], ["a"]]


def test_the_structure_most_traces_agree_on_wins_and_the_others_are_named():
    spans = []
    for n in range(3):
        t = f"ok{n}"
        spans += [root(t), sp(f"{t}a", f"{t}-root", "a", 10, 30, trace=t),
                  sp(f"{t}b", f"{t}-root", "b", 40, 60, trace=t)]
    spans += [root("odd"), sp("odda", "odd-root", "a", 10, 50, trace="odd"),
              sp("oddb", "odd-root", "b", 20, 60, trace="odd")]
    result = infer_topology(spans, "toy")
    assert result.topology is not None
    assert path_data(result.topology.endpoints[0].path) == [[FE], ["a"], ["b"]]
    (finding,) = result.findings
    assert (finding.kind, finding.trace_id, finding.span_id) == ("disagreement", "odd",
                                                                 "odd-root")
    assert "[fe] [a b]" in finding.message and "3 of 4" in finding.message
    (evidence,) = result.endpoints
    assert (evidence.traces, evidence.placed, evidence.agreeing) == (4, 4, 3)


@pytest.mark.parametrize("counts,shares", [
    pytest.param({"read": 3, "write": 1}, {"read": 0.75, "write": 0.25}, id="three-to-one"),
    pytest.param({"a": 1, "b": 1, "c": 1}, {"a": 0.3334, "b": 0.3333, "c": 0.3333},
                 id="thirds-still-sum-to-one"),
])
def test_the_mix_is_the_root_operations_counts(counts, shares):
    spans = [root(f"{op}{n}", op=op) for op, count in counts.items() for n in range(count)]
    result = infer_topology(spans, "toy")
    assert result.topology is not None
    assert {e.name: e.share for e in result.topology.endpoints} == shares
    assert sum(e.share for e in result.topology.endpoints) == pytest.approx(1, abs=1e-9)


@pytest.mark.parametrize("service,hint,kind", [
    pytest.param("user-mongodb", "", "mongodb", id="name-mongodb"),
    pytest.param("mongo-geo", "", "mongodb", id="name-mongo"),
    pytest.param("post-storage-memcached", "", "memcached", id="name-memcached"),
    pytest.param("cache", "redis", "redis", id="db-system-tag-beats-the-name"),
    pytest.param("user-service", "", "logic", id="default-logic"),
])
def test_kinds(service, hint, kind):
    """A client span's db.system tag gives the kind of the service it calls."""
    spans = [root(), sp("c", R, FE, 10, 30, remote_service=service, db_system=hint)]
    result = infer_topology(spans, "toy")
    assert result.topology is not None
    assert result.topology.services[service].kind == kind


def test_a_db_tag_on_the_callers_own_span_does_not_make_the_caller_a_database():
    spans = [root(), sp("a", R, "user-service", 10, 90),
             sp("q", "a", "user-service", 20, 30, db_system="mongodb")]
    result = infer_topology(spans, "toy")
    assert result.topology is not None
    assert result.topology.services["user-service"].kind == "logic"


@pytest.mark.parametrize("operation,name,http", [
    pytest.param("GET /api/users/{id}", "api-users-id", "GET /api/users/{id}",
                 id="method-and-route-in-the-name"),
    pytest.param("get /home", "home", "", id="lowercase-method-dropped"),
    pytest.param("HTTP GET", "HTTP-GET", "", id="other-names-kept"),
])
def test_endpoint_names_and_http(operation, name, http):
    result = infer_topology([Span("t", "r", "", FE, operation, 0, 10)], "toy")
    assert result.topology is not None
    (endpoint,) = result.topology.endpoints
    assert (endpoint.name, endpoint.http) == (name, http)
    assert [f.kind for f in result.findings] == ([] if http else ["http"])


def test_nothing_placeable_is_no_topology_with_the_reason():
    result = infer_topology([sp("a", "gone", "a", 0, 10)], "toy")
    assert result.topology is None
    assert "no trace has exactly one root" in result.problems[0]
    assert [f.kind for f in result.findings] == ["orphan", "roots"]


def test_topology_data_loads_back_the_same():
    topology = load_topology("socialNetwork")
    again = parse_topology(topology_data(topology), "mem")
    assert (again.services, again.endpoints, again.frontend) == (
        topology.services, topology.endpoints, topology.frontend)


def test_normal_form_writes_a_lone_call_flat():
    nested = ((Call("fe"),), (Call("a", ((Call("c"),), (Call("d"),))),))
    assert normal_form(nested) == ((Call("fe"),), (Call("a"),), (Call("c"),), (Call("d"),))
    parallel = ((Call("fe"),), (Call("b"), Call("a", ((Call("c"),),))))
    assert normal_form(parallel) == ((Call("fe"),), (Call("a", ((Call("c"),),)), Call("b")))


def test_the_synthesizer_refuses_a_path_traces_cannot_show():
    data = {"app": "toy", "frontend": FE,
            "services": {FE: {"kind": "logic", "calls": ["a", "b"]},
                         "a": {"kind": "logic", "calls": ["c"]},
                         "b": {"kind": "logic", "calls": ["d"]},
                         "c": {"kind": "logic"}, "d": {"kind": "logic"}},
            "endpoints": {"x": {"share": 1.0, "http": "GET /", "path": [[FE], ["a", "b"],
                                                                         ["c", "d"]]}}}
    with pytest.raises(ValueError, match=r"x stage 2: no one service may call all of \['c', "
                                         r"'d'\]"):
        synthesize(parse_topology(data, "mem"), 1)
