"""Helpers the lab's integration tests share: polling with a deadline, a free local port,
open-loop load in the background, the daemon's actions from its log."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from ecoscale.adapters.files import load_topology
from ecoscale.loadgen.generator import run_load


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout_s: float, poll_s: float = 1.0):
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(poll_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


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
    ends the load thread."""

    def __init__(self, url: str, rate: float, tolerate_errors: bool = False,
                 app: str = "socialNetwork"):
        self.url, self.rate, self.tolerate_errors = url, rate, tolerate_errors
        self.topology = load_topology(app)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        seed = 0
        while not self.stop.is_set():
            seed += 1
            errors = contextlib.suppress(Exception) if self.tolerate_errors \
                else contextlib.nullcontext()
            with errors:
                run_load(self.url, self.topology, rate_qps=self.rate, duration_s=2.0,
                         seed=seed)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
