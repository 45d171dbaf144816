"""The profiler's raw measurements (CSV, appended point by point) and resume support.

One row per (experiment, offered load, service), plus a row with service ``__e2e__`` for the
end-to-end figures of the point. A point is complete when its ``__e2e__`` row is written
(it is written last), so a rerun skips exactly the points that finished.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

E2E = "__e2e__"
COLUMNS = [
    "experiment", "offered_qps", "service", "generation", "replicas", "achieved_qps",
    "errors", "p50_ms", "p95_ms", "p99_ms", "client_p50_ms", "client_p95_ms", "client_p99_ms",
    "cpu_utilisation", "window_start", "window_end", "warmup_s",
]
WINDOW_COLUMNS = ("window_start", "window_end")
"""Unix times (s) of a point's measured window, written to the millisecond: at the six
significant digits of the measured figures a time of 2026 rounds to 10,000 s."""


@dataclass(frozen=True)
class Row:
    experiment: str
    offered_qps: float
    service: str
    generation: str
    replicas: int
    achieved_qps: float
    errors: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    client_p50_ms: float = math.nan
    client_p95_ms: float = math.nan
    client_p99_ms: float = math.nan
    cpu_utilisation: float = math.nan
    window_start: float = 0.0
    window_end: float = 0.0
    warmup_s: float = 0.0

    def as_csv(self) -> list[str]:
        out = []
        for name in COLUMNS:
            value = getattr(self, name)
            if not isinstance(value, float):
                out.append(str(value))
            else:
                out.append(f"{value:.3f}" if name in WINDOW_COLUMNS else f"{value:.6g}")
        return out


def append_rows(path: Path, rows: Iterable[Row]) -> None:
    """Append rows (header first if the file is new), flushed to disk before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(row.as_csv())
        handle.flush()


def read_rows(path: Path) -> list[Row]:
    if not path.exists():
        return []
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for raw in csv.DictReader(handle):
            try:
                rows.append(Row(
                    experiment=raw["experiment"], offered_qps=float(raw["offered_qps"]),
                    service=raw["service"], generation=raw["generation"],
                    replicas=int(raw["replicas"]),
                    **{k: float(raw[k]) for k in COLUMNS[5:] if raw.get(k) not in ("", None)},
                ))
            except (KeyError, ValueError, TypeError):
                continue   # a line cut by an interruption: that point is re-measured
    return rows


def finished_points(rows: Iterable[Row]) -> set[tuple[str, float]]:
    return {(r.experiment, round(r.offered_qps, 6)) for r in rows if r.service == E2E}


def complete_rows(rows: Iterable[Row]) -> list[Row]:
    """Rows of finished points only."""
    rows = list(rows)
    done = finished_points(rows)
    return [r for r in rows if (r.experiment, round(r.offered_qps, 6)) in done]


def compact(path: Path) -> int:
    """Keep only the rows of finished points (an interrupted point is measured again);
    returns how many points are finished. Atomic: a temporary file renamed over the CSV."""
    rows = read_rows(path)
    keep = complete_rows(rows)
    if len(keep) != len(rows):
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            tmp.unlink()
        append_rows(tmp, keep)
        tmp.replace(path)
    return len(finished_points(keep))
