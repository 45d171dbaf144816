"""`ecoscale topology import`: every shipped topology round trips through synthetic Jaeger and
Zipkin exports, and the command writes a file that loads back, with findings and exit codes
as the rest of the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ecoscale.adapters.files import app_names, load_topology, write_yaml
from ecoscale.adapters.tracespans import parse_trace_document
from ecoscale.cli import main
from ecoscale.model.topology import Call, Stage, Topology
from ecoscale.model.topology_inference import infer_topology, topology_data
from ecoscale.testing_traces import jaeger_document, synthesize, zipkin_document

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"
TRACES = 1500
"""Requests per synthetic export: the rarest shipped endpoint (0.5 %) gets about 7."""
FORMATS = {"jaeger": jaeger_document, "zipkin": zipkin_document}


def sorted_only(path: tuple[Stage, ...]) -> tuple[Stage, ...]:
    """The same path with the calls of each stage in name order (a stage is parallel: its
    order means nothing); nothing else is reshaped."""
    return tuple(tuple(sorted((Call(c.service, sorted_only(c.path)) for c in stage),
                              key=lambda c: (c.service, repr(c.path))))
                 for stage in path)


def visited(topology: Topology) -> set[str]:
    return {call.service for e in topology.endpoints for call in e.calls()}


def share_tolerance(share: float, traces: int) -> float:
    """Four binomial standard errors of a sampled share, plus the written rounding."""
    return 4 * math.sqrt(share * (1 - share) / traces) + 1e-4


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("app", app_names())
def test_every_shipped_topology_round_trips_through_traces(app, fmt, tmp_path):
    original = load_topology(app)
    synthesis = synthesize(original, TRACES, seed=7)
    document = json.loads(json.dumps(FORMATS[fmt](synthesis)))     # as read from a file
    spans = parse_trace_document(document, f"{app}.{fmt}.json").spans
    result = infer_topology(spans, app)

    assert result.findings == ()
    got = result.topology
    assert got is not None, result.problems
    assert got.frontend == original.frontend
    assert set(got.services) == visited(original)
    for name, service in got.services.items():
        assert service.kind == original.services[name].kind, name
        assert set(service.calls) <= set(original.services[name].calls), name
    emitted = {(caller, callee) for caller, callee in synthesis.edges}
    assert {(s.name, c) for s in got.services.values() for c in s.calls} == emitted
    assert {e.name for e in got.endpoints} == {e.name for e in original.endpoints}
    by_name = {e.name: e for e in got.endpoints}
    for endpoint in original.endpoints:
        imported = by_name[endpoint.name]
        assert imported.path == sorted_only(endpoint.path), endpoint.name
        assert imported.http == endpoint.http
        assert abs(imported.share - endpoint.share) <= share_tolerance(endpoint.share, TRACES)
    assert all(e.agreeing == e.placed == e.traces for e in result.endpoints)
    write_yaml(tmp_path / "topology.yaml", topology_data(got))           # as the command does
    again = load_topology(str(tmp_path / "topology.yaml"))
    assert (again.services, again.endpoints) == (got.services, got.endpoints)


def test_the_round_trip_sees_the_timing_not_the_ids():
    """Two seeds give different spans and timings, and the same topology."""
    original = load_topology("socialNetwork")
    first, second = (infer_topology(parse_trace_document(jaeger_document(synthesize(
        original, 300, seed=seed)), "x").spans, "x").topology for seed in (1, 2))
    assert first is not None and second is not None
    assert {e.name: e.path for e in first.endpoints} == {e.name: e.path for e in second.endpoints}
    assert {e.name: e.share for e in first.endpoints} != {e.name: e.share for e in second.endpoints}


EXPECTED_SMALL = {
    "frontend": "nginx-web-server",
    "services": {
        "nginx-web-server": ("logic", ["compose-post-service", "home-timeline-service"]),
        "home-timeline-service": ("logic", ["home-timeline-redis", "post-storage-service"]),
        "home-timeline-redis": ("redis", []),
        "post-storage-service": ("logic", ["post-storage-memcached", "post-storage-mongodb"]),
        "post-storage-memcached": ("memcached", []),
        "post-storage-mongodb": ("mongodb", []),
        "compose-post-service": ("logic", ["post-storage-service", "text-service",
                                           "unique-id-service"]),
        "text-service": ("logic", []),
        "unique-id-service": ("logic", []),
    },
    "endpoints": {
        "wrk2-api-home-timeline-read": (
            0.6667, "GET /wrk2-api/home-timeline/read",
            [["nginx-web-server"], ["home-timeline-service"], ["home-timeline-redis"],
             ["post-storage-service"], ["post-storage-memcached"], ["post-storage-mongodb"]]),
        "wrk2-api-post-compose": (
            0.3333, "POST /wrk2-api/post/compose",
            [["nginx-web-server"], ["compose-post-service"], ["text-service",
             "unique-id-service"], ["post-storage-service"], ["post-storage-mongodb"]]),
    },
}


@pytest.mark.parametrize("fixture", ["jaeger-social-small.json", "zipkin-social-small.json"])
def test_the_command_imports_a_hand_written_export_and_the_file_loads_back(
        fixture, tmp_path, capsys):
    out = tmp_path / "topology.yaml"
    assert main(["topology", "import", str(FIXTURES / fixture), "--app", "small",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "findings: none" in printed.out
    assert f"wrote {out}" in printed.out
    topology = load_topology(str(out))
    assert topology.app == "small"
    assert topology.frontend == EXPECTED_SMALL["frontend"]
    assert {n: (s.kind, list(s.calls)) for n, s in topology.services.items()} == \
        EXPECTED_SMALL["services"]
    from ecoscale.model.topology_inference import path_data

    assert {e.name: (e.share, e.http, path_data(e.path)) for e in topology.endpoints} == \
        EXPECTED_SMALL["endpoints"]


def write(tmp_path: Path, name: str, document: object) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def skewed_export() -> dict:
    """The hand-written Jaeger fixture with one child moved before its parent."""
    document = json.loads((FIXTURES / "jaeger-social-small.json").read_text())
    span = document["data"][0]["spans"][3]            # redis_find_client
    span["startTime"] = document["data"][0]["spans"][2]["startTime"] - 500
    return document


def test_findings_are_listed_naming_trace_and_span_and_strict_refuses(tmp_path, capsys):
    path = write(tmp_path, "skewed.json", skewed_export())
    out = tmp_path / "t.yaml"
    assert main(["topology", "import", str(path), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "1 finding (skew 1)" in err
    assert "skew: trace 4bf92f3577b34da6a3ce929d0e0e4736 span 7c2d9e4f1a3b5c60" in err
    assert load_topology(str(out)).endpoints     # what could be placed is written

    out.unlink()
    assert main(["topology", "import", str(path), "--out", str(out), "--strict"]) == 1
    assert "--strict: nothing written" in capsys.readouterr().err
    assert not out.exists()


def test_json_lists_every_finding(tmp_path, capsys):
    path = write(tmp_path, "skewed.json", skewed_export())
    assert main(["topology", "import", str(path), "--out", str(tmp_path / "t.yaml"),
                 "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["findings"] == [{
        "kind": "skew", "trace": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span": "7c2d9e4f1a3b5c60", "message": document["findings"][0]["message"]}]
    assert document["out"] == str(tmp_path / "t.yaml")


@pytest.mark.parametrize("make,args,code,fragments", [
    pytest.param(lambda p: write(p, "t.json", {"data": [{"traceID": "abc", "spans": [
        {"spanID": "s1", "operationName": "x", "duration": 5, "processID": "p1"}],
        "processes": {"p1": {"serviceName": "fe"}}}]}), [], 1,
        ["t.json", "trace abc span s1", "'startTime'"], id="missing-field"),
    pytest.param(lambda p: write(p, "t.json", {"data": [{"traceID": "abc", "spans": [
        {"spanID": "s1", "operationName": "x", "startTime": 1, "duration": 5,
         "processID": "p1", "references": [{"refType": "CHILD_OF", "spanID": "gone"}]}],
        "processes": {"p1": {"serviceName": "fe"}}}]}), [], 1,
        ["no trace has exactly one root", "orphan: trace abc span s1"], id="only-orphans"),
    pytest.param(lambda p: write(p, "t.json", [[{"traceId": "abc", "id": "s1"}]]),
                 ["--format", "jaeger"], 1, ["t.json", "shaped like a zipkin export",
                                             "--format zipkin"], id="wrong-format"),
    pytest.param(lambda p: p / "nothing.json", [], 1, ["nothing.json", "file not found"],
                 id="no-file"),
    pytest.param(lambda p: write(p, "t.json", {}), ["--app", "../x"], 2,
                 ["--app '../x'"], id="bad-app"),
    pytest.param(lambda p: write(p, "t.json", {}), ["--format", "otlp"], 2,
                 ["invalid choice: 'otlp'"], id="unknown-format"),
])
def test_errors_and_exit_codes(tmp_path, capsys, make, args, code, fragments):
    path = make(tmp_path)
    try:
        got = main(["topology", "import", str(path), "--out", str(tmp_path / "o.yaml"), *args])
    except SystemExit as exc:
        got = exc.code
    assert got == code
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err
    assert not (tmp_path / "o.yaml").exists()


def test_out_is_checked_before_the_traces_are_read(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    never_read = tmp_path / "not-even-there.json"
    assert main(["topology", "import", str(never_read), "--out", str(tmp_path / "folder")]) == 2
    err = capsys.readouterr().err
    assert "ecoscale topology import: error: --out" in err and "is a folder" in err
    assert "(see `ecoscale topology import --help`)" in err


def test_the_default_out_is_the_apps_topology_file(tmp_path, monkeypatch, capsys):
    import ecoscale.paths

    monkeypatch.setattr(ecoscale.paths, "profiles_dir", lambda: tmp_path)
    assert main(["topology", "import", str(FIXTURES / "zipkin-social-small.json")]) == 0
    written = tmp_path / "zipkin-social-small" / "topology.yaml"
    assert load_topology(str(written)).app == "zipkin-social-small"


def test_help_explains_the_formats_and_the_export_commands(capsys):
    assert main(["topology", "import", "--help"]) == 0
    text = capsys.readouterr().out
    for fragment in ("/api/traces?service=", "/api/v2/traces?serviceName=", "--strict",
                     "overlap in time", "exit codes:"):
        assert fragment in text
