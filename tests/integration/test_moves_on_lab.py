"""`ecoscale lab moves` on the real lab: the front end moved to old and back under the SLO
load of the lab profile, each move timed (new task running, answering by DNS, scraped by
Prometheus, old task gone) and its p99 set against steady load; `lab status` prints it.

Runs before test_evaluate_on_lab (conftest.LAB_TEST_ORDER), whose evaluation then takes its
period from this measurement, as `lab evaluate` does after a user's `lab moves`.

Seen on this 2-core machine (7 runs of 2-6 moves at 60 and 98 req/s, engines at CPU weight
64, one of them a clean-clone `.ci/run`): move time 7.2-11.2 s (running 1.6-4.7 s, scraped
2.9-11.5 s, old gone 7.2-11.2 s); no request failed during any move (about 450-1100 per
move); client-side p99 during a move at 98 req/s 83-412 ms against a steady 42-636 ms
(ratio to the worst steady window 0.6-1.9);
server-side p99 during a move 78-157 ms against 49-92 ms before it (STALL_MS below).
"""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import REPORT

from ecoscale.adapters.files import load_profile, load_topology

FRONTEND = load_topology("socialNetwork").frontend
STALL_MS = 600.0
"""A move's p99 under this (client and server side) did not stall the app: a stall of 1 s or
more over 1 % of the move's requests exceeds it. Seen (above, and 2026-12-03 in three
clean-clone runs: client 215, 253 ms, server 54-277 ms): at most 412 ms. The earlier bound,
3 x the steady p99, failed at 3.0x and 3.7x once the warm-up made steady load 60-70 ms: the
move back from old starts with the front end on one old slot at the SLO load, which old
cannot serve (server side 277 ms during it, 49 ms before the first move)."""


def ecoscale(*args: str, timeout_s: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["ecoscale", "lab", *args], capture_output=True, text=True,
                          timeout=timeout_s, check=False)


@pytest.mark.measures
def test_a_move_of_the_front_end_is_timed_and_does_not_stall_the_app(social_network):
    done = ecoscale("moves", "--moves", "2", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout)
    profile = load_profile("socialNetwork", "lab")
    assert measured["rate_qps"] == profile.slo_load_qps and measured["slo_ms"] == profile.slo_ms
    moves = measured["moves"]
    REPORT["lab moves: warm-up"] = next(n for n in measured["notes"]
                                        if n.startswith("warm-up")).removeprefix("warm-up: ")
    REPORT["lab moves: move time (s), server-side p99 during / before (ms)"] = (
        round(measured["move_time_s"], 1),
        [(round(m["server_p99_during_ms"]), round(m["server_p99_before_ms"])) for m in moves])
    assert [(m["service"], m["source"], m["target"]) for m in moves] == [
        (FRONTEND, "new", "old"), (FRONTEND, "old", "new")]
    for m in moves:
        assert m["total_s"] is not None, m   # every phase ended within the move's window
        # start-first: the new task runs (and answers) before the old one is gone
        assert m["running_s"] <= m["answering_s"] <= m["total_s"]
        assert m["running_s"] < m["old_gone_s"]
        assert 1.0 < m["total_s"] < 30.0, m
        # no stall: nothing fails, and the p99 of the move stays under STALL_MS on both
        # sides (the server side from Prometheus, as the SLO is; NaN: no data, which fails)
        assert m["requests_during"] > 100 and m["errors_during"] <= 0.01 * m["requests_during"]
        assert m["p99_during_ms"] < STALL_MS and m["server_p99_during_ms"] < STALL_MS, m
    # the lab keeps it: status prints it, and the front end is back on new
    status = json.loads(ecoscale("status", "--json").stdout)
    assert status["moves"]["move_time_s"] == measured["move_time_s"]
    assert status["services"][FRONTEND]["generation"] == "new"
    printed = ecoscale("status").stdout
    assert f"move time: {measured['move_time_s']:.1f} s (median of 2/2 moves" in printed
