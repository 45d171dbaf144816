"""The emulator's view of an app: services with their work, endpoints as trees of calls.

The host converts ``profiles/<app>/topology.yaml`` + ``emulation.yaml`` to one JSON document
at deploy time (``ecoscale.lab.apps.app_spec``); every task of every service reads the same
document. Stdlib only: this runs inside the lab containers on Debian's /usr/bin/python3.

JSON shape::

    {"app": "socialNetwork", "frontend": "nginx-thrift", "port": 8080,
     "node_speed": {"ecoscale-old-1": 0.5},
     "services": {"nginx-thrift": {"kind": "logic", "cpu_ms": 0.8, "io_ms": 0, "cv": 0.25}},
     "endpoints": [{"name": "read-home-timeline", "http": "GET /wrk2-api/home-timeline/read",
                    "path": [[{"service": "nginx-thrift", "path": []}], ...]}]}

A path is a list of stages run one after another; the calls of a stage run in parallel; a
call's own ``path`` runs inside the callee after its own work. Every call gets an id from its
position (``"1.0"`` = stage 1, call 0; ``"2.0.1.0"`` = call 0 of stage 1 of that call's
sub-path), computed the same way by caller and callee, so that an internal request names the
exact node of the tree it serves.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


class SpecError(ValueError):
    """The app document is malformed; the message lists every problem."""


@dataclass(frozen=True)
class Work:
    """What one request costs a service itself, before its downstream calls."""

    cpu_ms: float = 0.0
    """CPU time burnt in a busy loop (ms of thread CPU time, so throttling stretches it)."""
    io_ms: float = 0.0
    """Non-CPU wait (asyncio sleep, ms): disk, network or lock time of a data store."""
    cv: float = 0.0
    """Coefficient of variation of both, drawn per request (log-normal, mean preserved)."""


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    kind: str
    work: Work


@dataclass(frozen=True)
class CallNode:
    """One call in an endpoint's tree; ``path`` runs inside the callee."""

    call_id: str
    service: str
    path: tuple[tuple[CallNode, ...], ...]


@dataclass(frozen=True)
class EndpointSpec:
    name: str
    method: str
    route: str
    """Request path served by the front end (query strings are ignored)."""
    path: tuple[tuple[CallNode, ...], ...]

    def nodes(self) -> Iterator[CallNode]:
        """Every call of the endpoint, depth first."""
        yield from _walk(self.path)


def _walk(path: tuple[tuple[CallNode, ...], ...]) -> Iterator[CallNode]:
    for stage in path:
        for node in stage:
            yield node
            yield from _walk(node.path)


@dataclass(frozen=True)
class AppSpec:
    app: str
    frontend: str
    port: int
    services: Mapping[str, ServiceSpec]
    endpoints: tuple[EndpointSpec, ...]
    node_speed: Mapping[str, float] = field(default_factory=dict)
    """Node host name -> per-core speed relative to the host (how the lab emulates an older
    generation): CPU work on that node takes ``cpu_ms / speed``. Unlisted nodes: 1.0."""

    def speed_of(self, node: str) -> float:
        return self.node_speed.get(node, 1.0)

    def route(self, method: str, target: str) -> EndpointSpec | None:
        """The endpoint served at ``method target`` (query string ignored), if any."""
        route = target.split("?", 1)[0]
        for endpoint in self.endpoints:
            if endpoint.route == route and endpoint.method == method:
                return endpoint
        return None

    def endpoint(self, name: str) -> EndpointSpec | None:
        for endpoint in self.endpoints:
            if endpoint.name == name:
                return endpoint
        return None

    def calls_served_by(self, service: str) -> dict[tuple[str, str], CallNode]:
        """(endpoint name, call id) -> node, for every call that ``service`` serves."""
        return {(e.name, n.call_id): n for e in self.endpoints for n in e.nodes()
                if n.service == service}

    def endpoints_of(self, service: str) -> tuple[str, ...]:
        """Names of the endpoints that ``service`` takes part in."""
        return tuple(e.name for e in self.endpoints
                     if service == self.frontend or any(n.service == service for n in e.nodes()))

    @classmethod
    def from_dict(cls, data: Any) -> AppSpec:
        """Parse the JSON document, reporting every problem at once (SpecError)."""
        problems: list[str] = []
        if not isinstance(data, Mapping):
            raise SpecError("app spec: expected a JSON object")
        services: dict[str, ServiceSpec] = {}
        for name, raw in (data.get("services") or {}).items():
            if not isinstance(raw, Mapping):
                problems.append(f"service {name!r}: expected an object")
                continue
            numbers = {}
            for key in ("cpu_ms", "io_ms", "cv"):
                value = raw.get(key, 0.0)
                if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                    problems.append(f"service {name!r}: {key} must be a number >= 0, "
                                    f"got {value!r}")
                    value = 0.0
                numbers[key] = float(value)
            services[str(name)] = ServiceSpec(str(name), str(raw.get("kind", "logic")),
                                              Work(**numbers))
        if not services:
            problems.append("'services' must name at least one service")
        frontend = str(data.get("frontend", ""))
        if services and frontend not in services:
            problems.append(f"frontend {frontend!r} is not one of the services")
        endpoints = []
        for index, raw in enumerate(data.get("endpoints") or []):
            name = str(raw.get("name", f"#{index}")) if isinstance(raw, Mapping) else f"#{index}"
            if not isinstance(raw, Mapping):
                problems.append(f"endpoint {name}: expected an object")
                continue
            method, _, route = str(raw.get("http", "")).partition(" ")
            if not method or not route.startswith("/"):
                problems.append(f"endpoint {name}: http must look like 'GET /path', "
                                f"got {raw.get('http')!r}")
            path = _parse_path(raw.get("path"), "", services, f"endpoint {name}", problems)
            endpoints.append(EndpointSpec(name, method.upper(), route.strip(), path))
        node_speed = {}
        for node, speed in (data.get("node_speed") or {}).items():
            if not isinstance(speed, int | float) or isinstance(speed, bool) or not 0 < speed <= 1:
                problems.append(f"node_speed of {node!r} must lie in (0, 1], got {speed!r}")
                continue
            node_speed[str(node)] = float(speed)
        port = data.get("port", 8080)
        if not isinstance(port, int) or not 0 < port < 65536:
            problems.append(f"port must be an integer in 1..65535, got {port!r}")
            port = 8080
        if problems:
            raise SpecError("app spec: " + "; ".join(problems))
        return cls(str(data.get("app", "")), frontend, port, services, tuple(endpoints),
                   node_speed)


def _parse_path(raw: Any, prefix: str, services: Mapping[str, ServiceSpec], where: str,
                problems: list[str]) -> tuple[tuple[CallNode, ...], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(f"{where}: a path is a list of stages")
        return ()
    stages = []
    for s, stage in enumerate(raw):
        if not isinstance(stage, list) or not stage:
            problems.append(f"{where}: stage {s} must be a non-empty list of calls")
            continue
        nodes = []
        for c, call in enumerate(stage):
            call_id = f"{prefix}{s}.{c}"
            if not isinstance(call, Mapping) or "service" not in call:
                problems.append(f"{where}: call {call_id} must be an object with 'service'")
                continue
            service = str(call["service"])
            if service not in services:
                problems.append(f"{where}: call {call_id} names unknown service {service!r}")
            sub = _parse_path(call.get("path") or [], f"{call_id}.", services, where, problems)
            nodes.append(CallNode(call_id, service, sub))
        stages.append(tuple(nodes))
    return tuple(stages)
