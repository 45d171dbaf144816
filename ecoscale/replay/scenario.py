"""Build a replay Scenario from shipped or user files: app, profile, hardware, two traces."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
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
from ecoscale.errors import EcoscaleError, InputError, UsageError
from ecoscale.model.app import AppModel
from ecoscale.model.placement import Placement
from ecoscale.model.trace import Trace
from ecoscale.paths import shown
from ecoscale.replay.engine import Scenario

_UNITS_S = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
DURATION_HINT = ("a number with a unit: 500ms, 30s, 5m, 24h, 7d, 1w (a bare number is in "
                 "seconds)")


MIN_STEP_S = 1.0
"""Shortest replay step (s): the traces are per minute or per hour."""
MAX_STEPS = 1_000_000
"""Most replay steps (a year at 1-min steps is 525,600)."""
MAX_DURATION_S = 100 * 365 * 86400.0


def parse_duration_s(text: str, what: str = "duration") -> float:
    """'500ms', '90s', '1m', '24h', '7d', '1w' (or a plain number of seconds) -> seconds.

    ``what`` names where the text came from: a flag (``--step``: a UsageError, exit 2) or a
    file's field (``carbon.start``: an InputError, exit 1)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|min|m|h|d|w)?\s*", str(text))
    problem = None
    if not match:
        problem = f"'{text}' is not a duration; write {DURATION_HINT}"
    elif not float(match.group(1)) * _UNITS_S[match.group(2) or "s"] <= MAX_DURATION_S:
        problem = f"'{text}' is longer than 100 years"
    if problem and what.startswith("-"):
        raise UsageError(f"{what}: {problem}")
    if problem or match is None:
        raise InputError(what, problem or "")
    return float(match.group(1)) * _UNITS_S[match.group(2) or "s"]


def duration_flag(name: str, positive: bool = True,
                  minimum_s: float | None = None) -> Callable[[str], float]:
    """An argparse ``type=`` for a duration flag: '30s', '5m', '1h' or seconds -> seconds,
    > 0 when ``positive``, at least ``minimum_s`` when given."""
    def parse(text: str) -> float:
        try:
            seconds = parse_duration_s(text, name)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{name}: ")) from None
        if positive and not seconds > 0:
            raise argparse.ArgumentTypeError(f"must be > 0 s, got '{text}'")
        if minimum_s is not None and not seconds >= minimum_s:
            raise argparse.ArgumentTypeError(f"must be >= {minimum_s:g} s, got '{text}'")
        return seconds

    parse.__name__ = "duration"
    return parse


def when(trace: Trace, offset_s: float, with_year: bool = True) -> str:
    """A moment of a trace for people: '1998-06-30 00:00' (UTC) when the trace has
    timestamps, else '+24 h' from its start."""
    if trace.start is None:
        return f"+{offset_s / 3600:g} h"
    moment = pd.Timestamp(trace.start) + pd.Timedelta(seconds=offset_s)
    if moment.tzinfo is not None:
        moment = moment.tz_convert("UTC")
    return moment.strftime("%Y-%m-%d %H:%M" if with_year else "%m-%d %H:%M")


def span_text(trace: Trace, start_s: float, end_s: float) -> str:
    """'1998-06-30 00:00 .. 07-02 23:59 UTC': from ``start_s`` to the last step before
    ``end_s`` (seconds from the trace's start)."""
    last_s = max(start_s, end_s - trace.step_s)
    if trace.start is None:
        return f"{when(trace, start_s)} .. {when(trace, last_s)} from its start"
    first = when(trace, start_s)
    last = when(trace, last_s, with_year=first[:4] != when(trace, last_s)[:4])
    return f"{first} .. {last} UTC"


def hours_text(seconds: float) -> str:
    """A duration for people: '45 min', '24 h', '7 d'."""
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    if seconds < 2 * 86400 or seconds % 86400:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 86400:g} d"


def check_window(trace: Trace, start_s: float, duration_s: float | None, what: str,
                 flags: str = "--start and --duration") -> None:
    """InputError (exit 1) in dates and hours when the window leaves the trace; ``flags``
    names what sets the window."""
    end_s = trace.duration_s if duration_s is None else start_s + duration_s
    if start_s < 0 or end_s > trace.duration_s + 1e-6 or end_s <= start_s:
        asked = (f"from {when(trace, start_s)}" if duration_s is None else
                 f"{span_text(trace, start_s, max(end_s, start_s + trace.step_s))} "
                 f"({hours_text(max(end_s - start_s, 0))})")
        raise InputError(f"{what} trace {trace.name}",
                         f"the window {asked} lies "
                         f"outside the trace, which covers "
                         f"{span_text(trace, 0, trace.duration_s)}; choose {flags} inside "
                         "it")


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


def trace_offset_s(trace: Trace, start: str, what: str) -> float:
    """An offset ('24h') or an ISO time inside a timestamped trace -> seconds from its start."""
    try:
        return parse_duration_s(start, what)
    except EcoscaleError:
        pass
    fail = UsageError if what.startswith("-") else None
    if trace.start is None:
        message = (f"'{start}' is a time, but {trace.name} has no timestamps; give an offset "
                   "such as 24h")
        raise fail(f"{what}: {message}") if fail else InputError(what, message)
    try:
        wanted = pd.Timestamp(start)
        if wanted is pd.NaT:
            raise ValueError(start)
    except (ValueError, TypeError, OverflowError):
        message = (f"'{start}' is neither an offset (24h) nor an ISO time (1998-07-01T06:00); "
                   f"{trace.name} covers {span_text(trace, 0, trace.duration_s)}")
        raise (fail(f"{what}: {message}") if fail else InputError(what, message)) from None
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
        carbon_g_per_kwh=np.asarray(carbon.values[:steps], dtype=float),
        step_s=step_s,
        slo_ms=slo_ms,
        start=start_time,
        provenance=provenance,
        load_trace=load_raw.name,
        load_offset_s=load_start_s,
        carbon_trace=carbon_raw.name,
        carbon_start=carbon_start_time,
    )
