"""In-process emulated apps for the emulator's unit tests (no Docker, no DNS)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ecoscale.emulator.http import HttpServer, Upstream
from ecoscale.emulator.service import Emulator
from ecoscale.emulator.spec import AppSpec


def document(services: Mapping[str, Mapping[str, float]], endpoints: list[dict[str, Any]],
             frontend: str = "front", node_speed: Mapping[str, float] | None = None,
             ) -> dict[str, Any]:
    return {"app": "test", "frontend": frontend, "port": 8080,
            "node_speed": dict(node_speed or {}),
            "services": {name: {"kind": "logic", **work} for name, work in services.items()},
            "endpoints": endpoints}


def call(service: str, *stages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"service": service, "path": list(stages)}


@contextlib.asynccontextmanager
async def running_app(data: dict[str, Any], nodes: Mapping[str, str] | None = None,
                      gateway: bool = False) -> AsyncIterator[dict[str, Any]]:
    """Every service of the document on 127.0.0.1, wired by peers; yields name -> info."""
    spec = AppSpec.from_dict(data)
    emulators: dict[str, Emulator] = {}
    servers: dict[str, HttpServer] = {}
    ports: dict[str, tuple[str, int]] = {}
    names = list(spec.services) + (["ecoscale-gateway"] if gateway else [])
    for name in names:
        server = HttpServer(lambda request, name=name: emulators[name].handle(request))
        ports[name] = ("127.0.0.1", await server.start("127.0.0.1", 0))
        servers[name] = server
    for name in names:
        emulators[name] = Emulator(spec, name, gateway=name == "ecoscale-gateway",
                                   spec_id="test", peers=ports,
                                   node=(nodes or {}).get(name, ""))
    try:
        yield {"spec": spec, "emulators": emulators, "ports": ports,
               "client": {n: Upstream(*ports[n], attempts=1) for n in names}}
    finally:
        for emulator in emulators.values():
            emulator.close()
        for server in servers.values():
            await server.close()
        await asyncio.sleep(0)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)
