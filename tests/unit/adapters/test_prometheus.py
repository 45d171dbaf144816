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
