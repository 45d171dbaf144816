"""An app on the lab: its topology plus emulation parameters, as the emulator's JSON document.

``profiles/<app>/emulation.yaml`` gives per-kind defaults (``kinds``) and per-service
overrides (``services``) of ``cpu_ms``, ``io_ms`` and ``cv`` (see the file's header and
``ecoscale.emulator.spec``). Validation reports every problem at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecoscale.adapters.files import load_topology, read_yaml, topology_path
from ecoscale.errors import InputError
from ecoscale.model.topology import Call, Stage, Topology

WORK_KEYS = ("cpu_ms", "io_ms", "cv")
RESERVED_NAMES = ("ecoscale-gateway", "ecoscale-prometheus")


@dataclass(frozen=True)
class ServiceWork:
    cpu_ms: float
    io_ms: float
    cv: float


@dataclass(frozen=True)
class LabApp:
    """A deployable app: topology, per-service work and the emulator document."""

    topology: Topology
    work: Mapping[str, ServiceWork]
    port: int
    source: str
    node_speed: Mapping[str, float] = field(default_factory=dict)
    """Swarm hostname -> per-core speed of that node (the lab's emulation of generations)."""

    @property
    def name(self) -> str:
        return self.topology.app

    def document(self) -> dict[str, Any]:
        """The JSON document every emulator task of this app reads."""
        return app_document(self.topology, self.work, self.port, self.node_speed)

    def document_bytes(self) -> bytes:
        return (json.dumps(self.document(), indent=1, sort_keys=True) + "\n").encode()

    def spec_id(self) -> str:
        """Hash of the document: names the Swarm config and tells stale tasks apart."""
        return hashlib.sha256(self.document_bytes()).hexdigest()[:12]


def emulation_path(app: str) -> Path:
    return topology_path(app).with_name("emulation.yaml")


def load_app(app: str, emulation: str | Path | None = None) -> LabApp:
    """A shipped app (or topology path) with its emulation.yaml (beside the topology)."""
    topology = load_topology(app)
    path = Path(emulation) if emulation else emulation_path(app)
    return parse_emulation(read_yaml(path), topology, str(path))


def parse_emulation(data: Any, topology: Topology, source: str) -> LabApp:
    """Check emulation parameters against the topology; every problem at once."""
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise InputError(source, "expected a mapping with 'kinds' and 'services'")
    kinds = data.get("kinds") or {}
    overrides = data.get("services") or {}
    if not isinstance(kinds, Mapping):
        problems.append("'kinds' must map a service kind to {cpu_ms, io_ms, cv}")
        kinds = {}
    if not isinstance(overrides, Mapping):
        problems.append("'services' must map a service name to {cpu_ms, io_ms, cv}")
        overrides = {}
    if data.get("app") not in (None, topology.app):
        problems.append(f"app is '{data.get('app')}' but the topology is '{topology.app}'")
    for name in overrides:
        if name not in topology.services:
            problems.append(f"services: '{name}' is not a service of {topology.app}; "
                            "check the spelling against topology.yaml")
    for name in topology.services:
        if name in RESERVED_NAMES:
            problems.append(f"service name '{name}' is reserved by the lab; rename it")
    for where, values in [*((f"kinds.{k}", v) for k, v in kinds.items()),
                          *((f"services.{k}", v) for k, v in overrides.items())]:
        if not isinstance(values, Mapping):
            problems.append(f"{where}: expected a mapping of {', '.join(WORK_KEYS)}")
            continue
        for key, value in values.items():
            if key not in WORK_KEYS:
                problems.append(f"{where}: unknown key '{key}'; use {', '.join(WORK_KEYS)}")
            elif not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                problems.append(f"{where}.{key}: must be a number >= 0, got {value!r}")
            elif key != "cv" and value > 1000:
                problems.append(f"{where}.{key}: {value} ms per request is beyond what the lab "
                                "can run; keep it under 1000")
    work: dict[str, ServiceWork] = {}
    for name, service in topology.services.items():
        base = kinds.get(service.kind)
        if not isinstance(base, Mapping):
            problems.append(f"kinds: no defaults for kind '{service.kind}' (service '{name}'); "
                            f"add kinds.{service.kind}")
            base = {}
        own = overrides.get(name) if isinstance(overrides.get(name), Mapping) else {}
        merged = {key: own.get(key, base.get(key, 0.0)) for key in WORK_KEYS}
        if all(isinstance(v, int | float) for v in merged.values()):
            work[name] = ServiceWork(**{k: float(v) for k, v in merged.items()})
    port = data.get("port", 8080)
    if not isinstance(port, int) or not 1024 <= port <= 65535:
        problems.append(f"port must be an integer in 1024..65535, got {port!r}")
    for endpoint in topology.endpoints:
        method, _, route = endpoint.http.partition(" ")
        if method.upper() not in ("GET", "POST", "PUT", "DELETE") or not route.startswith("/"):
            problems.append(f"endpoint '{endpoint.name}': http '{endpoint.http}' must look "
                            "like 'GET /path' for the emulator to serve it")
    if problems:
        raise InputError(source, problems)
    return LabApp(topology, work, int(port), source)


def _path(path: tuple[Stage, ...]) -> list[list[dict[str, Any]]]:
    return [[_call(call) for call in stage] for stage in path]


def _call(call: Call) -> dict[str, Any]:
    return {"service": call.service, "path": _path(call.path)}


def app_document(topology: Topology, work: Mapping[str, ServiceWork], port: int,
                 node_speed: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Topology + work as the JSON shape that ``ecoscale.emulator.spec`` parses."""
    return {
        "app": topology.app,
        "frontend": topology.frontend,
        "port": port,
        "node_speed": dict(sorted((node_speed or {}).items())),
        "services": {name: {"kind": topology.services[name].kind, "cpu_ms": w.cpu_ms,
                            "io_ms": w.io_ms, "cv": w.cv} for name, w in work.items()},
        "endpoints": [{"name": e.name, "share": e.share, "http": e.http, "path": _path(e.path)}
                      for e in topology.endpoints],
    }
