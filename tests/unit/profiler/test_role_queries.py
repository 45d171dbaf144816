"""Metrics are configuration: the role queries of a pool (and the lab's defaults), read on
replies recorded from a real Prometheus 2.42 for the emulator's series, OpenTelemetry
spanmetrics (``service_name``, ms buckets) and cAdvisor (Swarm's service-name label)."""

import json
import math
from pathlib import Path

import pytest
import yaml

from ecoscale.adapters.prometheus import PromQLMetrics, parse_reply
from ecoscale.config import PrometheusConfig, RoleQueries
from ecoscale.errors import InputError
from ecoscale.lab.queries import LAB_QUERIES, lab_queries
from ecoscale.paths import deploy_dir
from ecoscale.profiler.experiments import parse_pool
from ecoscale.profiler.runner import Runner, by_service
from ecoscale.profiler.store import E2E

FIXTURES = Path(__file__).parents[2] / "fixtures" / "prometheus"
SPANMETRICS = {
    "qps": 'sum(rate(traces_spanmetrics_calls_total{service_name="{frontend}", '
           'span_kind="SPAN_KIND_SERVER"}[{window}]))',
    "p99_ms": "histogram_quantile({quantile}, sum by (le) (rate("
              'traces_spanmetrics_duration_milliseconds_bucket{service_name="{frontend}", '
              'span_kind="SPAN_KIND_SERVER"}[{window}])))',
    "service_p99_ms": "histogram_quantile({quantile}, sum by (le, service_name) (rate("
                      'traces_spanmetrics_duration_milliseconds_bucket{span_kind="SPAN_KIND_SERVER"}'
                      "[{window}])))",
    "service_label": "service_name",
    "service_cpu_cores": 'label_replace(sum by (container_label_com_docker_swarm_service_name) '
                         '(rate(container_cpu_usage_seconds_total{container_label_com_docker_'
                         'stack_namespace="socialnetwork"}[{window}])), "service", "$1", '
                         '"container_label_com_docker_swarm_service_name", "socialnetwork_(.+)")',
    "cpu_service_label": "service",
}
POOL = {"name": "mine", "frontend_url": "http://127.0.0.1:8080",
        "prometheus_url": "http://127.0.0.1:9090"}


def reply(name):
    return json.loads((FIXTURES / f"{name}.json").read_text())


class Recorded:
    """Answers each query with the recorded reply its metric and grouping select."""

    def __init__(self, answers):
        self.answers = answers
        self.asked = []

    def query(self, promql, at_s=None):
        self.asked.append(promql)
        for needle, name in self.answers:
            if needle in promql:
                return parse_reply(reply(name), promql)
        raise AssertionError(f"no recorded reply for {promql}")


@pytest.mark.parametrize("file,window_s", [
    pytest.param("lab.yaml", 30, id="lab"),
    pytest.param("ecoscale.yaml", 60, id="example"),
])
def test_the_daemon_configs_use_the_lab_defaults(file, window_s):
    config = yaml.safe_load((deploy_dir() / "daemon" / file).read_text())
    wanted = lab_queries("nginx-thrift", window_s)
    assert {k: config["prometheus"][k] for k in wanted} == wanted


def test_a_pool_file_names_its_queries():
    pool = parse_pool({**POOL, "queries": SPANMETRICS}, "mine.yaml")
    assert pool.queries.service_label == "service_name" and pool.queries.cpu_label == "service"
    assert pool.queries.render("p99_ms", "nginx-thrift", 30, 0.95) == (
        "histogram_quantile(0.95, sum by (le) (rate(traces_spanmetrics_duration_milliseconds_"
        'bucket{service_name="nginx-thrift", span_kind="SPAN_KIND_SERVER"}[30s])))')
    assert parse_pool(POOL, "mine.yaml").queries is None
    # what service_p99_ms measures: own time unless the file says server spans
    assert pool.service_latency == "own" and parse_pool(POOL, "mine.yaml").service_latency == "own"
    spans = parse_pool({**POOL, "queries": {**SPANMETRICS, "service_latency": "server-span"}},
                       "mine.yaml")
    assert spans.service_latency == "server-span"


@pytest.mark.parametrize("queries,message", [
    pytest.param({**SPANMETRICS, "p99_ms": ""}, "queries.p99_ms: required", id="empty-role"),
    pytest.param({k: v for k, v in SPANMETRICS.items() if k != "service_cpu_cores"},
                 "queries.service_cpu_cores: required", id="missing-role"),
    pytest.param({**SPANMETRICS, "service_lable": "x"}, "did you mean service_label",
                 id="typo"),
    pytest.param({**SPANMETRICS, "service_label": ""}, "queries.service_label: required",
                 id="no-label"),
    pytest.param("sum(rate(x[1m]))", "queries: a mapping", id="not-a-mapping"),
    pytest.param({**SPANMETRICS, "service_latency": "span"},
                 "queries.service_latency: 'span' is not one of own, server-span",
                 id="unknown-latency"),
])
def test_bad_pool_queries_name_the_field(queries, message):
    with pytest.raises(InputError, match=message) as caught:
        parse_pool({**POOL, "queries": queries}, "mine.yaml")
    assert caught.value.source == "mine.yaml"


def runner(queries, prometheus, tmp_path):
    from ecoscale.adapters.files import load_topology

    pool = parse_pool({**POOL, "queries": queries}, "mine.yaml")
    return Runner(pool, load_topology("socialNetwork"), orchestrator=None, prometheus=prometheus,
                  load=None, raw_csv=tmp_path / "raw.csv")


def test_a_pool_without_queries_cannot_be_measured(tmp_path):
    pool = parse_pool(POOL, "mine.yaml")
    from ecoscale.adapters.files import load_topology

    measuring = Runner(pool, load_topology("socialNetwork"), None, Recorded([]), None,
                       tmp_path / "raw.csv")
    with pytest.raises(InputError, match="queries: required") as caught:
        measuring.queries  # noqa: B018
    assert caught.value.source == "mine.yaml"


def test_spanmetrics_and_cadvisor_replies_by_their_labels(tmp_path):
    prometheus = Recorded([("sum by (le, service_name)", "spanmetrics_service_p99"),
                           ("sum by (le)", "spanmetrics_p99"),
                           ("container_cpu_usage_seconds_total", "cadvisor_cpu_relabelled")])
    measuring = runner(SPANMETRICS, prometheus, tmp_path)
    per_service = measuring._quantiles("service_p99_ms", 30, 0.0, "service_name")
    assert set(per_service) == {"nginx-thrift", "user-service", "post-storage-service"}
    assert all(set(q) == {0.5, 0.95, 0.99} for q in per_service.values())
    recorded = parse_reply(reply("spanmetrics_service_p99"), "q")
    assert per_service["user-service"][0.99] == next(
        v for labels, _, v in recorded if labels["service_name"] == "user-service")
    e2e = measuring._quantiles("p99_ms", 30, 0.0, None)
    assert set(e2e) == {E2E} and 1.0 < e2e[E2E][0.99] < 100.0   # ms buckets: no x1000
    cpu = by_service(prometheus.query(SPANMETRICS["service_cpu_cores"]), "service")
    assert cpu == {"nginx-thrift": pytest.approx(0.3), "user-service": pytest.approx(0.22)}


def test_cadvisor_without_relabelling_carries_the_swarm_names():
    samples = parse_reply(reply("cadvisor_cpu"), "q")
    assert by_service(samples, "service") == {}
    named = by_service(samples, "container_label_com_docker_swarm_service_name")
    assert set(named) == {"socialnetwork_nginx-thrift", "socialnetwork_user-service"}


def test_the_lab_per_service_query_gives_the_front_end_its_own_work(tmp_path):
    prometheus = Recorded([("ecoscale_emulator_call_duration", "lab_service_p99")])
    measuring = runner(LAB_QUERIES, prometheus, tmp_path)
    per_service = measuring._quantiles("service_p99_ms", 30, 0.0, LAB_QUERIES.service_label)
    assert {"nginx-thrift", "user-service", "post-storage-service"} == set(per_service)
    asked = prometheus.asked[0]
    assert 'service!="ecoscale-gateway"' in asked and 'service="nginx-thrift"' in asked
    assert "{quantile}" not in asked and "[30s]" in asked


def test_the_daemon_reads_utilisation_by_its_configured_label():
    samples = reply("cadvisor_cpu")
    stamp = samples["data"]["result"][0]["value"][0]
    config = PrometheusConfig(qps="QPS", p99_ms="P99", service_utilisation="CPU",
                              service_label="container_label_com_docker_swarm_service_name")

    class Client:
        def query(self, promql, at_s=None):
            name = {"QPS": "spanmetrics_qps", "P99": "spanmetrics_p99", "CPU": "cadvisor_cpu"}
            return parse_reply(reply(name[promql]), promql)

    metrics = PromQLMetrics(config, Client()).read(stamp + 5)
    assert metrics.qps == pytest.approx(40.0) and math.isfinite(metrics.p99_ms)
    assert metrics.service_utilisation == {
        "socialnetwork_nginx-thrift": pytest.approx(0.3),
        "socialnetwork_user-service": pytest.approx(0.22)}


def test_role_placeholders_leave_promql_braces_alone():
    queries = RoleQueries(qps='sum(rate(x{a="{frontend}",b=~"c{2}"}[{window}]))')
    assert queries.render("qps", "f", 29.6) == 'sum(rate(x{a="f",b=~"c{2}"}[30s]))'


@pytest.mark.parametrize("answers,message", [
    pytest.param([("sum by (le, service_name)", "spanmetrics_service_p99"),
                  ("sum by (le)", "vector_empty"),
                  ("container_cpu_usage_seconds_total", "cadvisor_cpu_relabelled")],
                 "queries.p99_ms .* returned nothing", id="e2e-empty"),
    pytest.param([("sum by (le, service_name)", "spanmetrics_service_p99"),
                  ("sum by (le)", "spanmetrics_p99"),
                  ("container_cpu_usage_seconds_total", "cadvisor_cpu")],
                 "queries.service_cpu_cores .* label 'service' names", id="cpu-without-label"),
    pytest.param([("sum by (le, service_name)", "vector_by_service"),
                  ("sum by (le)", "spanmetrics_p99"),
                  ("container_cpu_usage_seconds_total", "cadvisor_cpu_relabelled")],
                 "queries.service_p99_ms .* label 'service_name'", id="p99-wrong-label"),
])
def test_replies_that_cannot_be_read_are_an_error_naming_query_and_label(
        answers, message, tmp_path):
    measuring = runner(SPANMETRICS, Recorded(answers), tmp_path)
    per_service = measuring._quantiles("service_p99_ms", 30, 0.0, "service_name")
    e2e = measuring._quantiles("p99_ms", 30, 0.0, None)
    cpu = by_service(measuring.prometheus.query(SPANMETRICS["service_cpu_cores"]), "service")
    with pytest.raises(InputError, match=message):
        measuring.check_replies(per_service, e2e, cpu)
    assert not measuring.replies_checked


def test_readable_replies_pass_the_check_once(tmp_path):
    prometheus = Recorded([("sum by (le, service_name)", "spanmetrics_service_p99"),
                           ("sum by (le)", "spanmetrics_p99"),
                           ("container_cpu_usage_seconds_total", "cadvisor_cpu_relabelled")])
    measuring = runner(SPANMETRICS, prometheus, tmp_path)
    measuring.check_replies(measuring._quantiles("service_p99_ms", 30, 0.0, "service_name"),
                            measuring._quantiles("p99_ms", 30, 0.0, None),
                            by_service(prometheus.query(SPANMETRICS["service_cpu_cores"]),
                                       "service"))
    assert measuring.replies_checked
