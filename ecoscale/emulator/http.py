"""Minimal asyncio HTTP/1.1: a keep-alive server protocol and a pooled keep-alive client.

Stdlib only and built on ``asyncio.Protocol`` rather than streams, because every request of
the lab crosses several of these hops on a 2-core machine. It speaks just what the lab needs:
Content-Length bodies (no chunked encoding), keep-alive by default, ``Connection: close``
honoured, requests on one connection answered in order.
"""

from __future__ import annotations

import asyncio
import collections
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

MAX_HEAD_BYTES = 64 * 1024
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           431: "Request Header Fields Too Large", 500: "Internal Server Error",
           501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable"}


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""
    received_at: float = 0.0
    """time.perf_counter() when the request was read in full (s)."""


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


class HttpError(Exception):
    """A malformed message; ``status`` is what the server answers."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """Split a message head into (first-line parts..., headers with lower-case names)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes every byte
        raise HttpError(400, "undecodable head") from exc
    lines = text.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) != 3:
        raise HttpError(400, f"bad first line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(400, f"bad header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], parts[2], headers


def _content_length(headers: dict[str, str]) -> int:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise HttpError(501, "chunked bodies are not supported; send Content-Length")
    raw = headers.get("content-length", "0")
    if not raw.isdigit():
        raise HttpError(400, f"bad Content-Length {raw!r}")
    return int(raw)


def render_response(response: Response, keep_alive: bool) -> bytes:
    reason = REASONS.get(response.status, "Unknown")
    head = [f"HTTP/1.1 {response.status} {reason}",
            f"Content-Length: {len(response.body)}",
            f"Content-Type: {response.content_type}"]
    head.extend(f"{k}: {v}" for k, v in response.headers.items())
    if not keep_alive:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body


class HttpServerProtocol(asyncio.Protocol):
    """One connection: parse requests, run the handler, answer in order, keep alive."""

    def __init__(self, handler: Handler, server: HttpServer):
        self._handler = handler
        self._server = server
        self._buffer = bytearray()
        self._queue: collections.deque[tuple[Request, bool]] = collections.deque()
        self._worker: asyncio.Task[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._closing = True

    @property
    def idle(self) -> bool:
        return not self._queue and (self._worker is None or self._worker.done())

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while not self._closing:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    self._fail(HttpError(431, "head too large"))
                    return
                break
            try:
                method, target, version, headers = parse_head(bytes(self._buffer[:end]))
                length = _content_length(headers)
            except HttpError as exc:
                self._fail(exc)
                return
            if len(self._buffer) < end + 4 + length:
                break
            body = bytes(self._buffer[end + 4:end + 4 + length])
            del self._buffer[:end + 4 + length]
            connection = headers.get("connection", "").lower()
            keep_alive = ("close" not in connection and
                          (version == "HTTP/1.1" or "keep-alive" in connection))
            request = Request(method, target, headers, body, time.perf_counter())
            self._queue.append((request, keep_alive))
            if not keep_alive:
                self._closing = True
        if self._queue and (self._worker is None or self._worker.done()):
            self._worker = asyncio.get_running_loop().create_task(self._serve_queue())

    def _fail(self, exc: HttpError) -> None:
        self._closing = True
        if self._transport is not None:
            body = f'{{"error": "{exc}"}}'.encode()
            self._transport.write(render_response(Response(exc.status, body), False))
            self._transport.close()

    async def _serve_queue(self) -> None:
        while self._queue:
            request, keep_alive = self._queue.popleft()
            try:
                response = await self._handler(request)
            except Exception as exc:  # noqa: BLE001 - one request must not kill the server
                response = Response(500, f'{{"error": "{type(exc).__name__}"}}'.encode())
            keep_alive = keep_alive and not self._server.draining
            transport = self._transport
            if transport is None or transport.is_closing():
                return
            transport.write(render_response(response, keep_alive))
            if not keep_alive:
                transport.close()
                return


class HttpServer:
    """A listening socket plus its open connections, with a graceful drain for SIGTERM."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.connections: set[HttpServerProtocol] = set()
        self.draining = False
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (port 0: any free port); returns the bound port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpServerProtocol(self.handler, self), host, port, reuse_address=True,
            backlog=1024)
        return int(self._server.sockets[0].getsockname()[1])

    async def drain(self, grace_s: float) -> None:
        """Keep serving for ``grace_s`` (callers move to other replicas), answering with
        Connection: close, then stop listening and close what is left."""
        self.draining = True
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            for conn in list(self.connections):
                if conn.idle:
                    conn.close()
            await asyncio.sleep(0.05)
        await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for conn in list(self.connections):
            conn.close()


class ConnectionClosed(ConnectionError):
    """The peer closed the connection before a full response arrived."""


class HttpClientProtocol(asyncio.Protocol):
    """One client connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self.closed = False
        self.address = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport  # asyncio sets TCP_NODELAY on TCP transports

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc or ConnectionClosed("connection closed by peer"))

    def request(self, method: str, target: str, host: str, body: bytes = b"",
                timeout_s: float | None = None) -> asyncio.Future[tuple[int, bytes, bool]]:
        """Send one request; the future gives (status, body, keep_alive).

        With ``timeout_s`` the future fails with TimeoutError when no full response came in
        time (a timer on the future itself: cheaper than ``asyncio.wait_for``, which wraps
        every call in a task on Python 3.11).
        """
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[int, bytes, bool]] = loop.create_future()
        self._waiter = waiter
        if timeout_s is not None:
            timer = loop.call_later(timeout_s, _expire, waiter)
            waiter.add_done_callback(lambda _f: timer.cancel())
        self._buffer.clear()
        head = (f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
        self.transport.write(head + body if body else head)
        return waiter

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0 or self._waiter is None or self._waiter.done():
            return
        try:
            version, status, _reason, headers = parse_head(bytes(self._buffer[:end]))
            length = _content_length(headers)
        except HttpError as exc:
            self._waiter.set_exception(exc)
            self.close()
            return
        if len(self._buffer) < end + 4 + length:
            return
        body = bytes(self._buffer[end + 4:end + 4 + length])
        del self._buffer[:end + 4 + length]
        keep_alive = "close" not in headers.get("connection", "").lower()
        self._waiter.set_result((int(status), body, keep_alive))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[tuple[int, bytes, bool]]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class UpstreamError(Exception):
    """A callee could not be reached or kept failing after retries."""


class Upstream:
    """Keep-alive connections to every replica of one service, found by DNS.

    With Swarm's dnsrr endpoint mode the service name resolves to the address of every task.
    Names are re-resolved every ``refresh_s`` in the background; requests go round-robin over
    the addresses, each with its own pool of idle connections, so that new replicas get
    traffic within seconds and moved ones are dropped. A failed connection is retried on a
    fresh resolution (a task that is stopping closes its connections; the retry reaches
    another replica).
    """

    def __init__(self, host: str, port: int, refresh_s: float = 2.0, attempts: int = 4,
                 connect_timeout_s: float = 2.0, rng: random.Random | None = None):
        self.host = host
        self.port = port
        self.refresh_s = refresh_s
        self.attempts = attempts
        self.connect_timeout_s = connect_timeout_s
        self._addresses: list[str] = []
        self._resolved_at = float("-inf")
        self._idle: dict[str, list[HttpClientProtocol]] = {}
        self._next = 0
        self._rng = rng or random.Random(host)
        self._resolving: asyncio.Future[None] | None = None
        """The lookup in flight, if any."""

    async def _resolve(self, force: bool = False) -> list[str]:
        """Addresses of the service. A stale answer is used while a refresh runs in the
        background; the caller waits only when none is known yet or after a failure."""
        stale = time.monotonic() - self._resolved_at >= self.refresh_s
        if self._addresses and not force:
            if stale and self._resolving is None:
                self._resolving = asyncio.ensure_future(self._lookup())
            return self._addresses
        if self._resolving is None:
            self._resolving = asyncio.ensure_future(self._lookup())
        await asyncio.shield(self._resolving)
        return self._addresses

    async def _lookup(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self.host, self.port, family=socket.AF_INET,
                                           type=socket.SOCK_STREAM)
            addresses = sorted({str(info[4][0]) for info in infos})
        except OSError:
            addresses = []
        finally:
            self._resolving = None
        self._resolved_at = time.monotonic()
        if addresses:
            for gone in set(self._idle) - set(addresses):
                for conn in self._idle.pop(gone):
                    conn.close()
            if addresses != self._addresses:
                self._next = self._rng.randrange(len(addresses))
            self._addresses = addresses

    async def _connection(self, address: str) -> HttpClientProtocol:
        idle = self._idle.get(address)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        loop = asyncio.get_running_loop()
        _transport, conn = await asyncio.wait_for(
            loop.create_connection(HttpClientProtocol, address, self.port),
            self.connect_timeout_s)
        conn.address = address
        return conn

    async def request(self, method: str, target: str, body: bytes = b"",
                      timeout_s: float = 30.0) -> tuple[int, bytes]:
        """Send one request to some replica; retries on connection failures."""
        last: Exception | None = None
        for attempt in range(self.attempts):
            addresses = await self._resolve(force=attempt > 0)
            if not addresses:
                last = UpstreamError(f"{self.host} does not resolve")
                await asyncio.sleep(0.1 * 2 ** attempt)
                continue
            address = addresses[self._next % len(addresses)]
            self._next += 1
            conn: HttpClientProtocol | None = None
            try:
                conn = await self._connection(address)
                status, payload, keep_alive = await conn.request(method, target, self.host,
                                                                 body, timeout_s)
            except (TimeoutError, OSError, ConnectionError, HttpError) as exc:
                last = exc
                if conn is not None:
                    conn.close()
                if isinstance(exc, asyncio.TimeoutError) and conn is not None:
                    break  # the request was sent and timed out: do not pile up retries
                await asyncio.sleep(0.05 * 2 ** attempt)
                continue
            if keep_alive and not conn.closed:
                self._idle.setdefault(address, []).append(conn)
            else:
                conn.close()
            return status, payload
        raise UpstreamError(f"{self.host}:{self.port}: {type(last).__name__}: {last}")

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
