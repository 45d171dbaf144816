"""The emulator's HTTP/1.1 layer: keep-alive, pipelining, errors, client retries."""

import asyncio

import pytest
from emulator_helpers import run

from ecoscale.emulator.http import HttpServer, Response, Upstream, UpstreamError, parse_head


async def echo(request):
    return Response(200, f"{request.method} {request.target} {len(request.body)}".encode(),
                    "text/plain")


async def raw_exchange(payload: bytes, read_bytes: int = 4096) -> bytes:
    server = HttpServer(echo)
    port = await server.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    data = b""
    try:
        while len(data) < read_bytes:
            chunk = await asyncio.wait_for(reader.read(4096), 1.0)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pass
    writer.close()
    await server.close()
    return data


def test_pipelined_requests_are_answered_in_order_on_one_connection():
    payload = (b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
               b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
               b"GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = run(raw_exchange(payload)).decode()
    assert data.index("GET /one 0") < data.index("POST /two 3") < data.index("GET /three 0")
    assert data.count("HTTP/1.1 200 OK") == 3
    assert data.rstrip().endswith("GET /three 0") and "Connection: close" in data


@pytest.mark.parametrize("payload, status", [
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"501"),
    (b"NONSENSE\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", b"400"),
], ids=["chunked", "bad-first-line", "bad-length"])
def test_malformed_requests_get_an_error_and_the_connection_closes(payload, status):
    data = run(raw_exchange(payload))
    assert data.startswith(b"HTTP/1.1 " + status)
    assert b"Connection: close" in data


def test_parse_head_lowercases_header_names():
    method, target, version, headers = parse_head(
        b"GET /x?y=1 HTTP/1.1\r\nContent-Length: 0\r\nX-Thing: a:b")
    assert (method, target, version) == ("GET", "/x?y=1", "HTTP/1.1")
    assert headers == {"content-length": "0", "x-thing": "a:b"}


def test_client_reuses_connections_and_retries_after_the_server_closed_one():
    async def scenario():
        connections = []

        async def handler(request):
            return Response(200, b"{}")

        server = HttpServer(handler)
        port = await server.start("127.0.0.1", 0)
        client = Upstream("127.0.0.1", port, attempts=3)
        for _ in range(5):
            await client.request("GET", "/")
        connections.append(len(server.connections))
        for conn in list(server.connections):  # the server drops idle keep-alive connections
            conn.close()
        await asyncio.sleep(0.05)
        status, _ = await client.request("GET", "/")
        await server.close()
        return connections[0], status

    open_connections, status = run(scenario())
    assert open_connections == 1 and status == 200


def test_client_gives_up_with_a_clear_error_when_nobody_listens():
    async def scenario():
        await Upstream("127.0.0.1", 9, attempts=2).request("GET", "/")

    with pytest.raises(UpstreamError, match="127.0.0.1:9"):
        run(scenario())


def test_client_times_out_a_slow_answer():
    async def scenario():
        async def slow(_request):
            await asyncio.sleep(1.0)
            return Response(200)

        server = HttpServer(slow)
        port = await server.start("127.0.0.1", 0)
        try:
            await Upstream("127.0.0.1", port, attempts=2).request("GET", "/", timeout_s=0.1)
        finally:
            await server.close()

    with pytest.raises(UpstreamError, match="TimeoutError"):
        run(scenario())
