"""`ecoscale run --check`: every adapter is built and asked once; which one fails, and why."""

from dataclasses import replace

import pytest

from ecoscale.cli import main
from ecoscale.config import CarbonConfig, DaemonConfig, PrometheusConfig, TargetConfig
from ecoscale.daemon import main as daemon_main
from ecoscale.daemon.check import (
    LAB_HINT,
    check_carbon,
    check_docker,
    check_profile,
    check_prometheus,
    run_checks,
    table_profile_name,
)
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.testing import (
    FakeAdapters,
    RecordedPrometheus,
    RecordingOrchestrator,
    toy_table,
    vector_reply,
)

QPS, P99, UTIL = "sum(rate(q[30s]))", "1000 * histogram_quantile(0.99, p)", "sum by (service) (u)"
CONFIG = DaemonConfig(app="socialNetwork", table="t.yaml", profile="lab", source="c.yaml",
                      prometheus=PrometheusConfig(url="http://prom:9090", qps=QPS, p99_ms=P99))
PLACED = Placement((("a", ServicePlacement("old", 1)), ("b", ServicePlacement("new", 1))))


def table(profile="lab (measured): MEASURED on pool 'lab'"):
    return toy_table(((100.0, PLACED),), app="socialNetwork", ranking=(("a", 1.0),),
                     non_critical={}, critical={},
                     provenance={"profile": profile} if profile else {})


def one(value=5.0, labels=None):
    return vector_reply((labels or {}, 1.0, value))


PROMETHEUS_CASES = [
    pytest.param({QPS: one(), P99: one()}, "", True, "qps 5, p99_ms 5", id="ok"),
    pytest.param({QPS: one(0.0), P99: one("NaN")}, "", True, "no traffic yet", id="no-traffic"),
    pytest.param({P99: one()}, "", False, f"prometheus.qps '{QPS}' returned nothing",
                 id="empty-qps"),
    pytest.param({QPS: one(), P99: vector_reply(({"le": "1"}, 1.0, 1.0),
                                                ({"le": "2"}, 1.0, 2.0))}, "", False,
                 "2 series, the daemon needs one", id="two-series"),
    pytest.param({QPS: one(), P99: one(), UTIL: vector_reply(({"job": "x"}, 1.0, 0.5))}, UTIL,
                 False, "have no label 'service'", id="utilisation-without-label"),
    pytest.param({QPS: one(), P99: one(), UTIL: one(0.5, {"service": "a"})}, UTIL, True,
                 "service_utilisation 1 services", id="utilisation-ok"),
    pytest.param({QPS: one(), P99: {"status": "error", "errorType": "bad_data",
                                    "error": "parse error"}}, "", False, "parse error",
                 id="bad-query"),
]


@pytest.mark.parametrize("replies,utilisation,ok,fragment", PROMETHEUS_CASES)
def test_prometheus_runs_each_query_once(replies, utilisation, ok, fragment):
    config = replace(CONFIG, prometheus=replace(CONFIG.prometheus,
                                                service_utilisation=utilisation))
    client = RecordedPrometheus(replies)
    result = check_prometheus(config, FakeAdapters(prometheus_client=client))
    assert result.ok is ok and fragment in result.detail, result.detail
    assert sorted(client.queries) == sorted(q for q in (QPS, P99, utilisation) if q)


def test_prometheus_down_says_which_and_hints_at_the_lab():
    result = check_prometheus(CONFIG, FakeAdapters(prometheus_client=RecordedPrometheus(
        down=True)))
    assert not result.ok and "prometheus at" in result.detail and LAB_HINT in result.hint


DOCKER_CASES = [
    pytest.param(dict(), True, False, "a Swarm manager, 2 managed services", id="ok"),
    pytest.param(dict(down=True), False, False, "docker (fake) is down", id="down"),
    pytest.param(dict(is_controller=False), False, False, "is not a Swarm manager",
                 id="not-a-manager"),
    pytest.param(dict(missing=True), True, True, "not running: b", id="service-missing"),
]


@pytest.mark.parametrize("setup,ok,warning,fragment", DOCKER_CASES)
def test_docker_builds_the_client_and_counts_managed_services(setup, ok, warning, fragment):
    swarm = RecordingOrchestrator.of(PLACED, down=setup.get("down", False),
                              is_controller=setup.get("is_controller", True))
    if setup.get("missing"):
        del swarm.services["b"]
    result = check_docker(CONFIG, table(), FakeAdapters(orchestrator_fake=swarm))
    assert (result.ok, result.warning) == (ok, warning) and fragment in result.detail, \
        result.detail


def test_carbon_trace_is_loaded_and_a_bad_one_fails():
    good = check_carbon(CONFIG, daemon_main.Adapters(), epoch_s=0.0)
    assert good.ok and "gCO2e/kWh now" in good.detail
    bad = replace(CONFIG, carbon=CarbonConfig(trace="no-such-trace.csv"))
    result = check_carbon(bad, daemon_main.Adapters(), epoch_s=0.0)
    assert not result.ok and "no-such-trace" in result.detail


def test_live_carbon_url_that_does_not_answer_fails():
    config = replace(CONFIG, carbon=CarbonConfig(url="http://127.0.0.1:9/ci"))
    result = check_carbon(config, daemon_main.Adapters(), epoch_s=0.0)
    assert not result.ok and "127.0.0.1:9" in result.detail and "carbon.url" in result.hint


@pytest.mark.parametrize("provenance,expected", [
    pytest.param("lab (measured): MEASURED on pool 'lab'", "lab", id="planned"),
    pytest.param("calibrated", "calibrated", id="bare-name"),
    pytest.param("", None, id="none"),
])
def test_table_profile_name(provenance, expected):
    assert table_profile_name(table(provenance)) == expected


def test_a_table_planned_from_another_profile_is_noticed(social_model):
    assert social_model.profile.name == "calibrated"
    config = replace(CONFIG, profile="calibrated")
    result = check_profile(config, table("lab (measured): MEASURED on pool 'lab'"), social_model)
    assert not result.ok and "planned from profile 'lab'" in result.detail
    assert "says profile 'calibrated'" in result.detail
    assert "profile: lab" in result.hint and "ecoscale plan --profile calibrated" in result.hint
    assert check_profile(config, table("calibrated (calibrated): x"), social_model).ok


def test_one_crashing_check_is_reported_as_that_component(social_model):
    class Broken(FakeAdapters):
        def orchestrator(self, config):
            raise RuntimeError("no docker-py")

    results = {r.component: r for r in run_checks(CONFIG, table(), social_model,
                                                  Broken(prometheus_client=RecordedPrometheus(
                                                      {QPS: one(), P99: one()})))}
    assert not results["docker"].ok and "no docker-py" in results["docker"].detail
    assert results["prometheus"].ok and results["carbon"].ok


@pytest.fixture
def planned_config(tmp_path):
    assert main(["plan", "--profile", "lab", "--out", str(tmp_path / "t.yaml"),
                 "--levels", "0.5,1.0"]) == 0
    path = tmp_path / "c.yaml"
    path.write_text(f"app: socialNetwork\ntable: t.yaml\nprofile: lab\n"
                    f"prometheus: {{qps: '{QPS}', p99_ms: '{P99}'}}\n")
    return path


@pytest.mark.parametrize("broken,code,fragment", [
    pytest.param("", 0, "check ok", id="all-ok"),
    pytest.param("docker", 1, "check FAILED: docker", id="docker-down"),
    pytest.param("prometheus", 1, "check FAILED: prometheus", id="prometheus-down"),
])
def test_run_check_exit_code_names_the_failing_adapter(planned_config, monkeypatch, capsys,
                                                       broken, code, fragment):
    from ecoscale.daemon.main import load_all

    services = load_all(str(planned_config))[1].levels[0].placement
    adapters = FakeAdapters(
        prometheus_client=RecordedPrometheus({QPS: one(), P99: one()},
                                             down=broken == "prometheus"),
        orchestrator_fake=RecordingOrchestrator.of(services, down=broken == "docker"))
    monkeypatch.setattr(daemon_main, "ADAPTERS", adapters)
    assert main(["run", "--check", "--config", str(planned_config)]) == code
    captured = capsys.readouterr()
    assert fragment in captured.out + captured.err


def test_the_shipped_lab_config_is_valid_and_names_the_lab():
    from ecoscale.adapters.files import load_config
    from ecoscale.lab.config import LabConfig
    from ecoscale.lab.lab import Lab

    config = load_config("deploy/daemon/lab.yaml")
    lab = Lab(LabConfig())
    assert config.profile == "lab" and config.table.endswith("deploy/daemon/lab-table.yaml")
    assert config.target.docker_host == lab.docker_host   # the old top-level key
    assert config.prometheus.url == lab.prometheus_url
    assert config.control.lost_task_grace_s == 60.0


# ---- adopting a stack: the adoption report and label values by Swarm name ------------------
ADOPTING = replace(CONFIG, target=TargetConfig(stack="sn"))


def test_with_a_mapping_an_unmapped_table_service_fails_with_the_fix():
    swarm = RecordingOrchestrator.of(PLACED)
    del swarm.services["b"]
    result = check_docker(ADOPTING, table(), FakeAdapters(orchestrator_fake=swarm))
    assert not result.ok and "unmapped: b" in result.detail
    assert "no Swarm service sn_b" in result.hint and "`services: {b: <swarm service>}`" in \
        result.hint
    assert result.details[0].startswith("SERVICE") and "  hint: " in result.line()
    assert "1 of 2 topology services mapped (stack sn: sn_<service>" in result.line()


def test_the_report_says_stop_first_services_are_moved_start_first():
    swarm = RecordingOrchestrator.of(PLACED)
    swarm.services["a"] = replace(swarm.services["a"], update_order="stop-first")
    result = check_docker(ADOPTING, table(), FakeAdapters(orchestrator_fake=swarm))
    assert result.ok and "update order stop-first: ecoscale's moves run start-first (1 " \
        "services)" in result.detail


@pytest.mark.parametrize("labels, config, ok, fragment", [
    pytest.param({"service": "sn_a"}, ADOPTING, True, "service_utilisation 1 services of 2",
                 id="swarm-name-by-the-stack"),
    pytest.param({"service": "sn_a"}, CONFIG, False,
                 "no value of label 'service' names a topology service (it saw 'sn_a'",
                 id="swarm-name-without-a-mapping"),
    pytest.param({"service": "jaeger"}, ADOPTING, False, "it saw 'jaeger'",
                 id="no-topology-service"),
])
def test_utilisation_label_values_must_name_a_table_service(labels, config, ok, fragment):
    config = replace(config, prometheus=replace(config.prometheus, service_utilisation=UTIL))
    client = RecordedPrometheus({QPS: one(), P99: one(), UTIL: one(0.5, labels)})
    result = check_prometheus(config, FakeAdapters(prometheus_client=client), ("a", "b"))
    assert result.ok is ok and fragment in result.detail, result.detail


def test_the_daemon_renames_swarm_named_utilisation_to_topology_names():
    from ecoscale.daemon.wiring import TopologyNamed
    from ecoscale.ports import Metrics

    class Source:
        def read(self, epoch_s):
            return Metrics(qps=1.0, p99_ms=2.0, service_utilisation={"sn_a": 0.5, "b": 0.25})

    metrics = TopologyNamed(Source(), ADOPTING.target).read(0.0)
    assert metrics.service_utilisation == {"a": 0.5, "b": 0.25} and metrics.qps == 1.0


def test_a_right_sized_table_shows_the_nodes_its_sockets_are():
    from test_node_packing import LOW_PACKED, RIGHT_SIZED

    from ecoscale.model.placement import Placement

    swarm = RecordingOrchestrator.of(Placement(LOW_PACKED.items), nodes={"new": 1, "old": 2})
    result = check_docker(CONFIG, RIGHT_SIZED, FakeAdapters(orchestrator_fake=swarm))
    assert result.ok
    nodes = [line for line in result.details if line.startswith("node ")]
    assert nodes == ["node new-1: new active, 0 tasks", "node old-1: old active, 2 tasks",
                     "node old-2: old active, 1 task"]
    plain = check_docker(CONFIG, table(), FakeAdapters(orchestrator_fake=swarm))
    assert not [line for line in plain.details if line.startswith("node ")]
