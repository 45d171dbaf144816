"""Benchmark: replay one week at 1-minute steps for socialNetwork with every policy.

Prints steps per second and the week's wall time (target: under 10 s on a 2-core machine),
and compares with a baseline run in the same process: the same placements scored one step
at a time (scalar model calls) instead of vectorised by placement.

    python3 tests/bench/bench_replay.py [--duration 7d] [--policies a,b]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ecoscale.replay.engine import replay
from ecoscale.replay.policies import all_policies
from ecoscale.replay.scenario import ReplayOptions, build_scenario

TARGET_S = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", default="7d")
    parser.add_argument("--load-trace", default="google2011")
    args = parser.parse_args()

    began = time.perf_counter()
    scenario = build_scenario(ReplayOptions(load_trace=args.load_trace, start="0h",
                                            duration=args.duration))
    setup_s = time.perf_counter() - began
    began = time.perf_counter()
    policies = all_policies(scenario)   # includes planning the two policy tables
    plan_s = time.perf_counter() - began
    result = replay(scenario, policies)
    replay_s = time.perf_counter() - began
    steps = scenario.steps * len(policies)
    print(f"scenario: {scenario.steps} steps x {len(policies)} policies "
          f"({', '.join(p.name for p in policies)}); traces {setup_s:.2f} s, "
          f"planning {plan_s:.2f} s")
    print(f"replay:   {replay_s:.2f} s with planning, {steps / replay_s:,.0f} policy-steps/s "
          f"({scenario.steps / replay_s:,.0f} trace steps/s with every policy)")

    # Baseline in the same process: score one policy's placements step by step.
    run = result.runs[0]
    model = scenario.model
    sample = min(scenario.steps, 2000)
    began = time.perf_counter()
    for i in range(sample):
        model.e2e_p99(run.placements[i], scenario.load_qps[i:i + 1])
        model.carbon(run.placements[i], scenario.load_qps[i:i + 1],
                     scenario.ci_g_per_kwh[i:i + 1], scenario.step_s / 3600)
    per_step = (time.perf_counter() - began) / sample
    scalar_s = per_step * steps
    print(f"baseline: scoring step by step would take {scalar_s:.1f} s for the same run "
          f"(vectorised scoring is part of the {replay_s:.2f} s above)")
    verdict = "meets" if replay_s < TARGET_S else "MISSES"
    print(f"target:   the week with every policy under {TARGET_S:.0f} s: {verdict} "
          f"({replay_s:.2f} s)")
    summary = result.summary()
    print(summary.round(2).to_string(index=False))
    assert np.isfinite(summary.carbon_kg).all()


if __name__ == "__main__":
    main()
