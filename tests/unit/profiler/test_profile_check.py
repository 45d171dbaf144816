"""`ecoscale profile --pool FILE --check`: the target and each role query asked once, on
replies recorded from a real Prometheus (spanmetrics, cAdvisor) and an in-memory Swarm."""

import json
from pathlib import Path

import pytest
import yaml

from ecoscale.adapters.files import load_topology
from ecoscale.adapters.prometheus import parse_reply
from ecoscale.config import TargetConfig, label_values, series_problem
from ecoscale.model.placement import ServicePlacement
from ecoscale.ports import ManagedService, SourceUnavailable
from ecoscale.profiler.main import check_pool
from ecoscale.testing import RecordingOrchestrator

FIXTURES = Path(__file__).parents[2] / "fixtures" / "prometheus"
SERVICES = load_topology("socialNetwork").service_names
SPANMETRICS = {
    "qps": 'sum(rate(traces_spanmetrics_calls_total{service_name="{frontend}"}[{window}]))',
    "p99_ms": "histogram_quantile({quantile}, sum by (le) (rate(traces_spanmetrics_duration_"
              'milliseconds_bucket{service_name="{frontend}"}[{window}])))',
    "service_p99_ms": "histogram_quantile({quantile}, sum by (le, service_name) (rate("
                      "traces_spanmetrics_duration_milliseconds_bucket[{window}])))",
    "service_label": "service_name",
    "service_cpu_cores": "sum by (container_label_com_docker_swarm_service_name) (rate("
                         "container_cpu_usage_seconds_total[{window}]))",
    "cpu_service_label": "container_label_com_docker_swarm_service_name",
}


def reply(name):
    return json.loads((FIXTURES / f"{name}.json").read_text())


class Recorded:
    """Each query answered with the recorded reply its text selects (first match)."""

    def __init__(self, answers, down=False):
        self.answers = answers
        self.asked = []
        self.down = down

    def query(self, promql, at_s=None):
        self.asked.append(promql)
        if self.down:
            raise SourceUnavailable("prometheus at http://p:9090: ConnectionError: refused")
        name = next(name for needle, name in self.answers if needle in promql)
        return parse_reply(reply(name), promql)


GOOD = [("sum by (le, service_name)", "spanmetrics_service_p99"), ("sum by (le)",
        "spanmetrics_p99"), ("calls_total", "spanmetrics_qps"), ("container_cpu", "cadvisor_cpu")]


def pool_file(tmp_path, **changes):
    pool = {"name": "mine", "frontend_url": "http://127.0.0.1:8080",
            "prometheus_url": "http://p:9090", "target": {"stack": "socialnetwork"},
            "queries": SPANMETRICS, "measure_s": 30, **changes}
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(pool))
    return str(path)


def swarm(names=SERVICES, ready=("new", "old")):
    services = {n: ManagedService(n, f"id-{n}", f"socialnetwork_{n}", ServicePlacement("new", 1),
                                  {"new": 1}, update_order="stop-first",
                                  placement_source="tasks") for n in names}
    return RecordingOrchestrator(services=services, ready=set(ready))


def test_a_good_pool_passes_and_asks_each_role_once(tmp_path, capsys):
    prometheus = Recorded(GOOD)
    assert check_pool("socialNetwork", pool_file(tmp_path), {}, orchestrator=swarm(),
                      prometheus=prometheus) == 0
    out = capsys.readouterr().out
    assert len(prometheus.asked) == 4 and all("[30s]" in q for q in prometheus.asked)
    assert "{quantile}" not in "".join(prometheus.asked)
    assert "ok   target:" in out and f"{len(SERVICES)} of {len(SERVICES)} topology services" \
        in out
    # cAdvisor's Swarm names (socialnetwork_nginx-thrift) name topology services by the stack
    assert f"service_cpu_cores 2 services of {len(SERVICES)}" in out
    assert "update order stop-first: ecoscale's moves run start-first" in out


@pytest.mark.parametrize("answers, fragments", [
    pytest.param([("sum by (le)", "vector_empty"), *GOOD], [
        "queries.p99_ms 'histogram_quantile(0.99, sum by (le) (rate(traces_spanmetrics_duration_"
        "milliseconds_bucket{service_name=\"nginx-thrift\"}[30s])))' returned nothing"],
        id="e2e-empty"),
    pytest.param([("sum by (le, service_name)", "vector_p99"), *GOOD], [
        "queries.service_p99_ms", "series have no label 'service_name'"], id="no-label"),
    pytest.param([("container_cpu", "vector_by_service"), *GOOD], [
        "queries.service_cpu_cores", "no value of label 'service' names a topology service "
        "(it saw 'svc-self'; expected e.g. "], id="values-name-no-service"),
    pytest.param([("container_cpu", "vector_many"), *GOOD], [
        "queries.service_cpu_cores", "label 'container_label_com_docker_swarm_service_name'"],
        id="cpu-without-label"),
    pytest.param([("calls_total", "vector_many"), *GOOD], [
        "queries.qps", "series, the profiler needs one"], id="qps-many-series"),
])
def test_a_query_that_cannot_be_read_fails_naming_role_query_and_label(
        tmp_path, capsys, answers, fragments):
    queries = {**SPANMETRICS, "cpu_service_label": "service"} \
        if answers[0][1] == "vector_by_service" else SPANMETRICS
    assert check_pool("socialNetwork", pool_file(tmp_path, queries=queries), {},
                      orchestrator=swarm(),
                      prometheus=Recorded(answers)) == 1
    captured = capsys.readouterr()
    line = next(x for x in captured.out.splitlines() if x.startswith("  FAIL prometheus"))
    for fragment in fragments:
        assert fragment in line
    assert "check FAILED: prometheus" in captured.err


def test_an_unmapped_service_and_a_missing_generation_fail_the_target(tmp_path, capsys):
    assert check_pool("socialNetwork", pool_file(tmp_path), {},
                      orchestrator=swarm(SERVICES[1:], ready=("new",)),
                      prometheus=Recorded(GOOD)) == 1
    out = capsys.readouterr().out
    assert "FAIL target:" in out and "no ready node of generation(s) old" in out
    assert f"no Swarm service socialnetwork_{SERVICES[0]}: deploy them" in out


def test_prometheus_down_and_no_queries(tmp_path, capsys):
    assert check_pool("socialNetwork", pool_file(tmp_path), {}, orchestrator=swarm(),
                      prometheus=Recorded(GOOD, down=True)) == 1
    assert "ConnectionError: refused" in capsys.readouterr().out
    path = pool_file(tmp_path, queries=None)
    assert check_pool("socialNetwork", path, {}, orchestrator=swarm(),
                      prometheus=Recorded(GOOD)) == 1
    assert "queries: required" in capsys.readouterr().out


@pytest.mark.parametrize("values, problem, note", [
    pytest.param({"a": "a"}, "", "1 services of 1; label 'l' values that name no service "
                 "(ignored): b", id="stray-value-noted"),
    pytest.param({"x": "x"}, "no value of label 'l' names a topology service (it saw 'a', "
                 "'b'; expected e.g. 'x')", "", id="none-named"),
    pytest.param(None, "", "2 services", id="values-not-checked"),
])
def test_series_problem_per_service(values, problem, note):
    samples = [({"l": "a"}, 1.0, 1.0), ({"l": "b"}, 1.0, 2.0)]
    got = series_problem("queries.r", "q", samples, "l", values)
    assert (problem in got[0] if problem else got[0] == "") and got[1] == note


def test_label_values_name_services_by_their_own_and_their_swarm_names():
    target = TargetConfig(stack="sn", services={"b": "other_b"})
    assert label_values(["a", "b"], target) == {"a": "a", "b": "b", "sn_a": "a",
                                                "other_b": "b"}


POOL = {"frontend_url": "http://f:8080", "prometheus_url": "http://p:9090"}


@pytest.mark.parametrize("extra, expected", [
    ({}, TargetConfig()),
    ({"docker_host": "tcp://m:2375"}, TargetConfig(docker_host="tcp://m:2375")),
    ({"target": {"stack": "sn", "services": {"a": "x_a"}}, "docker_host": "tcp://m:2375"},
     TargetConfig(docker_host="tcp://m:2375", stack="sn", services={"a": "x_a"})),
], ids=["none", "old-top-level-docker-host", "section-and-top-level"])
def test_a_pool_file_has_a_target_section(extra, expected):
    from ecoscale.profiler.experiments import parse_pool

    pool = parse_pool({**POOL, **extra}, "pool.yaml")
    assert pool.target == expected and pool.docker_host == expected.docker_host


@pytest.mark.parametrize("target, fragment", [
    ({"kind": "k8s"}, "target.kind: unknown orchestrator 'k8s'"),
    ({"services": "sn_a"}, "target.services: expected a mapping"),
    ({"stak": "sn"}, "target.stak: unknown setting (did you mean stack?)"),
    ("sn", "target: expected a mapping"),
], ids=["kind", "services", "typo", "not-a-mapping"])
def test_a_bad_pool_target_names_the_file_and_field(target, fragment):
    from ecoscale.errors import InputError
    from ecoscale.profiler.experiments import parse_pool

    with pytest.raises(InputError) as raised:
        parse_pool({**POOL, "target": target}, "pool.yaml")
    assert raised.value.source == "pool.yaml" and fragment in str(raised.value)
