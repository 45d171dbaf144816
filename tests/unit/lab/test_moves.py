"""The move measurement's summaries (evaluation.moves) and where `lab evaluate` takes its
move time from (evaluation.evaluate.with_move_time); the lab itself: test_moves_on_lab."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from ecoscale.evaluation.evaluate import EvaluationOptions, with_move_time
from ecoscale.evaluation.moves import (
    WARM_P99_OVER_SLO,
    MoveMeasurement,
    MoveTiming,
    recorded,
    warm,
    warm_up_note,
    window_latency,
    with_latency,
    with_server_p99,
)
from ecoscale.evaluation.timescale import LAB_MOVE_TIME_S
from ecoscale.loadgen.generator import RequestRecord


def move(**changes) -> MoveTiming:
    base = MoveTiming("nginx-thrift", "new", "old", started_s=10.0, running_s=2.0,
                      answering_s=2.5, scraped_s=6.0, old_gone_s=7.5)
    return replace(base, **changes)


def records(latency_ms_at: dict[float, float], failed_at: tuple[float, ...] = ()
            ) -> list[RequestRecord]:
    found = [RequestRecord(at, "read", ms / 1000, 200) for at, ms in latency_ms_at.items()]
    found += [RequestRecord(at, "read", 10.0, 0, "timeout") for at in failed_at]
    return sorted(found, key=lambda r: r.at_s)


def test_the_move_time_is_the_last_phase_and_none_when_one_did_not_end():
    assert move().total_s == 7.5
    assert move(scraped_s=9.0).total_s == 9.0
    assert move(old_gone_s=None).total_s is None
    assert "did not finish" in move(old_gone_s=None).text()
    assert "old gone -" in move(old_gone_s=None).text()


def test_window_latency_counts_the_requests_sent_in_the_window_and_the_failed_ones():
    sent = records({1.0: 10, 2.0: 20, 3.0: 30, 9.0: 900}, failed_at=(2.5,))
    p99, requests, failed = window_latency(sent, 1.0, 4.0)
    assert (requests, failed) == (4, 1)
    assert 29 < p99 <= 30   # the 900-ms request at 9 s is outside, the failure has no latency
    assert math.isnan(window_latency(sent, 20.0, 30.0)[0])


def test_with_latency_splits_before_during_and_after_the_move():
    # before: 5..10 s at 20 ms; during the move (10..17.5 s) 100 ms; after it settled 40 ms
    latency = {t / 2: 20.0 for t in range(10, 20)}
    latency |= {t / 2: 100.0 for t in range(20, 35)}
    latency |= {t / 2: 40.0 for t in range(40, 60)}
    timed = with_latency(move(), records(latency, failed_at=(12.0,)), before_s=5.0,
                         next_start_s=30.0)
    assert timed.p99_before_ms == pytest.approx(20.0)
    assert timed.p99_during_ms == pytest.approx(100.0)
    assert timed.p99_after_ms == pytest.approx(40.0)
    assert (timed.requests_during, timed.errors_during) == (16, 1)


def test_an_unfinished_move_spans_its_whole_window():
    latency = {float(t): 50.0 for t in range(10, 30)}
    timed = with_latency(move(old_gone_s=None), records(latency), before_s=5.0,
                         next_start_s=30.0)
    assert timed.requests_during == 20
    assert math.isnan(timed.p99_after_ms)


def test_the_measurement_summarises_its_moves_and_survives_its_saved_form():
    moves = (move(p99_before_ms=30, p99_during_ms=60, p99_after_ms=40,
                  server_p99_before_ms=25, server_p99_during_ms=75),
             move(old_gone_s=9.5, p99_before_ms=35, p99_during_ms=80, p99_after_ms=45,
                  server_p99_before_ms=28, server_p99_during_ms=65),
             move(old_gone_s=None, p99_during_ms=90, server_p99_during_ms=72),
             # the move back of a placement that missed the SLO already (old at the SLO load)
             move(old_gone_s=8.5, p99_before_ms=40, p99_during_ms=70, p99_after_ms=30,
                  server_p99_before_ms=115, server_p99_during_ms=77))
    measurement = MoveMeasurement("socialNetwork", 98.0, moves, slo_ms=70.0,
                                  measured_at="2026-12-02T15:00:00Z", source="lab")
    assert measurement.move_time_s == pytest.approx(8.5)   # median of 7.5, 8.5, 9.5
    assert measurement.slowest_s == 9.5
    assert measurement.p99_during_ms == 90
    assert measurement.p99_steady_ms == 45
    assert measurement.server_p99_during_ms == 77 and measurement.server_p99_steady_ms == 115
    # server side, as the SLO: 75 (from 25) and 72 (no data before) ms over 70; the move
    # back at 77 ms started at 115 ms: not the move's doing
    assert measurement.over_slo == 2 and measurement.started_over_slo == 1
    text = measurement.text()
    assert text.startswith("8.5 s (median of 3/4 moves, slowest 9.5 s) at 98 req/s")
    assert ("a move pushed p99 over it 2 time(s) (1 move(s) started over it: the placement "
            "they left did not hold it at this load)") in text
    assert "up to 77 ms server side (steady up to 115), 90 ms client side" in text
    saved = measurement.to_dict()
    assert saved["move_time_s"] == pytest.approx(8.5) and saved["text"] == text
    again = recorded(saved)
    assert again == measurement
    assert recorded(saved, app="hotelReservation") is None
    assert recorded(None) is None and recorded({"moves": "nonsense"}) is None


def test_the_server_side_p99_windows_are_the_steady_one_before_and_the_move_itself():
    asked = []

    def p99_between(start_s: float, end_s: float) -> float | None:
        asked.append((start_s, end_s))
        return 40.0 if end_s <= 10.0 else None

    timed = with_server_p99(move(), p99_between, before_s=5.0)
    assert asked == [(5.0, 10.0), (10.0, 17.5)]
    assert timed.server_p99_before_ms == 40.0 and math.isnan(timed.server_p99_during_ms)
    unfinished = with_server_p99(move(old_gone_s=None), p99_between, before_s=5.0)
    assert asked[2:] == [(5.0, 10.0)]   # no window for a move that did not finish
    assert math.isnan(unfinished.server_p99_during_ms)


class RecordingLab:
    """The one method of Lab that ``with_move_time`` reads without measuring."""

    def __init__(self, saved):
        self.saved = saved

    def recorded_moves(self):
        return self.saved


def test_the_evaluation_takes_the_given_then_the_recorded_then_the_assumed_move_time():
    saved = MoveMeasurement("socialNetwork", 98.0, (move(),), measured_at="t").to_dict()
    given = with_move_time(EvaluationOptions(move_time_s=5.0), RecordingLab(saved))
    assert given.move_time_s == 5.0 and "--move-time" in given.move_source
    found = with_move_time(EvaluationOptions(), RecordingLab(saved))
    assert found.move_time_s == 7.5 and "`ecoscale lab moves`" in found.move_source
    other_app = with_move_time(EvaluationOptions(app="hotelReservation"), RecordingLab(saved))
    assert other_app.move_time_s == LAB_MOVE_TIME_S and "assumed" in other_app.move_source
    assert with_move_time(EvaluationOptions(), None).move_time_s == LAB_MOVE_TIME_S


def test_the_app_is_warm_once_a_round_s_p99_is_within_the_bound_of_the_slo():
    assert warm(60.0, 70.0) and warm(WARM_P99_OVER_SLO * 70.0, 70.0)
    assert not warm(WARM_P99_OVER_SLO * 70.0 + 1, 70.0)
    assert not warm(None, 70.0) and not warm(math.nan, 70.0)   # no data is not warm
    assert warm(None, None)                                    # no SLO: one round
    assert "then a server-side p99 of 61 ms (<= 2 x the SLO)" in warm_up_note(
        20.4, 61.0, 70.0, 98.0)
    cold = warm_up_note(121.0, 384.0, 70.0, 98.0)
    assert "NOT steady after 121 s" in cold and "384 ms" in cold and "already slow" in cold
