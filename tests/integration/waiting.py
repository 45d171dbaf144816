"""Helpers the lab's integration tests share: polling with a deadline, a free local port,
open-loop load in the background, the daemon's actions from its log, a wait for a quiet
host CPU."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ecoscale.adapters.files import load_topology
from ecoscale.adapters.hostcpu import read_cpu_times, stolen_share
from ecoscale.loadgen.generator import run_load


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout_s: float, poll_s: float = 1.0, detail=None):
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``, with what
    ``detail()`` returns (e.g. the tail of a log) in the message."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(poll_s)
    extra = f"\n{detail()}" if detail is not None else ""
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r}){extra}")


def daemon_detail(log: Path, port: int, lines: int = 30) -> str:
    """What a daemon that did not do what a test waited for says about itself, for the
    failure message: its /healthz (level, escalation, the last loop's note) and the last
    ``lines`` lines of its log ``log``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            health = reply.read().decode()
    except urllib.error.HTTPError as exc:        # 503: unhealthy, the body says why
        health = exc.read().decode()
    except OSError as exc:
        health = f"(no answer: {exc})"
    text = log.read_text() if log.exists() else "(no log)"
    tail = "\n".join(text.splitlines()[-lines:])
    return f"daemon /healthz: {health}\ndaemon log, last {lines} lines:\n{tail}"


def daemon_gauge(port: int, name: str) -> float | None:
    """The value, rounded to 0.1, of the unlabelled gauge ``name`` on the /metrics of the
    daemon on ``port`` (None when it is not there or the daemon does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            lines = reply.read().decode().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(f"{name} "):
            return round(float(line.split()[1]), 1)
    return None


def daemon_events(log: Path, event: str) -> list[dict]:
    """The records of one ``event`` ("action", "node", ...) of the daemon's JSON log ``log``,
    in order (lines that are not JSON are skipped)."""
    out = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event:
            out.append(record)
    return out


def daemon_actions(log: Path, applied_only: bool = False) -> list[dict]:
    """The "action" records of the daemon's JSON log ``log``, in order; ``applied_only``:
    only the moves it made, not those it tried (an error) or held (dry run, pause)."""
    return [record for record in daemon_events(log, "action")
            if record.get("applied") or not applied_only]


class Load:
    """Open-loop load on ``url`` in the background, in 2-s rounds at ``rate`` req/s (which may
    be changed meanwhile), until closed. ``tolerate_errors``: a round that raises (services
    unreachable while a node is down) is dropped and the next one starts; otherwise the error
    ends the load thread, and ``error`` keeps it."""

    def __init__(self, url: str, rate: float, tolerate_errors: bool = False,
                 app: str = "socialNetwork"):
        self.url, self.rate, self.tolerate_errors = url, rate, tolerate_errors
        self.topology = load_topology(app)
        self.stop = threading.Event()
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        seed = 0
        while not self.stop.is_set():
            seed += 1
            errors = contextlib.suppress(Exception) if self.tolerate_errors \
                else contextlib.nullcontext()
            try:
                with errors:
                    run_load(self.url, self.topology, rate_qps=self.rate, duration_s=2.0,
                             seed=seed)
            except Exception as exc:
                self.error = exc
                raise

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


QUIET_STOLEN_SHARE = 0.15
"""A probe that sees at most this share of its CPU demand stolen finds the machine quiet.
Seen here: 0-13 % in 3-s probes on a quiet afternoon, 27 % under the lab's own 98 req/s,
and on CI runs that failed, the app's p99 5-7x its usual value at the same load."""
QUIET_PROBE_S = 3.0
"""How long one probe keeps one CPU busy (s)."""


def stolen_in_probe(seconds: float = QUIET_PROBE_S) -> float | None:
    """Keep one CPU busy for ``seconds`` and return the share of it the hypervisor took."""
    before = read_cpu_times()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return stolen_share(before, read_cpu_times())


def wait_for_quiet_cpu(max_wait_s: float) -> tuple[float, float | None]:
    """Probe (``stolen_in_probe``) until a probe finds at most QUIET_STOLEN_SHARE stolen or
    ``max_wait_s`` has passed; returns the seconds waited and the last probe's share. A
    measurement on a machine that stays noisy runs anyway: its steal is then reported."""
    began = time.monotonic()
    while True:
        share = stolen_in_probe()
        waited = time.monotonic() - began
        if share is None or share <= QUIET_STOLEN_SHARE or waited >= max_wait_s:
            return waited, share
        time.sleep(2.0)
