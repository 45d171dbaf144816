"""ecoscale's decision: policy table + closed loop + safety rules, as one pure function.

    decide(observation, state, table, settings) -> (Decision, new state)

The daemon calls it once per period with live metrics; the replay calls it once per step
with modelled ones. The safety rules, in the order they apply:

1. No load data (NaN, missing, stale) is never "fine": hold the placement; after
   ``no_data_fallback_periods`` such periods, step to the table's top level, and only the
   moves toward new servers of that step are made (never toward old without data).
2. Latency SLO beats carbon: measured p99 over the SLO for ``slo_miss_periods`` periods in a
   row steps one more of the most critical services onto the newest generation, ahead of the
   table; while the SLO is missed, nothing moves toward old. An escalation steps back one
   service at a time, after ``escalation_hold_s`` without a miss. For ``settle_s`` after a
   move the measured p99 shows the move itself, and is neither a miss nor a pass. On a
   right-sized level (``plan --right-size``) an escalated service gets one replica alone on
   a socket of the newest generation, holding it whole (ESCALATED_SHARE, what a plain
   table's escalation gives it); the level's other services keep their shares and sockets
   (``model.packing.merged``).
3. Scale-up beats scale-down: the table level goes up at once when load passes
   ``up_fraction`` of the current level's capacity; it goes down only after load stayed
   under ``down_fraction`` of a lower level's capacity for ``down_stabilisation_s``, to the
   level that the highest load of that window needs. Both fractions keep a margin for load
   growth; it shrinks toward ``calm_up_fraction`` when the load seen lately rose less
   (``growth_margin``), and is the full ``up_fraction`` margin without that history.
   With ``trend_periods`` set, the load projected one period ahead (``projected_load``: the
   Theil-Sen slope of the last observations, clipped) also takes the level up as soon as
   it passes the same threshold; going down stays on the measured load (and never below
   the level the projection needs).
4. Moves toward old respect a per-service cooldown and a per-decision rate limit; moves
   toward new do not wait. On a right-sized level, shares grow at once and shrink after a
   hold (``growing``): a service's move grows it when what it runs was planned for less
   load than the target level serves (the highest capacity of the levels that run the
   same generation, replicas and share), or, for a setting no level runs, when it gets a
   newer generation, more replicas, or the same replicas with a larger share; any other
   move shrinks it, and is made once the table has asked for a shrink of the service for
   ``shrink_hold_s`` without a break. So a level that goes down and back up within the
   hold moves nobody: the services still run the higher level's shares.
5. min/max replicas bound every service; paused services are never changed.
6. Node loss (``keep_off_lost_capacity``, applied after ``decide``): no service stays on, or
   moves to, a generation without a ready node, nor stays where its tasks have not run for
   ``lost_task_grace_s``; it goes to the newest generation with a ready node, at once. It
   goes back by the table, after the cooldown, once the generation has capacity again.

``resolve`` is the one function that settles conflicting signals (rules 2-5). Every move
carries its cause (``Cause``): NO_DATA (rule 1's fallback), SLO_MISS and STEP_BACK (rule 2),
TABLE (rule 3), LOST_CAPACITY (rule 6), and whether min/max bounded its replicas (rule 5).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace

from ecoscale.control.policy import Cause, Decision, Move, Observation
from ecoscale.model.packing import (
    WHOLE_SOCKET,
    PackedPlacement,
    merged,
    pack,
    share_of,
)
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.planner.table import Hysteresis, PolicyTable, TableLevel

ESCALATED_SHARE = WHOLE_SOCKET
"""Share of a socket (sockets) of a service an escalation holds on the newest generation
at a right-sized level: its one replica alone on a whole socket, as a plain table's slot
(the SLO is being missed: no co-location, and no share planned for it there to trust)."""


@dataclass(frozen=True)
class ControlSettings:
    slo_miss_periods: int = 2
    """Consecutive periods with measured p99 over the SLO before stepping toward new."""
    escalation_hold_s: float = 600.0
    """How long an escalation holds after the last miss before it steps back (s)."""
    cooldown_s: float = 180.0
    """A service moved less than this long ago (s) is not moved toward old again."""
    max_old_moves_per_decision: int = 8
    """At most this many services move toward old in one decision."""
    no_data_fallback_periods: int = 3
    """Periods without load data before falling back toward new."""
    settle_s: float = 30.0
    """After a move, latency measured for this long (s) reflects the move itself (tasks
    restarting, caches cold, the query window spanning both placements): it neither counts
    as a miss nor as SLO met."""
    min_replicas: int = 1
    max_replicas: int = 10
    lost_task_grace_s: float = 60.0
    """Rule 6: a service with no running task on its generation for this long (s), and not
    moved within it, goes to the newest generation that has a ready node."""
    trend_periods: int = 0
    """Trend-aware load estimate (rule 3), the window in decision periods: the slope of the
    load over the observations of the last ``trend_periods`` periods (``trend_periods`` + 1
    observations) projects the load one period ahead, and a projection over a level's up
    threshold goes up at once. 0: off (the measured load alone). Pays off where the load
    changes by a large share between two decisions (a compressed live evaluation); see the
    README's daemon section for the measured figures."""
    shrink_hold_s: float = 1800.0
    """Rule 4 on a right-sized table: a move that shrinks a service (see ``growing``) is
    made only once the table has asked for a shrink of it for this long (s) without a
    break (and ``cooldown_s`` after its last move); a move that grows it is made at once.
    Every move of a right-sized service is a rolling update (a new CPU reservation), so
    load noise that takes the level down and back up would otherwise resize the services
    each time."""

    def problems(self) -> list[str]:
        out = []
        if self.slo_miss_periods < 1:
            out.append("slo_miss_periods must be >= 1")
        if (self.escalation_hold_s < 0 or self.cooldown_s < 0 or self.settle_s < 0
                or self.shrink_hold_s < 0):
            out.append("escalation_hold_s, cooldown_s, settle_s and shrink_hold_s must be >= 0")
        if self.max_old_moves_per_decision < 1:
            out.append("max_old_moves_per_decision must be >= 1")
        if self.no_data_fallback_periods < 1:
            out.append("no_data_fallback_periods must be >= 1")
        if not 1 <= self.min_replicas <= self.max_replicas:
            out.append("need 1 <= min_replicas <= max_replicas")
        if not self.lost_task_grace_s >= 0:
            out.append("lost_task_grace_s must be >= 0")
        if not 0 <= self.trend_periods <= MAX_TREND_PERIODS:
            out.append(f"trend_periods must be in 0..{MAX_TREND_PERIODS} (decision periods; "
                       f"0 turns the trend estimate off), got {self.trend_periods}")
        return out


@dataclass(frozen=True)
class ControlState:
    level: int | None = None
    """Index of the table level in force; None until the first decision."""
    below_since_s: float | None = None
    down_target: int | None = None
    miss_streak: int = 0
    escalation: int = 0
    """How many of the most critical services are held on the newest generation."""
    last_miss_s: float | None = None
    no_data_streak: int = 0
    last_move_s: Mapping[str, float] = field(default_factory=dict)
    not_running_since: Mapping[str, float] = field(default_factory=dict)
    """Rule 6: since when (s) each service has had no running task on its generation."""
    shrink_since: Mapping[str, float] = field(default_factory=dict)
    """Rule 4 on a right-sized table: since when (s) each service has been held back from a
    move that shrinks it (``shrink_hold_s``)."""
    recent_loads: tuple[tuple[float, float], ...] = ()
    """(time s, load req/s) of the observations of the last growth horizon, and of the one
    just before it, oldest first (``remember_load``)."""
    recent_rises: tuple[tuple[float, float], ...] = ()
    """(time s, relative rise) of the load rises above the calm margin in the last growth
    window, oldest first."""
    trend_loads: tuple[tuple[float, float], ...] = ()
    """(time s, load req/s) of the last ``trend_periods`` + 1 observations with load, oldest
    first (``remember_trend``); empty while the trend estimate is off."""

    def __post_init__(self) -> None:
        # a state read back from JSON (the daemon's state file) holds lists
        for name in ("recent_loads", "recent_rises", "trend_loads"):
            pairs = getattr(self, name)
            if not isinstance(pairs, tuple) or (pairs and not isinstance(pairs[0], tuple)):
                object.__setattr__(self, name, tuple((float(a), float(b)) for a, b in pairs))


def toward_new(before: ServicePlacement, after: ServicePlacement, order: tuple[str, ...]) -> bool:
    """True when ``after`` gives a service newer hardware or more replicas of the same."""
    rank_before, rank_after = order.index(before.generation), order.index(after.generation)
    if rank_after != rank_before:
        return rank_after < rank_before
    return after.replicas > before.replicas


def _generation_order(table: PolicyTable, current: Placement) -> tuple[str, ...]:
    """Generations, newest first (the table's order; unknown ones running now go last)."""
    order = table.generations
    extra = tuple(sorted({p.generation for _, p in current.items} - set(order)))
    return order + extra if extra else order


Pairs = tuple[tuple[float, float], ...]


def remember_load(loads: Pairs, rises: Pairs, clock_s: float, qps: float,
                  hysteresis: Hysteresis) -> tuple[Pairs, Pairs]:
    """The load memory with this observation added: ``loads`` keeps the last growth horizon
    (and the observation just before it, to tell that much history from less); ``rises``
    keeps, over the growth window, each observation's largest relative rise from a load at
    most one horizon earlier when it exceeds the calm margin. A clock that went back (a
    restart) forgets everything; a gap of more than one horizon without load data forgets
    the loads (what the load did meanwhile is unknown: the full margin until a horizon of
    history is back)."""
    if loads and loads[-1][0] >= clock_s:
        loads, rises = (), ()
    horizon_from = clock_s - hysteresis.growth_horizon_s
    if loads and loads[-1][0] < horizon_from:
        loads = ()
    first = 0
    while first + 1 < len(loads) and loads[first + 1][0] <= horizon_from:
        first += 1
    loads = loads[first:]
    rise = 0.0
    for t, q in loads:
        if t >= horizon_from and qps > q:
            rise = max(rise, qps / q - 1.0) if q > 0 else math.inf
    window_from = clock_s - hysteresis.growth_window_s
    first = 0
    while first < len(rises) and rises[first][0] < window_from:
        first += 1
    rises = rises[first:]
    if rise > 1.0 / hysteresis.calm_up_fraction - 1.0:
        rises = rises + ((clock_s, rise),)
    return loads + ((clock_s, qps),), rises


def growth_margin(loads: Pairs, rises: Pairs, hysteresis: Hysteresis) -> float:
    """Fraction of the load (not of capacity) to keep free for growth: the largest relative
    rise of load over a growth horizon in the growth window (``rises``), between the calm
    margin (1 / calm_up_fraction - 1) and the full one (1 / up_fraction - 1). Less history
    than one horizon (``loads``) gives the full margin: an unknown load is not a calm one."""
    full = 1.0 / hysteresis.up_fraction - 1.0
    calm = 1.0 / hysteresis.calm_up_fraction - 1.0
    if calm >= full or not loads or loads[-1][0] - loads[0][0] < hysteresis.growth_horizon_s:
        return full
    if not rises:
        return calm
    return min(full, max(calm, max(rise for _, rise in rises)))


MAX_TREND_PERIODS = 100
"""Longest trend window (decision periods): a longer one is a slow average, not a trend."""


def remember_trend(loads: Pairs, clock_s: float, qps: float, periods: int) -> Pairs:
    """The last ``periods`` + 1 observations (time s, load req/s), this one included; a
    clock that went back (a restart) forgets them. Empty when ``periods`` is 0 (off)."""
    if periods <= 0:
        return ()
    if loads and loads[-1][0] >= clock_s:
        loads = ()
    return (*loads, (clock_s, qps))[-(periods + 1):]


def theil_sen_slope(loads: Pairs) -> float:
    """Median of the slopes between every two observations (req/s per s): one outlier in
    the window moves it by at most one rank. 0 with fewer than two observations."""
    slopes = sorted((q2 - q1) / (t2 - t1) for i, (t1, q1) in enumerate(loads)
                    for t2, q2 in loads[i + 1:] if t2 > t1)
    if not slopes:
        return 0.0
    middle = len(slopes) // 2
    return slopes[middle] if len(slopes) % 2 else (slopes[middle - 1] + slopes[middle]) / 2


def projected_load(loads: Pairs) -> float:
    """The load (req/s) one period ahead of the last observation of ``loads`` (oldest
    first; the period is the last gap between two observations): the last load plus the
    Theil-Sen slope times the period, clipped so that noise cannot push it: never below the
    last load (a projection only ever takes the level up), never more above it than the
    largest rise between two consecutive observations of the window (a trend cannot climb
    faster than the load did). NaN with fewer than two observations."""
    if len(loads) < 2:
        return math.nan
    last_s, last_qps = loads[-1]
    period_s = last_s - loads[-2][0]
    rise = theil_sen_slope(loads) * period_s
    steepest = max(q2 - q1 for (_, q1), (_, q2) in zip(loads, loads[1:], strict=False))
    return last_qps + min(max(rise, 0.0), max(steepest, 0.0))


def _select_level(obs: Observation, state: ControlState, table: PolicyTable,
                  missing_slo: bool, settings: ControlSettings
                  ) -> tuple[int, ControlState, str]:
    """Table level for the load, with hysteresis (rule 3). Latency misses block going down."""
    hyst = table.hysteresis
    loads, rises = remember_load(state.recent_loads, state.recent_rises, obs.clock_s, obs.qps,
                                 hyst)
    margin = growth_margin(loads, rises, hyst)
    trend = remember_trend(state.trend_loads, obs.clock_s, obs.qps, settings.trend_periods)
    projected = projected_load(trend)

    def at(level: int, since: float | None = None, target: int | None = None) -> ControlState:
        return replace(state, recent_loads=loads, recent_rises=rises, trend_loads=trend,
                       level=level, below_since_s=since, down_target=target)

    # down_fraction below up_fraction widens the margin a lower level must leave
    down_margin = (1.0 + margin) * hyst.up_fraction / hyst.down_fraction - 1.0
    band = table.band_of(obs.ci_g_per_kwh)
    want = table.serving_index(obs.qps, band, margin)
    seen = f"{obs.qps:.0f} req/s"
    if projected > obs.qps:
        ahead = table.serving_index(projected, band, margin)
        if table.levels[ahead].capacity > table.levels[want].capacity:
            want = ahead
            seen = f"{obs.qps:.0f} req/s (projected {projected:.0f} req/s one period ahead)"
    if state.level is None:
        running = next((i for i in table.ladder(band)
                        if table.levels[i].placement == obs.current), None)
        if running is None:   # a placement the table does not know: follow the load
            return want, at(want), \
                f"start at level {want + 1} for {obs.qps:.0f} req/s"
        state = replace(state, level=running)   # reconcile: what runs is a level of ours
    current = state.level
    ladder = table.ladder(band)
    if current not in ladder:   # the intensity band changed: same rung of the new ladder
        rung = table.ladder(table.levels[current].max_ci_g_per_kwh).index(current)
        current = ladder[min(rung, len(ladder) - 1)]
    current_level = table.levels[current]
    if table.levels[want].capacity > current_level.capacity:
        return want, at(want), \
            f"load {seen} above {1 / (1 + margin):.0%} of level capacity " \
            f"{current_level.capacity:.0f}: up to level {want + 1}"
    lower = table.serving_index(obs.qps, band, down_margin)
    if table.levels[want].capacity > table.levels[lower].capacity:
        lower = want   # never down below the level the projected load needs
    if missing_slo or table.levels[lower].capacity >= current_level.capacity:
        return current, at(current), ""
    since = state.below_since_s if state.below_since_s is not None else obs.clock_s
    target = lower if state.down_target is None else max(lower, state.down_target,
                                                          key=lambda i: table.levels[i]
                                                          .capacity)
    if obs.clock_s - since >= hyst.down_stabilisation_s:
        return target, at(target), \
            f"load under {1 / (1 + down_margin):.0%} of level {target + 1}'s capacity for " \
            f"{obs.clock_s - since:.0f} s: down to level {target + 1}"
    return current, at(current, since, target), ""


def _track_latency(obs: Observation, state: ControlState, table: PolicyTable,
                   settings: ControlSettings) -> tuple[ControlState, bool, str]:
    """Rule 2: count SLO misses, escalate and step back. Returns (state, missing now, why)."""
    if not obs.has_latency:
        return state, False, ""   # no data: hold the escalation as it is
    last_move = max(state.last_move_s.values(), default=-math.inf)
    if obs.clock_s - last_move < settings.settle_s:
        return state, False, ""   # the moves' own disturbance: wait until it has passed
    missing = obs.p99_ms > table.slo_ms
    if missing:
        streak = state.miss_streak + 1
        if (streak >= settings.slo_miss_periods
                and state.escalation < len(table.escalation_order)):
            escalation = state.escalation + 1
            return replace(state, miss_streak=0, escalation=escalation, last_miss_s=obs.clock_s), \
                True, f"p99 {obs.p99_ms:.1f} ms > SLO {table.slo_ms:.1f} ms for " \
                      f"{settings.slo_miss_periods} periods: hold the {escalation} most " \
                      "critical on new"
        return replace(state, miss_streak=streak, last_miss_s=obs.clock_s), True, ""
    state = replace(state, miss_streak=0)
    if (state.escalation > 0 and state.last_miss_s is not None
            and obs.clock_s - state.last_miss_s >= settings.escalation_hold_s):
        return replace(state, escalation=state.escalation - 1, last_miss_s=obs.clock_s), False, \
            f"SLO met for {settings.escalation_hold_s:.0f} s: step back one escalation"
    return state, False, ""


def target_placement(table: PolicyTable, level: int, escalation: int,
                     settings: ControlSettings) -> Placement:
    """The level's placement with, on the newest generation, the ``escalation`` most
    critical of the services that the level puts elsewhere (so that every escalation step
    moves one service); every replica count within min/max."""
    return _target(table, level, escalation, settings)[0]


def held_services(table: PolicyTable, level: int, escalation: int) -> list[str]:
    """The services an escalation of ``escalation`` holds on the newest generation at
    ``level``: the most critical of those the level puts elsewhere."""
    placement = table.levels[level].placement
    held: list[str] = []
    for service in table.escalation_order:
        if len(held) >= escalation:
            break
        placed = placement.get(service)
        if placed is not None and placed.generation != table.newest:
            held.append(service)
    return held


def _target(table: PolicyTable, level: int, escalation: int,
            settings: ControlSettings) -> tuple[Placement, dict[str, int]]:
    """``target_placement``, and the services whose replicas min/max changed, each with the
    replicas it had before the bound."""
    placement = table.levels[level].placement
    if escalation == 0 and all(
        settings.min_replicas <= p.replicas <= settings.max_replicas for _, p in placement.items
    ):
        return placement, {}
    held = set(held_services(table, level, escalation))
    items = []
    capped: dict[str, int] = {}
    changed: dict[str, ServicePlacement] = {}
    for service, planned in placement.items:
        placed = planned
        if service in held and placed.generation != table.newest:
            placed = ServicePlacement(table.newest, 1)
        replicas = min(max(placed.replicas, settings.min_replicas), settings.max_replicas)
        if replicas != placed.replicas:
            capped[service] = placed.replicas
        placed = ServicePlacement(placed.generation, replicas)
        items.append((service, placed))
        if placed != planned:
            changed[service] = placed
    if not isinstance(placement, PackedPlacement):
        return Placement(tuple(items)), capped
    return _resized(table.levels[level], changed, held), capped


def _resized(level: TableLevel, changed: Mapping[str, ServicePlacement],
             held: set[str]) -> Placement:
    """A right-sized level's placement with ``changed`` services placed anew: the escalated
    (``held``) ones at ESCALATED_SHARE, those min/max bounded with the level's share per
    replica, packed first-fit decreasing at the level's socket capacity onto sockets of
    their own; every other service keeps its share and socket (``merged``)."""
    placement = level.placement
    if not changed:
        return placement
    shares = {s: ESCALATED_SHARE if s in held else share_of(placement, s) for s in changed}
    capacity = (level.socket_capacity if math.isfinite(level.socket_capacity)
                else WHOLE_SOCKET)
    repacked = pack(Placement(tuple(changed.items())), shares, capacity,
                    dedicated=frozenset(held))
    return merged(placement, repacked, changed)


def growing(table: PolicyTable, level: int, current: Placement, target: Placement,
            held: Collection[str], order: tuple[str, ...]) -> frozenset[str]:
    """Rule 4 on a right-sized ``level``: the services whose move from ``current`` to
    ``target`` grows them, made at once (the others shrink, and wait ``shrink_hold_s``).

    A move to a newer generation grows, to an older one shrinks. Within a generation, a
    service that runs the setting (replicas, share) of a level of the ladder was planned
    for that level's load: it grows when the highest such capacity is below the target
    level's (``PolicyTable.planned_capacity``), else it already serves the load and the move
    shrinks it. A setting no level runs (an escalation's, one min/max bounded, one read
    from the cluster) grows with more replicas, or the same replicas and a larger share."""
    at = table.levels[level]
    band = at.max_ci_g_per_kwh
    out = set()
    for service, before, after in current.changes(target):
        rank_before, rank_after = order.index(before.generation), order.index(after.generation)
        share_before = share_of(current, service)
        planned = table.planned_capacity(band, service, before, share_before)
        if rank_after != rank_before:
            grows = rank_after < rank_before
        elif math.isfinite(planned) and service not in held:
            grows = planned < at.capacity
        else:
            grows = (after.replicas, share_of(target, service)) > (before.replicas,
                                                                   share_before)
        if grows:
            out.add(service)
    return frozenset(out)


def _setting_text(placement: Placement, service: str, placed: ServicePlacement) -> str:
    """'2xold', with the share of a right-sized placement: '2xold @0.160'."""
    if isinstance(placement, PackedPlacement):
        return f"{placed} @{placement.share(service):.3f}"
    return str(placed)


def resolve(current: Placement, target: Placement, obs: Observation, state: ControlState,
            order: tuple[str, ...], settings: ControlSettings, missing_slo: bool,
            only_toward_new: bool, why: str, cause: Cause = Cause.TABLE,
            capped: Mapping[str, int] | None = None,
            causes: Callable[[], Mapping[str, Cause]] | None = None,
            grows: Collection[str] | None = None
            ) -> tuple[Placement, dict[str, Move], ControlState]:
    """Settle what actually moves now: every move toward new; moves toward old unless the
    SLO is missed, the service cooled down too recently, the rate limit is reached, or data
    is missing; nothing for paused services. Each move has the cause that ``causes()``
    names for its service (called once, at the first move), else ``cause``, and the reason
    text '<service>: <before> -> <after>: <why>'; ``capped`` names the services whose
    replicas min/max bounded, with what they wanted.

    A right-sized ``target`` (rule 4's shares): a service moves when its generation, its
    replicas or, where ``current`` is right-sized too, its share differs (a plain
    ``current``, read from a cluster without reservations, has no share to compare);
    ``grows`` names the services whose move counts as toward new (``growing``); each other
    one waits until a shrink of it has been asked for ``shrink_hold_s`` without a break
    (``ControlState.shrink_since``) besides its cooldown, except an escalation's step back
    (its own hold, ``escalation_hold_s``, has passed). The services that move take their
    share and sockets from ``target``, the others keep theirs (``merged``)."""
    moved: dict[str, ServicePlacement] = {}
    moves: dict[str, Move] = {}
    old_moves = 0
    last = dict(state.last_move_s)
    capped = capped or {}
    named: Mapping[str, Cause] | None = None
    sized = isinstance(target, PackedPlacement)
    shrinking: dict[str, float] = {}   # right-sized services held back from a shrink, since
    changes = current.changes(target)
    for service, before, after in changes:
        if service in obs.paused:
            continue
        up = service in grows if grows is not None else toward_new(before, after, order)
        if not up:
            if sized and named is None:
                named = causes() if causes is not None else {}
            if sized and named is not None and named.get(service) is not Cause.STEP_BACK:
                since = state.shrink_since.get(service, obs.clock_s)
                shrinking[service] = since
                if obs.clock_s - since < settings.shrink_hold_s:
                    continue
            if only_toward_new or missing_slo:
                continue
            if obs.clock_s - last.get(service, -math.inf) < settings.cooldown_s:
                continue
            if old_moves >= settings.max_old_moves_per_decision:
                continue
            old_moves += 1
        moved[service] = after
        last[service] = obs.clock_s
        if named is None:
            named = causes() if causes is not None else {}
        text = (f"{_setting_text(current, service, before)} -> "
                f"{_setting_text(target, service, after)}" if sized else f"{before} -> {after}")
        moves[service] = Move(service, before, after, named.get(service, cause),
                              f"{service}: {text}: {why}", service in capped,
                              capped.get(service))
    if sized:
        for service in moved:
            shrinking.pop(service, None)
        state = replace(state, shrink_since=shrinking)
    if not moved:
        return current, moves, replace(state, last_move_s=last)
    if sized:
        placement = target if len(moved) == len(changes) else merged(current, target, moved)
        return placement, moves, replace(state, last_move_s=last)
    placement = Placement(tuple((s, moved.get(s, p)) for s, p in current.items))
    return placement, moves, replace(state, last_move_s=last)


def _escalation_causes(table: PolicyTable, level: int, before: int,
                       after: int) -> dict[str, Cause]:
    """Per service, the closed loop's cause for a move at ``level`` when the escalation
    went from ``before`` to ``after``: the services it holds now (SLO miss) and those it
    released (step back); the table moves every other one."""
    held_now = held_services(table, level, after)
    causes = {s: Cause.SLO_MISS for s in held_now}
    if before > after:
        for service in held_services(table, level, before)[after:]:
            causes[service] = Cause.STEP_BACK
    return causes


def _grows(table: PolicyTable, level: int, current: Placement, target: Placement,
           escalation: int, order: tuple[str, ...]) -> frozenset[str] | None:
    """``growing`` for a right-sized target, None (the plain rule) for a plain one."""
    if not isinstance(target, PackedPlacement):
        return None
    if current == target:
        return frozenset()
    return growing(table, level, current, target, held_services(table, level, escalation),
                   order)


def decide(obs: Observation, state: ControlState, table: PolicyTable,
           settings: ControlSettings) -> tuple[Decision, ControlState]:
    """One decision. Pure: the same inputs give the same outputs; ``obs.clock_s`` is the
    clock."""
    order = _generation_order(table, obs.current)
    if not obs.has_load:
        streak = state.no_data_streak + 1
        state = replace(state, no_data_streak=streak)
        if streak < settings.no_data_fallback_periods:
            return Decision(obs.current, note=f"no load data ({streak} periods): hold"), state
        top = table.ladder(table.bands[-1])[-1]
        target, capped = _target(table, top, state.escalation, settings)
        why = f"no load data for {streak} periods: fall back toward new (top level)"
        placement, moves, state = resolve(obs.current, target, obs, state, order, settings,
                                          missing_slo=False, only_toward_new=True, why=why,
                                          cause=Cause.NO_DATA, capped=capped,
                                          grows=_grows(table, top, obs.current, target,
                                                       state.escalation, order))
        return Decision(placement, moves, note=why), state
    state = replace(state, no_data_streak=0)
    escalation_before = state.escalation
    state, missing, latency_why = _track_latency(obs, state, table, settings)
    level, state, level_why = _select_level(obs, state, table, missing, settings)
    target, capped = _target(table, level, state.escalation, settings)
    why = "; ".join(w for w in (latency_why, level_why) if w) or (
        f"table level {level + 1} (<= {table.levels[level].max_load_qps:.0f} req/s) at "
        f"{obs.qps:.0f} req/s"
    )
    escalation = state.escalation
    causes = None if not (escalation_before or escalation) else (
        lambda: _escalation_causes(table, level, escalation_before, escalation))
    placement, moves, state = resolve(obs.current, target, obs, state, order, settings,
                                      missing, only_toward_new=False, why=why, capped=capped,
                                      causes=causes,
                                      grows=_grows(table, level, obs.current, target,
                                                   escalation, order))
    note = f"level {level + 1}, escalation {state.escalation}" + (
        ", SLO missed" if missing else "")
    return Decision(placement, moves, note=note), state


@dataclass(frozen=True)
class Capacity:
    """What the cluster can run now (rule 6), as the Swarm reports it."""

    ready: frozenset[str]
    """Generations with at least one ready node."""
    running: Mapping[str, int]
    """Running tasks of each service on the generation it is placed on."""


def keep_off_lost_capacity(decision: Decision, before: ControlState, state: ControlState,
                           current: Placement, capacity: Capacity, order: tuple[str, ...],
                           settings: ControlSettings, clock_s: float,
                           paused: frozenset[str] = frozenset()
                           ) -> tuple[Decision, ControlState, dict[str, str]]:
    """Rule 6 (node loss), on the decision ``decide`` took from ``before``: services placed,
    or about to be placed, where they cannot run go to the newest generation (of ``order``,
    newest first) that has a ready node, ahead of the table and of any cooldown.

    Returns the decision, the state (cooldown times of cancelled moves restored, since when
    each service has had no task running) and, per affected service, why (for /healthz).
    With no generation ready, nothing changes (Swarm starts the tasks when a node returns).
    """
    placed_now = dict(current.items)
    not_running = {s: state.not_running_since.get(s, clock_s) for s, p in current.items
                   if p.replicas > 0 and capacity.running.get(s, 0) == 0}
    state = replace(state, not_running_since=not_running)
    available = [g for g in order if g in capacity.ready]
    if not available:
        lost = {s: f"no ready node for {p.generation} (no generation has one)"
                for s, p in current.items if p.generation not in capacity.ready}
        return decision, state, lost
    fallback = available[0]
    items = []
    moves = dict(decision.moves)
    last = dict(state.last_move_s)
    lost: dict[str, str] = {}
    for service, target in decision.placement.items:
        placed = placed_now.get(service)
        why = ""
        if placed is None or service in paused:
            pass
        elif target.generation not in capacity.ready:
            why = f"{target.generation} has no ready node"
        elif (target == placed and service in not_running
              and clock_s - not_running[service] >= settings.lost_task_grace_s
              and clock_s - before.last_move_s.get(service, -math.inf)
              >= settings.lost_task_grace_s):
            why = (f"no task running on {placed.generation} for "
                   f"{clock_s - not_running[service]:.0f} s")
        if not why:
            items.append((service, target))
            continue
        lost[service] = why
        moved = ServicePlacement(fallback, target.replicas)
        if moved == placed or (placed is not None and placed.generation == fallback
                               and target.generation not in capacity.ready):
            moved = placed   # already where it can run: hold it there
        if moved == placed:
            moves.pop(service, None)
            previous = before.last_move_s.get(service)
            if previous is None:
                last.pop(service, None)
            else:
                last[service] = previous
        else:
            last[service] = clock_s
            decided = moves.get(service)
            moves[service] = Move(service, placed, moved, Cause.LOST_CAPACITY,
                                  f"{service}: {placed} -> {moved}: node loss: {why}",
                                  capped=decided is not None and decided.capped,
                                  wanted_replicas=decided.wanted_replicas if decided else None)
        items.append((service, moved))
    if not lost:
        return decision, state, {}
    note = (f"{decision.note}; node loss: {len(lost)} services kept on {fallback} "
            f"(ready: {', '.join(available)})")
    placement = Placement(tuple(items))
    if isinstance(decision.placement, PackedPlacement):
        placement = _sized_after_loss(decision.placement, current, placement, lost)
    return (Decision(placement, moves, note=note), replace(state, last_move_s=last), lost)


def _sized_after_loss(decided: PackedPlacement, current: Placement, placement: Placement,
                      lost: Collection[str]) -> PackedPlacement:
    """Rule 6 on a right-sized decision: the services kept where they run keep their share
    and sockets as they run now; those sent to the fallback generation get a whole socket
    per replica (no share was planned for them there: a plain table's slot); every other
    service as ``decided``."""
    kept = {s for s in lost if placement[s] == current.get(s)}
    fresh = Placement(tuple((s, placement[s]) for s in lost if s not in kept))
    return merged(merged(decided, current, kept), fresh, set(fresh))
