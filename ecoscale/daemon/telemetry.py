"""The daemon's own Prometheus metrics (ecoscale_*, units in names), /healthz, and logs."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Telemetry:
    """Every ecoscale_* metric, in a registry of its own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.decisions = Counter("ecoscale_decisions", "Decisions taken (one per loop)",
                                 registry=r)
        self.actions = Counter("ecoscale_actions", "Service updates made, by direction and "
                               "cause (reason: table, slo, step-back, no-data, capacity); "
                               "dry_run=true: decided in a dry run, not made",
                               ["direction", "reason", "dry_run"], registry=r)
        self.action_failures = Counter("ecoscale_action_failures", "Service updates the Docker "
                                       "API refused", ["service"], registry=r)
        self.errors = Counter("ecoscale_errors", "Errors reading a source", ["source"],
                              registry=r)
        self.replicas = Gauge("ecoscale_service_replicas", "Desired replicas per service and "
                              "generation", ["service", "generation"], registry=r)
        self.running = Gauge("ecoscale_running_tasks", "Running tasks per generation",
                             ["generation"], registry=r)
        self.carbon_rate = Gauge("ecoscale_carbon_rate_grams_per_hour", "Carbon rate of the "
                                 "running placement, gCO2e/h", ["generation", "kind"],
                                 registry=r)
        self.carbon_total = Counter("ecoscale_carbon_grams", "Carbon since start, gCO2e",
                                    ["generation", "kind"], registry=r)
        self.utilisation_source = Gauge(
            "ecoscale_carbon_utilisation_source_slots", "Running slots whose CPU utilisation "
            "in the carbon rate is measured, modelled (profile at the measured load) or peak "
            "(neither known)", ["source"], registry=r)
        self.intensity = Gauge("ecoscale_grid_intensity_grams_per_kwh", "Grid carbon "
                               "intensity used, gCO2e/kWh", registry=r)
        self.load = Gauge("ecoscale_load_requests_per_second", "Front-end load seen", registry=r)
        self.p99 = Gauge("ecoscale_p99_milliseconds", "End-to-end p99 seen", registry=r)
        self.slo = Gauge("ecoscale_slo_milliseconds", "End-to-end p99 SLO", registry=r)
        self.slo_met = Gauge("ecoscale_slo_met", "1: p99 within the SLO, 0: missed, NaN: no "
                             "data", registry=r)
        self.level = Gauge("ecoscale_table_level", "Policy-table level in force (1-based)",
                           registry=r)
        self.escalation = Gauge("ecoscale_escalation_services", "Most critical services held "
                                "on new ahead of the table", registry=r)
        self.healthy = Gauge("ecoscale_healthy", "1 when every source answered at the last "
                             "loop", registry=r)
        self.paused = Gauge("ecoscale_paused", "1 when the pause file exists", registry=r)
        self.updates_resumed = Counter("ecoscale_updates_resumed", "Paused rolling updates "
                                       "started again by a forced update", registry=r)
        self.generation_ready = Gauge("ecoscale_generation_ready", "1 when at least one "
                                      "ready node carries the generation's label",
                                      ["generation"], registry=r)
        self.displaced = Gauge("ecoscale_services_displaced", "Services the node-loss rule "
                               "keeps off a generation that cannot run them", registry=r)
        self.updates_paused = Gauge("ecoscale_updates_paused", "Managed services whose last "
                                    "rolling update Swarm paused", registry=r)
        self.nodes = Gauge("ecoscale_nodes", "Nodes of each generation by availability "
                           "(active, pause, drain) after the last loop; a right-sized level "
                           "keeps as many active as it has sockets", ["generation",
                                                                       "availability"],
                           registry=r)
        self.node_changes = Counter("ecoscale_node_changes", "Node availability changes made "
                                    "(to active, pause, drain); dry_run=true: decided in a "
                                    "dry run, not made", ["availability", "dry_run"],
                                    registry=r)
        self.loop_seconds = Histogram("ecoscale_loop_duration_seconds", "Duration of one "
                                      "observe-decide-act loop", registry=r,
                                      buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@dataclass
class Health:
    """What /healthz reports: healthy when the last loop saw every source and was recent."""

    problems: list[str] = field(default_factory=lambda: ["not started"])
    last_loop_s: float = 0.0
    max_age_s: float = 60.0
    details: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, problems: list[str], epoch_s: float, details: Mapping[str, Any]) -> None:
        """The loop that ended at ``epoch_s`` (Unix epoch s) saw ``problems``."""
        with self.lock:
            self.problems = list(problems)
            self.last_loop_s = epoch_s
            self.details = dict(details)

    def report(self, epoch_s: float) -> tuple[bool, dict[str, Any]]:
        """Healthy or not at ``epoch_s`` (Unix epoch s), and the body of /healthz."""
        with self.lock:
            problems = list(self.problems)
            if self.last_loop_s and epoch_s - self.last_loop_s > self.max_age_s:
                problems.append(f"no loop for {epoch_s - self.last_loop_s:.0f} s")
            return not problems, {"healthy": not problems, "problems": problems,
                                  **self.details}


def serve(telemetry: Telemetry, health: Health, address: str, port: int,
          clock: Callable[[], float] = time.time) -> ThreadingHTTPServer:
    """Serve /metrics and /healthz in a background thread; returns the server. ``clock``
    (Unix epoch s) tells how old the last loop is: the daemon's clock."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            if self.path.startswith("/metrics"):
                body, status, kind = telemetry.exposition(), 200, CONTENT_TYPE_LATEST
            elif self.path.startswith("/healthz"):
                ok, report = health.report(clock())
                body = json.dumps(report).encode()
                status, kind = (200 if ok else 503), "application/json"
            else:
                body, status, kind = b"not found: try /metrics or /healthz\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="ecoscale-http", daemon=True).start()
    return server


def iso_utc(epoch_s: float) -> str:
    """ISO-8601 UTC with milliseconds, e.g. 2026-12-01T19:45:04.123Z."""
    stamp = datetime.fromtimestamp(epoch_s, tz=UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Log:
    """Structured log lines (JSON, one object per line) on a stream, stamped by ``clock``
    (Unix epoch s; a ``Daemon`` sets its own clock on a log that has none, else the wall
    clock)."""

    def __init__(self, stream: TextIO | None = None,
                 clock: Callable[[], float] | None = None):
        self.stream = stream or sys.stderr
        self.clock = clock
        self.lock = threading.Lock()

    def __call__(self, event: str, level: str = "info", **fields: Any) -> None:
        epoch_s = (self.clock or time.time)()
        record = {"ts": iso_utc(epoch_s), "level": level, "event": event, **fields}
        line = json.dumps(record, default=str)
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()
