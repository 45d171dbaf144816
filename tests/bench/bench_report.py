"""Benchmark: what the replay's outputs cost next to the replay itself.

Replays the default day (socialNetwork, every policy), then writes the outputs into a
temporary folder without plots (the baseline, in the same process) and with them, and
prints each time per PNG. Target: the plots at most double the replay's time (the replay
here includes planning the tables, as `ecoscale replay` does).

    python3 tests/bench/bench_report.py [--profile calibrated] [--duration 1d] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ecoscale.replay import plots
from ecoscale.replay.duplicates import likenesses
from ecoscale.replay.engine import replay
from ecoscale.replay.policies import all_policies
from ecoscale.replay.report import write_outputs
from ecoscale.replay.scenario import ReplayOptions, build_scenario

TARGET_FACTOR = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="calibrated")
    parser.add_argument("--duration", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    began = time.perf_counter()
    scenario = build_scenario(ReplayOptions(profile=args.profile, duration=args.duration))
    result = replay(scenario, all_policies(scenario))
    replay_s = time.perf_counter() - began
    likenesses(result)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: F401  (import time is not the plots' cost)

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        bare, full = [], []
        for _ in range(args.repeat):
            began = time.perf_counter()
            write_outputs(result, out, plots=False)
            bare.append(time.perf_counter() - began)
            began = time.perf_counter()
            write_outputs(result, out, plots=True)
            full.append(time.perf_counter() - began)
        began = time.perf_counter()
        plots.write_plots(result, likenesses(result), out)
        total_plots = time.perf_counter() - began
        each = {p.name: p.stat().st_size for p in out.glob("*.png")}
    plots_s = min(full) - min(bare)
    print(f"replay:  {scenario.steps} steps x {len(result.runs)} policies in {replay_s:.2f} s "
          "(with planning)")
    print(f"outputs: without plots {min(bare):.2f} s (baseline), with plots {min(full):.2f} s "
          f"(best of {args.repeat}); the {len(each)} PNGs cost {plots_s:.2f} s "
          f"({total_plots:.2f} s alone), {sum(each.values()) / 1024:.0f} KiB")
    factor = (replay_s + min(full)) / (replay_s + min(bare))
    verdict = "meets" if factor <= TARGET_FACTOR else "MISSES"
    print(f"target:  plots make the run {factor:.2f}x slower (at most {TARGET_FACTOR:g}x): "
          f"{verdict}")


if __name__ == "__main__":
    main()
