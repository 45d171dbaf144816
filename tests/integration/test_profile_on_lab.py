"""`ecoscale profile` on the real lab: a short sweep of socialNetwork, fitted, and resumed.

On a busy 2-core machine a short sweep is noisy. What keeps the checks below robust: the
pruner compares each service on old with itself on new at the same load (not the rise
within the all-old sweep), an end-to-end p99 is the median of its 5-s slices, and
placements settle under load after a move. And the CPU-heavy service is made clearly so
for this test: with the shipped 2 ms of CPU per request, its slowdown alone on old (+2 ms
of work on 70 % of requests) is smaller than a short window's p99 noise (+-15 ms), and the
ranking came out in random order; at 5 ms it queues on the old node and its end-to-end rise
(+42 to +124 ms in runs here) stands well above the I/O-bound one's (-3 to +22 ms). The
shipped emulation and profiles are untouched: the test deploys its own emulation file, and
profiles into its temporary folder."""

from __future__ import annotations

import time

import pytest
from conftest import CPU_HEAVY, REPORT

from ecoscale.adapters.files import load_profile, read_yaml
from ecoscale.lab.pool import NAMED_POOLS
from ecoscale.profiler.main import run_profile
from ecoscale.profiler.store import finished_points, read_rows

IO_BOUND = "post-storage-mongodb"       # 0.15 ms of CPU, 2 ms of I/O wait
# Short, but not so short that the tail is noise: on a busy 2-core machine a p99 from an 8-s
# window scatters by +-20 ms. Loads step by 15 req/s so that the all-old sweep has points
# below the old node's knee to prune from.
SHORT = {"loads_qps": [15.0, 30.0, 45.0, 60.0, 90.0], "warmup_s": 3.0, "measure_s": 15.0}
PRUNE = 0.5
"""Critical: a rise on old of at least half the SLO at the pruning load. In a run here at 0.1
(SLO 48.6 ms) 17 of 26 services came out critical, most with prune rises of 12-43 ms, and
their alone-old points (25-35 s each) took 600 of the test's 720 s. At 0.5, in two runs here:
8 and 4 critical (SLO 43.4 and 70.3 ms), their points 178 and 78 s of a 541- and a 462-s
profile. In the first, the CPU-heavy service's prune rise was 80 ms (ranked first, +67 ms end
to end), the I/O-bound one's 18 ms (pruned). The test accepts the I/O-bound one pruned or
ranked below the CPU-heavy one."""


@pytest.mark.measures
def test_profile_ranks_cpu_heavy_over_io_bound_and_resumes(cpu_heavy_lab, tmp_path, capsys):
    out = tmp_path / "lab.yaml"
    began = time.monotonic()
    assert run_profile("socialNetwork", "lab", out, False, dict(SHORT),
                       prune_threshold=PRUNE, named_pools=NAMED_POOLS) == 0
    document = read_yaml(out)
    measured = document["measured"]
    rows = read_rows(out.with_suffix(".csv"))
    alone = [r.window_start for r in rows if r.experiment.startswith("alone-old:")]
    REPORT["profile: run (s), of it the criticality points (s)"] = (
        round(time.monotonic() - began), round(max(alone) - min(alone)) if alone else 0)
    REPORT["profile: SLO (ms), services critical"] = (round(measured["slo_ms"], 1),
                                                      len(measured["critical"]))
    profile = load_profile("socialNetwork", str(out))
    assert profile.kind == "measured" and set(profile.generations) == {"new", "old"}
    assert "EMULATED" in document["provenance"]["emulation"]
    assert document["provenance"]["power_source"].startswith(("modelled", "RAPL"))

    # the SLO lies below the measured saturation, and is met at the SLO load by all-new
    assert measured["slo_load_qps"] < measured["saturation_qps"]
    assert measured["slo_ms"] == document["slo_ms"] > 0

    # a CPU-heavy service is more critical than an I/O-bound one: the I/O-bound one is
    # either pruned (not critical) or ranked with a smaller rise, never both nor neither
    rise = {r["service"]: r["e2e_rise_ms"] for r in measured["ranking"]}
    assert CPU_HEAVY in measured["critical"] and CPU_HEAVY in rise
    pruned = IO_BOUND in measured["non_critical"]
    assert pruned != (IO_BOUND in rise), measured
    assert pruned or rise[CPU_HEAVY] > rise[IO_BOUND], measured["ranking"]

    # the old curve of the CPU-heavy service is slower than its new one at the same load
    load = profile.curve(CPU_HEAVY, "new").load_qps[1]
    assert profile.curve(CPU_HEAVY, "old").p99_at(load) > profile.curve(CPU_HEAVY, "new").p99_at(
        load)

    # the services are back where they were: all on new
    state = cpu_heavy_lab.orchestrator().read()
    assert {s.placement.generation for s in state.services.values()} == {"new"}

    # a rerun resumes: nothing is measured twice
    raw = out.with_suffix(".csv")
    rows_before = read_rows(raw)
    capsys.readouterr()
    assert run_profile("socialNetwork", "lab", out, False, dict(SHORT),
                       prune_threshold=PRUNE, named_pools=NAMED_POOLS) == 0
    printed = capsys.readouterr().out
    assert "resuming" in printed
    assert len(read_rows(raw)) == len(rows_before)
    assert finished_points(read_rows(raw)) == finished_points(rows_before)
