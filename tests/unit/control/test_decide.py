"""decide(): the safety rules, table-driven, on a small hand-made policy table."""

import math
from dataclasses import replace

import pytest

from ecoscale.control.decide import (
    ControlSettings,
    ControlState,
    decide,
    growth_margin,
    projected_load,
    remember_load,
    remember_trend,
    theil_sen_slope,
    toward_new,
)
from ecoscale.control.policy import Cause, Observation
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.planner.table import Hysteresis
from ecoscale.testing import TOY_HIGH, TOY_LOW, TOY_MID, TOY_TABLE

NEW1 = ServicePlacement("new", 1)
OLD1, OLD2 = ServicePlacement("old", 1), ServicePlacement("old", 2)


def placement(**placed):
    return Placement(tuple(placed.items()))


LOW, MID, HIGH, TABLE = TOY_LOW, TOY_MID, TOY_HIGH, TOY_TABLE
SETTINGS = ControlSettings(slo_miss_periods=2, escalation_hold_s=600, cooldown_s=180,
                           max_old_moves_per_decision=8, no_data_fallback_periods=3)


def obs(now, qps, p99=5.0, current=LOW, ci=200.0, paused=frozenset()):
    return Observation(clock_s=now, qps=qps, p99_ms=p99, ci_g_per_kwh=ci, current=current,
                       paused=paused)


def run(steps, state=None, current=LOW, settings=SETTINGS):
    """Feed (now, qps, p99) steps through decide, applying each decision; return the trail."""
    state = state or ControlState()
    trail = []
    for now, qps, p99 in steps:
        decision, state = decide(obs(now, qps, p99, current), state, TABLE, settings)
        current = decision.placement
        trail.append((current, state, decision))
    return trail


@pytest.mark.parametrize("qps,expected", [(50, LOW), (94, LOW), (96, MID), (250, HIGH),
                                          (1000, HIGH)], ids=lambda v: str(v)[:8])
def test_first_decision_picks_the_level_with_headroom(qps, expected):
    (placed, state, _), = run([(0, qps, 5.0)], current=expected)
    assert placed == expected


CASES = [
    pytest.param([(0, 50, 5), (60, 150, 5)], MID, "up at once", id="scale-up-is-immediate"),
    pytest.param([(0, 250, 5), (60, 50, 5), (120, 50, 5), (300, 50, 5)], HIGH, "",
                 id="down-waits-for-stabilisation"),
    pytest.param([(0, 250, 5), (60, 50, 5), (200, 50, 5), (360, 50, 5)], LOW, "down",
                 id="down-after-stabilisation"),
    pytest.param([(0, 250, 5), (60, 50, 5), (200, 160, 5), (400, 50, 5)], MID, "down",
                 id="down-to-the-highest-level-seen-in-the-window"),
    pytest.param([(0, 250, 5), (60, 50, 5), (200, 190, 5), (400, 50, 5)], HIGH, "",
                 id="load-back-above-the-band-restarts-the-window"),
    pytest.param([(0, 250, 5), (60, 50, 20), (120, 50, 5), (360, 50, 5)], HIGH, "",
                 id="a-slo-miss-blocks-going-down"),
]


@pytest.mark.parametrize("steps,expected,_why", CASES)
def test_hysteresis(steps, expected, _why):
    first = TABLE.levels[TABLE.index_for(steps[0][1], math.inf, 0.95)].placement
    trail = run(steps, current=first)
    assert trail[-1][0] == expected


def test_two_misses_escalate_the_most_critical_to_new():
    trail = run([(0, 50, 5), (60, 50, 20), (120, 50, 20)])
    placed, state, decision = trail[-1]
    assert state.escalation == 1 and placed["a"] == NEW1 and placed["b"] == OLD1
    assert "a" in decision.reasons and "SLO" in decision.reasons["a"]
    trail = run([(180, 50, 20), (240, 50, 20)], state=state, current=placed)
    assert trail[-1][1].escalation == 2 and trail[-1][0]["b"] == NEW1


def test_every_escalation_step_moves_a_service_the_level_keeps_on_old():
    # at the top level 'a' already runs on new: the first step brings 'b', then pruned 'c'
    trail = run([(0, 250, 5), (60, 250, 20), (120, 250, 20)], current=HIGH)
    placed, state, _ = trail[-1]
    assert state.escalation == 1 and placed["b"] == NEW1 and placed["c"] == OLD1
    trail = run([(180, 250, 20), (240, 250, 20)], state=state, current=placed)
    assert trail[-1][1].escalation == 2 and trail[-1][0]["c"] == NEW1
    trail = run([(300, 250, 20), (360, 250, 20)], state=trail[-1][1], current=trail[-1][0])
    assert trail[-1][1].escalation == 3 and trail[-1][0] == Placement.uniform(("a", "b", "c"),
                                                                             "new")


def test_one_miss_is_not_enough():
    trail = run([(0, 50, 5), (60, 50, 20), (120, 50, 5), (180, 50, 20)])
    assert trail[-1][1].escalation == 0 and trail[-1][0] == LOW


def test_escalation_steps_back_after_the_hold_without_misses():
    trail = run([(0, 50, 5), (60, 50, 20), (120, 50, 20)])
    placed, state, _ = trail[-1]
    held = run([(300, 50, 5), (600, 50, 5)], state=state, current=placed)
    assert held[-1][1].escalation == 1 and held[-1][0]["a"] == NEW1
    back = run([(721, 50, 5)], state=held[-1][1], current=held[-1][0])
    assert back[-1][1].escalation == 0 and back[-1][0]["a"] == OLD1


NAN = math.nan
ESCALATE = [(0, 50, 5), (60, 50, 20), (120, 50, 20)]
# steps, start, settings, the last decision's moves: {service: (cause, capped, wanted)}
MOVE_CASES = [
    pytest.param([(0, 50, 5), (60, 150, 5)], LOW, SETTINGS, {"a": (Cause.TABLE, False, None)},
                 id="table-up"),
    pytest.param([(0, 250, 5), (60, 50, 5), (200, 50, 5), (360, 50, 5)], HIGH, SETTINGS,
                 {"a": (Cause.TABLE, False, None), "b": (Cause.TABLE, False, None)},
                 id="table-down"),
    pytest.param(ESCALATE, LOW, SETTINGS, {"a": (Cause.SLO_MISS, False, None)},
                 id="slo-miss"),
    pytest.param(ESCALATE + [(300, 50, 5), (600, 50, 5), (721, 50, 5)], LOW, SETTINGS,
                 {"a": (Cause.STEP_BACK, False, None)}, id="step-back"),
    # a miss and a load step in one decision: 'a' goes up with the table, 'b' is held
    pytest.param([(0, 50, 5), (60, 50, 20), (120, 250, 20)], LOW, SETTINGS,
                 {"a": (Cause.TABLE, False, None), "b": (Cause.SLO_MISS, False, None)},
                 id="slo-miss-and-table-up-at-once"),
    pytest.param([(0, 50, 5), (60, NAN, 5), (120, NAN, 5), (180, NAN, 5)], LOW, SETTINGS,
                 {"a": (Cause.NO_DATA, False, None), "b": (Cause.NO_DATA, False, None)},
                 id="no-data-fallback"),
    pytest.param([(0, 50, 5)], LOW, replace(SETTINGS, min_replicas=2),
                 {s: (Cause.TABLE, True, 1) for s in "abc"}, id="capped-by-min-replicas"),
    pytest.param([(0, 150, 5)], placement(a=NEW1, b=OLD1, c=OLD1),
                 replace(SETTINGS, max_replicas=1), {"a": (Cause.TABLE, True, 2)},
                 id="capped-by-max-replicas"),
]


@pytest.mark.parametrize("steps,start,settings,expected", MOVE_CASES)
def test_every_move_carries_its_cause_before_after_and_cap(steps, start, settings, expected):
    trail = run(steps, current=start, settings=settings)
    before = trail[-2][0] if len(trail) > 1 else start
    placed, _, decision = trail[-1]
    assert {s: (m.cause, m.capped, m.wanted_replicas) for s, m in decision.moves.items()} \
        == expected
    for service, move in decision.moves.items():
        assert (move.service, move.before, move.after) == (service, before[service],
                                                           placed[service])
        assert move.reason.startswith(f"{service}: {before[service]} -> {placed[service]}: ")
    assert set(decision.moves) == {s for s, _, _ in before.changes(placed)}


def test_a_hold_has_no_moves():
    trail = run([(0, 50, 5), (60, NAN, 5)])
    assert trail[-1][2].moves == {} and "hold" in trail[-1][2].note


@pytest.mark.parametrize("p99", [math.nan, -1.0], ids=["nan", "negative"])
def test_missing_latency_is_no_data_not_slo_met(p99):
    trail = run([(0, 50, 5), (60, 50, 20), (120, 50, 20)])
    placed, state, _ = trail[-1]
    later = run([(5000, 50, p99), (6000, 50, p99)], state=state, current=placed)
    assert later[-1][1].escalation == 1   # held: NaN never counts as "SLO met"


def test_missing_load_holds_then_falls_back_toward_new_only():
    state = run([(0, 50, 5)])[-1][1]
    trail = run([(60, math.nan, 5), (120, math.nan, 5)], state=state)
    assert all(placed == LOW for placed, _, _ in trail)
    trail = run([(180, math.nan, 5)], state=trail[-1][1])
    assert trail[-1][0] == placement(a=NEW1, b=OLD2, c=OLD1)   # the top level, toward new
    # from a placement with more old replicas than the top level: nothing moves toward old
    richer = placement(a=NEW1, b=ServicePlacement("old", 3), c=OLD2)
    state = replace(trail[-1][1], no_data_streak=5)
    decision, _ = decide(obs(240, math.nan, 5, richer), state, TABLE, SETTINGS)
    assert decision.placement == richer


def test_cooldown_blocks_moves_toward_old_but_not_toward_new():
    trail = run([(0, 50, 5), (60, 150, 5)])    # a: old1 -> old2 at t=60
    state = trail[-1][1]
    assert state.last_move_s["a"] == 60
    settings = replace(SETTINGS, cooldown_s=10_000)
    down = run([(100, 50, 5), (500, 50, 5)], state=state, current=MID, settings=settings)
    assert down[-1][0] == MID                  # would go down, cooling down
    up = run([(600, 290, 5)], state=down[-1][1], current=MID, settings=settings)
    assert up[-1][0] == HIGH                   # toward new: no wait


def test_rate_limit_on_moves_toward_old():
    settings = replace(SETTINGS, max_old_moves_per_decision=1)
    trail = run([(0, 250, 5), (60, 50, 5), (400, 50, 5)], current=HIGH, settings=settings)
    moved = [s for s, p in trail[-1][0].items if p != HIGH[s]]
    assert len(moved) == 1


def test_paused_services_never_change():
    state = run([(0, 50, 5)])[-1][1]
    decision, _ = decide(obs(60, 250, 5, LOW, paused=frozenset({"a"})), state, TABLE, SETTINGS)
    assert decision.placement["a"] == OLD1 and decision.placement["b"] == OLD2


@pytest.mark.parametrize("low,high,expected", [(1, 1, 1), (3, 5, 3), (1, 10, 2)])
def test_min_and_max_replicas_bound_the_table(low, high, expected):
    settings = replace(SETTINGS, min_replicas=low, max_replicas=high)
    trail = run([(0, 150, 5)], current=MID, settings=settings)
    assert trail[-1][0]["a"].replicas == expected


def test_toward_new_ordering():
    order = ("new", "old")
    assert toward_new(OLD1, NEW1, order) and toward_new(OLD1, OLD2, order)
    assert not toward_new(NEW1, OLD2, order) and not toward_new(OLD2, OLD1, order)


def test_decisions_are_pure():
    state = ControlState()
    first = decide(obs(0, 150, 5), state, TABLE, SETTINGS)
    second = decide(obs(0, 150, 5), state, TABLE, SETTINGS)
    assert first == second and state == ControlState()


def test_settings_validation():
    bad = ControlSettings(slo_miss_periods=0, min_replicas=3, max_replicas=2)
    assert len(bad.problems()) == 2


@pytest.mark.parametrize("periods,ok", [(0, True), (3, True), (100, True), (-1, False),
                                        (101, False)],
                         ids=["off", "three", "longest", "negative", "too-long"])
def test_trend_periods_validation(periods, ok):
    problems = ControlSettings(trend_periods=periods).problems()
    assert (not problems) == ok
    if not ok:
        assert "trend_periods" in problems[0] and "0 turns the trend estimate off" in problems[0]


# ---- the growth margin and capacities (rule 3) -----------------------------------------------
CALM = Hysteresis(0.95, 0.95, 300.0, calm_up_fraction=0.99, growth_horizon_s=60.0,
                  growth_window_s=1800.0)
FULL, CALM_MARGIN = 1 / 0.95 - 1, 1 / 0.99 - 1


def memory(loads, hysteresis=CALM, every_s=60.0):
    recent = ((), ())
    for i, qps in enumerate(loads):
        recent = remember_load(*recent, i * every_s, qps, hysteresis)
    return recent


@pytest.mark.parametrize("loads,expected", [
    ([1000], FULL),
    ([1000, 1001, 1002], CALM_MARGIN),
    ([1000, 1030, 1030], 0.03),
    ([1000, 1030, 1000, 1000], 0.03),
    ([1000, 1200, 1200], FULL),
    ([1000, 1200] + [1000] * 31, CALM_MARGIN),
    ([1000, 990, 980], CALM_MARGIN),
], ids=["no-history-full", "calm", "rise-3pc", "rise-remembered", "jump-capped-full",
        "jump-forgotten-after-window", "falling-is-calm"])
def test_growth_margin_follows_the_largest_recent_rise(loads, expected):
    assert growth_margin(*memory(loads), CALM) == pytest.approx(expected, abs=1e-9)


def test_a_fixed_margin_when_calm_equals_up_fraction():
    fixed = replace(CALM, calm_up_fraction=0.95)
    assert growth_margin(*memory([1000, 1000, 1000], fixed), fixed) == pytest.approx(FULL)


def test_load_memory_keeps_a_horizon_of_loads_and_a_window_of_rises():
    loads, rises = memory([1000, 1100] + [1100] * 38)
    assert loads == ((38 * 60, 1100.0), (39 * 60, 1100.0))   # one horizon (60 s)
    assert rises == ()                                       # the rise at 60 s: > 30 min ago
    loads, rises = memory([1000, 1100] + [1100] * 29)
    assert rises == ((60.0, pytest.approx(0.1)),)
    # jittered periods still count as a horizon of history
    loads, rises = remember_load(((0.0, 1000.0), (14.9, 1000.0), (30.1, 1000.0),
                                  (45.0, 1000.0)), (), 60.2, 1000.0, CALM)
    assert loads[0][0] == 0.0 and growth_margin(loads, rises, CALM) == pytest.approx(CALM_MARGIN)


def test_a_gap_in_load_data_restores_the_full_margin():
    loads, rises = memory([1000, 1001, 1002])           # calm, last seen at 120 s
    loads, rises = remember_load(loads, rises, 600.0, 1000.0, CALM)
    assert loads == ((600.0, 1000.0),) and growth_margin(loads, rises, CALM) == pytest.approx(FULL)
    loads, rises = remember_load(loads, rises, 660.0, 1000.0, CALM)
    assert growth_margin(loads, rises, CALM) == pytest.approx(CALM_MARGIN)


def test_load_memory_forgets_a_clock_that_went_back_and_reads_json_lists():
    loads, rises = memory([1000, 1100, 1100])
    assert remember_load(loads, rises, 10.0, 500.0, CALM) == (((10.0, 500.0),), ())
    state = ControlState(recent_loads=[[0, 1]], recent_rises=[[0, 0.5]])   # from JSON
    assert state.recent_loads == ((0.0, 1.0),) and state.recent_rises == ((0.0, 0.5),)


# levels planned for 100 and 200 req/s whose placements serve up to 120 and 230
CAPACITY_TABLE = replace(TABLE, hysteresis=CALM, levels=tuple(
    replace(level, capacity_qps=capacity)
    for level, capacity in zip(TABLE.levels, (120.0, 230.0, 320.0), strict=True)))


def run_on(table, steps, current):
    state, trail = ControlState(), []
    for now, qps in steps:
        decision, state = decide(obs(now, qps, 5.0, current), state, table, SETTINGS)
        current = decision.placement
        trail.append(current)
    return trail


@pytest.mark.parametrize("steps,expected", [
    ([(0, 110)], LOW),                                   # planned for 100, serves 120
    ([(0, 114), (60, 115)], LOW),                        # calm: 1 % margin, 116.2 <= 120
    ([(0, 90), (60, 115)], MID),                         # a 28 % rise: full margin
    ([(i * 60, 113 + i) for i in range(7)], MID),       # calm, but 119 x 1.01 > 120
    ([(0, 200), (60, 110), (120, 110), (420, 110), (480, 110)], LOW),   # down once served
], ids=["first-with-full-margin", "calm-load-runs-near-capacity", "jump-needs-full-margin",
        "calm-but-over-capacity", "down-to-the-level-that-serves-the-window"])
def test_levels_run_up_to_their_capacity_with_the_margin_the_load_needs(steps, expected):
    first = CAPACITY_TABLE.levels[CAPACITY_TABLE.serving_index(steps[0][1], math.inf,
                                                                FULL)].placement
    assert run_on(CAPACITY_TABLE, steps, first)[-1] == expected


def test_a_calm_load_goes_up_only_past_capacity_less_the_calm_margin():
    trail = run_on(CAPACITY_TABLE, [(i * 60, 113 + i) for i in range(7)], LOW)
    assert trail[-2] == LOW and trail[-1] == MID   # 118 x 1.01 <= 120 < 119 x 1.01


def test_a_jump_restores_the_full_margin_at_once():
    calm = [(i * 60, 100.0) for i in range(10)]
    trail = run_on(CAPACITY_TABLE, calm + [(600, 115.0)], LOW)
    assert trail[-1] == MID   # 115 is 15 % above 100: 115 x 1.053 > 120


# ---- the trend-aware load estimate (rule 3) --------------------------------------------------
def trend_of(loads, every_s=60.0):
    return tuple((i * every_s, float(q)) for i, q in enumerate(loads))


@pytest.mark.parametrize("loads,expected", [
    ([100, 110, 120, 130], 140.0),               # a ramp: one more period of its slope
    ([100, 100, 100, 100], 100.0),               # flat: no rise
    ([130, 120, 110, 100], 100.0),               # falling: never below the last load
    ([100, 100, 160, 100, 100], 100.0),          # one spike: the median slope ignores it
    ([100, 101, 102, 140], 140 + (1 + 40 / 3) / 2),   # a late jump moves the median a rank
    ([100, 150], 150.0 + 50.0),                  # two observations: the last difference
    ([100], math.nan),                           # too short to project
], ids=["ramp", "flat", "falling", "spike", "jump-at-end", "two-points", "one-point"])
def test_projected_load_is_a_robust_slope_one_period_ahead(loads, expected):
    got = projected_load(trend_of(loads))
    assert got == pytest.approx(expected, nan_ok=True)


def test_the_projection_never_climbs_faster_than_the_load_did_in_one_period():
    # uneven periods (a 600-s gap without load data before the last observation): the
    # median slope, (30/720 + 10/60) / 2 req/s per s, times the 600-s last period would add
    # 62.5 req/s; the steepest rise between two observations (10 req/s) bounds it
    loads = ((0.0, 100.0), (60.0, 110.0), (120.0, 120.0), (720.0, 130.0))
    assert theil_sen_slope(loads) == pytest.approx((30 / 720 + 10 / 60) / 2)
    assert projected_load(loads) == pytest.approx(140.0)


@pytest.mark.parametrize("periods,expected", [
    (0, ()),
    (1, ((120.0, 3.0), (180.0, 4.0))),
    (3, ((0.0, 1.0), (60.0, 2.0), (120.0, 3.0), (180.0, 4.0))),
], ids=["off-keeps-nothing", "one-period", "window-longer-than-history"])
def test_trend_memory_keeps_the_last_periods_plus_one_observations(periods, expected):
    loads: tuple = ()
    for i, qps in enumerate((1.0, 2.0, 3.0, 4.0)):
        loads = remember_trend(loads, i * 60.0, qps, periods)
    assert loads == expected


def test_trend_memory_forgets_a_clock_that_went_back_and_reads_json_lists():
    assert remember_trend(trend_of([1, 2, 3]), 30.0, 9.0, 3) == ((30.0, 9.0),)
    assert ControlState(trend_loads=[[0, 1]]).trend_loads == ((0.0, 1.0),)


TREND = replace(SETTINGS, trend_periods=3)
RAMP = [(i * 60, 88 + 6 * i) for i in range(6)]   # 88, 94, ... 118 req/s; LOW serves 120


@pytest.mark.parametrize("settings,first_up", [(SETTINGS, 5), (TREND, 4)],
                         ids=["measured-load", "trend-one-period-earlier"])
def test_a_ramp_goes_up_one_period_earlier_with_the_trend(settings, first_up):
    # a 7 % rise a period keeps the full margin (LOW up to 120 x 0.95 = 114 req/s): the
    # measured load passes it at 118 (period 5); at period 4 the measured 112 stays, but
    # the projected 112 + 6 = 118 goes up
    state, current, trail, reasons = ControlState(), LOW, [], []
    for now, qps in RAMP:
        decision, state = decide(obs(now, qps, 5.0, current), state, CAPACITY_TABLE, settings)
        current = decision.placement
        trail.append(current)
        reasons.append(" ".join(decision.reasons.values()))
    assert trail.index(MID) == first_up
    assert ("projected 118 req/s one period ahead" in reasons[first_up]) == (
        settings.trend_periods > 0)


def test_a_falling_load_goes_down_on_the_measured_load_only():
    # falling 10 req/s a period to 116 (LOW's band ends at 114): the projection (clipped at
    # the last load) never takes the level down, with or without the trend
    falling = [(i * 60, 176 - 10 * i) for i in range(7)]
    for settings in (SETTINGS, TREND):
        assert run_on_with(settings, falling, MID) == [MID] * len(falling)


def test_a_rising_projection_holds_the_level_that_the_measured_load_would_leave():
    # from MID: the measured load (85 .. 110 req/s) stays under LOW's 114 (120 with the
    # full margin) for the 300-s stabilisation, so the measured load takes the level down
    # at 110 req/s, a period before it needs MID again; the projected 110 + 5 = 115 is past
    # 114, and the trend keeps MID
    rising = [(i * 60, 85 + 5 * i) for i in range(6)]
    for settings, expected in ((SETTINGS, LOW), (TREND, MID)):
        assert run_on_with(settings, rising, MID)[-1] == expected


def run_on_with(settings, steps, current):
    state, trail = ControlState(), []
    for now, qps in steps:
        decision, state = decide(obs(now, qps, 5.0, current), state, CAPACITY_TABLE, settings)
        current = decision.placement
        trail.append(current)
    return trail
