"""The open-loop load generator: seeded Poisson schedule, the mix, latency from intent."""

import asyncio
import random
import statistics
import threading

import pytest

from ecoscale.adapters.files import load_topology
from ecoscale.emulator.http import HttpServer, Response
from ecoscale.errors import InputError
from ecoscale.loadgen.generator import (
    LoadResult,
    RequestRecord,
    Target,
    arrival_times,
    mix_of,
    percentile,
    plan,
    run_load,
    schedule_of,
)


def test_arrivals_are_poisson_at_the_rate_and_reproducible():
    times = arrival_times([200.0], 50.0, random.Random(3))
    assert times == arrival_times([200.0], 50.0, random.Random(3))
    assert times != arrival_times([200.0], 50.0, random.Random(4))
    assert len(times) == pytest.approx(10_000, rel=0.03)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # Exponential gaps: mean 1/rate and coefficient of variation 1.
    assert statistics.mean(gaps) == pytest.approx(1 / 200, rel=0.03)
    assert statistics.stdev(gaps) / statistics.mean(gaps) == pytest.approx(1.0, abs=0.05)
    assert all(0 <= t < 50.0 for t in times) and times == sorted(times)


def test_a_schedule_changes_the_rate_per_step():
    times = arrival_times([100.0, 0.0, 400.0], 10.0, random.Random(1))
    counts = [sum(1 for t in times if i * 10 <= t < (i + 1) * 10) for i in range(3)]
    assert counts[0] == pytest.approx(1000, rel=0.1)
    assert counts[1] == 0
    assert counts[2] == pytest.approx(4000, rel=0.06)


def test_the_plan_follows_the_topologys_mix():
    targets = mix_of(load_topology("socialNetwork"))
    assert {t.endpoint: (t.method, t.path) for t in targets}["compose-post"] == \
        ("POST", "/wrk2-api/post/compose")
    planned = plan(targets, [500.0], 20.0, seed=7)
    shares = {t.endpoint: sum(1 for r in planned if r.target.endpoint == t.endpoint)
              / len(planned) for t in targets}
    assert shares["read-home-timeline"] == pytest.approx(0.6, abs=0.02)
    assert shares["read-user-timeline"] == pytest.approx(0.3, abs=0.02)
    assert shares["compose-post"] == pytest.approx(0.1, abs=0.02)
    assert plan(targets, [500.0], 20.0, seed=7) == planned


@pytest.mark.parametrize("args, fragment", [
    ((None, None, 1.0, 10.0), "either a constant rate or a schedule"),
    ((10.0, [1.0], 1.0, 10.0), "either a constant rate or a schedule"),
    ((10.0, None, 1.0, None), "duration must be > 0"),
    ((None, [], 1.0, None), "schedule is empty"),
    ((None, [5.0, -1.0], 1.0, None), "rate 1"),
    ((None, [5.0], 0.0, None), "step must be > 0"),
    ((None, [5.0], 1.0, 3.0), "drop duration"),
], ids=["neither", "both", "no-duration", "empty", "negative", "step", "duration"])
def test_bad_load_requests_are_explained(args, fragment):
    with pytest.raises(InputError) as caught:
        schedule_of(*args)
    assert any(fragment in p for p in caught.value.problems)


def test_percentile_interpolates():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert percentile([], 50) != percentile([], 50)  # NaN


class SlowServer:
    """An HTTP server on its own thread and loop, answering after ``delay_s``, one at a time."""

    def __init__(self, delay_s: float, status: int = 200):
        self.delay_s = delay_s
        self.status = status
        self.port = 0
        self.waiting = self.most_waiting = 0
        """Requests received and not yet answered: now, and the most at once."""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self):
        lock = asyncio.Lock()

        async def handle(_request):
            self.waiting += 1
            self.most_waiting = max(self.most_waiting, self.waiting)
            async with lock:  # a single worker: requests queue, as in one slow replica
                await asyncio.sleep(self.delay_s)
            self.waiting -= 1
            return Response(self.status, b"{}")

        server = HttpServer(handle)
        self.port = await server.start("127.0.0.1", 0)
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        await self._stop.wait()
        await server.close()

    def __enter__(self):
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def test_open_loop_latency_counts_queueing_from_the_intended_send_time():
    # 100 req/s into a single worker that needs 20 ms each (capacity 50/s): the backlog
    # grows for the whole second, so late requests wait far longer than 20 ms.
    with SlowServer(0.02) as server:
        result = run_load(f"http://127.0.0.1:{server.port}", [Target("e", "GET", "/", 1.0)],
                          100.0, 1.0, seed=1, timeout_s=5.0)
    assert result.sent == pytest.approx(100, rel=0.25)
    assert result.error_count == 0
    assert result.p50_ms > 100 and result.p99_ms > 400
    # open loop: the generator sends on schedule, not after each reply, so requests pile up
    # at the server (one at a time: 1). Its send lag is wall time (tests/bench/
    # bench_emulator.py prints it), so no bound on it here.
    assert server.most_waiting >= 10


def test_completed_qps_counts_successes_by_when_they_completed():
    # request i sent at i / 10 s and answered 0.5 + 0.05 i s later (a growing backlog, so
    # completions lag the sends); every fifth request failed
    records = tuple(RequestRecord(i / 10, "e", 0.5 + 0.05 * i, 0 if i % 5 == 4 else 200,
                                  "timeout" if i % 5 == 4 else "") for i in range(20))
    result = LoadResult("http://x:1", 0, (10.0, 10.0), 1.0, records, 2.0, 0.0)
    # completion times 0.5 + 0.15 i: i = 4..9 fall in [1.1, 2.0) (i = 4 and 9 failed)
    assert result.completed_qps(1.1, 2.0) == pytest.approx(4 / 0.9)
    assert result.completed_qps(0.0, 10.0) == pytest.approx(16 / 10.0)
    with pytest.raises(ValueError, match="must end after it starts"):
        result.completed_qps(2.0, 2.0)


def test_errors_are_counted_by_reason_and_excluded_from_latency():
    with SlowServer(0.0, status=503) as server:
        result = run_load(f"http://127.0.0.1:{server.port}", [Target("e", "GET", "/", 1.0)],
                          None, schedule=[50.0, 50.0], step_s=0.5, seed=2)
    assert result.errors == {"http 503": result.sent}
    assert result.latencies_ms() == []
    assert [row["step"] for row in result.per_step()] == [0, 1]
    summary = result.summary()
    assert summary["ok"] == 0 and summary["sent"] == result.sent


def test_connection_refused_is_an_error_not_a_crash():
    result = run_load("http://127.0.0.1:9", [Target("e", "GET", "/", 1.0)], 20.0, 0.5, seed=1,
                      timeout_s=1.0)
    assert set(result.errors) == {"connect"} and result.error_count == result.sent > 0
