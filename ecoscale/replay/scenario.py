"""Build a replay Scenario from shipped or user files: app, profile, hardware, two traces."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ecoscale.adapters.files import load_hardware, load_profile, load_topology, profile_path
from ecoscale.adapters.tracefiles import catalog, load_carbon_trace, load_load_trace
from ecoscale.errors import InputError, UsageError
from ecoscale.model.app import AppModel
from ecoscale.model.placement import Placement
from ecoscale.model.trace import Trace
from ecoscale.paths import shown
from ecoscale.replay.engine import Scenario

_UNITS_S = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


MIN_STEP_S = 1.0
"""Shortest replay step (s): the traces are per minute or per hour."""
MAX_STEPS = 1_000_000
"""Most replay steps (a year at 1-min steps is 525,600)."""
MAX_DURATION_S = 100 * 365 * 86400.0


def parse_duration_s(text: str, what: str = "duration") -> float:
    """'90s', '1m', '24h', '7d', '1w' (or a plain number of seconds) -> seconds.

    A bad flag's text (``what`` starting with ``--``) is a UsageError, anything else an
    InputError."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|min|m|h|d|w)?\s*", str(text))
    problem = None
    if not match:
        problem = f"'{text}' is not a duration; write e.g. 60s, 1m, 24h, 7d"
    elif not float(match.group(1)) * _UNITS_S[match.group(2) or "s"] <= MAX_DURATION_S:
        problem = f"'{text}' is longer than 100 years"
    if problem and what.startswith("--"):
        raise UsageError(f"{what}: {problem}")
    if problem or match is None:
        raise InputError(what, problem or "")
    return float(match.group(1)) * _UNITS_S[match.group(2) or "s"]


@dataclass(frozen=True)
class ReplayOptions:
    app: str = "socialNetwork"
    profile: str = "default"
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


def trace_offset_s(trace: Trace, start: str, what: str) -> float:
    """An offset ('24h') or an ISO time inside a timestamped trace -> seconds from its start."""
    try:
        return parse_duration_s(start, what)
    except (InputError, UsageError):
        pass
    if trace.start is None:
        raise InputError(what, f"'{start}' is a time, but {trace.name} has no timestamps; give "
                               "an offset such as 24h")
    try:
        wanted = pd.Timestamp(start)
        if wanted is pd.NaT:
            raise ValueError(start)
    except (ValueError, TypeError, OverflowError):
        problem = f"'{start}' is neither an offset (24h) nor an ISO time"
        if what.startswith("--"):
            raise UsageError(f"{what}: {problem}") from None
        raise InputError(what, problem) from None
    if wanted.tzinfo is None:
        wanted = wanted.tz_localize("UTC")
    return (wanted - pd.Timestamp(trace.start)).total_seconds()


def _default_window(trace_name: str) -> tuple[str | None, str | None]:
    entry = catalog().get("load", {}).get(trace_name, {})
    window = entry.get("default_window") or {}
    return window.get("start"), window.get("duration")


def default_slo(model: AppModel, slo_ms: float | None = None) -> tuple[float, float, str]:
    """(SLO ms, SLO load req/s, how it was set): the user's, the profile's, or the papers'
    definition: p99 of the all-new deployment at 75 % of its saturation load."""
    profile = model.profile
    newest = model.hardware.newest
    all_new = Placement.uniform(model.services, newest)
    saturation = model.saturation_qps(all_new)
    slo_load = profile.slo_load_qps or profile.slo_load_fraction * saturation
    if slo_ms is not None:
        if not slo_ms > 0:
            raise InputError("--slo-ms", f"must be > 0, got {slo_ms:g}")
        return float(slo_ms), slo_load, "given by the user (--slo-ms)"
    if profile.slo_ms is not None:
        return profile.slo_ms, slo_load, (f"from the profile {profile.name} (set at "
                                          f"{slo_load:.0f} req/s)")
    return (float(model.e2e_p99(all_new, slo_load)), slo_load,
            f"p99 of the all-{newest} deployment at {profile.slo_load_fraction:.0%} of its "
            f"saturation load ({slo_load:.0f} of {saturation:.0f} req/s)")


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
    load_window = load_raw.window(load_start_s, duration_s)
    load = load_window.resample(step_s, "linear")

    carbon_raw = load_carbon_trace(options.carbon_trace, options.carbon_factors,
                                   options.carbon_column, options.timezone)
    carbon_start_s = trace_offset_s(carbon_raw, options.carbon_start or "0s", "--carbon-start")
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
    provenance = {
        "app": f"{topology.app} (topology: {topology.source})",
        "profile": f"{profile.name} ({profile.kind}) from "
                   f"{shown(profile_path(options.app, options.profile))}",
        "profile_statement": str(profile.provenance.get("statement", "")),
        "hardware": f"{hardware.name} from {shown(hardware.source)}",
        "power_source": "modelled: idle + (peak - idle) x CPU utilisation per slot, from the "
                        "hardware file (no power measurement in a replay)",
        "pue": hardware.pue,
        "carbon_trace": f"{carbon_raw.source}; {'; '.join(carbon_raw.notes)}; window from "
                        f"+{carbon_start_s / 3600:g} h",
        "load_trace": f"{load_raw.source}; window from +{load_start_s / 3600:g} h for "
                      f"{load_window.duration_s / 3600:g} h; normalised to its peak and "
                      f"scaled to {peak:.0f} req/s",
        "step": f"{step_s:g} s ({steps} steps)",
        "slo": f"{slo_ms:.2f} ms end-to-end p99, {slo_how}",
        "latency_model": "per-service p99 interpolated from the profile; end-to-end = sum of "
                         "stage maxima, slowest endpoint with >= 1 % of requests",
    }
    start_time = None
    if load_raw.start is not None:
        start_time = (pd.Timestamp(load_raw.start) + pd.Timedelta(seconds=load_start_s)).isoformat()
    return Scenario(
        model=model,
        load_qps=np.asarray(load_scaled.values[:steps], dtype=float),
        carbon_g_per_kwh=np.asarray(carbon.values[:steps], dtype=float),
        step_s=step_s,
        slo_ms=slo_ms,
        start=start_time,
        provenance=provenance,
    )
