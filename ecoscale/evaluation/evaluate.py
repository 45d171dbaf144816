"""Live carbon evaluation on the lab, checked against the replay simulator.

For each policy (all-new, all-old, ecoscale, ecoscale-ct) the lab serves a production load
trace compressed in time (one trace step per period of wall time), with the carbon trace
compressed the same way. Every period we record what actually ran (tasks per generation from
Swarm), the measured end-to-end p99 (Prometheus), each service's CPU use, and the daemon's own
CPU and memory. Carbon is the hardware model applied to what ran: embodied carbon of every
running task's slot plus power at its measured CPU utilisation (a missing CPU series: the
model's rule, ``UTILISATION_RULE``, counted in the report), times PUE and the period's
grid intensity; each period stands for one trace step. The same compressed traces then go
through `ecoscale replay` with the lab's measured profile, and the report sets the two side
by side.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecoscale.adapters.clock import SYSTEM_CLOCK
from ecoscale.adapters.files import LAB_PROFILE, load_profile, load_topology, write_table
from ecoscale.adapters.hostcpu import read_cpu_times, stolen_share, stolen_text
from ecoscale.adapters.placing import place as apply_and_wait
from ecoscale.adapters.prometheus import PrometheusClient
from ecoscale.adapters.tracefiles import load_load_trace
from ecoscale.control.decide import ControlSettings
from ecoscale.errors import EcoscaleError, UsageError
from ecoscale.evaluation.launcher import daemon_config, start_process
from ecoscale.evaluation.moves import measure_moves, recorded
from ecoscale.evaluation.timescale import (
    LAB_MOVE_TIME_S,
    LIVE_TREND_PERIODS,
    MAX_LOAD_RISE,
    TimeScale,
    choose_period,
    choose_time_scale,
    largest_rise,
)
from ecoscale.lab.config import LabConfig
from ecoscale.lab.lab import Lab
from ecoscale.lab.pool import NAMED_POOLS
from ecoscale.lab.queries import LAB_QUERIES
from ecoscale.lab.system import host_cpus
from ecoscale.loadgen.generator import run_load
from ecoscale.model.app import UTILISATION_RULE, UTILISATION_SOURCES
from ecoscale.model.placement import ServicePlacement
from ecoscale.model.trace import Trace, parse_duration_s
from ecoscale.planner.table import PolicyTable, build_table
from ecoscale.profiler.main import run_profile
from ecoscale.replay.engine import Scenario, replay
from ecoscale.replay.policies import EcoscalePolicy, all_policies, ci_bands
from ecoscale.replay.scenario import ReplayOptions, build_scenario

POLICIES = ("all-new", "all-old", "ecoscale", "ecoscale-ct")
@dataclass(frozen=True)
class EvaluationOptions:
    app: str = "socialNetwork"
    profile: str = LAB_PROFILE
    load_trace: str = "worldcup98"
    carbon_trace: str = "CISO"
    start: str | None = None
    duration: str = "1d"
    minutes: float = 12.0
    """Wall-clock minutes each policy runs: the trace window compressed into them."""
    period_s: float | None = None
    """Wall time per decision period and trace step (s); None: MOVE_TIMES_PER_PERIOD move
    times (``time_scale`` refuses a shorter one)."""
    move_time_s: float | None = None
    """How long a move takes on the lab (s), for the period. None: measured
    (``with_move_time``: the lab's latest `lab moves` for the app, else two moves of the front
    end at the start of a live run; LAB_MOVE_TIME_S for a replay without either)."""
    move_source: str = ""
    """Where ``move_time_s`` came from, for the report (``with_move_time`` fills it)."""
    trend_periods: int = LIVE_TREND_PERIODS
    """The daemon's trend estimate window (``ControlSettings.trend_periods``), live and in
    the replay; 0: off."""
    policies: tuple[str, ...] = POLICIES
    peak_qps: float | None = None
    """Trace peak, req/s. Default: ``peak_fraction`` x the profile's SLO load (75 % of the
    measured saturation)."""
    peak_fraction: float = 1.0
    profile_sweep: bool = False
    """Profile the lab first with a short sweep (PROFILE_SWEEP) and plan and replay with that
    profile instead of ``profile``: the model then describes the lab as it runs today."""
    headroom: float = 0.0
    """Share of the SLO the plan keeps free (``ecoscale plan --headroom``)."""
    warmup_s: float = 20.0
    """Load at the trace's first rate before each policy's measured periods (s), so that
    no policy is charged for a freshly deployed app's cold start."""
    seed: int = 7


@dataclass
class PolicyTrace:
    """What one policy did on the lab, period by period."""

    policy: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    moves: int = 0
    daemon_cpu_s: float = math.nan
    daemon_rss_mb: float = math.nan
    client_p99_ms: float = math.nan


def _period(options: EvaluationOptions) -> float:
    """The options' period (s), unchecked (``time_scale`` checks it): the default when
    None."""
    return float(options.period_s) if options.period_s is not None else choose_period(
        _move_time(options))


def _move_time(options: EvaluationOptions) -> float:
    return options.move_time_s if options.move_time_s is not None else LAB_MOVE_TIME_S


MEASURED_MOVES = 2
"""Moves of the front end a live evaluation measures when the lab has no measurement."""


def with_move_time(options: EvaluationOptions, lab: Lab | None, live: bool = False,
                   log: Any = print) -> EvaluationOptions:
    """The options with a move time and its source: ``--move-time`` as given; else the
    lab's latest `lab moves` of the app; else, on a ``live`` run, MEASURED_MOVES moves of
    the front end at the run's peak load measured now (the lab must be up, the app
    deployed); else LAB_MOVE_TIME_S, said so."""
    if options.move_time_s is not None:
        return replace(options, move_source=options.move_source
                       or f"{options.move_time_s:g} s, given (--move-time)")
    found = recorded(lab.recorded_moves(), options.app) if lab is not None else None
    if found is not None and found.move_time_s is not None:
        return replace(options, move_time_s=found.move_time_s,
                       move_source=f"{found.text()} (`ecoscale lab moves`)")
    if not live or lab is None:
        return replace(options, move_time_s=LAB_MOVE_TIME_S,
                       move_source=f"{LAB_MOVE_TIME_S:g} s assumed (shared/notes/swarm-lab.md); "
                                   "not measured on this lab: `ecoscale lab moves`")
    profile = load_profile(options.app, options.profile)
    peak = options.peak_qps or options.peak_fraction * (profile.slo_load_qps or 0.0)
    if not peak > 0:
        raise UsageError(f"profile '{profile.name}' has no SLO load to measure moves at; give "
                         "--peak-qps or --move-time")
    frontend = load_topology(options.app).frontend
    log(f"measuring {MEASURED_MOVES} moves of {frontend} at {peak:.0f} req/s (no `lab moves` "
        "on this lab yet)")
    found = measure_moves(lab, [frontend], rate_qps=peak, moves=MEASURED_MOVES,
                          slo_ms=profile.slo_ms, log=log)
    if found.move_time_s is None:
        raise EcoscaleError(f"no move finished on the lab: {found.text()}")
    return replace(options, move_time_s=found.move_time_s,
                   move_source=f"{found.text()} (measured by this run)")


def _replay_options(options: EvaluationOptions, step_s: float) -> ReplayOptions:
    return ReplayOptions(
        app=options.app, profile=options.profile, load_trace=options.load_trace,
        carbon_trace=options.carbon_trace, start=options.start, duration=options.duration,
        step=f"{step_s:g}s", peak_qps=options.peak_qps)


def time_scale(options: EvaluationOptions) -> TimeScale:
    """``choose_time_scale`` for the options' trace window: rises computed from the window
    at the load trace's own step, resampled as the replay resamples it (the peak's scale
    does not change a rise); a UsageError when the period or the step does not fit."""
    raw_step_s = load_load_trace(options.load_trace).step_s
    fine = build_scenario(_replay_options(options, raw_step_s))
    window = Trace("window", fine.load_qps, fine.step_s, "req/s")

    def rise_at(step_s: float) -> tuple[float, int]:
        return largest_rise(window.resample(step_s, "linear").values)

    return choose_time_scale(_seconds(options.duration), options.minutes, _move_time(options),
                             rise_at, options.period_s, finest_step_s=raw_step_s)


def compressed_scenario(options: EvaluationOptions) -> Scenario:
    """The replay scenario whose steps are the lab's periods (trace compressed in time)."""
    duration_s = _seconds(options.duration)
    period_s = _period(options)
    periods = max(2, int(round(options.minutes * 60 / period_s)))
    step_s = duration_s / periods
    replay_options = _replay_options(options, step_s)
    scenario = build_scenario(replay_options)
    if options.peak_qps is not None or options.peak_fraction == 1.0:
        return scenario
    peak = options.peak_fraction * float(np.max(scenario.load_qps))   # x the SLO load
    return build_scenario(replace(replay_options, peak_qps=peak))


PROFILE_SWEEP = {"loads_qps": [15.0, 30.0, 45.0, 60.0, 80.0, 100.0, 120.0], "warmup_s": 3.0,
                 "measure_s": 15.0}
"""The short sweep of ``profile_sweep`` (about 15 minutes on the lab): the loads span the
lab's all-new knee, windows long enough for 5-s slices."""


def profile_lab(options: EvaluationOptions, out: Path, log: Any) -> EvaluationOptions:
    """Profile the running lab with PROFILE_SWEEP into ``out``; the options with that
    profile."""
    path = out / "profile-lab.yaml"
    log(f"profiling the lab with a short sweep into {path.name} (resumes if interrupted)")
    if run_profile(options.app, "lab", path, False, dict(PROFILE_SWEEP),
                   named_pools=NAMED_POOLS) != 0:
        raise EcoscaleError("the short profile sweep of the lab failed")
    return replace(options, profile=str(path.resolve()), profile_sweep=False)


def _seconds(text: str) -> float:
    return parse_duration_s(text, "--duration")


def proc_usage(pid: int) -> tuple[float, float]:
    """(CPU seconds, resident MB) of a process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        rss_pages = int(fields[21])
    except (OSError, IndexError, ValueError):
        return math.nan, math.nan
    return ticks / os.sysconf("SC_CLK_TCK"), rss_pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def place_all(lab: Lab, services: tuple[str, ...], generation: str, timeout_s: float = 300
              ) -> None:
    place(lab, {name: ServicePlacement(generation, 1) for name in services}, timeout_s)


def place(lab: Lab, wanted: dict[str, ServicePlacement], timeout_s: float = 300) -> None:
    """Move services to the given generations and replica counts; wait until they run
    (NotConverged after ``timeout_s``, naming the services that do not)."""
    apply_and_wait(lab.orchestrator(), wanted, SYSTEM_CLOCK, timeout_s)


class Sampler:
    """Every period: measured p99 and load, running tasks per generation, CPU per service."""

    def __init__(self, lab: Lab, frontend: str, period_s: float):
        self.lab = lab
        self.orchestrator = lab.orchestrator()
        self.prometheus = PrometheusClient(lab.prometheus_url)
        self.window_s = max(int(round(period_s)), 6)
        self.frontend = frontend
        self.queries = {role: LAB_QUERIES.render(role, frontend, self.window_s)
                        for role in ("qps", "p99_ms")}
        self.period_s = period_s

    def sample(self, period: int) -> dict[str, Any]:
        row: dict[str, Any] = {"period": period, "wall_s": time.time()}
        for name in ("qps", "p99_ms"):
            try:
                samples = self.prometheus.query(self.queries[name])
                row[f"measured_{name}"] = samples[0][2] if samples else math.nan
            except Exception:   # a missed sample is no data, never a number
                row[f"measured_{name}"] = math.nan
        try:
            cpu = self.prometheus.by_label(LAB_QUERIES.render(
                "service_cpu_cores", self.frontend, self.window_s), LAB_QUERIES.cpu_label)
        except Exception:
            cpu = {}
        state = self.orchestrator.read()
        running = {name: dict(s.running) for name, s in state.services.items()}
        row["running"] = running
        row["cpu"] = cpu
        return row


def live_control(period_s: float, trend_periods: int = LIVE_TREND_PERIODS
                 ) -> dict[str, float]:
    """The daemon's control settings on the lab, wall-clock seconds: what the physical lab
    needs (a move settles, and the one-period query window refills, within 3 periods), and
    the trend estimate's window (periods)."""
    return {"slo_miss_periods": 2, "escalation_hold_s": 6 * period_s, "cooldown_s": 6 * period_s,
            "settle_s": 3 * period_s, "max_old_moves_per_decision": 3,
            "no_data_fallback_periods": 6, "trend_periods": trend_periods}


def in_trace_time(control: dict[str, float], speedup: float) -> ControlSettings:
    """The same control settings in trace seconds (x ``speedup``), for the replay of the
    compressed traces: the simulated daemon then holds, cools down and rate-limits over the
    same number of periods as the live one."""
    return ControlSettings(**{k: v * speedup if k.endswith("_s") else v
                              for k, v in control.items()})


def run_policy_live(lab: Lab, policy: str, scenario: Scenario, options: EvaluationOptions,
                    tables: dict[str, Path], folder: Path, log: Any,
                    start: dict[str, ServicePlacement] | None = None) -> PolicyTrace:
    """One policy on the lab; ``start`` is where the services run when the warm-up begins
    (default: all on new)."""
    topology = scenario.model.topology
    services = topology.service_names
    lab.deploy(options.app)   # every service back on new, 1 replica
    if policy == "all-old":
        place_all(lab, services, "old")
    elif start:
        place(lab, start)
    if options.warmup_s > 0:
        run_load(lab.frontend_url, topology, rate_qps=float(scenario.load_qps[0]),
                 duration_s=options.warmup_s, seed=options.seed + 1)
    daemon = None
    daemon_log = folder / f"daemon-{policy}.log"
    if policy in tables:
        trace_s_per_period = scenario.step_s
        # the query window is one period: with two, the daemon saw a compressed ramp's load
        # a period late
        config = daemon_config(
            lab, tables[policy], folder / f"daemon-{policy}", frontend=topology.frontend,
            app=options.app, profile=options.profile, interval_s=options.period_s,
            window_s=max(int(round(options.period_s)), 6),
            carbon={"trace": options.carbon_trace, "start": "0h",
                    "speedup": trace_s_per_period / options.period_s},
            control=live_control(options.period_s, options.trend_periods))
        daemon = start_process(config, daemon_log)
    sampler = Sampler(lab, topology.frontend, options.period_s)
    trace = PolicyTrace(policy)
    result: dict[str, Any] = {}

    def drive() -> None:
        result["load"] = run_load(lab.frontend_url, topology,
                                  schedule=list(scenario.load_qps), step_s=options.period_s,
                                  seed=options.seed)

    driver = threading.Thread(target=drive, daemon=True)
    began = time.monotonic()
    driver.start()
    usage_start = proc_usage(daemon.pid) if daemon else (math.nan, math.nan)
    rss = []
    try:
        for period in range(scenario.steps):
            wake = began + (period + 1) * options.period_s
            time.sleep(max(0.0, wake - time.monotonic()))
            row = sampler.sample(period)
            trace.rows.append(row)
            if daemon:
                rss.append(proc_usage(daemon.pid)[1])
            if period % max(1, scenario.steps // 10) == 0:
                log(f"  {policy}: period {period + 1}/{scenario.steps}, load "
                    f"{scenario.load_qps[period]:.0f} req/s, p99 {row['measured_p99_ms']:.0f} ms")
        driver.join(timeout=120)
    finally:
        if daemon:
            usage_end = proc_usage(daemon.pid)
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=120)
            trace.daemon_cpu_s = usage_end[0] - usage_start[0]
            trace.daemon_rss_mb = float(np.nanmax(rss)) if rss else math.nan
    if daemon:
        trace.moves = sum(1 for line in daemon_log.read_text().splitlines()
                          if '"event": "action"' in line and json.loads(line).get("applied"))
    load = result.get("load")
    trace.client_p99_ms = load.p99_ms if load is not None else math.nan
    return trace


def measured_frame(trace: PolicyTrace, scenario: Scenario, slot_cpus: dict[str, float]
                   ) -> pd.DataFrame:
    """Per period: load, p99 vs SLO, tasks per generation, carbon from what ran (g).

    Carbon: ``AppModel.carbon_of_what_ran`` at each service's measured CPU utilisation (its
    cores over its running tasks over one slot's CPUs), missing utilisation by the model's
    rule (``UTILISATION_RULE``); the slots of each utilisation source are counted per period
    (``util_<source>_slots``) for the report."""
    model = scenario.model
    hardware = model.hardware
    step_h = scenario.step_s / 3600.0
    records = []
    for row in trace.rows:
        i = row["period"]
        ci = float(scenario.ci_g_per_kwh[i])
        running_in_model = {s: r for s, r in row["running"].items() if s in model.visits}
        measured = {(service, generation): row["cpu"][service] / max(sum(running.values()), 1)
                    / slot_cpus.get(generation, 1.0)
                    for service, running in running_in_model.items() if service in row["cpu"]
                    for generation in running}
        ran = model.carbon_of_what_ran(running_in_model, measured, row["measured_qps"], ci,
                                       hours=step_h)
        embodied = sum(ran.embodied_g.values())
        operational = sum(ran.operational_g.values())
        slots: dict[str, int] = {}
        for running in running_in_model.values():
            for generation, count in running.items():
                if generation in hardware.generations:
                    slots[generation] = slots.get(generation, 0) + count
        p99 = row["measured_p99_ms"]
        records.append({
            "policy": trace.policy, "period": i, "load_qps": float(scenario.load_qps[i]),
            "measured_qps": row["measured_qps"], "p99_ms": p99, "slo_ms": scenario.slo_ms,
            "slo_violated": not (p99 <= scenario.slo_ms),
            "carbon_intensity_g_per_kwh": ci, "embodied_g": embodied,
            "operational_g": operational, "carbon_g": embodied + operational,
            **{f"util_{source}_slots": n for source, n in ran.slots_by_source.items()},
            **{f"slots_{g}": slots.get(g, 0) for g in hardware.generations},
        })
    return pd.DataFrame(records)


def utilisation_sources_text(steps: pd.DataFrame) -> str:
    """How many slot-periods of the run took their utilisation from each source."""
    counts = {source: int(steps[f"util_{source}_slots"].sum()) if f"util_{source}_slots"
              in steps else 0 for source in UTILISATION_SOURCES}
    total = sum(counts.values())
    return (", ".join(f"{source} for {n} of {total} slot-periods" for source, n in counts.items())
            if total else "no slot ran")


def summarise(frame: pd.DataFrame, trace: PolicyTrace) -> dict[str, Any]:
    return {
        "policy": trace.policy,
        "carbon_kg": frame.carbon_g.sum() / 1000,
        "slo_violation_pct": 100 * float(frame.slo_violated.mean()),
        "no_data_periods": int(frame.p99_ms.isna().sum()),
        "moves": trace.moves,
        "client_p99_ms": trace.client_p99_ms,
        "daemon_cpu_s": trace.daemon_cpu_s,
        "daemon_rss_mb": trace.daemon_rss_mb,
    }


def evaluate(options: EvaluationOptions, out: Path, log: Any = print) -> pd.DataFrame:
    """Run every policy on the lab and the replay on the same traces; write the report."""
    lab = Lab.attach(log=None)
    # checked before the lab is touched, with the move time known so far: a refusal costs
    # nothing; checked again once the move time is measured
    time_scale(with_move_time(options, lab))
    out.mkdir(parents=True, exist_ok=True)
    if not lab.healthy():
        log("bringing the lab up")
        lab.up()
    lab.deploy(options.app)
    options = with_move_time(options, lab, live=True, log=log)
    log(f"move time: {options.move_source}")
    scale = time_scale(options)
    options = replace(options, period_s=scale.period_s)
    log(f"time scale: {scale.text()}")
    if options.profile_sweep:
        options = profile_lab(options, out, log)
    scenario = compressed_scenario(options)
    scale = replayed_scale(scale, scenario)
    profile = load_profile(options.app, options.profile)
    if profile.kind != "measured":
        log(f"note: profile '{profile.name}' is {profile.kind}, not measured on the lab")
    planned, live_tables, simulated_tables = plan_tables(options, scenario)
    over = overcommitting_levels(lab.config, host_cpus(), planned)
    if over:
        raise EcoscaleError("the tables would overcommit the lab's slot budget (the daemon "
                            "could place more slots than the machine holds): "
                            + "; ".join(over) + "; plan for a lower peak (--peak-fraction), "
                            "or bring the lab up with smaller slots (`lab up --slot-cpus`)")
    tables: dict[str, Path] = {}
    for name, live in live_tables.items():
        tables[name] = out / f"table-{name}.yaml"
        write_table(tables[name], live)
    emulation = lab.config.emulation(os.cpu_count() or 1)
    slot_cpus = {g: float(spec["cpus_per_replica"]) for g, spec in emulation.items()}
    frames, rows = [], []
    stolen: dict[str, float | None] = {}
    for policy in options.policies:
        log(f"{policy}: {scenario.steps} periods of {options.period_s:g} s "
            f"(~{scenario.steps * options.period_s / 60:.0f} min)")
        start = None
        if policy in planned:   # as if the daemon had been running: where the replay starts
            first = EcoscalePolicy(policy, planned[policy]).initial_placement(
                float(scenario.load_qps[0]), float(scenario.ci_g_per_kwh[0]))
            start = dict(first.items)
        cpu_before = read_cpu_times()
        trace = run_policy_live(lab, policy, scenario, options, tables, out, log, start)
        stolen[policy] = stolen_share(cpu_before, read_cpu_times())
        log(f"{policy}: {stolen_text(stolen[policy])}")
        frame = measured_frame(trace, scenario, slot_cpus)
        frames.append(frame)
        rows.append(summarise(frame, trace))
    lab.deploy(options.app)
    measured = pd.DataFrame(rows)
    steps = pd.concat(frames, ignore_index=True)
    steps.to_csv(out / "measured_steps.csv", index=False, float_format="%.4f")
    simulated = simulated_summary(options, scenario, simulated_tables)
    table = compare(measured, simulated)
    table.to_csv(out / "comparison.csv", index=False, float_format="%.4f")
    write_report(out, options, scenario, table, steps, emulation, profile, scale, stolen)
    return table


def replayed_scale(scale: TimeScale, scenario: Scenario) -> TimeScale:
    """``scale`` with the largest rise of the loads the scenario actually replays (one per
    period), refused like ``choose_time_scale`` when it is over MAX_LOAD_RISE."""
    rise, at = largest_rise(scenario.load_qps)
    if rise > MAX_LOAD_RISE + 1e-12:
        raise UsageError(f"the replayed window's load rises {100 * rise:.0f} % into period "
                         f"{at + 1}, more than {100 * MAX_LOAD_RISE:g} %; give more --minutes "
                         "or a shorter --duration")
    return replace(scale, step_s=scenario.step_s, periods=scenario.steps, largest_rise=rise,
                   rise_period=at)


def plan_tables(options: EvaluationOptions, scenario: Scenario
                ) -> tuple[dict[str, PolicyTable], dict[str, PolicyTable],
                           dict[str, PolicyTable]]:
    """Per policy with a table (ecoscale, ecoscale-ct): the table planned for the scenario's
    peak, the live daemon's (windows in wall time) and the replay's (the live one's windows
    back in trace time)."""
    model = scenario.model
    peak = float(np.max(scenario.load_qps))
    period_s = _period(options)
    speedup = scenario.step_s / period_s
    planned: dict[str, PolicyTable] = {}
    live_tables: dict[str, PolicyTable] = {}
    simulated_tables: dict[str, PolicyTable] = {}
    bands = {"ecoscale": None, "ecoscale-ct": ci_bands(scenario)}   # the policies with tables
    for name in options.policies:
        if name not in bands:
            continue
        planned[name] = build_table(model, scenario.slo_ms, peak, ci_bands=bands[name],
                                    headroom=options.headroom)
        # the daemon runs in wall time: its table's windows are compressed too, but the
        # stabilisation never below the few periods that a move takes to settle on the lab,
        # and the growth horizon (observation to running placement) never below one period
        hysteresis = planned[name].hysteresis
        live = replace(planned[name], hysteresis=replace(
            hysteresis, down_stabilisation_s=max(hysteresis.down_stabilisation_s / speedup,
                                                 4 * period_s),
            growth_horizon_s=max(hysteresis.growth_horizon_s / speedup, period_s),
            growth_window_s=max(hysteresis.growth_window_s / speedup, period_s)))
        live_tables[name] = live
        simulated_tables[name] = replace(live, hysteresis=replace(
            live.hysteresis, down_stabilisation_s=live.hysteresis.down_stabilisation_s * speedup,
            growth_horizon_s=live.hysteresis.growth_horizon_s * speedup,
            growth_window_s=live.hysteresis.growth_window_s * speedup))
    return planned, live_tables, simulated_tables


def overcommitting_levels(config: LabConfig, cpus: float,
                          tables: Mapping[str, PolicyTable]) -> list[str]:
    """Per table level whose placement would overcommit a slotted lab's budget
    (``LabConfig.slot_budget`` on ``cpus`` host CPUs): which, and the figure. Empty on a lab
    without slots."""
    if not config.slot_cpus():
        return []
    found = []
    for name, table in tables.items():
        for level in table.levels:
            budget = config.slot_budget(cpus, {
                service: (placed.generation, placed.replicas)
                for service, placed in level.placement.items})
            if budget.overcommitted:
                found.append(f"{name} up to {level.max_load_qps:g} req/s: {budget.text()}")
    return found


def simulated_summary(options: EvaluationOptions, scenario: Scenario,
                      simulated_tables: dict[str, PolicyTable]) -> pd.DataFrame:
    """The replay's summary of the evaluation's policies: the daemon's decision function with
    the live run's tables and control settings, in trace time."""
    period_s = _period(options)
    settings = in_trace_time(live_control(period_s, options.trend_periods),
                             scenario.step_s / period_s)
    policies = all_policies(scenario, names=tuple(p for p in options.policies
                                                  if p not in simulated_tables))
    policies += [EcoscalePolicy(name, simulated_tables[name], settings)
                 for name in options.policies if name in simulated_tables]
    return replay(scenario, policies).summary()


def simulate(options: EvaluationOptions) -> tuple[TimeScale, pd.DataFrame]:
    """The evaluation's replay alone (`lab evaluate --replay-only`; no lab): its time scale
    and the summary of the same compressed traces, tables and control settings (a move time
    not given: LAB_MOVE_TIME_S; ``with_move_time`` finds the lab's first)."""
    options = with_move_time(options, None)
    scale = time_scale(options)
    options = replace(options, period_s=scale.period_s)
    scenario = compressed_scenario(options)
    scale = replayed_scale(scale, scenario)
    _, _, simulated_tables = plan_tables(options, scenario)
    return scale, simulated_summary(options, scenario, simulated_tables)


def compare(measured: pd.DataFrame, simulated: pd.DataFrame) -> pd.DataFrame:
    sim = simulated.set_index("policy")
    rows = []
    for row in measured.itertuples(index=False):
        s = sim.loc[row.policy] if row.policy in sim.index else None
        carbon_sim = float(s.carbon_kg) if s is not None else math.nan
        viol_sim = float(s.slo_violation_pct) if s is not None else math.nan
        rows.append({
            "policy": row.policy,
            "carbon_kg_measured": row.carbon_kg, "carbon_kg_simulated": carbon_sim,
            "carbon_gap_pct": 100 * (row.carbon_kg / carbon_sim - 1) if carbon_sim else math.nan,
            "slo_violation_pct_measured": row.slo_violation_pct,
            "slo_violation_pct_simulated": viol_sim,
            "slo_violation_gap_pp": row.slo_violation_pct - viol_sim,
            "moves_measured": row.moves,
            "moves_simulated": int(s.moves) if s is not None else -1,
            "no_data_periods": row.no_data_periods,
            "client_p99_ms": row.client_p99_ms,
            "daemon_cpu_s": row.daemon_cpu_s, "daemon_rss_mb": row.daemon_rss_mb,
        })
    table = pd.DataFrame(rows)
    if "all-new" in set(table.policy):
        base_m = float(table.set_index("policy").loc["all-new", "carbon_kg_measured"])
        base_s = float(table.set_index("policy").loc["all-new", "carbon_kg_simulated"])
        table["saving_vs_all_new_pct_measured"] = 100 * (1 - table.carbon_kg_measured / base_m)
        table["saving_vs_all_new_pct_simulated"] = 100 * (1 - table.carbon_kg_simulated / base_s)
    return table


def write_report(out: Path, options: EvaluationOptions, scenario: Scenario,
                 table: pd.DataFrame, steps: pd.DataFrame, emulation: dict[str, Any],
                 profile: Any, scale: TimeScale | None = None,
                 stolen: Mapping[str, float | None] | None = None) -> None:
    """report.md and its plots in ``out``; ``stolen``: per policy, the share of the host's
    CPU demand the hypervisor took while it ran (``adapters.hostcpu``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    periods = np.arange(scenario.steps)
    hours = periods * scenario.step_s / 3600
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    axes[0].plot(hours, scenario.load_qps, color="black", label="offered load")
    axes[0].set_ylabel("req/s")
    axes[0].legend(fontsize=7)
    for policy, frame in steps.groupby("policy"):
        axes[1].plot(hours[frame.period], frame.p99_ms.clip(upper=scenario.slo_ms * 20),
                     label=policy, lw=0.8)
        old = [c for c in frame.columns if c.startswith("slots_") and c != "slots_new"]
        if old:
            axes[2].step(hours[frame.period], frame[old[0]], where="post", label=policy)
    axes[1].axhline(scenario.slo_ms, ls="--", color="black", label="SLO")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("measured e2e p99 (ms)")
    axes[1].legend(fontsize=7, ncol=3)
    axes[2].set_ylabel("tasks on old")
    axes[2].set_xlabel("trace hours (compressed)")
    axes[2].legend(fontsize=7, ncol=3)
    fig.suptitle("ecoscale lab evaluation (measured on the lab, emulated old/new)")
    fig.tight_layout()
    fig.savefig(out / "lab_evaluation.png", dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(9, 4))
    for policy, frame in steps.groupby("policy"):
        ax.plot(hours[frame.period], frame.carbon_g.cumsum() / 1000, label=f"{policy} measured")
    ax.set(xlabel="trace hours (compressed)", ylabel="kgCO2e",
           title="Cumulative carbon of what ran (hardware model at measured CPU)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "lab_carbon.png", dpi=90)
    plt.close(fig)
    lines = [
        "# ecoscale on the lab: measured vs simulated",
        "",
        f"{options.app}; {options.load_trace} load ({options.duration} from "
        f"{options.start or 'its default start'}) and {options.carbon_trace} carbon intensity, "
        f"both compressed into {scenario.steps} periods of {options.period_s:g} s "
        f"(one period = {scenario.step_s / 60:g} trace minutes); peak "
        f"{float(np.max(scenario.load_qps)):.0f} req/s; SLO {scenario.slo_ms:.1f} ms "
        "end-to-end p99 (server side, the front end's histogram).",
        *(["", f"Time scale: {scale.text()}; the daemon's trend estimate: "
               + (f"{options.trend_periods} period(s)" if options.trend_periods else "off")
               + "."] if scale is not None else []),
        *(["", f"Move time: {options.move_source}."] if options.move_source else []),
        "",
        "| policy | carbon kg measured | simulated | gap % | SLO viol. % measured | "
        "simulated | gap pp | moves measured | simulated |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples(index=False):
        lines.append(f"| {r.policy} | {r.carbon_kg_measured:.4f} | {r.carbon_kg_simulated:.4f} | "
                     f"{r.carbon_gap_pct:+.1f} | {r.slo_violation_pct_measured:.1f} | "
                     f"{r.slo_violation_pct_simulated:.1f} | {r.slo_violation_gap_pp:+.1f} | "
                     f"{r.moves_measured} | {r.moves_simulated} |")
    if "saving_vs_all_new_pct_measured" in table.columns:
        lines.append("")
        for r in table.itertuples(index=False):
            lines.append(f"- {r.policy}: saving vs all-new {r.saving_vs_all_new_pct_measured:.1f} "
                         f"% measured, {r.saving_vs_all_new_pct_simulated:.1f} % simulated")
    daemon = table.dropna(subset=["daemon_cpu_s"])
    if len(daemon):
        lines.append("")
        for r in daemon.itertuples(index=False):
            lines.append(f"- daemon overhead ({r.policy}): {r.daemon_cpu_s:.1f} CPU s over the "
                         f"run, peak RSS {r.daemon_rss_mb:.0f} MB")
    lines += [
        "",
        "## Where the numbers come from",
        "- measured: end-to-end p99 from Prometheus (the lab's emulated services), tasks per "
        "generation from Docker Swarm, CPU per service from the emulator's process CPU seconds",
        f"- old and new are EMULATED on one {os.cpu_count() or 1}-CPU machine by `ecoscale lab`: "
        + "; ".join(f"{g}: {spec['speed']}, {spec['capacity']}" for g, spec in emulation.items()),
        "- carbon: the hardware model (profiles/hardware/cloudlab.yaml: embodied carbon per "
        "slot, MODELLED power curve x measured CPU utilisation, PUE) x the compressed grid "
        "intensity; no power was measured (no RAPL)",
        f"- {UTILISATION_RULE}: {utilisation_sources_text(steps)}",
        *(f"- {policy}: {stolen_text(share)}" for policy, share in (stolen or {}).items()),
        f"- simulated: `ecoscale replay` with profile '{profile.name}' ({profile.kind}) on the "
        "same compressed traces and steps, with the daemon's decision function on the live "
        "run's tables and control settings (holds, cooldowns and the rate limit span the "
        "same numbers of periods); the tables were planned with at most "
        + (", ".join(f"{n} replica(s) on {g}" for g, n in profile.replica_limits.items())
           or "floor(C) replicas on older generations")
        + " (the profile's replica_limits)",
        f"- carbon factors, traces: {scenario.provenance.get('carbon_trace', '')}",
        "",
        "Files: comparison.csv, measured_steps.csv, lab_evaluation.png, lab_carbon.png, "
        "table-*.yaml, daemon-*.log",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

