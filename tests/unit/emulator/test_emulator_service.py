"""Request handling of the emulator with in-process servers: composition, work, metrics."""

import asyncio
import json
import time

import pytest
from emulator_helpers import call, document, run, running_app
from prometheus_client.parser import text_string_to_metric_families

from ecoscale.emulator.service import Emulator

IO = {"cpu_ms": 0.0, "io_ms": 50.0}
FREE = {"cpu_ms": 0.0, "io_ms": 0.0}


def sample(metrics_text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise AssertionError(f"no sample {name} {labels}")


def test_stages_run_in_sequence_and_calls_inside_a_stage_in_parallel(monkeypatch):
    # front -> [a, b] in parallel, then [c]: each waits 100 ms, so at least 200 ms. That a
    # and b run together is shown without a clock: each waits in its own work until both
    # have started (calls made one after the other would never get there), and c starts
    # only after both ended. tests/bench/bench_emulator.py prints the wall time (~200 ms).
    slow = {"cpu_ms": 0.0, "io_ms": 100.0}
    data = document({"front": FREE, "a": slow, "b": slow, "c": slow}, [
        {"name": "e", "http": "GET /e",
         "path": [[call("front")], [call("a"), call("b")], [call("c")]]}])
    events: list[str] = []
    both_started = asyncio.Event()
    own_work = Emulator._own_work

    async def recorded(self, endpoint):
        events.append(f"{self.name} starts")
        if self.name in ("a", "b"):
            if {"a starts", "b starts"} <= set(events):
                both_started.set()
            await asyncio.wait_for(both_started.wait(), 10)
        await own_work(self, endpoint)
        events.append(f"{self.name} ends")

    monkeypatch.setattr(Emulator, "_own_work", recorded)

    async def scenario():
        async with running_app(data) as app:
            began = time.perf_counter()
            status, body = await app["client"]["front"].request("GET", "/e?x=1")
            return status, json.loads(body), time.perf_counter() - began

    status, body, seconds = run(scenario())
    assert status == 200 and body == {"ok": True}
    assert seconds >= 0.195
    assert events[:2] == ["front starts", "front ends"], events
    assert set(events[2:4]) == {"a starts", "b starts"}, events
    assert set(events[4:6]) == {"a ends", "b ends"}, events
    assert events[6:] == ["c starts", "c ends"], events


def test_a_sub_path_runs_inside_the_callee_after_its_own_work():
    data = document({"front": FREE, "mid": IO, "leaf": IO}, [
        {"name": "e", "http": "POST /e", "path": [[call("front")], [call("mid", [call("leaf")])]]}])

    async def scenario():
        async with running_app(data) as app:
            status, _ = await app["client"]["front"].request("POST", "/e", b"body")
            mid = (await app["client"]["mid"].request("GET", "/metrics"))[1].decode()
            leaf = (await app["client"]["leaf"].request("GET", "/metrics"))[1].decode()
            return status, mid, leaf

    status, mid, leaf = run(scenario())
    assert status == 200
    # mid's own latency includes leaf's: two 50 ms waits.
    mid_sum = sample(mid, "ecoscale_emulator_request_duration_seconds_sum", endpoint="e")
    leaf_sum = sample(leaf, "ecoscale_emulator_request_duration_seconds_sum", endpoint="e")
    assert mid_sum >= 0.095 and 0.045 <= leaf_sum < mid_sum


def test_cpu_work_is_busy_cpu_time_scaled_by_the_node_speed():
    data = document({"front": {"cpu_ms": 20.0, "io_ms": 0.0}}, [
        {"name": "e", "http": "GET /e", "path": [[call("front")]]}],
        node_speed={"slow-node": 0.5})

    async def cpu_of(node: str) -> float:
        async with running_app(data, nodes={"front": node}) as app:
            for _ in range(5):
                await app["client"]["front"].request("GET", "/e")
            text = (await app["client"]["front"].request("GET", "/metrics"))[1].decode()
            assert sample(text, "ecoscale_emulator_info", node=node) == 1
            return sample(text, "ecoscale_emulator_cpu_work_seconds_total")

    fast, slow = run(cpu_of("fast-node")), run(cpu_of("slow-node"))
    assert fast == pytest.approx(0.100, rel=0.1)
    assert slow == pytest.approx(0.200, rel=0.1)


def test_metrics_are_valid_exposition_with_units_in_names():
    data = document({"front": FREE, "a": FREE}, [
        {"name": "e", "http": "GET /e", "path": [[call("front")], [call("a")]]}])

    async def scenario():
        async with running_app(data) as app:
            for _ in range(3):
                await app["client"]["front"].request("GET", "/e")
            await app["client"]["front"].request("GET", "/missing")
            return (await app["client"]["front"].request("GET", "/metrics"))[1].decode()

    text = run(scenario())
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["ecoscale_emulator_request_duration_seconds"].type == "histogram"
    assert sample(text, "ecoscale_emulator_requests_total", endpoint="e", code="200") == 3
    assert sample(text, "ecoscale_emulator_requests_total", endpoint="unknown", code="404") == 1
    assert sample(text, "ecoscale_emulator_request_duration_seconds_count", service="front",
                  endpoint="e") == 3
    assert sample(text, "ecoscale_emulator_request_duration_seconds_bucket", endpoint="e",
                  le="+Inf") == 3
    assert sample(text, "ecoscale_emulator_process_cpu_seconds_total", service="front") > 0


def test_a_failing_callee_gives_502_and_counts_a_downstream_error():
    data = document({"front": FREE, "a": FREE}, [
        {"name": "e", "http": "GET /e", "path": [[call("front")], [call("a")]]}])

    async def scenario():
        async with running_app(data) as app:
            front = app["emulators"]["front"]
            front._peers["a"] = ("127.0.0.1", 9)  # nothing listens on the discard port
            front._upstreams.clear()
            status, _ = await app["client"]["front"].request("GET", "/e")
            text = (await app["client"]["front"].request("GET", "/metrics"))[1].decode()
            return status, text

    status, text = run(scenario())
    assert status == 502
    assert sample(text, "ecoscale_emulator_downstream_errors_total", callee="a") == 1
    assert sample(text, "ecoscale_emulator_requests_total", endpoint="e", code="502") == 1


def test_only_the_front_end_serves_routes_and_calls_must_exist():
    data = document({"front": FREE, "a": FREE}, [
        {"name": "e", "http": "GET /e", "path": [[call("front")], [call("a")]]}])

    async def scenario():
        async with running_app(data) as app:
            a = app["client"]["a"]
            return [(await a.request("GET", "/e"))[0],
                    (await a.request("GET", "/_ecoscale/call/e/1.0"))[0],
                    (await a.request("GET", "/_ecoscale/call/e/0.0"))[0],
                    json.loads((await a.request("GET", "/healthz"))[1])]

    route, own_call, foreign_call, health = run(scenario())
    assert (route, own_call, foreign_call) == (404, 200, 404)
    assert health["service"] == "a" and health["spec"] == "test"


def test_the_gateway_forwards_to_the_front_end_and_probes_tasks():
    data = document({"front": FREE}, [{"name": "e", "http": "GET /e", "path": [[call("front")]]}])

    async def scenario():
        async with running_app(data, gateway=True) as app:
            gateway = app["client"]["ecoscale-gateway"]
            forwarded = await gateway.request("GET", "/e")
            text = (await gateway.request("GET", "/metrics"))[1].decode()
            return forwarded, text

    (status, body), text = run(scenario())
    assert status == 200 and json.loads(body) == {"ok": True}
    assert sample(text, "ecoscale_emulator_requests_total", service="ecoscale-gateway",
                  endpoint="e", code="200") == 1


def test_draining_server_keeps_serving_then_closes():
    from ecoscale.emulator.http import HttpServer, Response, Upstream

    async def scenario():
        async def ok(_request):
            return Response(200, b"{}")

        server = HttpServer(ok)
        port = await server.start("127.0.0.1", 0)
        client = Upstream("127.0.0.1", port, attempts=1)
        assert (await client.request("GET", "/"))[0] == 200
        drain = asyncio.ensure_future(server.drain(0.3))
        await asyncio.sleep(0.05)
        during = (await client.request("GET", "/"))[0]
        await drain
        try:
            await client.request("GET", "/")
            after = "answered"
        except Exception:  # noqa: BLE001
            after = "refused"
        return during, after

    assert run(scenario()) == (200, "refused")


def test_own_work_and_caller_side_call_histograms():
    # front (own work 20 ms of I/O) -> a (50 ms): front's own histogram sees 20 ms, its call
    # histogram sees a's 50 ms from the caller's side.
    data = document({"front": {"cpu_ms": 0.0, "io_ms": 20.0}, "a": IO}, [
        {"name": "e", "http": "GET /e", "path": [[call("front")], [call("a")]]}])

    async def scenario():
        async with running_app(data) as app:
            await app["client"]["front"].request("GET", "/e")
            return (await app["client"]["front"].request("GET", "/metrics"))[1].decode()

    text = run(scenario())
    own = sample(text, "ecoscale_emulator_own_duration_seconds_sum", service="front",
                 endpoint="e")
    called = sample(text, "ecoscale_emulator_call_duration_seconds_sum", service="front",
                    callee="a", endpoint="e")
    total = sample(text, "ecoscale_emulator_request_duration_seconds_sum", endpoint="e")
    # no upper bounds (wall time on a busy machine): own and the call are measured apart,
    # one after the other inside the request, so they add up to no more than its total
    assert own >= 0.019 and called >= 0.049
    assert total >= own + called
