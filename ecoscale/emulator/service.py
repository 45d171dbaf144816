"""One emulated microservice: own work per request, then its callees stage by stage.

How a request maps to the model (``ecoscale.model.topology``):

- The front end serves each endpoint's ``http`` route. It spends its own work, then runs the
  endpoint's path: stages one after another, the calls of a stage in parallel
  (``asyncio.gather``). A call naming the front end itself in the first stage (the usual
  ``- [nginx-thrift]``) runs its sub-path locally instead of calling itself over HTTP.
- Flat paths (stages listed one after another, e.g. socialNetwork read-home-timeline) are
  therefore orchestrated by the front end: it calls home-timeline-service, then
  home-timeline-redis, then post-storage-service, and so on.
- Every other service serves ``GET /_ecoscale/call/<endpoint>/<call id>``: it spends its own
  work, then runs that call's sub-path the same way.
- Hence end-to-end latency = front-end work + the sum over stages of the slowest parallel
  call, each call recursively the same — the model's composition (sum of stage maxima), plus
  one HTTP hop per call.

Own work is ``cpu_ms / speed`` of busy loop measured in thread CPU time followed by ``io_ms``
of asyncio sleep (waits that do not use the CPU: disk, network, locks). ``speed`` is the
per-core speed of the node the task runs on (``node_speed`` in the app document, 1.0 unless
the lab emulates an older generation there); a CPU quota that throttles the process stretches
the busy loop further. The busy loop blocks the event loop, so
one replica behaves like one worker thread. asyncio sleeps are rounded up to the event loop's
1 ms timer granularity.

The histogram of a service is its server-side time from the request read in full to the
response written; time a request waits in the socket while the process is busy is seen by its
caller (and so by the front end's end-to-end histogram), not by the callee's own histogram.

A ``gateway`` is a plain forwarder in front of the front end (the lab's host-reachable entry
point): every request it gets is forwarded to the front end, found by Swarm DNS, which adds
one HTTP hop to client-side latency. It also answers ``/_ecoscale/probe?services=a,b`` with the
/healthz answers of every task of those services, so that the host can check readiness of
tasks it cannot reach itself.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import socket
import time
import urllib.parse
from collections.abc import Mapping

from ecoscale.emulator.http import Request, Response, Upstream, UpstreamError
from ecoscale.emulator.metrics import EmulatorMetrics
from ecoscale.emulator.spec import AppSpec, CallNode, Work

CALL_PREFIX = "/_ecoscale/call/"
PROBE_PATH = "/_ecoscale/probe"
GATEWAY_NAME = "ecoscale-gateway"
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


def call_target(endpoint: str, call_id: str) -> str:
    """The request target of an internal call."""
    return f"{CALL_PREFIX}{urllib.parse.quote(endpoint, safe='')}/{call_id}"


def burn_cpu(seconds: float) -> None:
    """Busy-loop until this thread has used ``seconds`` of CPU time (not wall time)."""
    if seconds <= 0:
        return
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


class Emulator:
    """Request handling of one service (or the gateway) of an emulated app."""

    def __init__(self, spec: AppSpec, service: str, *, gateway: bool = False,
                 spec_id: str = "", seed: int | str | None = None,
                 upstream_host: str | None = None,
                 peers: Mapping[str, tuple[str, int]] | None = None, node: str = ""):
        if not gateway and service not in spec.services:
            raise ValueError(f"service {service!r} is not in app {spec.app!r}; "
                             f"known: {', '.join(spec.services)}")
        self.spec = spec
        self.name = service
        self.gateway = gateway
        self.spec_id = spec_id
        own = spec.services.get(service)
        self.work = own.work if own and not gateway else Work()
        self.kind = own.kind if own and not gateway else "gateway"
        self.node = node
        self.speed = spec.speed_of(node)
        """Per-core speed of the node this task runs on: CPU work takes cpu_ms / speed."""
        self.metrics = EmulatorMetrics(service, spec.app, self.kind, self.work.cpu_ms,
                                       self.work.io_ms, node, self.speed)
        self._rng = random.Random(seed if seed is not None else service)
        self._sigma = math.sqrt(math.log1p(self.work.cv ** 2)) if self.work.cv > 0 else 0.0
        self._calls = spec.calls_served_by(service)
        self._upstreams: dict[str, Upstream] = {}
        self._upstream_host = upstream_host or spec.frontend
        self._peers = dict(peers or {})
        """service -> (host, port) instead of Swarm DNS (tests and benchmarks)."""
        for endpoint in spec.endpoints_of(service) if not gateway else [
                e.name for e in spec.endpoints]:
            self.metrics.start_endpoint(endpoint)

    # ------------------------------------------------------------------ plumbing
    def upstream(self, service: str) -> Upstream:
        upstream = self._upstreams.get(service)
        if upstream is None:
            host, port = self._peers.get(service, (service, self.spec.port))
            upstream = self._upstreams[service] = Upstream(host, port)
        return upstream

    def close(self) -> None:
        for upstream in self._upstreams.values():
            upstream.close()

    def _factor(self) -> float:
        """Log-normal multiplier with mean 1 and the configured coefficient of variation."""
        if self._sigma == 0.0:
            return 1.0
        return self._rng.lognormvariate(-self._sigma ** 2 / 2, self._sigma)

    async def _own_work(self, endpoint: str) -> None:
        began = time.perf_counter()
        factor = self._factor()
        cpu_s = self.work.cpu_ms * factor / self.speed / 1000.0
        if cpu_s > 0:
            started = time.thread_time()
            burn_cpu(cpu_s)
            self.metrics.cpu_work.inc((self.name,), time.thread_time() - started)
        io_s = self.work.io_ms * factor / 1000.0
        if io_s > 0:
            await asyncio.sleep(io_s)
        self.metrics.own.observe((self.name, endpoint), time.perf_counter() - began)

    # ------------------------------------------------------------------ requests
    async def handle(self, request: Request) -> Response:
        path = request.target.split("?", 1)[0]
        if path == "/metrics":
            return Response(200, self.metrics.render(), TEXT_FORMAT)
        if path == "/healthz":
            body = {"service": self.name, "app": self.spec.app, "spec": self.spec_id,
                    "kind": self.kind, "node": self.node, "cpu_speed": self.speed}
            return Response(200, json.dumps(body).encode())
        if self.gateway and path == PROBE_PATH:
            return await self._probe(request.target)
        self.metrics.inflight += 1
        try:
            if path.startswith(CALL_PREFIX):
                endpoint, response = await self._serve_call(path)
            elif self.gateway:
                endpoint, response = await self._forward(request)
            else:
                endpoint, response = await self._serve_endpoint(request)
        finally:
            self.metrics.inflight -= 1
        self.metrics.record(endpoint, response.status, time.perf_counter() - request.received_at)
        return response

    async def _serve_endpoint(self, request: Request) -> tuple[str, Response]:
        endpoint = self.spec.route(request.method, request.target)
        if endpoint is None or self.name != self.spec.frontend:
            return "unknown", _error(404, f"{self.name} serves no {request.method} "
                                          f"{request.target}")
        await self._own_work(endpoint.name)
        for index, stage in enumerate(endpoint.path):
            local = [n for n in stage if index == 0 and n.service == self.name]
            remote = [n for n in stage if n not in local]
            jobs = [self._run_path(n.path, endpoint.name) for n in local]
            jobs += [self._call(n, endpoint.name) for n in remote]
            failed = await _gather(jobs)
            if failed:
                return endpoint.name, _error(502, failed)
        return endpoint.name, Response(200, b'{"ok": true}')

    async def _serve_call(self, path: str) -> tuple[str, Response]:
        endpoint, _, call_id = path[len(CALL_PREFIX):].partition("/")
        endpoint = urllib.parse.unquote(endpoint)
        node = self._calls.get((endpoint, call_id))
        if node is None:
            return "unknown", _error(404, f"{self.name} serves no call {call_id} of {endpoint}")
        await self._own_work(endpoint)
        failed = await self._run_path(node.path, endpoint)
        if failed:
            return endpoint, _error(502, failed)
        return endpoint, Response(200, b'{"ok": true}')

    async def _run_path(self, path: tuple[tuple[CallNode, ...], ...], endpoint: str) -> str:
        """Run stages in order, calls of a stage in parallel; '' on success, else why not."""
        for stage in path:
            failed = await _gather([self._call(node, endpoint) for node in stage])
            if failed:
                return failed
        return ""

    async def _call(self, node: CallNode, endpoint: str) -> str:
        began = time.perf_counter()
        try:
            status, _body = await self.upstream(node.service).request(
                "GET", call_target(endpoint, node.call_id))
        except UpstreamError as exc:
            self.metrics.calls.observe((self.name, node.service, endpoint),
                                       time.perf_counter() - began)
            self.metrics.downstream_errors.inc((self.name, node.service))
            return str(exc)
        self.metrics.calls.observe((self.name, node.service, endpoint),
                                   time.perf_counter() - began)
        if status != 200:
            self.metrics.downstream_errors.inc((self.name, node.service))
            return f"{node.service} answered {status}"
        return ""

    async def _forward(self, request: Request) -> tuple[str, Response]:
        endpoint = self.spec.route(request.method, request.target)
        name = endpoint.name if endpoint else "unknown"
        try:
            status, body = await self.upstream(self._upstream_host).request(
                request.method, request.target, request.body)
        except UpstreamError as exc:
            self.metrics.downstream_errors.inc((self.name, self._upstream_host))
            return name, _error(502, str(exc))
        return name, Response(status, body)

    async def _probe(self, target: str) -> Response:
        """/healthz of every task of the named services: {service: {address: answer}}."""
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
        names = [n for raw in query.get("services", []) for n in raw.split(",") if n]
        results = await asyncio.gather(*(self._probe_service(n) for n in names))
        return Response(200, json.dumps(dict(zip(names, results, strict=True))).encode())

    async def _probe_service(self, service: str) -> dict[str, object]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(f"tasks.{service}", self.spec.port,
                                           family=socket.AF_INET, type=socket.SOCK_STREAM)
        except OSError:
            return {}
        addresses = sorted({str(info[4][0]) for info in infos})
        answers = await asyncio.gather(*(self._health(a) for a in addresses))
        return dict(zip(addresses, answers, strict=True))

    async def _health(self, address: str) -> object:
        probe = Upstream(address, self.spec.port, attempts=1, connect_timeout_s=1.0)
        try:
            status, body = await probe.request("GET", "/healthz", timeout_s=2.0)
            return json.loads(body) if status == 200 else None
        except (UpstreamError, ValueError):
            return None
        finally:
            probe.close()


async def _gather(jobs: list) -> str:
    """Await jobs that return '' on success; the first failure's text, or ''."""
    if len(jobs) == 1:
        return await jobs[0]
    results = await asyncio.gather(*jobs)
    return next((r for r in results if r), "")


def _error(status: int, message: str) -> Response:
    return Response(status, json.dumps({"error": message}).encode())
