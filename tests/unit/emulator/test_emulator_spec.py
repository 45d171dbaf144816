"""The emulator's app document: call ids, routing, who serves what, validation."""

import pytest

from ecoscale.emulator.spec import AppSpec, SpecError
from ecoscale.lab.apps import load_app

APPS = ["socialNetwork", "hotelReservation", "mediaMicroservices"]


def social() -> AppSpec:
    return AppSpec.from_dict(load_app("socialNetwork").document())


def test_call_ids_name_each_position_of_the_tree():
    compose = social().endpoint("compose-post")
    ids = {(n.call_id, n.service) for n in compose.nodes()}
    assert ("0.0", "nginx-thrift") in ids
    assert ("1.0", "compose-post-service") in ids
    assert ("2.0", "text-service") in ids
    # text-service's own sub-path: one stage with two parallel calls.
    assert ("2.0.0.0", "url-shorten-service") in ids
    assert ("2.0.0.1", "user-mention-service") in ids
    # home-timeline-service's sub-path has two stages.
    assert ("3.2.1.0", "home-timeline-redis") in ids


@pytest.mark.parametrize("app", APPS)
def test_every_endpoint_route_is_served_by_the_front_end(app):
    spec = AppSpec.from_dict(load_app(app).document())
    for endpoint in spec.endpoints:
        assert spec.route(endpoint.method, endpoint.route + "?user=1") is endpoint
    assert spec.route("DELETE", "/nowhere") is None


def test_a_service_serves_exactly_its_calls():
    spec = social()
    served = spec.calls_served_by("post-storage-mongodb")
    assert {endpoint for endpoint, _ in served} == {"read-home-timeline", "read-user-timeline",
                                                    "compose-post"}
    assert spec.calls_served_by("media-frontend") == {}
    assert spec.endpoints_of("media-frontend") == ()
    assert set(spec.endpoints_of("nginx-thrift")) == {e.name for e in spec.endpoints}


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["services"]["nginx-thrift"].update(cpu_ms=-1), "cpu_ms must be a number >= 0"),
    (lambda d: d.update(frontend="nobody"), "frontend 'nobody'"),
    (lambda d: d["endpoints"][0].update(http="fetch it"), "http must look like"),
    (lambda d: d["endpoints"][0]["path"][1][0].update(service="ghost"), "unknown service"),
    (lambda d: d.update(node_speed={"n": 2.0}), "node_speed"),
    (lambda d: d.update(port=0), "port must be"),
], ids=["negative-cpu", "frontend", "http", "unknown-callee", "speed", "port"])
def test_bad_documents_are_rejected_with_the_reason(mutate, message):
    data = load_app("socialNetwork").document()
    mutate(data)
    with pytest.raises(SpecError, match=message):
        AppSpec.from_dict(data)


def test_node_speed_defaults_to_host_speed():
    spec = AppSpec.from_dict({**load_app("socialNetwork").document(),
                              "node_speed": {"ecoscale-old-1": 0.5}})
    assert spec.speed_of("ecoscale-old-1") == 0.5
    assert spec.speed_of("ecoscale-new-1") == 1.0
