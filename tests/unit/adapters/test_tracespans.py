"""Reading Jaeger and Zipkin v2 exports: the shapes each tool writes, and errors that name
the file, the trace, the span and the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from ecoscale.adapters.tracespans import parse_trace_document, read_trace_file
from ecoscale.errors import InputError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "traces"
JAEGER = json.loads((FIXTURES / "jaeger-social-small.json").read_text())
ZIPKIN = json.loads((FIXTURES / "zipkin-social-small.json").read_text())


@pytest.mark.parametrize("name,fmt,traces,spans", [
    pytest.param("jaeger-social-small.json", "jaeger", 3, 26, id="jaeger"),
    pytest.param("zipkin-social-small.json", "zipkin", 3, 26, id="zipkin"),
])
def test_fixtures_are_read_and_told_apart(name, fmt, traces, spans):
    read = read_trace_file(FIXTURES / name)
    assert (read.format, read.traces, len(read.spans)) == (fmt, traces, spans)
    assert read_trace_file(FIXTURES / name, fmt).spans == read.spans


def test_jaeger_fields():
    spans = {s.span_id: s for s in parse_trace_document(JAEGER, "j").spans}
    root = spans["a3ce929d0e0e4736"]
    assert (root.parent_id, root.service, root.operation, root.start_us, root.duration_us,
            root.http) == ("", "nginx-web-server", "/wrk2-api/home-timeline/read",
                           1733050800000000, 9000, "GET /wrk2-api/home-timeline/read")
    redis = spans["7c2d9e4f1a3b5c60"]
    assert (redis.parent_id, redis.remote_service, redis.db_system) == (
        "1b6e3d2c5a4f0e91", "home-timeline-redis", "redis")


def test_a_zipkin_shared_server_span_becomes_the_client_spans_child():
    spans = {s.span_id: s for s in parse_trace_document(ZIPKIN, "z").spans
             if s.trace_id == "5af7183fb1d4cf5f"}
    client, server = spans["352bff9a74ca9ad2"], spans["352bff9a74ca9ad2.server"]
    assert (client.service, client.parent_id) == ("nginx-web-server", "5af7183fb1d4cf5f")
    assert (server.service, server.parent_id) == ("home-timeline-service", "352bff9a74ca9ad2")
    # the callee's own calls hang below its server span, not below the caller's client span
    assert spans["e457b5a2e4d86bd1"].parent_id == "352bff9a74ca9ad2.server"
    assert spans["b7ad6b7169203331"].parent_id == "352bff9a74ca9ad2.server"


def test_zipkin_flat_list_of_spans_is_one_export():
    flat = [span for trace in ZIPKIN for span in trace]
    assert parse_trace_document(flat, "z").spans == parse_trace_document(ZIPKIN, "z").spans


def test_one_jaeger_trace_without_the_data_envelope():
    read = parse_trace_document(JAEGER["data"][2], "j")
    assert (read.traces, len(read.spans)) == (1, 10)


def jaeger(change) -> dict:
    document = copy.deepcopy(JAEGER)
    change(document["data"][0]["spans"][1])     # trace 4bf9..., span 00f067aa0ba902b7
    return document


def zipkin(change) -> list:
    document = copy.deepcopy(ZIPKIN)
    change(document[0][1])                       # trace 5af7183fb1d4cf5f, span 352bff9a74ca9ad2
    return document


J_WHERE = "trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7"
Z_WHERE = "trace 5af7183fb1d4cf5f span 352bff9a74ca9ad2"


@pytest.mark.parametrize("document,fragments", [
    pytest.param(jaeger(lambda s: s.pop("startTime")), [J_WHERE, "'startTime' missing"],
                 id="jaeger-no-start"),
    pytest.param(jaeger(lambda s: s.update(duration=-3)),
                 [J_WHERE, "'duration' (µs) must be a number >= 0, got -3"],
                 id="jaeger-negative-duration"),
    pytest.param(jaeger(lambda s: s.update(duration="8500")),
                 [J_WHERE, "'duration'", "write the number without quotes"],
                 id="jaeger-quoted-duration"),
    pytest.param(jaeger(lambda s: s.pop("processID")), [J_WHERE, "'processID' missing"],
                 id="jaeger-no-process"),
    pytest.param(jaeger(lambda s: s.pop("spanID")),
                 ["trace 4bf92f3577b34da6a3ce929d0e0e4736 spans[1]", "'spanID' missing"],
                 id="jaeger-no-span-id"),
    pytest.param(jaeger(lambda s: s.update(references=[{"refType": "CHILD_OF"}])),
                 [J_WHERE, "reference without 'spanID'"], id="jaeger-bad-reference"),
    pytest.param(zipkin(lambda s: s.pop("timestamp")), [Z_WHERE, "'timestamp' missing"],
                 id="zipkin-no-timestamp"),
    pytest.param(zipkin(lambda s: s.update(duration=True)),
                 [Z_WHERE, "'duration'", "true/false is not a number"], id="zipkin-bool"),
    pytest.param(zipkin(lambda s: s.pop("id")),
                 ["trace 5af7183fb1d4cf5f span [1]", "'id' missing"], id="zipkin-no-id"),
    pytest.param(zipkin(lambda s: s.update(localEndpoint="nginx")),
                 [Z_WHERE, "localEndpoint and remoteEndpoint must be objects"],
                 id="zipkin-endpoint-text"),
    pytest.param({"traces": []}, ["neither a Jaeger export", "/api/traces"], id="unknown-shape"),
    pytest.param([[{"traceId": "a"}], {"traceId": "b"}], ["mixes lists and objects"],
                 id="zipkin-mixed"),
])
def test_bad_exports_name_file_trace_span_and_field(document, fragments):
    with pytest.raises(InputError) as error:
        parse_trace_document(document, "export.json")
    text = str(error.value)
    assert text.startswith("export.json: ")
    for fragment in fragments:
        assert fragment in text


def test_every_problem_at_once_up_to_a_limit():
    document = copy.deepcopy(JAEGER)
    for span in document["data"][0]["spans"]:
        span.pop("duration")
    with pytest.raises(InputError) as error:
        parse_trace_document(document, "export.json")
    assert len(error.value.problems) == 8


def test_not_json_says_what_to_give(tmp_path):
    path = tmp_path / "traces.json"
    path.write_text("<html>Jaeger UI</html>")
    with pytest.raises(InputError) as error:
        read_trace_file(path)
    text = str(error.value)
    for fragment in (f"{path}: ", "not JSON", "line 1 column 1", "curl '"):
        assert fragment in text


def test_json_nested_too_deeply_is_refused(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="nested too deeply"):
        read_trace_file(path)
