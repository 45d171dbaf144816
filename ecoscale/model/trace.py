"""Traces: a value per fixed time step, read by elapsed time (vessim's ``at(elapsed)``).

A value covers the interval [i * step_s, (i + 1) * step_s) from the trace's start. A policy
reads a trace with ``at(elapsed_s)`` and cannot tell it from a live feed.

Pure: no file I/O (adapters/tracefiles.py reads the files).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ecoscale.errors import InputError


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
