"""A simulated day of the daemon in virtual time (ecoscale.testing.soak): the real run_once,
the real Prometheus and Docker adapters on fakes that fail, answer out of sequence, go
unreachable and lose a node. tests/bench/bench_soak.py runs a month."""

import pytest

from ecoscale.testing import TOY_LEVELS as LEVELS
from ecoscale.testing import TOY_TABLE as TABLE
from ecoscale.testing import soak

MEMORY_BOUND_BYTES = 512 * 1024
"""Python heap growth allowed over the last 4 simulated hours (~960 loops). Measured 17-160 kB
across seeds (allocator noise, interned strings); a leak of 1 kB per loop adds ~1 MB."""


@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed-{s}") for s in (1, 3)])
def test_a_simulated_day_holds_its_bounds(tmp_path, seed):
    state_file = tmp_path / "state.json"
    report = soak(TABLE, days=1.0, seed=seed, state_file=str(state_file),
                  trace_memory_after_s=20 * 3600.0)
    # it ran a day of loops, and the faults happened
    assert report.simulated_s >= 86400.0
    assert 3000 <= report.ticks <= 86400.0 / 15 + 4 * 3600 / 15 + 1
    assert report.actions_applied > 10          # the daily cycle moved services up and down
    assert report.refused + report.out_of_sequence > 0
    assert report.actions_failed >= 1            # seeds 1 and 3 refuse at least one action
    assert report.unhealthy_ticks > 0
    # every failed action was reported (a log line with its error) and then retried:
    # once the faults stopped, the Swarm runs the level's placement and nothing is left
    assert report.failed_logged == report.actions_failed >= report.refused
    assert report.converged and report.leftover_actions == 0
    # an update made whose reply was lost is not made again (the next loop reads the Swarm)
    assert report.repeated_actions == 0
    # no growth: state bounded by the services, the state file small, the metric series
    # bounded by services x generations
    assert report.max_state_entries <= len(LEVELS[0][1].items)
    # 2 KiB for the per-service entries, plus at most 64 bytes per remembered load and rise
    # (the adaptive growth margin keeps one growth window of them, at one per 15-s loop)
    h = TABLE.hysteresis
    remembered = (h.growth_window_s + h.growth_horizon_s) / 15 + 2
    assert 0 < report.max_state_file_bytes < 2048 + 64 * remembered
    assert report.metric_series_max <= len(LEVELS[0][1].items) * len(TABLE.generations)
    assert report.node_losses >= 1             # the old node was lost (and came back)
    assert report.traced_growth_bytes is not None
    assert report.traced_growth_bytes < MEMORY_BOUND_BYTES, report.traced_growth_bytes
