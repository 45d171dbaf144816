"""Build a replay Scenario from shipped or user files: app, profile, hardware, two traces."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ecoscale.adapters.files import (
    DEFAULT_PROFILE,
    load_hardware,
    load_profile,
    load_topology,
    profile_path,
)
from ecoscale.adapters.tracefiles import catalog, load_carbon_trace, load_load_trace
from ecoscale.errors import InputError, UsageError
from ecoscale.model.app import AppModel, default_slo
from ecoscale.model.trace import (
    check_window,
    hours_text,
    parse_duration_s,
    span_text,
    trace_offset_s,
)
from ecoscale.paths import shown
from ecoscale.replay.engine import Scenario

MIN_STEP_S = 1.0
"""Shortest replay step (s): the traces are per minute or per hour."""
MAX_STEPS = 1_000_000
"""Most replay steps (a year at 1-min steps is 525,600)."""


@dataclass(frozen=True)
class ReplayOptions:
    app: str = "socialNetwork"
    profile: str = DEFAULT_PROFILE
    hardware: str = "cloudlab"
    load_trace: str = "worldcup98"
    load_column: str | None = None
    carbon_trace: str = "CISO"
    carbon_column: str | None = None
    carbon_factors: str | None = None
    timezone: str | None = None
    peak_qps: float | None = None
    step: str = "1m"
    start: str | None = None
    duration: str | None = None
    carbon_start: str | None = None
    slo_ms: float | None = None


def _default_window(trace_name: str) -> tuple[str | None, str | None]:
    entry = catalog().get("load", {}).get(trace_name, {})
    window = entry.get("default_window") or {}
    return window.get("start"), window.get("duration")


def build_scenario(options: ReplayOptions) -> Scenario:
    step_s = parse_duration_s(options.step, "--step")
    if not step_s >= MIN_STEP_S:
        raise UsageError(f"--step: '{options.step}' is shorter than {MIN_STEP_S:g} s; the "
                         "traces have one value per minute or hour, e.g. --step 1m")
    topology = load_topology(options.app)
    profile = load_profile(options.app, options.profile)
    hardware = load_hardware(options.hardware)
    model = AppModel(topology, profile, hardware)

    load_raw = load_load_trace(options.load_trace, options.load_column, options.timezone)
    default_start, default_duration = _default_window(options.load_trace)
    start = options.start or default_start or "0s"
    duration = options.duration or default_duration
    load_start_s = trace_offset_s(load_raw, start, "--start")
    duration_s = parse_duration_s(duration, "--duration") if duration else None
    longest = duration_s if duration_s is not None else load_raw.duration_s
    if longest / step_s > MAX_STEPS:
        raise UsageError(f"--step {options.step} over {longest / 86400:g} days makes "
                         f"{longest / step_s:,.0f} steps, more than {MAX_STEPS:,}; use a "
                         "longer --step or a shorter --duration")
    check_window(load_raw, load_start_s, duration_s, "load")
    load_window = load_raw.window(load_start_s, duration_s)
    load = load_window.resample(step_s, "linear")

    carbon_raw = load_carbon_trace(options.carbon_trace, options.carbon_factors,
                                   options.carbon_column, options.timezone)
    carbon_start_s = trace_offset_s(carbon_raw, options.carbon_start or "0s", "--carbon-start")
    check_window(carbon_raw, carbon_start_s, load_window.duration_s, "carbon")
    carbon = carbon_raw.window(carbon_start_s, load_window.duration_s).resample(step_s, "hold")

    steps = min(len(load.values), len(carbon.values))
    if steps < 2:
        raise InputError("replay", "fewer than two steps to replay; lengthen --duration or "
                                   "shorten --step")

    slo_ms, slo_load, slo_how = default_slo(model, options.slo_ms)
    peak = options.peak_qps if options.peak_qps is not None else slo_load
    if not peak > 0:
        raise InputError("--peak-qps", f"must be > 0, got {peak:g}")
    load_scaled = load.scaled_to_peak(peak)
    span_s = load_window.duration_s
    provenance = {
        "app": f"{topology.app} (topology: {topology.source})",
        "profile": f"{profile.name} ({profile.kind}) from "
                   f"{shown(profile_path(options.app, options.profile))}",
        "profile_statement": str(profile.provenance.get("statement", "")),
        "hardware": f"{hardware.name} from {shown(hardware.source)}",
        "power_source": "modelled: idle + (peak - idle) x CPU utilisation per slot, from the "
                        "hardware file (no power measurement in a replay)",
        "pue": hardware.pue,
        "carbon_trace": f"{carbon_raw.source}; {'; '.join(carbon_raw.notes)}; window "
                        f"{span_text(carbon_raw, carbon_start_s, carbon_start_s + span_s)}",
        "load_trace": f"{load_raw.source}; window "
                      f"{span_text(load_raw, load_start_s, load_start_s + span_s)} "
                      f"({hours_text(load_window.duration_s)}); normalised to its peak and "
                      f"scaled to {peak:.0f} req/s",
        "step": f"{step_s:g} s ({steps} steps)",
        "slo": f"{slo_ms:.2f} ms end-to-end p99, {slo_how}",
        "latency_model": "per-service p99 interpolated from the profile; end-to-end = sum of "
                         "stage maxima, slowest endpoint with >= 1 % of requests",
    }
    start_time = None
    if load_raw.start is not None:
        start_time = (pd.Timestamp(load_raw.start) + pd.Timedelta(seconds=load_start_s)).isoformat()
    carbon_start_time = None
    if carbon_raw.start is not None:
        carbon_start_time = (pd.Timestamp(carbon_raw.start)
                             + pd.Timedelta(seconds=carbon_start_s)).isoformat()
    return Scenario(
        model=model,
        load_qps=np.asarray(load_scaled.values[:steps], dtype=float),
        ci_g_per_kwh=np.asarray(carbon.values[:steps], dtype=float),
        step_s=step_s,
        slo_ms=slo_ms,
        start=start_time,
        provenance=provenance,
        load_trace=load_raw.name,
        load_offset_s=load_start_s,
        carbon_trace=carbon_raw.name,
        carbon_start=carbon_start_time,
    )
