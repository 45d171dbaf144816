"""The daemon's edges: a listen port in use, a corrupt state file, SIGHUP reloads that
rebuild the clients whose settings changed (or are refused), ISO-8601 UTC log times."""

import io
import json
import re
import socket
from dataclasses import replace

import pytest

from ecoscale.config import CarbonConfig, DaemonConfig, PrometheusConfig, TargetConfig
from ecoscale.control.decide import ControlState
from ecoscale.daemon import main as daemon_main
from ecoscale.daemon.loop import Daemon, load_state, save_state
from ecoscale.daemon.telemetry import Log, iso_utc
from ecoscale.errors import EcoscaleError
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.testing import (
    FakeAdapters,
    FakeClock,
    FixedCarbon,
    InMemoryMetrics,
    RecordingOrchestrator,
    toy_table,
)

OLD1 = ServicePlacement("old", 1)
LOW = Placement((("a", OLD1), ("b", OLD1)))
TABLE = toy_table(((100.0, LOW),), ranking=(("a", 1.0),), non_critical={}, critical={})
CONFIG = DaemonConfig(app="toy", table="t.yaml", source="c.yaml",
                      prometheus=PrometheusConfig(url="http://a:9090", qps="q", p99_ms="p"))


def make(config=CONFIG, adapters=None, clock=None):
    stream = io.StringIO()
    daemon = Daemon(config=config, table=TABLE, orchestrator=RecordingOrchestrator.of(LOW),
                    metrics=InMemoryMetrics(50.0, 5.0), carbon=FixedCarbon(),
                    clock=clock or FakeClock(), log=Log(stream), adapters=adapters)
    return daemon, stream


def events(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# ---- listen port in use ------------------------------------------------------------------
def test_a_listen_port_in_use_is_a_clear_error_not_a_traceback():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        daemon, _ = make(replace(CONFIG, listen_port=port))
        with pytest.raises(EcoscaleError) as info:
            daemon_main.listen(daemon, "c.yaml")
    text = str(info.value)
    assert f"listen_port {port}" in text and "already in use" in text and "c.yaml" in text
    assert "0 turns /metrics and /healthz off" in text


# ---- corrupt state file ------------------------------------------------------------------
CORRUPT = [
    pytest.param(b"{not json", id="not-json"),
    pytest.param(b"\x1f\x8b\x08\x00binary", id="binary"),
    pytest.param(b'{"table": "x"}', id="no-state-key"),
    pytest.param(b'{"table": "x", "state": {"levl": 1}}', id="unknown-field"),
    pytest.param(b'{"table": "x", "state": {"last_move_s": {"a": "yesterday"}}}',
                 id="bad-time"),
    pytest.param(b'[1, 2]', id="a-list"),
]


@pytest.mark.parametrize("content", CORRUPT)
def test_a_corrupt_state_file_is_moved_aside_and_logged(tmp_path, content):
    path = tmp_path / "state.json"
    path.write_bytes(content)
    clock = FakeClock(t=1_764_618_304.0)   # 2025-12-01T19:45:04Z
    daemon, stream = make(replace(CONFIG, state_file=str(path)), clock=clock)
    assert daemon.state == ControlState()
    aside = tmp_path / "state.json.corrupt-20251201T194504Z"
    assert aside.read_bytes() == content and not path.exists()
    [record] = [e for e in events(stream) if e["event"] == "state_corrupt"]
    assert record["level"] == "error" and record["moved_to"] == str(aside)
    daemon.run_once()                      # and the next save writes a good file
    assert load_state(str(path), daemon.digest).level == daemon.state.level


def test_a_good_state_file_is_read_back(tmp_path):
    path = tmp_path / "state.json"
    state = ControlState(level=0, last_move_s={"a": 5.0}, not_running_since={"b": 3.0},
                         trend_loads=((1.0, 50.0), (16.0, 60.0)))
    save_state(str(path), state, "d")
    assert load_state(str(path), "d") == state
    assert not list(tmp_path.glob("*.corrupt-*"))


# ---- SIGHUP ------------------------------------------------------------------------------
RELOADS = [
    pytest.param(dict(prometheus=replace(CONFIG.prometheus, url="http://b:9090")),
                 [("metrics", "http://b:9090")], id="prometheus-url"),
    pytest.param(dict(target=TargetConfig(docker_host="tcp://manager:2375")),
                 [("orchestrator", "tcp://manager:2375")], id="docker-host"),
    pytest.param(dict(carbon=CarbonConfig(trace="DE")), [("carbon", "DE")], id="carbon-trace"),
    pytest.param(dict(interval_s=30.0), [], id="no-client-setting"),
    pytest.param(dict(prometheus=replace(CONFIG.prometheus, url="http://b:9090"),
                      carbon=CarbonConfig(trace="DE")),
                 [("metrics", "http://b:9090"), ("carbon", "DE")], id="two-clients"),
]


@pytest.mark.parametrize("change,rebuilt", RELOADS)
def test_sighup_rebuilds_exactly_the_clients_whose_settings_changed(change, rebuilt):
    adapters = FakeAdapters()
    daemon, stream = make(adapters=adapters)
    before = {"metrics": daemon.metrics, "orchestrator": daemon.orchestrator,
              "carbon": daemon.carbon}
    new = replace(CONFIG, **change)
    daemon._reload(lambda: (new, TABLE))
    assert adapters.built == rebuilt
    assert daemon.config == new
    for name, old in before.items():
        assert (getattr(daemon, name) is not old) == (name in dict(rebuilt)), name
    [record] = [e for e in events(stream) if e["event"] == "reloaded"]
    assert record["rebuilt"] == (sorted(dict(rebuilt)) or None)


REFUSED = [
    pytest.param(dict(carbon=CarbonConfig(trace="DE")), {"carbon"}, "(fake) carbon cannot",
                 id="client-cannot-be-built"),
    pytest.param(dict(listen_port=9999), set(), "needs a restart", id="listen-port"),
]


@pytest.mark.parametrize("change,fail,fragment", REFUSED)
def test_a_reload_that_cannot_be_applied_is_refused_and_nothing_changes(change, fail,
                                                                        fragment):
    daemon, stream = make(adapters=FakeAdapters(fail=fail))
    carbon, config = daemon.carbon, daemon.config
    daemon._reload(lambda: (replace(CONFIG, **change, interval_s=99.0), TABLE))
    assert daemon.config is config and daemon.carbon is carbon
    [record] = [e for e in events(stream) if e["event"] == "reload-rejected"]
    assert fragment in record["error"] and record["kept"] == "c.yaml"


def test_without_adapters_a_client_change_is_refused():
    daemon, stream = make(adapters=None)
    daemon._reload(lambda: (replace(CONFIG, target=TargetConfig(docker_host="tcp://x:2375")),
                            TABLE))
    assert daemon.config.target.docker_host == ""
    assert "cannot build clients" in events(stream)[-1]["error"]


def test_build_daemon_uses_the_adapters_and_keeps_them_for_reloads(tmp_path, monkeypatch):
    from ecoscale.cli import main

    assert main(["plan", "--out", str(tmp_path / "t.yaml"), "--levels", "1.0"]) == 0
    path = tmp_path / "c.yaml"
    path.write_text("app: socialNetwork\ntable: t.yaml\nprometheus: {qps: a, p99_ms: b}\n")
    adapters = FakeAdapters()
    daemon = daemon_main.build_daemon(str(path), adapters=adapters)
    assert [c for c, _ in adapters.built] == ["orchestrator", "metrics", "carbon"]
    assert daemon.adapters is adapters


# ---- log times ---------------------------------------------------------------------------
def test_log_lines_carry_iso_8601_utc_times():
    stream = io.StringIO()
    Log(stream)("started", app="toy")
    record = json.loads(stream.getvalue())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["ts"]), record["ts"]
    assert iso_utc(0.0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1_764_618_304.25) == "2025-12-01T19:45:04.250Z"


def test_a_reloaded_table_without_a_running_generation_moves_its_services_off_it():
    # found on the lab: a table with every service on new, reloaded while services ran on
    # old, crashed the loop (the generation order had no 'old')
    daemon, _ = make()
    daemon.run_once()
    all_new = Placement((("a", ServicePlacement("new", 1)), ("b", ServicePlacement("new", 1))))
    table = replace(TABLE, levels=(replace(TABLE.levels[0], placement=all_new),))
    daemon._reload(lambda: (CONFIG, table))
    report = daemon.run_once()
    assert daemon.orchestrator.placement() == all_new
    assert all(a.applied for a in report.actions) and len(report.actions) == 2
