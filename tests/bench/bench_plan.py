"""Benchmark: `ecoscale plan` (the full policy table) on seeded synthetic call graphs.

For 30, 1,000 and 10,000 services (Alibaba-like: deep fan-out, shared backends; see
ecoscale.planner.synthetic) prints the planning time, the latency evaluations spent, the
pruned search space, and the greedy-vs-oracle carbon ratio at the peak level where the
exact MILP finishes within its time limit. Targets: 1,000 services under 2 s, 10,000 under
30 s. Baseline in the same process: the same planner without pruning (every service whose
p99 rises at all is critical), which shows what the tail-latency-guided pruner saves.

With right-sizing on (issue 17: ``build_table(right_size=True)``; the default, ``--no-right-
size`` for the table alone) a second row per size plans the right-sized table: the target
(10,000 services under 30 s) holds for it, and the baseline in the same process is the plain
table's time; it prints the levels it right-sized and the carbon of the right-sized table
at its levels against the plain one's (mean ratio, gCO2e/h at each level's load).

    python3 tests/bench/bench_plan.py [--sizes 30,1000,10000] [--oracle-limit 60]
"""

from __future__ import annotations

import argparse
import time

from ecoscale.adapters.files import load_hardware
from ecoscale.model.app import AppModel, default_slo
from ecoscale.planner.oracle import optimal_placement
from ecoscale.planner.search import carbon_terms
from ecoscale.planner.synthetic import synthetic_app
from ecoscale.planner.table import build_table

TARGETS_S = {1000: 2.0, 10000: 30.0}
RIGHT_SIZED_TARGETS_S = {10000: 30.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="30,1000,10000")
    parser.add_argument("--oracle-limit", type=float, default=60.0,
                        help="seconds the MILP may take per size (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-right-size", action="store_true",
                        help="skip the right-sized table (issue 17)")
    args = parser.parse_args()
    hardware = load_hardware()
    print(f"{'services':>8} {'endpoints':>9} {'critical':>8} {'plan s':>7} {'evals':>7} "
          f"{'no-prune s':>10} {'no-prune evals':>14} {'greedy/oracle':>13} {'oracle s':>8} "
          f"target")
    for size in (int(x) for x in args.sizes.split(",")):
        app = synthetic_app(size, seed=args.seed)
        model = AppModel(app.topology, app.profile, hardware)
        slo, peak, _ = default_slo(model)
        began = time.perf_counter()
        table = build_table(model, slo, peak)
        plan_s = time.perf_counter() - began
        began = time.perf_counter()
        unpruned = build_table(model, slo, peak, prune_threshold=0.0)
        unpruned_s = time.perf_counter() - began
        top = max((lv for lv in table.levels if lv.max_load_qps <= peak * 1.0001),
                  key=lambda lv: lv.max_load_qps)
        began = time.perf_counter()
        best = optimal_placement(model, top.max_load_qps, slo, carbon_terms(model),
                                 time_limit_s=args.oracle_limit)
        oracle_s = time.perf_counter() - began
        if best.status == "optimal":
            ratio = f"{top.carbon_g_per_h / best.carbon_g_per_h:.4f}"
        else:
            ratio = f"({best.status})"
        target = TARGETS_S.get(size)
        verdict = "" if target is None else (
            f"< {target:g} s: {'meets' if plan_s < target else 'MISSES'}")
        print(f"{size:>8} {len(app.topology.endpoints):>9} {table.search['critical']:>8} "
              f"{plan_s:>7.2f} {table.search['latency_evaluations']:>7} {unpruned_s:>10.2f} "
              f"{unpruned.search['latency_evaluations']:>14} {ratio:>13} {oracle_s:>8.1f} "
              f"{verdict}", flush=True)
        if not args.no_right_size:
            began = time.perf_counter()
            sized = build_table(model, slo, peak, right_size=True)
            sized_s = time.perf_counter() - began
            ratios = [lv.carbon_g_per_h / plain.carbon_g_per_h
                      for lv, plain in zip(sized.levels, table.levels, strict=True)
                      if plain.feasible and plain.carbon_g_per_h > 0]
            target = RIGHT_SIZED_TARGETS_S.get(size)
            verdict = "" if target is None else (
                f"< {target:g} s: {'meets' if sized_s < target else 'MISSES'}")
            print(f"{'':>8} right-sized: {sized_s:.2f} s (baseline, the table alone: "
                  f"{plan_s:.2f} s), {sized.search['right_sized_levels']} of "
                  f"{len(sized.levels)} levels right-sized, carbon "
                  f"{sum(ratios) / max(len(ratios), 1):.3f} x the plain table's "
                  f"{verdict}", flush=True)


if __name__ == "__main__":
    main()
