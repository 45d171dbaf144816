"""The adoption report (`ecoscale adopt`, `run --check`): what the target's mapping finds."""

import json
from pathlib import Path

import pytest

from ecoscale.adapters.targets import STOP_FIRST_NOTE, adoption
from ecoscale.cli import main
from ecoscale.config import TargetConfig
from ecoscale.daemon import main as daemon_main
from ecoscale.model.placement import ServicePlacement
from ecoscale.ports import ClusterState, ManagedService
from ecoscale.testing import FakeAdapters, RecordingOrchestrator

STACK = TargetConfig(stack="sn")


def managed(name, swarm, placed, running, order="stop-first", source="constraint"):
    return ManagedService(name, f"id-{name}", swarm, placed, running, update_order=order,
                          placement_source=source)


STATE = ClusterState(True, {
    "a": managed("a", "sn_a", ServicePlacement("new", 2), {"new": 2}),
    "b": managed("b", "sn_b", ServicePlacement("old", 1), {"old": 1}, "start-first", "tasks"),
    "jaeger": managed("jaeger", "sn_jaeger", ServicePlacement("new", 1), {"new": 1}),
    "nginx-web-server": managed("nginx-web-server", "sn_nginx-web-server", None, {}),
}, ("new", "old"))


def test_the_report_lists_mapped_unmapped_and_unnamed_services():
    report = adoption(["a", "b", "nginx-web", "text-service"], STATE, STACK)
    assert [s.service for s in report.mapped] == ["a", "b"]
    assert report.unmapped == (("nginx-web", "sn_nginx-web", "sn_nginx-web-server"),  # close
                               ("text-service", "sn_text-service", ""))
    assert report.unnamed == ("sn_jaeger", "sn_nginx-web-server")
    assert report.stop_first == ("a",) and not report.ok
    lines = report.lines()
    header = lines[0].split()
    assert header[:2] == ["SERVICE", "SWARM"] and lines[0].endswith("UPDATE ORDER")
    assert lines[1].split() == ["a", "sn_a", "new", "2/2", "stop-first"]
    assert lines[2].split() == ["b", "sn_b", "old", "(tasks)", "1/1", "start-first"]
    assert lines[3].split() == ["nginx-web", "<none>", "<none>", "<none>", "<none>"]
    text = "\n".join(lines)
    assert "2 of 4 topology services mapped (stack sn: sn_<service>, labels ecoscale.managed" \
        "=true); 2 unmapped" in text
    assert ("fix: add under target: `services: {nginx-web: sn_nginx-web-server}` (check each "
            "is its Swarm service); no Swarm service sn_text-service: deploy them, or name each "
            "one's Swarm service under target: `services: {text-service: <swarm service>}`") \
        in text
    assert "not in the topology, left alone (2): sn_jaeger, sn_nginx-web-server" in text
    assert f"{STOP_FIRST_NOTE} (1 services: a)" in text


def test_the_columns_line_up():
    lines = adoption(["a", "b", "a-much-longer-name"], STATE, STACK).lines()
    starts = {line.index("sn_") if "sn_" in line else line.index("<none>")
              for line in lines[1:4]}
    assert len(starts) == 1 and lines[0].index("SWARM SERVICE") in starts


def test_everything_mapped_is_ok_and_json_ready():
    report = adoption(["a", "b"], STATE, STACK)
    assert report.ok
    document = json.loads(json.dumps(report.as_dict()))
    assert document["ok"] and document["unmapped"] == [] and document["fix"] == ""
    unmapped = adoption(["a", "nginx-web"], STATE, STACK).as_dict()["unmapped"]
    assert unmapped == [{"service": "nginx-web", "looked_for": "sn_nginx-web",
                         "close_match": "sn_nginx-web-server"}]
    assert document["services"][1] == {
        "service": "b", "target_name": "sn_b", "generation": "old", "generation_source": "tasks",
        "replicas": 1, "running": 1, "update_order": "start-first"}


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "ecoscale.yaml"
    path.write_text("app: socialNetwork\ntable: t.yaml\n"
                    "prometheus: {qps: 'sum(q)', p99_ms: 'max(p)'}\n"
                    "target: {stack: sn}\n")
    return path


def orchestrator_running(names):
    services = {n: managed(n, f"sn_{n}", ServicePlacement("new", 1), {"new": 1}) for n in names}
    return RecordingOrchestrator(services=services)


def test_adopt_exits_1_and_names_the_fix_when_a_service_is_unmapped(config_file, capsys,
                                                                   monkeypatch):
    from ecoscale.adapters.files import load_topology

    services = list(load_topology("socialNetwork").service_names)
    monkeypatch.setattr(daemon_main, "ADAPTERS",
                        FakeAdapters(orchestrator_fake=orchestrator_running(services[1:])))
    assert main(["adopt", "--config", str(config_file)]) == 1
    captured = capsys.readouterr()
    assert f"{len(services) - 1} of {len(services)} topology services mapped" in captured.out
    assert (f"1 topology services unmapped: {services[0]}; no Swarm service sn_{services[0]}: "
            f"deploy them, or name each one's Swarm service under target: `services: "
            f"{{{services[0]}: <swarm service>}}`") in captured.err


def test_adopt_json_is_the_report_alone(config_file, capsys, monkeypatch):
    from ecoscale.adapters.files import load_topology

    services = list(load_topology("socialNetwork").service_names)
    monkeypatch.setattr(daemon_main, "ADAPTERS",
                        FakeAdapters(orchestrator_fake=orchestrator_running(services)))
    assert main(["adopt", "--config", str(config_file), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] and len(document["services"]) == len(services)
    assert document["stop_first"] == services and document["app"] == "socialNetwork"


def test_adopt_needs_a_config_or_a_pool(capsys):
    assert main(["adopt"]) == 2
    assert "one of the arguments --config --pool is required" in capsys.readouterr().err


def test_adopt_of_a_bad_mapping_names_the_file_and_field(tmp_path, capsys):
    path = Path(tmp_path / "c.yaml")
    path.write_text("app: socialNetwork\ntable: t.yaml\nprometheus: {qps: q, p99_ms: p}\n"
                    "target: {services: [a]}\n")
    assert main(["adopt", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "target.services: expected a mapping" in err


def test_adopt_reads_a_pool_files_target(tmp_path, capsys, monkeypatch):
    import ecoscale.adapters.targets as targets
    from ecoscale.adapters.files import load_topology

    services = list(load_topology("socialNetwork").service_names)
    pool = tmp_path / "pool.yaml"
    pool.write_text("frontend_url: http://f:8080\nprometheus_url: http://p:9090\n"
                    "target: {stack: sn, docker_host: 'tcp://m:2375'}\n")
    built = []

    def build(target, labels=None, source=""):
        built.append((target, source))
        return orchestrator_running(services)

    monkeypatch.setattr(targets, "build_target", build)
    assert main(["adopt", "--pool", str(pool), "--json"]) == 0
    assert built == [(TargetConfig(docker_host="tcp://m:2375", stack="sn"), str(pool))]
    document = json.loads(capsys.readouterr().out)
    assert document["target"] == "tcp://m:2375" and document["ok"]


def test_a_close_match_is_by_the_name_without_the_stack_prefix_and_used_once():
    state = ClusterState(True, {"jaeger-agent": managed("jaeger-agent", "socialnetwork_jaeger-"
                                                        "agent", None, {})}, ())
    report = adoption(["compose-post-service", "jaeger-agents", "jaeger-agent2"], state,
                      TargetConfig(stack="socialnetwork"))
    assert [close for _, _, close in report.unmapped] == ["", "socialnetwork_jaeger-agent", ""]
