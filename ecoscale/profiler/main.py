"""`ecoscale profile`: plan the experiments, run them (resumably), fit and write the profile."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ecoscale.adapters.files import load_hardware, load_topology, read_yaml, write_yaml
from ecoscale.adapters.outputs import beside, check_out_file, git_tracked
from ecoscale.adapters.prometheus import PrometheusClient
from ecoscale.adapters.targets import adoption, build_target, describe_target
from ecoscale.config import LabelConfig, RoleQueries, label_values, series_problem
from ecoscale.errors import EcoscaleError, UsageError
from ecoscale.model.topology import Topology
from ecoscale.paths import profiles_dir
from ecoscale.ports import Orchestrator, SourceUnavailable
from ecoscale.profiler.build import (
    build_profile,
    prune_measured,
    pruning_peak,
    service_latency_rows,
    sweep_points,
)
from ecoscale.profiler.experiments import (
    PoolConfig,
    criticality_plan,
    estimate_s,
    parse_pool,
    point_seconds,
    sweep_plan,
)
from ecoscale.profiler.fit import saturation_and_slo
from ecoscale.profiler.runner import Progress, Runner, loadgen_driver
from ecoscale.profiler.store import compact, complete_rows, read_rows
from ecoscale.values import BadNumber, parse_number_text


def power_source() -> str:
    """RAPL when the machine exposes it, else the hardware file's model."""
    rapl = Path("/sys/class/powercap")
    if rapl.is_dir() and any(p.name.startswith("intel-rapl") for p in rapl.iterdir()):
        return ("RAPL present on the profiling host (not read per service: lab services "
                "share it); power modelled from the hardware file")
    return "modelled: no RAPL on the profiling host; idle/peak power curve of the hardware file"


PoolSource = Callable[[dict[str, Any]], PoolConfig]
"""A named pool that is not a file (``lab``: the running lab's): overrides -> pool config."""


def load_pool(pool: str, overrides: dict[str, Any],
              named: Mapping[str, PoolSource] | None = None) -> PoolConfig:
    """The pool config: a named pool (``named``), else a YAML file; ``overrides`` win."""
    if named and pool in named:
        return named[pool](overrides)
    raw = read_yaml(Path(pool))
    if not isinstance(raw, dict):
        raise EcoscaleError(f"{pool}: a pool config is a YAML mapping")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return parse_pool(raw, pool)


def describe_plan(pool: PoolConfig, topology: Topology) -> str:
    sweeps = sweep_plan(pool, topology.service_names)
    guess_critical = max(3, len(topology.services) // 4)
    critical = criticality_plan(topology.service_names[:guess_critical], pool.loads_qps[-1])
    seconds = estimate_s(pool, sweeps + critical, moves=len(sweeps) + len(critical) + 1)
    lines = [f"ecoscale profile: {topology.app} on pool '{pool.name}' "
             f"(generations {', '.join(pool.generations)}, newest first)"]
    for experiment in sweeps:
        loads = ", ".join(f"{q:g}" for q in experiment.loads_qps)
        lines.append(f"  {experiment.name:<10} loads {loads} req/s, each {pool.warmup_s:g} s "
                     f"warm-up + {pool.measure_s:g} s window")
    lines.append(f"  then one critical service at a time on {pool.oldest} at the SLO load "
                 f"(about {guess_critical} services; the all-old sweep decides which)")
    lines.append(f"  expected duration: about {seconds / 60:.0f} min "
                 f"({point_seconds(pool):g} s per point, ~20 s per change of placement)")
    if pool.emulation:
        lines.append(f"  emulation: {pool.emulation}")
    return "\n".join(lines)


def profile_destination(out: Path, refit: bool, force: bool) -> tuple[Path, list[str]]:
    """Where to write the profile: ``out``, or beside it when git tracks ``out`` and
    ``force`` is not given (``lab.refit.yaml`` for --refit, ``lab.measured.yaml`` with its
    own raw CSV for a new measurement), so a shipped profile is never overwritten by
    accident. Returns the path and notes for the user."""
    if force or not git_tracked(out):
        return out, []
    instead = beside(out, "refit" if refit else "measured")
    return instead, [f"{out} is tracked by git: writing {instead} instead (--force "
                     "overwrites it)"]


def run_profile(app: str, pool_name: str, out: Path | None, dry_run: bool,
                overrides: dict[str, Any], prune_threshold: float = 0.05,
                refit: bool = False, force: bool = False,
                named_pools: Mapping[str, PoolSource] | None = None) -> int:
    """Profile ``app`` on a pool (or refit the raw CSV beside ``out``) and write the profile.

    A git-tracked ``out`` is written beside, not over, unless ``force``."""
    topology = load_topology(app)
    pool = load_pool(pool_name, overrides, named_pools)
    hardware = load_hardware(pool.hardware)
    asked = out or profiles_dir() / topology.app / f"{pool.name}.yaml"
    out, notes = profile_destination(asked, refit, force)
    # --refit reads the raw measurements beside the profile asked for; a new measurement
    # keeps its raw CSV beside the profile it writes (resumable by the same command)
    raw_csv = (asked if refit else out).with_suffix(".csv")
    if not dry_run:
        notes += check_out_file(out, "--out")
        if not refit:
            notes += check_out_file(raw_csv, "--out (raw CSV)")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if refit:
        if not raw_csv.exists():
            raise EcoscaleError(f"--refit: no raw measurements at {raw_csv}; profile first "
                                "(without --refit) or give --out beside an existing CSV")
        recorded, created = recorded_pool(raw_csv, pool)
        write_profile(out, raw_csv, topology, hardware, recorded, prune_threshold,
                      created=created, record=False)
        return 0
    print(describe_plan(pool, topology))
    if dry_run:
        return 0
    finished = compact(raw_csv) if raw_csv.exists() else 0
    if finished:
        print(f"resuming: {finished} points of {raw_csv} are done and will not be re-run")
    orchestrator = build_target(pool.target, source=pool_name)
    runner = Runner(pool, topology, orchestrator, PrometheusClient(pool.prometheus_url),
                    loadgen_driver(pool.frontend_url, topology), raw_csv)
    record_sweep(raw_csv, pool)
    runner.remember()
    try:
        sweeps = sweep_plan(pool, topology.service_names)
        progress = Progress(sum(len(e.loads_qps) for e in sweeps), point_seconds(pool))
        runner.run(sweeps, progress)
        rows, _ = service_latency_rows(complete_rows(read_rows(raw_csv)), topology, pool)
        _, slo_load, slo_ms = saturation_and_slo(sweep_points(rows, "all-new"))
        peak = pruning_peak(rows, pool, slo_load)
        critical, _ = prune_measured(rows, slo_ms, prune_threshold, pool.oldest, peak,
                                     pool.newest)
        print(f"\nSLO {slo_ms:.2f} ms at {slo_load:.0f} req/s; pruning at {peak:g} req/s; "
              f"critical on {pool.oldest}: {', '.join(critical) or 'none'}")
        plan = criticality_plan(tuple(critical), round(slo_load, 3))
        runner.run(plan, Progress(len(plan), point_seconds(pool)))
    except KeyboardInterrupt:
        print("\ninterrupted: finished points are kept; run the same command to resume",
              file=sys.stderr)
        raise
    finally:
        runner.restore()
    write_profile(out, raw_csv, topology, hardware, pool, prune_threshold)
    return 0


CHECKED_ROLES = (("qps", False), ("p99_ms", False), ("service_p99_ms", True),
                 ("service_cpu_cores", True))
"""The role queries ``profile --check`` runs, and whether each is per service."""


def check_queries(queries: RoleQueries, topology: Topology, pool: PoolConfig, client: Any
                  ) -> tuple[list[str], list[str]]:
    """Each role query once (now, the pool's window, quantile 0.99): (problems, notes)."""
    values = label_values(topology.service_names, pool.target)
    problems: list[str] = []
    notes: list[str] = []
    for role, per_service in CHECKED_ROLES:
        promql = queries.render(role, topology.frontend, pool.measure_s, 0.99)
        label = (queries.service_label if role == "service_p99_ms" else queries.cpu_label) \
            if per_service else None
        try:
            samples = client.query(promql)
        except SourceUnavailable as exc:
            problems.append(f"queries.{role} {promql!r}: {exc}")
            if str(exc).startswith("prometheus at"):   # not reachable: the rest fail alike
                break
            continue
        problem, note = series_problem(f"queries.{role}", promql, samples, label, values,
                                       consumer="profiler")
        if problem:
            problems.append(problem)
        else:
            notes.append(f"{role} {note}" if note else f"{role} {samples[0][2]:.4g}")
    return problems, notes


def check_pool(app: str, pool_name: str, overrides: dict[str, Any],
               named_pools: Mapping[str, PoolSource] | None = None,
               orchestrator: Orchestrator | None = None, prometheus: Any = None) -> int:
    """``ecoscale profile --check``: ask the target and Prometheus once, measure nothing.

    The target: a Swarm manager, every topology service mapped (the adoption report), a
    ready node of every generation. Prometheus: each role query once (the pool's window,
    quantile 0.99); one that returns nothing, per-service series without the service label,
    or label values that name no topology service (by its own or its Swarm name) fail,
    naming the role, the query and the label. Exit code: 0, or 1 when a check failed."""
    topology = load_topology(app)
    pool = load_pool(pool_name, overrides, named_pools)
    print(f"pool ok: {pool.name} ({pool.source or pool_name}), {topology.app} "
          f"({len(topology.services)} services), generations {', '.join(pool.generations)}, "
          f"prometheus {pool.prometheus_url}, target {describe_target(pool.target)}")
    failed = []
    try:
        state = (orchestrator or build_target(pool.target, source=pool_name)).read()
    except SourceUnavailable as exc:
        state = None
        failed.append("target")
        print(f"  FAIL target: {exc}")
    if state is not None and not state.is_controller:
        failed.append("target")
        print(f"  FAIL target: {describe_target(pool.target)} is not a Swarm manager")
    elif state is not None:
        report = adoption(topology.service_names, state, pool.target)
        absent = [g for g in pool.generations if g not in state.generations]
        if not report.ok or absent:
            failed.append("target")
        problem = (f"no ready node of generation(s) {', '.join(absent)} (label the nodes "
                   f"{LabelConfig().generation}=<generation>)" if absent else "")
        mark = "FAIL" if not report.ok or absent else "ok"
        print(f"  {mark:<5}target: {describe_target(pool.target)}: {report.mapping}"
              + (f"; {problem}" if problem else ""))
        print("\n".join(f"         {line}" for line in report.lines()))
    client = prometheus or PrometheusClient(pool.prometheus_url)
    if pool.queries is None:
        problems, notes = ["queries: required to measure a pool (README \"Metrics are "
                           "configuration\" has worked sets)"], []
    else:
        problems, notes = check_queries(pool.queries, topology, pool, client)
    if problems:
        failed.append("prometheus")
        print(f"  FAIL prometheus: {pool.prometheus_url}: " + "; ".join(problems))
    else:
        print(f"  ok   prometheus: {pool.prometheus_url}: " + ", ".join(notes))
    if failed:
        print(f"check FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("check ok: the target maps every service and every role query answers")
    return 0


SWEEP_KEYS = ("generations", "loads_qps", "warmup_s", "measure_s", "emulation",
              "replica_limits", "hardware", "service_latency")
"""What the fit reads from the pool config, recorded beside the raw CSV by the run."""


def sweep_file(raw_csv: Path) -> Path:
    """The sidecar beside the raw CSV (``lab.csv`` -> ``lab.sweep.yaml``)."""
    return raw_csv.with_suffix(".sweep.yaml")


def record_sweep(raw_csv: Path, pool: PoolConfig, created: str | None = None) -> None:
    """Record the settings the measuring run used in the sidecar ``<pool>.sweep.yaml``.

    A sidecar rather than a CSV header: the CSV stays plain (one header row, appended
    point by point, read by any CSV reader), and a YAML mapping is read back as written.
    It holds every pool setting the fit reads (``SWEEP_KEYS``: loads, warm-up, measure
    window, generations, emulation, replica_limits, hardware model, the pool's
    ``queries.service_latency``) and, once the profile is written, its ``created``, so
    ``--refit`` rebuilds that profile byte for byte. The SLO load fraction (75 %) and the
    knee factor are constants of the fit, not settings."""
    settings: dict[str, Any] = {
        "pool": pool.name,
        "generations": list(pool.generations),
        "loads_qps": [float(q) for q in pool.loads_qps],
        "warmup_s": float(pool.warmup_s),
        "measure_s": float(pool.measure_s),
        "emulation": pool.emulation,
        "replica_limits": dict(pool.replica_limits),
        "hardware": pool.hardware,
        "service_latency": pool.service_latency,
    }
    if created:
        settings["created"] = created
    write_yaml(sweep_file(raw_csv), settings,
               f"# The sweep settings the measurement {raw_csv.name} used (read by "
               "`ecoscale profile --refit`).\n")


def recorded_pool(raw_csv: Path, pool: PoolConfig) -> tuple[PoolConfig, str | None]:
    """The pool config with the settings recorded beside ``raw_csv`` (``record_sweep``),
    and the recorded ``created``; without a sidecar, the pool config as it is (said on
    stderr)."""
    path = sweep_file(raw_csv)
    if not path.exists():
        print(f"no recorded sweep settings in {path}; using the pool config's (loads "
              f"{', '.join(f'{q:g}' for q in pool.loads_qps)} req/s, warm-up "
              f"{pool.warmup_s:g} s, window {pool.measure_s:g} s)", file=sys.stderr)
        return pool, None
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise EcoscaleError(f"{path}: recorded sweep settings are a YAML mapping")
    convert = {"generations": lambda v: tuple(str(g) for g in v),
               "loads_qps": lambda v: tuple(float(q) for q in v),
               "warmup_s": float, "measure_s": float, "emulation": str,
               "replica_limits": lambda v: {str(g): int(n) for g, n in (v or {}).items()},
               "hardware": str}
    try:
        merged = dataclasses.replace(pool, **{k: f(raw[k]) for k, f in convert.items()
                                              if k in raw})
    except (TypeError, ValueError, AttributeError) as exc:
        raise EcoscaleError(f"{path}: unreadable recorded sweep settings ({exc})") from None
    latency = raw.get("service_latency")
    if latency and latency != merged.service_latency and merged.queries is not None:
        merged = dataclasses.replace(merged, queries=dataclasses.replace(
            merged.queries, service_latency=latency))
    created = raw.get("created")
    return merged, str(created) if created else None


def write_profile(out: Path, raw_csv: Path, topology: Topology, hardware: Any,
                  pool: PoolConfig, prune_threshold: float, created: str | None = None,
                  record: bool = True) -> None:
    """Fit the finished points of the raw CSV and write the profile beside it; ``record``:
    record the sweep settings and the profile's ``created`` beside the CSV (the measuring
    run; a refit passes the recorded ``created`` and records nothing)."""
    rows = complete_rows(read_rows(raw_csv))
    created = created or dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if record:
        record_sweep(raw_csv, pool, created)
    raw_name = raw_csv.name if raw_csv.parent.resolve() == out.parent.resolve() else str(raw_csv)
    document = build_profile(rows, topology, hardware, pool, created, raw_name,
                             prune_threshold, power_source())
    header = (f"# {topology.app} latency profile MEASURED on pool '{pool.name}' by "
              f"`ecoscale profile`.\n# Raw measurements: {raw_name} (beside this file).\n"
              "# points: [per-replica load req/s, p99 ms, CPU utilisation of the slot 0..1]\n")
    write_yaml(out, document, header)
    print(f"wrote {out} (raw measurements: {raw_csv})")
    warning = document["measured"].get("calibration_warning")
    if warning:
        print(f"warning: {out}: {warning}", file=sys.stderr)


def pool_overrides(args: Any) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if getattr(args, "loads", None):
        try:
            overrides["loads_qps"] = [parse_number_text(x, "--loads", above=0, maximum=1e6)
                                      for x in args.loads.split(",") if x.strip()]
        except BadNumber as exc:
            raise UsageError(f"{exc}; give comma-separated loads in req/s, e.g. "
                             "20,40,60") from None
    for name in ("warmup_s", "measure_s"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return overrides


