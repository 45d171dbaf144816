"""`ecoscale lab colocation`: the co-location latency model against the lab.

The lab's old node is one CFS quota over every container on it: one shared socket. The
profiler's runner (``profiler.runner.Runner``) measures each chosen service alone on old
and then all of them together there, at the same front-end loads; ``profiler.colocation``
fits the alone curves, predicts the co-located p99s with ``model.colocation`` and tabulates
the error. This module is the wiring only: the lab, the runner, the files.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ecoscale.adapters.files import load_topology
from ecoscale.adapters.outputs import check_out_dir
from ecoscale.adapters.prometheus import PrometheusClient
from ecoscale.errors import InputError, UsageError
from ecoscale.evaluation.colocation_settings import (
    DEFAULT_LOADS_QPS,
    DEFAULT_MEASURE_S,
    DEFAULT_SERVICES,
    DEFAULT_WARMUP_S,
    OUTPUTS,
    RAW_CSV,
    REPORT,
    TABLE_CSV,
)
from ecoscale.lab.config import LabConfig
from ecoscale.lab.lab import Lab
from ecoscale.lab.pool import lab_pool
from ecoscale.model.latency import LatencyCurve
from ecoscale.model.topology import Topology
from ecoscale.profiler.colocation import (
    BASES,
    TABLE_COLUMNS,
    ColocatedPoint,
    alone_curves,
    check_services,
    colocated_points,
    colocation_plan,
    format_table,
    summarise,
    table_rows,
)
from ecoscale.profiler.experiments import Experiment, PoolConfig, estimate_s, point_seconds
from ecoscale.profiler.runner import Progress, Runner, loadgen_driver
from ecoscale.profiler.store import complete_rows, read_rows


@dataclass(frozen=True)
class ColocationOptions:
    app: str = "socialNetwork"
    services: tuple[str, ...] = DEFAULT_SERVICES
    loads_qps: tuple[float, ...] = DEFAULT_LOADS_QPS
    warmup_s: float = DEFAULT_WARMUP_S
    measure_s: float = DEFAULT_MEASURE_S


def checked_topology(options: ColocationOptions) -> Topology:
    """The app's topology, the services checked against it (a UsageError naming the
    fix: --services is a flag)."""
    topology = load_topology(options.app)
    problems = check_services(options.services, topology)
    if problems:
        raise UsageError("--services: " + "; ".join(problems))
    return topology


def plan_text(options: ColocationOptions, pool_like: PoolConfig | None = None
              ) -> tuple[list[Experiment], str]:
    """The experiments and a description with the expected duration."""
    plan = colocation_plan(options.services, options.loads_qps)
    pool = pool_like or PoolConfig("lab", "http://-", "http://-", warmup_s=options.warmup_s,
                                   measure_s=options.measure_s, loads_qps=options.loads_qps)
    seconds = estimate_s(pool, plan, moves=len(plan) + 1)
    loads = ", ".join(f"{q:g}" for q in options.loads_qps)
    lines = [f"ecoscale lab colocation: {options.app}, {len(options.services)} services on "
             f"old, loads {loads} req/s, each {options.warmup_s:g} s warm-up + "
             f"{options.measure_s:g} s window"]
    lines += [f"  {e.name} @ {', '.join(f'{q:g}' for q in e.loads_qps)} req/s" for e in plan]
    lines.append(f"  expected duration: about {seconds / 60:.0f} min "
                 f"({point_seconds(pool):g} s per point, ~20 s per change of placement)")
    return plan, "\n".join(lines)


def run_colocation(options: ColocationOptions, out: Path,
                   log: Callable[[str], None] = print) -> list[ColocatedPoint]:
    """Measure on the lab (resuming from ``out``'s raw CSV), write the table and the
    report into ``out``; the points."""
    topology = checked_topology(options)
    for note in check_out_dir(out, OUTPUTS, OUTPUTS).notes():
        log(f"note: {note}")
    plan, text = plan_text(options)
    log(text)
    out.mkdir(parents=True, exist_ok=True)
    lab = Lab.attach(log=log)
    if not lab.healthy():
        log("bringing the lab up with the old node's CPU quota shared by its services")
        lab = Lab(LabConfig.with_nodes(old_node_cpus=1.0, slot_cpus=None,
                                       state_dir=lab.config.state_dir), log=log)
        lab.up()
    require_shared_old_node(lab.config)
    if lab.deployed_app != topology.app:
        lab.deploy(options.app)
    pool = lab_pool({"loads_qps": list(options.loads_qps), "warmup_s": options.warmup_s,
                     "measure_s": options.measure_s})
    raw_csv = out / RAW_CSV
    runner = Runner(pool, topology, lab.orchestrator(), PrometheusClient(pool.prometheus_url),
                    loadgen_driver(pool.frontend_url, topology), raw_csv)
    runner.remember()
    try:
        runner.run(plan, Progress(sum(len(e.loads_qps) for e in plan), point_seconds(pool)))
    finally:
        runner.restore()
    emulation = lab.config.emulation(os.cpu_count() or 1)
    return write_results(options, topology, pool, emulation, out)


def require_shared_old_node(config: LabConfig) -> None:
    """UsageError unless the lab's old nodes have a node-wide quota and no slots: the
    co-location model is about services that share one socket's CPUs."""
    old = config.generations[-1]
    if old.node_cpus is None or old.slot_cpus is not None:
        raise UsageError(
            "lab colocation measures services sharing the old node's CPUs, but this lab "
            + ("gives every task a slot of its own" if old.slot_cpus is not None
               else "has no node-wide quota on old")
            + ": `ecoscale lab down`, then `ecoscale lab up --slot-cpus 0 --old-node-cpus 1`")


def socket_per_slot(pool: PoolConfig, emulation: dict[str, dict[str, object]]) -> float:
    """One slot's CPUs over the old node's (its quota: the shared socket)."""
    spec = emulation[pool.oldest]
    node = float(spec["cpus_per_node"])   # type: ignore[arg-type]
    return pool.slot_cpus.get(pool.oldest, 1.0) / node if node > 0 else 1.0


def write_results(options: ColocationOptions, topology: Topology, pool: PoolConfig,
                  emulation: dict[str, dict[str, object]], out: Path) -> list[ColocatedPoint]:
    """Fit, predict and write ``colocation.csv`` and ``report.md`` from the raw CSV."""
    rows = complete_rows(read_rows(out / RAW_CSV))
    curves = alone_curves(rows, topology, options.services, pool.oldest)
    missing = [s for s in options.services if s not in curves]
    if missing:
        raise InputError(str(out / RAW_CSV), f"no usable alone point of {', '.join(missing)} "
                                             "on old: re-run to measure them")
    scale = socket_per_slot(pool, emulation)
    points = colocated_points(rows, topology, options.services, pool.oldest, curves, scale)
    with (out / TABLE_CSV).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        for row in table_rows(points):
            writer.writerow({k: f"{v:.4f}" if isinstance(v, float) else v
                             for k, v in row.items()})
    (out / REPORT).write_text(report_text(options, pool, emulation, curves, points, scale),
                              encoding="utf-8")
    return points


def report_text(options: ColocationOptions, pool: PoolConfig,
                emulation: dict[str, dict[str, object]], curves: Mapping[str, LatencyCurve],
                points: Sequence[ColocatedPoint], scale: float) -> str:
    """The report: the table, the summary, the alone curves and where it all came from."""
    measured = summarise(points, "measured")
    lines = [
        "# The co-location latency model on the lab",
        "",
        f"{options.app}: {', '.join(options.services)} each alone on the old node (the other "
        f"services on new), then together on it, at front-end loads "
        f"{', '.join(f'{q:g}' for q in options.loads_qps)} req/s "
        f"({options.warmup_s:g} s warm-up + {options.measure_s:g} s window per point).",
        "Prediction: `model.colocation.shared_p99` = the service's alone curve read at "
        "x + U_o * mu (x its per-replica load, mu its fitted saturation, U_o the utilisation "
        "the other services add to the socket). Error = predicted - measured (negative: "
        f"optimistic). Summary (U_o measured): median |error| {measured.median_abs_pct:.1f} %, "
        f"max {measured.max_abs_pct:.1f} %, median {measured.median_pct:+.1f} % "
        f"({measured.direction}) over {measured.points} points"
        + (f", and {measured.saturated} predicted saturated (inf) that were not"
           if measured.saturated else "") + ".",
        "",
        "```",
        format_table(points),
        "```",
        "",
        "Alone curves fitted on old (profiler.fit: points, then the queueing shape's "
        "saturation):",
        "",
    ]
    for service, curve in curves.items():
        shown = ", ".join(f"{x:.1f}->{y:.1f} ms" for x, y in zip(curve.load_qps, curve.p99_ms,
                                                                    strict=True))
        lines.append(f"- {service}: mu {curve.saturation_qps:.1f} req/s; {shown}")
    lines += [
        "",
        "## Where the numbers come from",
        "- measured on the lab by the profiler's runner: per-service p99 as each caller sees "
        "its calls (Prometheus, the emulator's call histograms), CPU per service from the "
        "emulator's process CPU seconds, over each window; raw rows in "
        f"{RAW_CSV}, the table in {TABLE_CSV}",
        f"- old and new are EMULATED on one {os.cpu_count() or 1}-CPU machine by `ecoscale "
        "lab`: " + "; ".join(f"{g}: {spec['speed']}, {spec['capacity']}"
                             for g, spec in emulation.items()),
        f"- the shared socket is the old node's CFS quota; utilisations are of one slot "
        f"({pool.slot_cpus.get(pool.oldest, 1.0):g} CPU) x {scale:g} = of the socket",
        "- 'U_o measured': the other old services' CPU in the same window; 'modelled': their "
        "alone curves' utilisation at their measured loads (what the planner uses); "
        "'alone': the alone curve at the same load, no interference",
        f"- bases reported: {', '.join(BASES)}",
    ]
    if measured.saturated:
        lines.append(f"- {measured.saturated} point(s) predicted saturated (inf): "
                     "x / mu + U_o >= 1 with the fitted mu")
    return "\n".join(lines) + "\n"
