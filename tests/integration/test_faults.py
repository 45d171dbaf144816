"""Faults on the real lab, with `ecoscale run` as a host process.

- Node loss: the old node's engine and everything it runs are SIGKILLed mid-run
  (``Lab.stop_node``). The daemon sees the old generation without a ready node, brings the
  services placed there to new within a bounded time, loses none, says so in /healthz and its
  metrics, and puts them back on old once the node is back and the cooldown allows.
- The manager's Docker API unreachable for a while: the daemon talks to it through a small
  TCP proxy that the test cuts and restores (the manager's engine is never touched). The
  daemon holds, backs off, reports unhealthy, and after the outage makes the change it was
  asked for during the outage exactly once.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

from waiting import Load, free_port, wait_for

from ecoscale.adapters.files import load_topology, write_table
from ecoscale.adapters.targets import build_target
from ecoscale.config import TargetConfig
from ecoscale.evaluation.launcher import daemon_config, start_process
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.planner.table import Hysteresis, PolicyTable, TableLevel

APP = "socialNetwork"
INTERVAL_S = 4.0
MOVED = ("media-service", "url-shorten-service", "user-mention-service", "text-service")
"""The services the test tables put on old (the others stay on new)."""
CONTROL = {"slo_miss_periods": 1_000_000, "cooldown_s": 20, "lost_task_grace_s": 40,
           "no_data_fallback_periods": 1_000_000}
"""The closed loop off (no load runs: no latency to act on), a short cooldown."""
EVACUATE_BOUND_S = 60.0
"""Stated bound: from the kill to every MOVED service running on new. Measured 14-20 s over
7 runs (Swarm marks the node down after ~12 s of missed heartbeats, then at most a period
and the start-first moves); 60 s leaves room for a slower, busier machine."""
RETURN_BOUND_S = 60.0
"""Stated bound: from the node ready again to the MOVED services back on old (the 20-s
cooldown since the evacuation, a period, the moves). Measured 18-20 s over 7 runs."""


LOAD_QPS = 10.0
"""A light load, so that the daemon has a p99 (no traffic: no p99, an unhealthy daemon)."""


def table(on_old: tuple[str, ...]) -> PolicyTable:
    services = load_topology(APP).service_names
    placed = Placement(tuple((s, ServicePlacement("old" if s in on_old else "new", 1))
                             for s in services))
    return PolicyTable(
        app=APP, slo_ms=1000.0, peak_qps=1000.0, newest="new",
        levels=(TableLevel(1000.0, math.inf, placed, {s: "fault test" for s in services},
                           0.0, 0.0, True),),
        ranking=tuple((s, 1.0) for s in services), non_critical={}, critical={},
        hysteresis=Hysteresis(0.95, 0.85, 20.0), carbon_ratio={"new": 1.0, "old": 2.8})


def running(docker_host: str) -> dict[str, dict[str, int]]:
    state = build_target(TargetConfig(docker_host=docker_host)).read()
    return {name: dict(s.running) for name, s in state.services.items()}


def on(lab, services, generation) -> bool:
    now = running(lab.docker_host)
    return all(now.get(s) == {generation: 1} for s in services)


def healthz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def metric(port: int, name: str) -> str:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    return "\n".join(line for line in body.decode().splitlines() if line.startswith(name))


def log_records(log: Path, event: str) -> list[dict]:
    out = []
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("event") == event:
                out.append(record)
    return out


@contextlib.contextmanager
def daemon_running(config: Path, log: Path, frontend_url: str):
    load = Load(frontend_url, LOAD_QPS, tolerate_errors=True)   # services may be unreachable
    process = start_process(config, log)
    try:
        yield process
    finally:
        load.close()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=90)
        except Exception:
            process.kill()
            raise
        assert code == 0, log.read_text()[-3000:]


def test_node_loss_moves_services_to_new_reports_it_and_returns_them(social_network,
                                                                    tmp_path):
    lab = social_network
    old_node = lab.nodes_of("old")[0]
    write_table(tmp_path / "table.yaml", table(MOVED))
    port = free_port()
    config = daemon_config(lab, tmp_path / "table.yaml", tmp_path, interval_s=INTERVAL_S,
                           listen_port=port, control=CONTROL)
    log = tmp_path / "daemon.log"
    services = load_topology(APP).service_names
    stopped = False
    try:
        with daemon_running(config, log, lab.frontend_url):
            wait_for("the table's services on old", lambda: on(lab, MOVED, "old"), 240, 2)
            wait_for("a healthy daemon", lambda: healthz(port)[0] == 200, 60)
            killed_at = time.monotonic()
            lab.stop_node(old_node)
            stopped = True
            wait_for("the old node's services running on new",
                     lambda: on(lab, MOVED, "new"), EVACUATE_BOUND_S + 30, 1)
            evacuated_s = time.monotonic() - killed_at
            _, body = healthz(port)
            assert set(MOVED) <= set(body["capacity_lost"]), body
            assert body["generations_ready"] == ["new"], body
            assert f"ecoscale_services_displaced {float(len(MOVED))}" in metric(
                port, "ecoscale_services_displaced")
            assert 'generation="old"} 0.0' in metric(port, "ecoscale_generation_ready")
            assert 'reason="capacity"' in metric(port, "ecoscale_actions_total")
            now = running(lab.docker_host)
            assert all(sum(now.get(s, {}).values()) >= 1 for s in services), now  # none lost
            lab.start_node(old_node)
            stopped = False
            back_at = time.monotonic()
            wait_for("the services back on old", lambda: on(lab, MOVED, "old"),
                     RETURN_BOUND_S + 30, 1)
            returned_s = time.monotonic() - back_at
            wait_for("/healthz without displaced services",
                     lambda: healthz(port)[1].get("capacity_lost") == {}, 60)
    finally:
        if stopped:
            lab.start_node(old_node)
    print(f"node loss: on new {evacuated_s:.0f} s after the kill, back on old "
          f"{returned_s:.0f} s after the node was ready")
    assert evacuated_s <= EVACUATE_BOUND_S
    assert returned_s <= RETURN_BOUND_S
    capacity_moves = [r for r in log_records(log, "action") if "node loss" in r["reason"]]
    assert sorted(r["service"] for r in capacity_moves) == sorted(MOVED)   # once each
    assert all(r["applied"] for r in capacity_moves)
    assert {r["service"] for r in log_records(log, "capacity_lost")} >= set(MOVED)


class SocketProxy:
    """127.0.0.1:<port> -> a unix socket, byte for byte; ``cut`` closes the listener and
    every connection (clients then get "connection refused"), ``restore`` listens again."""

    def __init__(self, unix_path: str):
        self.unix_path = unix_path
        self.port = free_port()
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(32)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            try:
                upstream.connect(self.unix_path)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self.listener is not None:
            # shutdown first: a bare close() leaves the socket listening while the accept
            # thread blocks on it (new connections would hang, not be refused)
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
            self.listener = None
        with self.lock:
            for s in self.connections:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self.connections.clear()


OUTAGE_S = 45.0
"""How long the Docker API stays unreachable: long enough for the back-off to double twice
(loops 4, 8, 16, 16 s apart in all 7 runs: max_backoff_s 16)."""


def test_docker_api_outage_holds_backs_off_and_resumes_without_repeating(social_network,
                                                                        tmp_path):
    lab = social_network
    proxy = SocketProxy(lab.docker_host.removeprefix("unix://"))
    write_table(tmp_path / "table.yaml", table(MOVED))
    port = free_port()
    config = daemon_config(lab, tmp_path / "table.yaml", tmp_path, interval_s=INTERVAL_S,
                           listen_port=port, control=CONTROL)
    text = config.read_text().replace(lab.docker_host, f"tcp://127.0.0.1:{proxy.port}")
    config.write_text(text.replace("max_backoff_s: 30.0", "max_backoff_s: 16.0"))
    log = tmp_path / "daemon.log"
    try:
        with daemon_running(config, log, lab.frontend_url) as daemon:
            wait_for("the table's services on old", lambda: on(lab, MOVED, "old"), 240, 2)
            wait_for("a healthy daemon", lambda: healthz(port)[0] == 200, 60)
            before = len(log_records(log, "action"))
            proxy.cut()
            cut_at = time.time()
            # asked during the outage: the table now wants MOVED back on new
            write_table(tmp_path / "policy-table.yaml", table(()))
            daemon.send_signal(signal.SIGHUP)
            status, body = wait_for("/healthz to report the outage",
                                    lambda: (r := healthz(port))[0] == 503 and r, 60)
            assert any("docker" in p for p in body["problems"]), body
            while time.time() - cut_at < OUTAGE_S:
                assert daemon.poll() is None          # still running
                assert len(log_records(log, "action")) == before   # held: nothing acted
                time.sleep(2)
            assert on(lab, MOVED, "old")
            proxy.restore()
            restored_at = time.time()
            wait_for("the change asked for during the outage made",
                     lambda: on(lab, MOVED, "new"), 120, 1)
            wait_for("/healthz healthy again", lambda: healthz(port)[0] == 200, 60)
            time.sleep(3 * INTERVAL_S)                # a few more loops: nothing more to do
    finally:
        proxy.cut()
    actions = log_records(log, "action")[before:]
    assert sorted(r["service"] for r in actions if r["applied"]) == sorted(MOVED)  # once each
    assert log_records(log, "reloaded"), "the SIGHUP reload was not applied"
    # back-off: the loops during the outage came further and further apart
    stamps = [datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp()
              for r in log_records(log, "unhealthy")
              if any("docker" in p for p in r["problems"])]
    during = [t for t in stamps if cut_at - 1 <= t <= restored_at + 1]
    gaps = [b - a for a, b in zip(during, during[1:], strict=False)]
    print(f"docker outage: {len(during)} loops in {restored_at - cut_at:.0f} s, gaps {gaps}")
    assert len(during) >= 3 and max(gaps) >= 3 * INTERVAL_S, gaps
    assert len(during) < (restored_at - cut_at) / INTERVAL_S - 2, during
