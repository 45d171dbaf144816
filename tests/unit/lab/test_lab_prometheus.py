"""Prometheus configuration rendering (pure) and the PromQL helpers."""

import yaml

from ecoscale.lab.prometheus import render_config, template_text
from ecoscale.lab.queries import (
    cpu_query,
    p99_ms_query,
    per_service_p99_ms_query,
    qps_query,
)
from ecoscale.paths import project_root


def render(services):
    return yaml.safe_load(render_config(template_text(), services, 8080, 2.0))


def test_every_service_is_found_by_swarm_dns():
    config = render(["b-svc", "a-svc", "a-svc"])
    assert config["global"]["scrape_interval"] == "2000ms"
    assert config["global"]["scrape_timeout"] == "1600ms"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    services = jobs["ecoscale-services"]["dns_sd_configs"][0]
    assert services == {"names": ["tasks.a-svc", "tasks.b-svc"], "type": "A", "port": 8080,
                        "refresh_interval": "2000ms"}
    relabel = jobs["ecoscale-services"]["relabel_configs"][0]
    assert relabel["source_labels"] == ["__meta_dns_name"]
    assert relabel["regex"] == r"tasks\.(.+)" and relabel["target_label"] == "swarm_service"
    assert jobs["ecoscale-gateway"]["dns_sd_configs"][0]["names"] == ["tasks.ecoscale-gateway"]
    assert jobs["prometheus"]["static_configs"][0]["targets"] == ["localhost:9090"]


def test_without_an_app_only_the_lab_jobs_remain():
    jobs = [job["job_name"] for job in render([])["scrape_configs"]]
    assert jobs == ["ecoscale-gateway", "prometheus"]


def test_promql_helpers_carry_units_and_windows():
    assert p99_ms_query("nginx-thrift", 30) == (
        "1000 * histogram_quantile(0.99, sum by (le) (rate("
        'ecoscale_emulator_request_duration_seconds_bucket{service="nginx-thrift"}[30s])))')
    assert 'endpoint="e"' in p99_ms_query("x", 10, endpoint="e", quantile=0.5)
    assert qps_query("f", 20) == 'sum(rate(ecoscale_emulator_requests_total{service="f"}[20s]))'
    assert cpu_query(30).startswith("sum by (service) (rate(ecoscale_emulator_process_cpu")


def test_the_readme_shows_the_queries_the_integration_tests_run():
    readme = (project_root() / "README.md").read_text()
    section = readme[readme.index("## Run a lab"):]
    for query in (qps_query("nginx-thrift", 30), p99_ms_query("nginx-thrift", 30),
                  per_service_p99_ms_query("nginx-thrift", 30), cpu_query(30)):
        assert f"`{query}`" in section, query
