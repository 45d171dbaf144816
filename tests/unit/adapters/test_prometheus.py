"""The Prometheus adapter against replies recorded from a real Prometheus 2.42."""

import json
import math
from pathlib import Path

import pytest

from ecoscale.adapters.prometheus import PromQLMetrics, parse_reply
from ecoscale.config import PrometheusConfig
from ecoscale.ports import SourceUnavailable

FIXTURES = Path(__file__).parents[2] / "fixtures" / "prometheus"


def reply(name):
    return json.loads((FIXTURES / f"{name}.json").read_text())


def stamp(name):
    return parse_reply(reply(name), "q")[0][1]


class Recorded:
    """A client that answers each query with a recorded reply."""

    def __init__(self, answers):
        self.answers = answers

    def query(self, promql, at_s=None):
        return parse_reply(reply(self.answers[promql]), promql)


def source(qps, p99, util="", stale_after_s=60.0):
    config = PrometheusConfig(qps="QPS", p99_ms="P99", service_utilisation="UTIL" if util else "",
                              stale_after_s=stale_after_s)
    answers = {"QPS": qps, "P99": p99, "UTIL": util}
    return PromQLMetrics(config, Recorded(answers))


def test_one_series_and_a_scalar():
    metrics = source("vector_one", "scalar").read(stamp("vector_one") + 5)
    assert metrics.qps == pytest.approx(2.857142857)
    assert metrics.p99_ms == pytest.approx(2.857142857)
    assert metrics.problems == ()


@pytest.mark.parametrize("p99_reply,fragment", [
    ("vector_empty", "empty result"),
    ("vector_nan", "nan"),
    ("vector_many", "3 series"),
])
def test_no_data_is_nan_never_a_number(p99_reply, fragment):
    metrics = source("vector_one", p99_reply).read(stamp("vector_one") + 5)
    assert math.isnan(metrics.p99_ms)
    assert any(fragment in p for p in metrics.problems)


def test_stale_samples_are_no_data():
    metrics = source("vector_one", "vector_p99").read(stamp("vector_one") + 3600)
    assert math.isnan(metrics.qps) and math.isnan(metrics.p99_ms)
    assert all("stale" in p for p in metrics.problems)


def test_per_service_utilisation_by_label():
    metrics = source("vector_one", "vector_p99", util="vector_by_service").read(
        stamp("vector_one") + 5)
    assert metrics.service_utilisation == {"svc-self": pytest.approx(0.013571428571428573)}


def test_a_query_error_is_reported():
    with pytest.raises(SourceUnavailable, match="unclosed left parenthesis"):
        parse_reply(reply("error_parse"), "sum(")


def test_unreachable_server_is_source_unavailable():
    from ecoscale.adapters.prometheus import PrometheusClient

    client = PrometheusClient("http://127.0.0.1:9", timeout_s=0.5)
    with pytest.raises(SourceUnavailable, match="127.0.0.1:9"):
        client.query("up")


class Answer:
    def __init__(self, status, body):
        self.status_code = status
        self.body = body
        self.text = body if isinstance(body, str) else json.dumps(body)

    def json(self):
        if isinstance(self.body, str):
            raise ValueError("not JSON")
        return self.body


class Session:
    """requests.Session's get/post answering by path, recording what was asked."""

    def __init__(self, answers):
        self.answers = answers
        self.asked = []

    def get(self, url, params=None, timeout=None):
        self.asked.append(("GET", url, params))
        return self.answers[url.split("9090", 1)[1]]

    def post(self, url, timeout=None):
        self.asked.append(("POST", url, None))
        return self.answers[url.split("9090", 1)[1]]


def client(answers):
    from ecoscale.adapters.prometheus import PrometheusClient

    return PrometheusClient("http://127.0.0.1:9090/", session=Session(answers))


@pytest.mark.parametrize("name,has_value", [
    pytest.param("vector_one", True, id="one-series"),
    pytest.param("vector_empty", False, id="empty-is-none-not-zero"),
    pytest.param("vector_nan", False, id="nan-is-none"),
])
def test_value_of_a_query(name, has_value):
    got = client({"/api/v1/query": Answer(200, reply(name))}).value("q", at_s=12.5)
    expected = parse_reply(reply(name), "q")[0][2] if has_value else None
    assert got == expected
    if has_value:
        assert math.isfinite(got)


def test_value_sends_the_time_and_the_query():
    prometheus = client({"/api/v1/query": Answer(200, reply("vector_one"))})
    prometheus.value("sum(up)", at_s=1795461608.9764)
    assert prometheus.session.asked == [
        ("GET", "http://127.0.0.1:9090/api/v1/query",
         {"query": "sum(up)", "time": "1795461608.976"})]


def test_by_label_maps_the_label_and_leaves_out_nan():
    got = client({"/api/v1/query": Answer(200, reply("vector_by_service"))}).by_label(
        "q", "service")
    assert got == {"svc-self": pytest.approx(0.013571428571428573)}


def test_targets_up_by_service_label_else_dns_name():
    prometheus = client({"/api/v1/targets": Answer(200, reply("targets_swarm"))})
    assert prometheus.targets_up("ecoscale-services", "swarm_service") == {
        "user-service": {"10.0.1.5:8080": True, "10.0.1.9:8080": False},
        "media-service": {"10.0.1.7:8080": True},
    }
    assert prometheus.targets_up("prometheus", "swarm_service") == {
        "": {"localhost:9090": True}}


@pytest.mark.parametrize("answer,ok", [
    pytest.param(Answer(200, "Prometheus Server is Ready.\n"), True, id="ready"),
    pytest.param(Answer(503, "Service Unavailable"), False, id="starting"),
])
def test_ready(answer, ok):
    assert client({"/-/ready": answer}).ready() is ok


def test_reload_refused_names_the_server_and_the_reason():
    prometheus = client({"/-/reload": Answer(500, "failed to reload config: bad yaml")})
    with pytest.raises(SourceUnavailable, match="127.0.0.1:9090 rejected.*bad yaml"):
        prometheus.reload()
    client({"/-/reload": Answer(200, "")}).reload()


def test_a_reply_that_is_not_json_is_source_unavailable():
    prometheus = client({"/api/v1/query": Answer(502, "<html>bad gateway</html>")})
    with pytest.raises(SourceUnavailable, match="HTTP 502, not JSON"):
        prometheus.query("up")


def test_unreachable_ready_is_false_not_an_error():
    from ecoscale.adapters.prometheus import PrometheusClient

    assert PrometheusClient("http://127.0.0.1:9", timeout_s=0.5).ready() is False
