"""Reading load and carbon traces from CSV files, strictly, with messages that say how to fix.

A trace is named from traces/catalog.yaml (e.g. ``worldcup98``, ``CISO``) or given as a CSV
path. Line numbers in messages are the file's own (the header is line 1).
"""

from __future__ import annotations

import io
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ecoscale.adapters.files import MAX_CARBON_G_PER_KWH, read_text, read_yaml
from ecoscale.errors import InputError
from ecoscale.model.carbon import (
    IPCC_AR5_FACTORS_G_PER_KWH,
    IPCC_AR5_FACTORS_NAME,
    intensity_from_fuel_mix,
)
from ecoscale.model.trace import Trace
from ecoscale.paths import traces_dir
from ecoscale.values import number_at

TIME_COLUMN_NAMES = ("timestamp", "time", "period", "datetime", "date")
INTENSITY_COLUMN_NAMES = ("carbon_intensity_g_per_kwh", "carbon_intensity", "ci")
MAX_CARBON_GAP_STEPS = 3
_OFFSET_PATTERN = r"\d:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|[+-]\d{2}:?\d{2})$"
"""A time that ends with a UTC offset (Z, +02:00, -0800) is aware."""


@dataclass(frozen=True)
class TraceSpec:
    """How to read one CSV: which column holds time, which the value, and in what zone."""

    path: Path
    name: str
    time_column: str | None = None
    value_column: str | None = None
    timezone: str = "UTC"
    offset_unit_s: float | None = None
    description: str = ""


def catalog() -> Mapping[str, Mapping[str, Mapping[str, object]]]:
    return read_yaml(traces_dir() / "catalog.yaml")


def trace_spec(kind: str, name_or_path: str, value_column: str | None = None,
               timezone: str | None = None) -> TraceSpec:
    """Resolve a catalog name (kind: 'load' or 'carbon') or a CSV path into a TraceSpec."""
    entries = catalog().get(kind, {})
    if name_or_path in entries:
        entry = entries[name_or_path]
        return TraceSpec(
            path=traces_dir() / str(entry["file"]),
            name=name_or_path,
            time_column=(str(entry.get("time_column")) if entry.get("time_column") is not None
                         else None),
            value_column=value_column or entry.get("value_column"),
            timezone=timezone or str(entry.get("timezone", "UTC")),
            offset_unit_s=entry.get("offset_unit_s"),
            description=str(entry.get("description", "")),
        )
    path = Path(name_or_path)
    if not path.exists():
        known = ", ".join(entries)
        raise InputError(name_or_path, f"no such file and no shipped {kind} trace of that name "
                                       f"(shipped: {known})")
    return TraceSpec(path=path, name=path.name, value_column=value_column,
                     timezone=timezone or "UTC")


def _read_csv(spec: TraceSpec) -> pd.DataFrame:
    """The CSV as a frame: text checked first (size, compression, encoding), then the
    delimiter (a comma) and the row count."""
    where = str(spec.path)
    text = read_text(spec.path, "trace CSV")
    try:
        frame = pd.read_csv(io.StringIO(text))
    except pd.errors.EmptyDataError:
        raise InputError(where, "the file is empty; a trace needs a header line and "
                                "at least two rows") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputError(where, f"cannot read as CSV: {str(exc).strip()}; a trace is a "
                                "header line and rows of comma-separated values") from None
    if len(frame.columns) < 2:
        header = str(frame.columns[0]) if len(frame.columns) else ""
        other = next((name for mark, name in ((";", "semicolons"), ("\t", "tabs"),
                                              ("|", "bars")) if mark in header), None)
        if other:
            raise InputError(where, f"the columns are separated by {other}; the delimiter "
                                    "must be a comma (save the file as comma-separated CSV)")
        raise InputError(where, f"only one column ({header!r}); a trace needs a time "
                                "column and a value column separated by a comma")
    if len(frame) < 2:
        raise InputError(where, f"the file has {len(frame)} data rows (empty or "
                                "nearly); a trace needs at least two")
    return frame


def _time_column(frame: pd.DataFrame, spec: TraceSpec) -> str:
    if spec.time_column is not None:
        column = spec.time_column or frame.columns[0]
        if column not in frame.columns:
            raise InputError(str(spec.path), f"no time column '{column}' (columns: "
                                             f"{', '.join(map(str, frame.columns))})")
        return column
    for name in frame.columns:
        if str(name).strip().lower() in TIME_COLUMN_NAMES:
            return name
    return frame.columns[0]


def _parse_times(
    frame: pd.DataFrame, column: str, spec: TraceSpec
) -> tuple[np.ndarray, str | None]:
    """Seconds since the first row, and the first row's ISO time (UTC) when there is one."""
    raw = frame[column]
    where = str(spec.path)
    if spec.offset_unit_s is not None or pd.api.types.is_numeric_dtype(raw):
        unit = float(spec.offset_unit_s or 1.0)
        seconds = _numbers(frame, column, where) * unit
        bad = ~np.isfinite(seconds)
        if bad.any():
            line = int(np.argmax(bad)) + 2
            raise InputError(where, f"line {line}: time offset in column '{column}' is "
                                    "missing or not finite; fill it in or drop the line")
        return seconds - seconds[0], None
    try:
        zone = zoneinfo.ZoneInfo(spec.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InputError(where, f"time zone '{spec.timezone}' is unknown; use an IANA name such "
                                "as UTC or America/Los_Angeles") from None
    text = raw.astype(str).str.strip()
    aware = text.str.contains(_OFFSET_PATTERN, regex=True).to_numpy()
    if aware.any() and not aware.all():
        naive_line, aware_line = int(np.argmin(aware)) + 2, int(np.argmax(aware)) + 2
        raise InputError(where, f"mixed time zones in column '{column}': line {aware_line} "
                                f"('{text.iloc[aware_line - 2]}') has a UTC offset, line "
                                f"{naive_line} ('{text.iloc[naive_line - 2]}') has none; "
                                "write every time with its offset, or none (then --timezone "
                                "says the zone)")
    try:
        times = pd.to_datetime(raw, errors="coerce", utc=bool(aware.all()), format="mixed")
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(where, f"column '{column}': times cannot be read ({exc}); write "
                                "them as ISO 8601, e.g. 2022-01-01 00:00:00") from None
    if times.isna().any():
        line = int(np.argmax(times.isna().to_numpy())) + 2
        raise InputError(where, f"line {line}: '{raw.iloc[line - 2]}' in column '{column}' is "
                                "not a time; write times as ISO 8601, e.g. 2022-01-01 00:00:00")
    if getattr(times.dt, "tz", None) is None:
        times = times.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
        if times.isna().any():
            line = int(np.argmax(times.isna().to_numpy())) + 2
            raise InputError(where, f"line {line}: local time '{raw.iloc[line - 2]}' is "
                                    f"ambiguous or skipped in {spec.timezone} (a DST change); "
                                    "write times in UTC or with an offset")
    times = times.dt.tz_convert("UTC")
    seconds = (times - times.iloc[0]).dt.total_seconds().to_numpy()
    return seconds, times.iloc[0].isoformat()


def _regular_step(seconds: np.ndarray, where: str, column: str) -> float:
    steps = np.diff(seconds)
    bad = np.nonzero(steps <= 0)[0]
    if len(bad):
        line = int(bad[0]) + 3
        raise InputError(where, f"line {line}: time in column '{column}' is not after the "
                                "previous line's; sort the file by time and remove duplicates")
    values, counts = np.unique(np.round(steps, 6), return_counts=True)
    step = float(values[np.argmax(counts)])  # the most common step; ties: the shortest
    irregular = np.nonzero(~np.isclose(steps, step, rtol=1e-6))[0]
    if len(irregular):
        line = int(irregular[0]) + 3
        raise InputError(where, f"line {line}: time jumps by {steps[irregular[0]]:g} s but the "
                                f"trace's step is {step:g} s; add the missing lines so that the "
                                "step is regular")
    return step


def _value_column(frame: pd.DataFrame, spec: TraceSpec, time_column: str, kind: str) -> str:
    if spec.value_column:
        if spec.value_column not in frame.columns:
            raise InputError(str(spec.path), f"no column '{spec.value_column}' (columns: "
                                             f"{', '.join(map(str, frame.columns))}); pass "
                                             f"--{kind}-column NAME")
        return spec.value_column
    others = [c for c in frame.columns if c != time_column]
    if len(others) != 1:
        raise InputError(str(spec.path), f"cannot tell which column holds the {kind} value "
                                         f"(columns: {', '.join(map(str, others))}); pass "
                                         f"--{kind}-column NAME")
    return others[0]


def _numbers(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    """A column as a fresh, writable float array: empty cells NaN; text and +-inf refused."""
    values = pd.to_numeric(frame[column], errors="coerce")
    text_bad = values.isna() & frame[column].notna() & (
        frame[column].astype(str).str.strip().str.lower() != "nan")
    if text_bad.any():
        line = int(np.argmax(text_bad.to_numpy())) + 2
        raise InputError(where, f"line {line}: '{frame[column].iloc[line - 2]}' in column "
                                f"'{column}' is not a number")
    array = np.array(values.to_numpy(dtype=float), dtype=float, copy=True)
    infinite = np.isinf(array)
    if infinite.any():
        line = int(np.argmax(infinite)) + 2
        raise InputError(where, f"line {line}: '{frame[column].iloc[line - 2]}' in column "
                                f"'{column}' is not a finite number")
    return array


def load_load_trace(name_or_path: str, value_column: str | None = None,
                    timezone: str | None = None) -> Trace:
    """A request-rate trace (any unit; it is normalised and scaled later). Strict: no gaps."""
    spec = trace_spec("load", name_or_path, value_column, timezone)
    where = str(spec.path)
    frame = _read_csv(spec)
    time_column = _time_column(frame, spec)
    column = _value_column(frame, spec, time_column, "load")
    seconds, start = _parse_times(frame, time_column, spec)
    step = _regular_step(seconds, where, time_column)
    values = _numbers(frame, column, where)
    problems = []
    missing = np.nonzero(np.isnan(values))[0]
    if len(missing):
        lines = ", ".join(str(i + 2) for i in missing[:5])
        problems.append(f"line {lines}: '{column}' is missing or NaN; fill in the value or "
                        "drop the line (load traces are never filled in silently)")
    negative = np.nonzero(values < 0)[0]
    if len(negative):
        lines = ", ".join(str(i + 2) for i in negative[:5])
        problems.append(f"line {lines}: '{column}' is negative; a request rate must be >= 0")
    if not problems and not np.max(values) > 0:
        problems.append(f"'{column}' is 0 on every line; a load trace needs some load (it is "
                        "scaled so that its peak is --peak-qps)")
    if problems:
        raise InputError(where, problems)
    return Trace(name=spec.name, values=values, step_s=step, unit=f"{column} per step",
                 start=start, source=f"{spec.path.name}: {spec.description}".rstrip(": "))


def load_carbon_factors(path: str | None) -> tuple[dict[str, float], str]:
    """Emission factors (fuel -> gCO2e/kWh) and the set's name; None gives IPCC AR5."""
    if path is None:
        return dict(IPCC_AR5_FACTORS_G_PER_KWH), IPCC_AR5_FACTORS_NAME
    data = read_yaml(Path(path))
    factors = data.get("factors_g_per_kwh") if isinstance(data, Mapping) else None
    if not isinstance(factors, Mapping) or not factors:
        raise InputError(path, "expected 'factors_g_per_kwh: {FUEL: gCO2e/kWh, ...}' and "
                               "optionally 'name'")
    bad: list[str] = []
    checked = {str(k): number_at(factors, k, bad, where="factors_g_per_kwh.", minimum=0,
                                 maximum=MAX_CARBON_G_PER_KWH) for k in factors}
    if bad:
        raise InputError(path, bad)
    return checked, str(data.get("name", path))


def load_carbon_trace(name_or_path: str, factors_path: str | None = None,
                      value_column: str | None = None, timezone: str | None = None) -> Trace:
    """Grid carbon intensity (gCO2e/kWh) from an hourly fuel mix or a ready intensity column.

    Rows with no data at all are filled by linear interpolation when the gap is at most
    MAX_CARBON_GAP_STEPS long; each filled row is named in the trace's notes.
    """
    spec = trace_spec("carbon", name_or_path, value_column, timezone)
    where = str(spec.path)
    frame = _read_csv(spec)
    time_column = _time_column(frame, spec)
    seconds, start = _parse_times(frame, time_column, spec)
    step = _regular_step(seconds, where, time_column)
    factors, factor_name = load_carbon_factors(factors_path)
    ready = spec.value_column or next(
        (c for c in frame.columns if str(c).lower() in INTENSITY_COLUMN_NAMES), None
    )
    if ready is not None:
        if ready not in frame.columns:
            raise InputError(where, f"no column '{ready}' (columns: "
                                    f"{', '.join(map(str, frame.columns))})")
        values = _numbers(frame, ready, where)
        method = f"column '{ready}' (gCO2e/kWh, as given)"
    else:
        fuels = [c for c in frame.columns if c != time_column]
        unknown = [f for f in fuels if f not in factors]
        if unknown:
            raise InputError(where, f"columns {', '.join(unknown)} are neither a known fuel "
                                    f"({', '.join(factors)}) nor an intensity column "
                                    f"({', '.join(INTENSITY_COLUMN_NAMES)}); add their factors "
                                    "with --carbon-factors or name the intensity column")
        mix = {f: _numbers(frame, f, where) for f in fuels}
        empty_rows = np.all(np.isnan(np.vstack(list(mix.values()))), axis=0)
        partial = ~empty_rows & np.any(np.isnan(np.vstack(list(mix.values()))), axis=0)
        mix = {f: np.nan_to_num(v, nan=0.0) for f, v in mix.items()}
        values = intensity_from_fuel_mix(mix, factors)
        values[empty_rows] = np.nan
        if partial.any():
            line = int(np.argmax(partial)) + 2
            values_note = f"line {line} and {int(partial.sum()) - 1} more: missing fuels as 0 MWh"
        else:
            values_note = ""
        method = f"fuel mix x {factor_name}"
    notes = [f"intensity from {method}"]
    if ready is None and values_note:
        notes.append(values_note)
    notes.extend(_fill_gaps(values, where, spec, frame, time_column))
    negative = np.nonzero(values < 0)[0]
    if len(negative):
        raise InputError(where, f"line {negative[0] + 2}: carbon intensity is negative; it "
                                "must be >= 0 gCO2e/kWh")
    too_high = np.nonzero(values > MAX_CARBON_G_PER_KWH)[0]
    if len(too_high):
        raise InputError(where, f"line {too_high[0] + 2}: carbon intensity "
                                f"{values[too_high[0]]:g} gCO2e/kWh is above "
                                f"{MAX_CARBON_G_PER_KWH:g}, more than any grid emits (lignite "
                                "~1,200); check the unit (g/kWh, not g/MWh) or the row")
    return Trace(name=spec.name, values=values, step_s=step, unit="gCO2e/kWh", start=start,
                 source=f"{spec.path.name}: {spec.description}".rstrip(": "),
                 notes=tuple(notes))


def _fill_gaps(values: np.ndarray, where: str, spec: TraceSpec, frame: pd.DataFrame,
               time_column: str) -> list[str]:
    """Interpolate runs of NaN no longer than MAX_CARBON_GAP_STEPS in place; reject longer."""
    missing = np.isnan(values)
    if not missing.any():
        return []
    if missing.all():
        raise InputError(where, "no row has data")
    index = np.arange(len(values))
    runs = np.split(index[missing], np.nonzero(np.diff(index[missing]) > 1)[0] + 1)
    for run in runs:
        if len(run) > MAX_CARBON_GAP_STEPS:
            raise InputError(where, f"lines {run[0] + 2}..{run[-1] + 2}: {len(run)} rows in a row "
                                    f"have no data (at most {MAX_CARBON_GAP_STEPS} are filled "
                                    "in); fill them from another source or cut the trace")
    values[missing] = np.interp(index[missing], index[~missing], values[~missing])
    filled = ", ".join(f"{frame[time_column].iloc[i]} (line {i + 2})" for i in index[missing])
    return [f"{int(missing.sum())} rows without data filled by linear interpolation: {filled}"]
