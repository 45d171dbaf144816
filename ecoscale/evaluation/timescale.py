"""The live evaluation's time scale, pure: a period that a real daemon faces (at least 3
move times) and a trace step per period over which the load rises by at most ~25 % between
two decisions. `ecoscale lab evaluate` picks it (or refuses, with the figure and the fix)
before it touches the lab; its report prints it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ecoscale.errors import UsageError

LAB_MOVE_TIME_S = 8.0
"""The move time assumed when none is measured (s): a constraint change moves a task in
about 8 s (shared/notes/swarm-lab.md, "Timing seen"). A live evaluation measures it
instead (`ecoscale lab moves`, ``evaluation.moves``: 7-11 s here); only a `--replay-only`
run on a lab without a measurement uses this, and says so."""
MOVE_TIMES_PER_PERIOD = 3.0
"""A decision period spans at least this many move times: a move settles, and the
one-period query window refills with the new placement, before the next decision."""
MAX_LOAD_RISE = 0.25
"""Largest rise of load between two decisions (next period's load / this one's - 1) that
an evaluation's time scale may have: a real daemon deciding every 15 s sees a few % at most;
a day compressed into minutes saw +150 % (20 -> 51 req/s), which no daemon can follow."""
RISE_FLOOR_FRACTION = 0.05
"""Loads under this fraction of the window's peak count as that fraction in a rise (a rise
from 1 to 2 req/s stays far below every level's capacity)."""
LIVE_TREND_PERIODS = 2
"""The trend estimate's window on the lab (``ControlSettings.trend_periods``, periods):
on compressed time the load changes by up to MAX_LOAD_RISE a period; in the replays of
evaluation-shaped runs 2 periods kept the SLO in every period at < 1 point of saving (1
period made twice the moves, 3 missed where 2 did not; README, live evaluation)."""


@dataclass(frozen=True)
class TimeScale:
    """The live evaluation's time scale: wall seconds per decision and trace seconds per
    period, with the figures that justify them."""

    period_s: float
    """Wall time per decision period, and the daemon's interval (s)."""
    step_s: float
    """Trace time per period (s)."""
    periods: int
    move_time_s: float
    """The move time the period was chosen for (s)."""
    largest_rise: float
    """Largest rise of load between two consecutive periods (0.145: +14.5 %)."""
    rise_period: int
    """The period whose load rose most over the one before."""

    @property
    def minutes(self) -> float:
        """Wall-clock minutes per policy."""
        return self.periods * self.period_s / 60.0

    def text(self) -> str:
        return (f"period {self.period_s:g} s (>= {MOVE_TIMES_PER_PERIOD:g} move times of "
                f"{self.move_time_s:.1f} s); {self.periods} periods of {self.step_s / 60:g} trace "
                f"minutes (~{self.minutes:.0f} min per policy); load rises at most "
                f"{100 * self.largest_rise:.1f} % between two decisions (into period "
                f"{self.rise_period + 1}; limit {100 * MAX_LOAD_RISE:g} %)")


def largest_rise(loads: Sequence[float], floor_fraction: float = RISE_FLOOR_FRACTION
                 ) -> tuple[float, int]:
    """(largest relative rise next / previous - 1 between two consecutive loads, index of the
    later one); loads under ``floor_fraction`` of the peak count as that floor. (0.0, 0) for
    fewer than two loads or a load that never rises."""
    values = [float(q) for q in loads]
    if len(values) < 2 or not max(values) > 0:
        return 0.0, 0
    floor = floor_fraction * max(values)
    floored = [max(q, floor) for q in values]
    rise, at = max((after / before - 1.0, i + 1)
                   for i, (before, after) in enumerate(zip(floored, floored[1:], strict=False)))
    return (rise, at) if rise > 0 else (0.0, 0)


def choose_period(move_time_s: float, period_s: float | None = None) -> float:
    """The decision period (s): ``period_s`` when given and at least MOVE_TIMES_PER_PERIOD
    move times (else a UsageError with the figure and the fix), else that minimum rounded up
    to whole seconds."""
    if not move_time_s > 0:
        raise UsageError(f"--move-time must be > 0 s, got {move_time_s:g}")
    shortest = MOVE_TIMES_PER_PERIOD * move_time_s
    if period_s is None:
        return float(math.ceil(shortest - 1e-9))
    if period_s < shortest - 1e-9:
        raise UsageError(
            f"--period-s {period_s:g} s is shorter than {MOVE_TIMES_PER_PERIOD:g} move times "
            f"({MOVE_TIMES_PER_PERIOD:g} x {move_time_s:g} s = {shortest:g} s): decisions would "
            f"come while the last move still settles; give --period-s "
            f"{math.ceil(shortest - 1e-9)} or more (or leave it out), or --move-time with a "
            "newer measurement of the lab's moves")
    return float(period_s)


def choose_time_scale(duration_s: float, minutes: float, move_time_s: float,
                      rise_at: Callable[[float], tuple[float, int]],
                      period_s: float | None = None, max_rise: float = MAX_LOAD_RISE,
                      finest_step_s: float = 60.0) -> TimeScale:
    """The time scale of ``minutes`` of wall time per policy over ``duration_s`` of trace:
    the period from ``choose_period``, one trace step per period; ``rise_at(step_s)`` gives
    the window's (largest rise, period) at a step. A step over which the load rises more
    than ``max_rise`` between two decisions is refused (UsageError) with the figure and the
    fix: the fewest periods (no finer than ``finest_step_s``, the trace's own step) that keep
    it, and the minutes they take."""
    period = choose_period(move_time_s, period_s)
    periods = max(2, int(round(minutes * 60 / period)))
    step = duration_s / periods
    rise, at = rise_at(step)
    scale = TimeScale(period, step, periods, move_time_s, rise, at)
    if rise <= max_rise + 1e-12:
        return scale
    most = max(periods, int(duration_s // finest_step_s))
    needed = next((n for n in range(periods + 1, most + 1)
                   if rise_at(duration_s / n)[0] <= max_rise + 1e-12), None)
    problem = (f"the load rises {100 * rise:.0f} % between two decisions (into period "
               f"{at + 1} of {periods}; {step / 60:.3g} trace minutes per {period:g}-s period), "
               f"more than {100 * max_rise:g} %")
    if needed is None:
        raise UsageError(f"{problem} even at the trace's own step ({finest_step_s:g} s); "
                         "pick a calmer window (--start, --duration)")
    fit = periods * duration_s / needed
    raise UsageError(
        f"{problem}; {needed} periods of {duration_s / needed / 60:.3g} trace minutes keep "
        f"it: give --minutes {needed * period / 60:g} (per policy), or at most "
        f"--duration {fit / 3600:.3g}h with --minutes {minutes:g} (a window that rises no "
        "faster)")
