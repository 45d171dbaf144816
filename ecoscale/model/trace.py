"""Traces: a value per fixed time step, read by elapsed time (vessim's ``at(elapsed)``).

A value covers the interval [i * step_s, (i + 1) * step_s) from the trace's start. A policy
reads a trace with ``at(elapsed_s)`` and cannot tell it from a live feed.

Pure: no file I/O (adapters/tracefiles.py reads the files).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np

from ecoscale.errors import EcoscaleError, InputError, UsageError


@dataclass(frozen=True)
class Trace:
    name: str
    values: np.ndarray
    step_s: float
    unit: str
    start: str | None = None
    """ISO time (UTC) of the first value, when the source has timestamps."""
    source: str = ""
    notes: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float:
        return len(self.values) * self.step_s

    def at(self, elapsed_s: float | np.ndarray) -> np.ndarray:
        """Value in force at ``elapsed_s`` seconds after the start (clamped to the last)."""
        index = np.floor(np.asarray(elapsed_s, dtype=float) / self.step_s).astype(int)
        return self.values[np.clip(index, 0, len(self.values) - 1)]

    def window(self, start_s: float, duration_s: float | None) -> Trace:
        """The part of the trace from ``start_s`` lasting ``duration_s`` (None: to the end)."""
        first = int(round(start_s / self.step_s))
        count = len(self.values) - first if duration_s is None else int(
            np.ceil(duration_s / self.step_s)
        )
        if first < 0 or count <= 0 or first + count > len(self.values):
            raise InputError(
                self.name,
                f"window {start_s:g} s + {duration_s if duration_s is not None else 0:g} s "
                f"lies outside the trace (0 .. {self.duration_s:g} s); "
                "choose a start and duration inside it",
            )
        return replace(self, values=self.values[first:first + count], start=self.start,
                       notes=(*self.notes, f"window from +{start_s:g} s, {count} steps"))

    def resample(self, step_s: float, how: str) -> Trace:
        """Same span at a new step. ``how``: 'linear' or 'hold' to refine, 'mean' to coarsen."""
        if step_s <= 0:
            raise InputError(self.name, f"step must be > 0 s, got {step_s:g}")
        if np.isclose(step_s, self.step_s):
            return self
        count = int(np.floor(self.duration_s / step_s))
        if count < 1:
            raise InputError(self.name, f"step {step_s:g} s is longer than the trace")
        new_t = np.arange(count) * step_s
        if step_s > self.step_s or how == "mean":
            cumulative = np.concatenate([[0.0], np.cumsum(self.values)])
            edges = np.floor(np.append(new_t, count * step_s) / self.step_s + 1e-9).astype(int)
            lo = np.clip(edges[:-1], 0, len(self.values) - 1)
            hi = np.clip(np.maximum(edges[1:], lo + 1), 1, len(self.values))
            values = (cumulative[hi] - cumulative[lo]) / (hi - lo)
        elif how == "linear":
            values = np.interp(new_t, np.arange(len(self.values)) * self.step_s, self.values)
        elif how == "hold":
            values = self.at(new_t)
        else:
            raise ValueError(f"unknown resampling '{how}'")
        return replace(self, values=np.asarray(values, dtype=float), step_s=float(step_s))

    def scaled_to_peak(self, peak: float) -> Trace:
        """Normalised to its own peak, then scaled so that its peak is ``peak``."""
        top = float(np.max(self.values))
        if not top > 0:
            raise InputError(self.name, "the trace is zero everywhere; it cannot be scaled")
        return replace(self, values=self.values / top * peak,
                       notes=(*self.notes, f"normalised to its peak, scaled to {peak:g}"))


DURATION_UNITS_S = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400,
                    "w": 604800}
DURATION_HINT = ("a number with a unit: 500ms, 30s, 5m, 24h, 7d, 1w (a bare number is in "
                 "seconds)")
MAX_DURATION_S = 100 * 365 * 86400.0


def parse_duration_s(text: str, what: str = "duration") -> float:
    """'500ms', '90s', '1m', '24h', '7d', '1w' (or a plain number of seconds) -> seconds.

    ``what`` names where the text came from: a flag (``--step``: a UsageError, exit 2) or a
    file's field (``carbon.start``: an InputError, exit 1)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|min|m|h|d|w)?\s*", str(text))
    problem = None
    if not match:
        problem = f"'{text}' is not a duration; write {DURATION_HINT}"
    elif not float(match.group(1)) * DURATION_UNITS_S[match.group(2) or "s"] <= MAX_DURATION_S:
        problem = f"'{text}' is longer than 100 years"
    if problem and what.startswith("-"):
        raise UsageError(f"{what}: {problem}")
    if problem or match is None:
        raise InputError(what, problem or "")
    return float(match.group(1)) * DURATION_UNITS_S[match.group(2) or "s"]


def _utc(text: str) -> datetime:
    """An ISO time; a time without a zone is UTC. ValueError when it is not one."""
    moment = datetime.fromisoformat(text.strip())
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None
            else moment.astimezone(UTC))


def when(trace: Trace, offset_s: float, with_year: bool = True) -> str:
    """A moment of a trace for people: '1998-06-30 00:00' (UTC) when the trace has
    timestamps, else '+24 h' from its start."""
    if trace.start is None:
        return f"+{offset_s / 3600:g} h"
    moment = _utc(trace.start) + timedelta(seconds=offset_s)
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


def trace_offset_s(trace: Trace, start: str, what: str) -> float:
    """An offset ('24h') or an ISO time inside a timestamped trace -> seconds from its start.

    ``what`` names the flag (UsageError) or the file's field (InputError) it came from."""
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
        wanted = _utc(str(start))
    except ValueError:
        message = (f"'{start}' is neither an offset (24h) nor an ISO time (1998-07-01T06:00); "
                   f"{trace.name} covers {span_text(trace, 0, trace.duration_s)}")
        raise (fail(f"{what}: {message}") if fail else InputError(what, message)) from None
    return (wanted - _utc(trace.start)).total_seconds()
