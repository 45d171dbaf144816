"""decide() on a right-sized table: escalations keep shares, shares grow at once and shrink
after a hold, node loss keeps shares (a small hand-made ladder of packed levels)."""

import math
from dataclasses import asdict, replace

import pytest

from ecoscale.control.decide import (
    ESCALATED_SHARE,
    Capacity,
    ControlSettings,
    ControlState,
    decide,
    growing,
    keep_off_lost_capacity,
)
from ecoscale.control.policy import Cause, Observation
from ecoscale.model.packing import PackedPlacement, pack
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.testing import toy_table

OLD1, OLD2 = ServicePlacement("old", 1), ServicePlacement("old", 2)
CAPACITY = 0.7


def sized(shares, **placed):
    """A right-sized placement: services as ``placed``, packed at CAPACITY."""
    return pack(Placement(tuple(placed.items())), shares, CAPACITY)


# a: 1 replica, then 2 smaller ones, then 1 large one (fewer replicas going up); b grows its
# share; c stays as it is
LOW = sized({"a": 0.2, "b": 0.2, "c": 0.1}, a=OLD1, b=OLD1, c=OLD1)
MID = sized({"a": 0.15, "b": 0.4, "c": 0.1}, a=OLD2, b=OLD1, c=OLD1)
HIGH = sized({"a": 0.45, "b": 0.5, "c": 0.1}, a=OLD1, b=OLD1, c=OLD1)
TABLE = toy_table(((100.0, LOW), (200.0, MID), (300.0, HIGH)))
TABLE = replace(TABLE, levels=tuple(replace(level, socket_capacity=CAPACITY)
                                    for level in TABLE.levels))
HOLD_S = 1200.0
SETTINGS = ControlSettings(slo_miss_periods=2, escalation_hold_s=600, cooldown_s=180,
                           shrink_hold_s=HOLD_S)
STEP_S = 60.0


def obs(now, qps, current, p99=5.0):
    return Observation(clock_s=now, qps=qps, p99_ms=p99, ci_g_per_kwh=200.0, current=current)


def run(loads, current=LOW, settings=SETTINGS, p99s=None):
    """One decision per STEP_S at each load of ``loads`` (req/s), each applied; the trail
    of (placement, decision, state)."""
    state = ControlState()
    trail = []
    for i, qps in enumerate(loads):
        p99 = p99s[i] if p99s is not None else 5.0
        decision, state = decide(obs(i * STEP_S, qps, current, p99), state, TABLE, settings)
        current = decision.placement
        trail.append((current, decision, state))
    return trail


def moves(trail):
    return sum(len(decision.moves) for _, decision, _ in trail)


def test_going_up_moves_every_service_the_level_resizes_at_once():
    (placed, decision, _), = run([150.0])
    assert placed == MID and isinstance(placed, PackedPlacement)
    assert set(decision.moves) == {"a", "b"}          # c: the same share on both levels
    assert all(m.cause is Cause.TABLE for m in decision.moves.values())
    assert "1xold @0.200 -> 2xold @0.150" in decision.moves["a"].reason


def test_fewer_replicas_going_up_is_growth_not_a_move_toward_old():
    # MID -> HIGH takes a from 2 replicas to 1: toward old by replicas, yet MID's setting was
    # planned for less load than HIGH serves, so it moves at once (no cooldown, no hold)
    trail = run([150.0, 250.0], current=LOW)
    assert trail[0][0] == MID and trail[1][0] == HIGH
    assert set(trail[1][1].moves) == {"a", "b"}


def test_growing_is_by_the_load_a_setting_was_planned_for():
    order = TABLE.generations
    up = growing(TABLE, 2, MID, HIGH, (), order)        # MID's settings serve 200 < 300
    down = growing(TABLE, 1, HIGH, MID, (), order)      # HIGH's serve 300 >= 200
    assert up == {"a", "b"}
    assert down == frozenset()                          # a: 1 -> 2 replicas, still a shrink


def test_a_level_that_goes_down_and_back_up_within_the_hold_moves_nobody():
    # up to HIGH, then the load dips under MID for 10 minutes (the level goes down after the
    # table's 300 s) and comes back, three times
    dip = [150.0] * 10 + [250.0] * 5
    trail = run([250.0] + dip * 3, current=MID)
    levels = [state.level for _, _, state in trail]
    assert 1 in levels and levels[-1] == 2              # the level did go down and back up
    assert moves(trail) == 2                            # a and b, once, going up
    assert all(placed == HIGH for placed, _, _ in trail)


def test_shares_shrink_after_the_hold_without_a_break():
    trail = run([250.0] + [150.0] * 40, current=MID)
    down_at = next(i for i, (_, _, state) in enumerate(trail) if state.level == 1)
    shrunk_at = next(i for i, (placed, _, _) in enumerate(trail) if i and placed == MID)
    assert (shrunk_at - down_at) * STEP_S == pytest.approx(HOLD_S)
    assert set(trail[shrunk_at][1].moves) == {"a", "b"}
    assert trail[shrunk_at][2].shrink_since == {}


def test_the_hold_restarts_when_the_table_stops_asking_for_the_shrink():
    # the level goes down, then up again for a while (a and b run HIGH's shares, no shrink
    # asked), then down again: the hold counts from the second time
    loads = [250.0] + [150.0] * 20 + [250.0] * 3 + [150.0] * 40
    trail = run(loads, current=MID)
    shrunk_at = next(i for i, (placed, _, _) in enumerate(trail) if i and placed == MID)
    second_down = next(i for i, (_, _, state) in enumerate(trail) if i > 24 and state.level == 1)
    assert (shrunk_at - second_down) * STEP_S == pytest.approx(HOLD_S)


def test_without_a_hold_shares_follow_the_level():
    dip = [150.0] * 10 + [250.0] * 5
    trail = run([250.0] + dip * 3, current=MID, settings=replace(SETTINGS, shrink_hold_s=0))
    assert moves(trail) == 2 + 3 * 4                    # each dip: down and up again


def test_an_escalation_keeps_the_level_shares_and_puts_the_held_service_on_a_whole_socket():
    trail = run([50.0] * 3, p99s=[5.0, 12.0, 12.0])
    placed, decision, state = trail[-1]
    assert state.escalation == 1
    assert isinstance(placed, PackedPlacement)
    assert placed["a"] == ServicePlacement("new", 1) and placed.share("a") == ESCALATED_SHARE
    assert [s.replicas for s in placed.sockets if s.generation == "new"] == [
        (("a", ESCALATED_SHARE),)]                     # alone on its socket
    for service in ("b", "c"):                         # the others as the level has them
        assert placed[service] == LOW[service] and placed.share(service) == LOW.share(service)
    old = [s.replicas for s in placed.sockets if s.generation == "old"]
    assert old == [tuple(r for r in s.replicas if r[0] != "a") for s in LOW.sockets]
    assert set(decision.moves) == {"a"} and decision.moves["a"].cause is Cause.SLO_MISS
    assert "@1.000" in decision.moves["a"].reason


def test_the_step_back_restores_the_level_packing_without_the_shrink_hold():
    loads = [50.0] * 20
    p99s = [5.0, 12.0, 12.0] + [5.0] * 17
    trail = run(loads, p99s=p99s)
    back = next(i for i, (_, d, _) in enumerate(trail) if "a" in d.moves and i > 2)
    assert trail[back][1].moves["a"].cause is Cause.STEP_BACK
    assert (back - 2) * STEP_S == pytest.approx(SETTINGS.escalation_hold_s)   # < HOLD_S
    assert trail[back][0] == LOW and trail[back][0].sockets == LOW.sockets


def test_a_plain_placement_running_moves_only_for_generation_or_replicas():
    # read from a cluster without reservations: no share to compare, so LOW's services
    # stay; a service placed differently moves, and the decision is the level's packing
    quiet = replace(SETTINGS, shrink_hold_s=0)
    (placed, decision, _), = run([50.0], current=Placement(LOW.items), settings=quiet)
    assert decision.moves == {} and placed == Placement(LOW.items)
    scaled = Placement((("a", OLD2), ("b", OLD1), ("c", OLD1)))
    (placed, decision, _), = run([50.0], current=scaled, settings=quiet)
    assert set(decision.moves) == {"a"} and placed == LOW


def test_a_share_read_back_within_the_tolerance_is_the_same_reservation():
    close = pack(Placement(LOW.items), {"a": 0.2 + 4e-7, "b": 0.2, "c": 0.1 - 4e-7}, CAPACITY)
    (placed, decision, _), = run([50.0], current=close)
    assert decision.moves == {}
    assert growing(TABLE, 1, close, MID, (), TABLE.generations) == {"a", "b"}


def test_node_loss_on_a_right_sized_decision_keeps_the_shares_of_the_others():
    decision, state = decide(obs(0.0, 50.0, LOW), ControlState(), TABLE, SETTINGS)
    capacity = Capacity(ready=frozenset({"new"}), running={"a": 1, "b": 1, "c": 1})
    kept, _, lost = keep_off_lost_capacity(decision, ControlState(), state, LOW, capacity,
                                           TABLE.generations, SETTINGS, 0.0)
    assert set(lost) == {"a", "b", "c"}
    assert isinstance(kept.placement, PackedPlacement)
    assert all(kept.placement[s].generation == "new" and kept.placement.share(s) == 1.0
               for s in "abc")
    assert len(kept.placement.sockets) == 3


def test_the_shrink_clock_survives_the_state_file():
    trail = run([250.0] + [150.0] * 10, current=MID)
    state = trail[-1][2]
    assert state.shrink_since                        # a and b held back since the level fell
    again = ControlState(**{**asdict(state), "shrink_since": dict(state.shrink_since)})
    assert again.shrink_since == state.shrink_since
    assert all(math.isfinite(t) for t in again.shrink_since.values())
