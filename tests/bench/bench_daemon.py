"""Benchmark: the daemon's decision time per tick and its resident memory.

Drives the real ``Daemon.run_once()`` (observe, decide, account carbon, act, save state)
with in-memory ports (ecoscale.testing) through a day-shaped load: a ramp from 10 % to
100 % of the table's peak and back, with short SLO misses that trigger escalation, for
socialNetwork (the shipped default profile) and a seeded 1,000-service synthetic app
(ecoscale.planner.synthetic). Prints median / p95 / max milliseconds per tick and the
time of the pure ``decide()`` alone. Targets: socialNetwork under 20 ms, 1,000 services
under 1 s per tick. Baseline in the same process: an observe-only tick (ports read, no
decision), which shows what the decision itself costs. Memory: resident set size (VmRSS)
after the imports the real daemon makes, and after each app's table and daemon.

    python3 tests/bench/bench_daemon.py [--ticks 400] [--sizes 1000]
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import ecoscale.daemon.main  # noqa: F401  (the real daemon's imports: docker, prometheus_client)
from ecoscale.adapters.files import load_hardware, load_profile, load_topology
from ecoscale.config import DaemonConfig
from ecoscale.control.decide import ControlState, decide
from ecoscale.control.policy import Observation
from ecoscale.daemon.loop import Daemon
from ecoscale.daemon.telemetry import Log
from ecoscale.model.app import AppModel, default_slo
from ecoscale.planner.synthetic import synthetic_app
from ecoscale.planner.table import PolicyTable, build_table
from ecoscale.testing import FakeClock, FixedCarbon, InMemoryMetrics, RecordingOrchestrator

TARGET_MS = {"socialNetwork": 20.0, "synthetic-1000": 1000.0}
INTERVAL_S = 15.0


def rss_mib() -> float:
    """Resident set size of this process now (MiB), from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return math.nan


def load_shape(ticks: int, peak_qps: float) -> list[float]:
    """10 % -> 100 % -> 10 % of the peak over ``ticks`` ticks (req/s)."""
    half = max(1, ticks // 2)
    up = [0.1 + 0.9 * i / half for i in range(half)]
    return [peak_qps * f for f in up + up[::-1]][:ticks]


def make_daemon(table: PolicyTable, model: AppModel, state_dir: str) -> Daemon:
    config = DaemonConfig(app=model.topology.app, table="bench", interval_s=INTERVAL_S,
                          listen_port=0, state_file=str(Path(state_dir) / "state.json"))
    return Daemon(config=config, table=table,
                  orchestrator=RecordingOrchestrator.of(table.levels[0].placement),
                  metrics=InMemoryMetrics(), carbon=FixedCarbon(), clock=FakeClock(),
                  model=model, log=Log(io.StringIO()))


def timed_ticks(daemon: Daemon, loads: list[float], slo_ms: float,
                tick: Callable[[Daemon], object]) -> list[float]:
    """Milliseconds of ``tick(daemon)`` per load step; every 25th step misses the SLO."""
    times = []
    for i, qps in enumerate(loads):
        daemon.metrics.qps = qps
        daemon.metrics.p99_ms = slo_ms * (1.3 if i % 25 in (10, 11, 12) else 0.7)
        began = time.perf_counter()
        tick(daemon)
        times.append((time.perf_counter() - began) * 1000.0)
        daemon.clock.advance(INTERVAL_S)
    return times


def observe_only(daemon: Daemon) -> None:
    """Baseline tick: read the ports as run_once does, decide nothing."""
    daemon.orchestrator.read()
    daemon.metrics.read(daemon.clock.now())
    daemon.carbon.intensity(daemon.clock.now())


def decide_only(daemon: Daemon) -> None:
    """The pure decision on the current Swarm placement, as run_once calls it."""
    swarm = daemon.orchestrator.read()
    services = tuple(s for s, _ in daemon.table.levels[0].placement.items)
    obs = Observation(clock_s=daemon.clock.now(), qps=daemon.metrics.qps,
                      p99_ms=daemon.metrics.p99_ms, ci_g_per_kwh=250.0,
                      current=swarm.placement(services))
    _, daemon.state = decide(obs, daemon.state or ControlState(), daemon.table,
                             daemon.config.control)


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"{statistics.median(ordered):8.2f} {p95:8.2f} {ordered[-1]:8.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=400, help="ticks per app (%(default)s)")
    parser.add_argument("--sizes", default="1000", help="synthetic app sizes (%(default)s)")
    args = parser.parse_args()
    print(f"RSS after the daemon's imports: {rss_mib():.1f} MiB")
    hardware = load_hardware()
    apps: list[tuple[str, AppModel]] = [
        ("socialNetwork", AppModel(load_topology("socialNetwork"),
                                   load_profile("socialNetwork"), hardware))]
    for size in (int(x) for x in args.sizes.split(",") if x):
        synthetic = synthetic_app(size, seed=1)
        apps.append((f"synthetic-{size}", AppModel(synthetic.topology, synthetic.profile,
                                                   hardware)))
    print(f"{'app':>16} {'services':>8} {'tick':>13} {'median':>8} {'p95':>8} {'max':>8}  "
          f"(ms per tick)  moves  RSS MiB  target")
    for name, model in apps:
        slo_ms, peak_qps, _ = default_slo(model)
        table = build_table(model, slo_ms, peak_qps)
        loads = load_shape(args.ticks, peak_qps)
        with tempfile.TemporaryDirectory() as state_dir:
            baseline = timed_ticks(make_daemon(table, model, state_dir), loads, slo_ms,
                                   observe_only)
            pure = timed_ticks(make_daemon(table, model, state_dir), loads, slo_ms,
                               decide_only)
            Path(state_dir, "state.json").unlink(missing_ok=True)
            daemon = make_daemon(table, model, state_dir)
            full = timed_ticks(daemon, loads, slo_ms, Daemon.run_once)
        moves = len(daemon.orchestrator.applied)
        target = TARGET_MS.get(name)
        verdict = "" if target is None else (
            f"median < {target:g} ms: {'meets' if statistics.median(full) < target else 'MISSES'}")
        size = len(model.services)
        print(f"{name:>16} {size:>8} {'observe only':>13} {summary(baseline)}")
        print(f"{'':>16} {'':>8} {'decide()':>13} {summary(pure)}")
        print(f"{'':>16} {'':>8} {'run_once()':>13} {summary(full)}  {moves:>19} "
              f"{rss_mib():>8.1f}  {verdict}", flush=True)


if __name__ == "__main__":
    main()
