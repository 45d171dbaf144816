"""run_once() with in-memory ports and a fake clock: the daemon's rules, table-driven."""

import io
import json
import math
import urllib.request
from dataclasses import replace

import pytest

from ecoscale.config import DaemonConfig
from ecoscale.control.decide import ControlSettings
from ecoscale.daemon.loop import Daemon, backoff_s
from ecoscale.daemon.telemetry import Health, Log, Telemetry, serve
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.planner.table import Hysteresis
from ecoscale.ports import ManagedService
from ecoscale.testing import (
    TOY_HIGH,
    TOY_LOW,
    TOY_MID,
    TOY_TABLE,
    FakeClock,
    FixedCarbon,
    InMemoryMetrics,
    RecordingOrchestrator,
    toy_table,
)

NEW1 = ServicePlacement("new", 1)
OLD1, OLD2 = ServicePlacement("old", 1), ServicePlacement("old", 2)


def placement(**placed):
    return Placement(tuple(placed.items()))


LOW, MID, HIGH, TABLE = TOY_LOW, TOY_MID, TOY_HIGH, TOY_TABLE
CONTROL = ControlSettings(slo_miss_periods=2, escalation_hold_s=600, cooldown_s=180,
                          no_data_fallback_periods=3)


def make(start=LOW, qps=50.0, p99=5.0, tmp_path=None, **config):
    settings = {"app": "toy", "table": "t.yaml", "interval_s": 60.0, "control": CONTROL}
    if tmp_path is not None:
        settings["state_file"] = str(tmp_path / "state.json")
    settings.update(config)
    log_stream = io.StringIO()
    daemon = Daemon(config=DaemonConfig(**settings), table=TABLE,
                    orchestrator=RecordingOrchestrator.of(start), metrics=InMemoryMetrics(qps, p99),
                    carbon=FixedCarbon(), clock=FakeClock(), log=Log(log_stream))
    return daemon, log_stream


def tick(daemon, qps=None, p99=None, advance=60.0):
    if qps is not None:
        daemon.metrics.qps = qps
    if p99 is not None:
        daemon.metrics.p99_ms = p99
    report = daemon.run_once()
    daemon.clock.advance(advance)
    return report


def test_load_step_up_moves_toward_new_with_one_log_line_per_action():
    daemon, log = make()
    tick(daemon)
    report = tick(daemon, qps=290)
    assert daemon.orchestrator.placement() == HIGH
    assert {a.service for a in report.actions} == {"a", "b"} and all(a.applied for a in
                                                                     report.actions)
    lines = [json.loads(x) for x in log.getvalue().splitlines()]
    actions = [x for x in lines if x["event"] == "action"]
    assert len(actions) == 2
    first = actions[0]
    assert first["service"] == "a" and first["change"] == "1xold -> 1xnew" and first["reason"]


CASES = [
    pytest.param(dict(start=HIGH), [(50, 5), (50, 5), (50, 5), (50, 5), (50, 5), (50, 5)],
                 LOW, id="step-down-after-stabilisation"),
    pytest.param(dict(start=HIGH), [(50, 5), (50, 5)], HIGH, id="down-waits"),
    pytest.param(dict(start=HIGH), [(50, 5), (50, 30), (50, 5), (50, 5), (50, 5), (50, 5)],
                 HIGH, id="latency-miss-blocks-down"),
    pytest.param(dict(start=LOW), [(50, 30), (50, 30)], placement(a=NEW1, b=OLD1, c=OLD1),
                 id="closed-loop-escalates-on-misses"),
    pytest.param(dict(start=LOW), [(50, math.nan), (50, math.nan), (50, math.nan)], LOW,
                 id="nan-latency-holds"),
    pytest.param(dict(start=LOW), [(math.nan, 5), (math.nan, 5)], LOW, id="nan-load-holds"),
    pytest.param(dict(start=LOW, dry_run=True), [(290, 5), (290, 5)], LOW, id="dry-run"),
    pytest.param(dict(start=MID, control=replace(CONTROL, max_replicas=1)), [(150, 5)],
                 LOW, id="max-replicas"),
]


@pytest.mark.parametrize("setup,steps,expected", CASES)
def test_rules(setup, steps, expected):
    daemon, _ = make(**setup)
    for qps, p99 in steps:
        tick(daemon, qps=qps, p99=p99)
    assert daemon.orchestrator.placement() == expected


def test_dry_run_logs_what_it_would_do():
    daemon, log = make(dry_run=True)
    report = tick(daemon, qps=290)
    assert report.actions and not any(a.applied for a in report.actions)
    assert daemon.orchestrator.applied == []
    assert all(json.loads(x)["dry_run"] for x in log.getvalue().splitlines()
               if '"action"' in x)


def test_pause_file_holds_every_action(tmp_path):
    pause = tmp_path / "pause"
    daemon, _ = make(pause_file=str(pause))
    pause.touch()
    tick(daemon, qps=290)
    assert daemon.orchestrator.applied == []
    pause.unlink()
    tick(daemon, qps=290)
    assert daemon.orchestrator.placement() == HIGH


def test_paused_label_holds_one_service():
    daemon, _ = make()
    daemon.orchestrator.pause("a")
    tick(daemon, qps=290)
    placed = daemon.orchestrator.placement()
    assert placed["a"] == OLD1 and placed["b"] == OLD2


def test_a_paused_swarm_update_is_logged_once_counted_and_the_next_move_goes_ahead():
    daemon, log = make()
    daemon.orchestrator.services["a"] = replace(daemon.orchestrator.services["a"],
                                         update_paused="paused: task xyz failed")
    # a persistent failure: each forced update pauses again
    daemon.orchestrator.resume = lambda service: daemon.orchestrator.resumed.append(service.name)
    tick(daemon, qps=50)
    tick(daemon, qps=50)
    tick(daemon, qps=50)
    assert daemon.orchestrator.resumed == ["a", "a"]      # MAX_RESUMES, then left paused
    warnings = [json.loads(x) for x in log.getvalue().splitlines() if "update_paused" in x]
    assert [(w["service"], w["swarm"]) for w in warnings] == [("a", "paused: task xyz failed")]
    assert daemon.telemetry.updates_paused._value.get() == 1
    assert daemon.health.details["updates_paused"] == ["a"]
    report = tick(daemon, qps=290)
    assert report.healthy and ("a", HIGH["a"]) in daemon.orchestrator.applied
    tick(daemon, qps=290)     # the move started a new update: Swarm no longer reports a pause
    assert daemon.telemetry.updates_paused._value.get() == 0


def test_prometheus_outage_holds_and_reports_unhealthy_then_recovers():
    daemon, _ = make()
    tick(daemon)
    daemon.metrics.down = True
    report = tick(daemon, qps=290)
    assert not report.healthy and any("prometheus" in p for p in report.problems)
    assert daemon.orchestrator.applied == []
    ok, body = daemon.health.report(daemon.clock.now())
    assert not ok and body["problems"]
    daemon.metrics.down = False
    report = tick(daemon, qps=290)
    assert report.healthy and daemon.orchestrator.placement() == HIGH


@pytest.mark.parametrize("broken", ["down", "not-manager"])
def test_no_swarm_or_not_a_manager_means_no_action(broken):
    daemon, _ = make()
    if broken == "down":
        daemon.orchestrator.down = True
    else:
        daemon.orchestrator.is_controller = False
    report = tick(daemon, qps=290)
    assert not report.healthy and daemon.orchestrator.applied == []


def test_services_outside_the_swarm_are_ignored():
    daemon, _ = make()
    del daemon.orchestrator.services["b"]
    tick(daemon, qps=290)
    assert [name for name, _ in daemon.orchestrator.applied] == ["a"]


def test_services_outside_the_table_are_neither_touched_nor_counted(social_model):
    # a stack rule maps every service of the stack: a tracing agent is not in the topology
    start = Placement.uniform(social_model.services, "old")
    table = toy_table(((3000.0, start),), app="socialNetwork", slo_ms=20.0, ranking=(),
                      non_critical={}, critical={}, hysteresis=Hysteresis())
    orchestrator = RecordingOrchestrator.of(start)
    orchestrator.services["jaeger-agent"] = ManagedService(
        "jaeger-agent", "id-agent", "app_jaeger-agent", OLD2, {"old": 2},
        update_paused="paused: task failed")
    daemon = Daemon(config=DaemonConfig(app="socialNetwork", table="t.yaml"), table=table,
                    orchestrator=orchestrator, metrics=InMemoryMetrics(1000.0, 50.0),
                    carbon=FixedCarbon(300.0), clock=FakeClock(), model=social_model,
                    log=Log(io.StringIO()))
    tick(daemon)
    assert "jaeger-agent" not in {name for name, _ in orchestrator.applied}
    assert orchestrator.resumed == []
    registry = daemon.telemetry.registry
    assert registry.get_sample_value("ecoscale_running_tasks", {"generation": "old"}) == 26
    assert registry.get_sample_value("ecoscale_service_replicas", {
        "service": "jaeger-agent", "generation": "old"}) is None
    assert registry.get_sample_value("ecoscale_service_replicas", {
        "service": "nginx-thrift", "generation": "old"}) == 1
    assert daemon.telemetry.updates_paused._value.get() == 0


def test_refused_action_is_retried_and_starts_no_cooldown():
    daemon, _ = make(start=HIGH)
    daemon.orchestrator.refuse.add("a")
    for _ in range(7):
        tick(daemon, qps=50)
    assert daemon.orchestrator.placement()["a"] == NEW1   # refused every time
    assert "a" not in daemon.state.last_move_s
    daemon.orchestrator.refuse.clear()
    tick(daemon, qps=50)
    assert daemon.orchestrator.placement()["a"] == OLD1


def test_restart_with_saved_state_does_nothing_twice(tmp_path):
    daemon, _ = make(tmp_path=tmp_path)
    tick(daemon)
    tick(daemon, qps=290)
    applied = list(daemon.orchestrator.applied)
    again = Daemon(config=daemon.config, table=TABLE, orchestrator=daemon.orchestrator,
                   metrics=daemon.metrics, carbon=FixedCarbon(), clock=daemon.clock,
                   log=Log(io.StringIO()))
    assert again.state == daemon.state
    tick(again, qps=290)
    assert daemon.orchestrator.applied == applied   # nothing repeated
    tick(again, qps=50)                      # cooldown from before the restart still holds
    assert daemon.orchestrator.applied == applied


def test_sigterm_finishes_the_action_in_flight_and_leaves_the_rest():
    daemon, _ = make()
    tick(daemon)
    original = daemon.orchestrator.apply

    def apply_then_stop(service, placed):
        original(service, placed)
        daemon.stop_requested = True

    daemon.orchestrator.apply = apply_then_stop
    report = tick(daemon, qps=290)
    assert len(daemon.orchestrator.applied) == 1
    assert len([a for a in report.actions if a.applied]) == 1
    assert daemon.state.last_move_s.keys() == {daemon.orchestrator.applied[0][0]}


def test_run_forever_stops_cleanly(monkeypatch):
    daemon, _ = make()
    calls = []

    def fake_once():
        calls.append(1)
        if len(calls) == 3:
            daemon.stop_requested = True
        return daemon.__class__.run_once(daemon)

    monkeypatch.setattr(daemon, "run_once", fake_once)
    assert daemon.run_forever() == 0 and len(calls) == 3


@pytest.mark.parametrize("failures,expected", [(0, 15), (1, 15), (2, 30), (3, 60), (9, 300)])
def test_backoff(failures, expected):
    assert backoff_s(failures, 15, 300) == expected


def test_reload_rejects_a_bad_config_and_keeps_running():
    daemon, log = make()

    def bad():
        raise ValueError("bad config")

    daemon._reload(bad)
    assert daemon.config.app == "toy" and "reload-rejected" in log.getvalue()


def test_own_metrics_and_healthz_are_served():
    telemetry, health = Telemetry(), Health()
    server = serve(telemetry, health, "127.0.0.1", 0)
    try:
        port = server.server_address[1]
        telemetry.decisions.inc()
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        assert "ecoscale_decisions_total 1.0" in body
        assert "ecoscale_loop_duration_seconds_bucket" in body
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz")
        assert info.value.code == 503
        health.update([], 1e12, {"level": 1})
        health.last_loop_s = __import__("time").time()
        reply = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").read())
        assert reply["healthy"] is True
    finally:
        server.shutdown()


def test_live_carbon_accounting(social_model):
    services = social_model.services
    start = Placement.uniform(services, "old")
    table = toy_table(((3000.0, start),), app="socialNetwork", slo_ms=20.0, ranking=(),
                      non_critical={}, critical={}, hysteresis=Hysteresis())
    daemon = Daemon(config=DaemonConfig(app="socialNetwork", table="t.yaml"), table=table,
                    orchestrator=RecordingOrchestrator.of(start),
                    metrics=InMemoryMetrics(1000.0, 5.0),
                    carbon=FixedCarbon(300.0), clock=FakeClock(), model=social_model,
                    log=Log(io.StringIO()))
    tick(daemon, advance=3600)
    tick(daemon, advance=3600)
    registry = daemon.telemetry.registry
    rate = registry.get_sample_value("ecoscale_carbon_rate_grams_per_hour",
                                     {"generation": "old", "kind": "operational"})
    expected = social_model.carbon_rate_g_per_h(start, 1000.0, 300.0)
    assert rate == pytest.approx(expected, rel=1e-6)
    total = registry.get_sample_value("ecoscale_carbon_grams_total",
                                      {"generation": "old", "kind": "operational"})
    assert total == pytest.approx(expected, rel=1e-6)      # one hour at that rate
    assert registry.get_sample_value("ecoscale_running_tasks", {"generation": "old"}) == 26
    sources = {source: registry.get_sample_value("ecoscale_carbon_utilisation_source_slots",
                                                 {"source": source})
               for source in ("measured", "modelled", "peak")}
    assert sources == {"measured": 0, "modelled": 26, "peak": 0}   # no CPU series: the profile


def test_a_paused_update_is_resumed_by_a_forced_update_and_logged():
    daemon, log = make()
    daemon.orchestrator.services["a"] = replace(daemon.orchestrator.services["a"],
                                         update_paused="paused: task xyz failed")
    tick(daemon, qps=50)
    assert daemon.orchestrator.resumed == ["a"]
    assert not daemon.orchestrator.services["a"].update_paused
    events = [json.loads(x) for x in log.getvalue().splitlines()]
    assert [e["service"] for e in events if e["event"] == "update_resumed"] == ["a"]
    assert daemon.telemetry.updates_resumed._value.get() == 1
    tick(daemon, qps=50)
    assert daemon.orchestrator.resumed == ["a"]           # nothing paused any more


def test_dry_run_never_resumes_a_paused_update():
    daemon, _ = make(dry_run=True)
    daemon.orchestrator.services["a"] = replace(daemon.orchestrator.services["a"],
                                         update_paused="paused: task xyz failed")
    tick(daemon, qps=50)
    assert daemon.orchestrator.resumed == []


# ---- structured causes: metrics and log read them, not the reason text --------------------
def actions_metric(daemon):
    """ecoscale_actions_total as {(direction, reason, dry_run): count}."""
    return {(s.labels["direction"], s.labels["reason"], s.labels["dry_run"]): s.value
            for family in daemon.telemetry.registry.collect()
            for s in family.samples if s.name == "ecoscale_actions_total"}


@pytest.mark.parametrize("setup,expected", [
    pytest.param({}, {("new", "table", "false"): 2.0}, id="made"),
    pytest.param({"dry_run": True}, {("new", "table", "true"): 2.0}, id="dry-run"),
    pytest.param({"pause_file": "<tmp>/pause"}, {}, id="paused-is-not-counted"),
])
def test_actions_are_counted_by_cause_and_the_real_dry_run(tmp_path, setup, expected):
    if "pause_file" in setup:
        setup = {"pause_file": str(tmp_path / "pause")}
        (tmp_path / "pause").touch()
    daemon, log = make(**setup)
    tick(daemon)
    tick(daemon, qps=290)
    assert actions_metric(daemon) == expected
    logged = [json.loads(x) for x in log.getvalue().splitlines() if '"action"' in x]
    assert [(x["service"], x["cause"], x["capped"]) for x in logged] == \
        [("a", "table", False), ("b", "table", False)]
    assert all(x["reason"].startswith(f"{x['service']}: ") for x in logged)   # the human text


def test_an_escalation_and_its_step_back_are_labelled_by_their_cause():
    daemon, log = make(start=LOW)
    for _ in range(2):
        tick(daemon, qps=50, p99=30)      # two misses: 'a' to new
    assert daemon.orchestrator.placement()["a"] == NEW1
    for _ in range(12):
        tick(daemon, qps=50, p99=5)       # SLO met for the hold: 'a' back to old
    assert daemon.orchestrator.placement() == LOW
    # the step-back's text says "SLO met": the label comes from the cause, not the text
    assert actions_metric(daemon) == {("new", "slo", "false"): 1.0,
                                      ("old", "step-back", "false"): 1.0}
    logged = [json.loads(x) for x in log.getvalue().splitlines() if '"action"' in x]
    assert [(x["cause"], "SLO" in x["reason"]) for x in logged] == [("slo", True),
                                                                  ("step-back", True)]


def test_a_decision_note_is_logged_when_it_changes_not_every_loop():
    daemon, log = make(start=LOW)
    for p99 in (5, 5, 30, 30, 30, 5, 5):      # met, met, three misses (escalation), met
        tick(daemon, qps=50, p99=p99)
    notes = [r["note"] for x in log.getvalue().splitlines()
             if (r := json.loads(x))["event"] == "decision"]
    assert notes == ["level 1, escalation 0", "level 1, escalation 0, SLO missed",
                     "level 1, escalation 1, SLO missed", "level 1, escalation 1"], notes


def test_a_capped_move_is_logged_with_what_the_table_wanted():
    daemon, log = make(start=placement(a=NEW1, b=OLD1, c=OLD1),
                       control=replace(CONTROL, max_replicas=1))
    report = tick(daemon, qps=150)
    assert [(a.service, a.cause, a.after) for a in report.actions] == [("a", "table", OLD1)]
    logged = [json.loads(x) for x in log.getvalue().splitlines() if '"action"' in x]
    assert [(x["capped"], x["wanted_replicas"]) for x in logged] == [(True, 2)]


# ---- the injected clock is the only clock run_once reads ----------------------------------
class NoWallClock:
    """Stands in for the ``time`` module: any clock read fails the test."""

    def __init__(self, real):
        self.strftime, self.gmtime = real.strftime, real.gmtime

    def time(self):
        raise AssertionError("read the wall clock")

    def perf_counter(self):
        raise AssertionError("read perf_counter")

    monotonic = perf_counter


def test_run_once_reads_only_the_injected_clock(monkeypatch):
    import time as real

    import ecoscale.daemon.loop as loop
    import ecoscale.daemon.telemetry as telemetry

    monkeypatch.setattr(loop, "time", NoWallClock(real))
    monkeypatch.setattr(telemetry, "time", NoWallClock(real))
    daemon, log = make()
    daemon.clock.tick_s = 0.25            # every monotonic read: 0.25 s later
    tick(daemon)
    began = daemon.clock.now()
    report = tick(daemon, qps=290)
    assert report.actions and report.epoch_s == began + 0.25   # after the first reading
    registry = daemon.telemetry.registry
    assert registry.get_sample_value("ecoscale_loop_duration_seconds_sum") == 0.5  # 2 loops
    assert daemon.health.last_loop_s == began + 0.5            # stamped when it ended
    first = next(r for x in log.getvalue().splitlines() if (r := json.loads(x))["event"]
                 == "action")
    assert first["ts"] == telemetry.iso_utc(report.epoch_s)


def test_healthz_ages_the_last_loop_on_the_given_clock():
    telemetry, health = Telemetry(), Health(max_age_s=60.0)
    clock = FakeClock()
    server = serve(telemetry, health, "127.0.0.1", 0, clock.now)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/healthz"
        health.update([], clock.now(), {})
        assert json.loads(urllib.request.urlopen(url).read())["healthy"] is True
        clock.advance(61.0)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url)
        assert info.value.code == 503 and "no loop for 61 s" in info.value.read().decode()
    finally:
        server.shutdown()


@pytest.mark.parametrize("trend_periods,first_up", [(0, 5), (2, 4)],
                         ids=["measured-load", "trend-one-period-earlier"])
def test_the_daemon_feeds_the_trend_estimate_the_observations_the_replay_does(trend_periods,
                                                                               first_up):
    # LOW serves 100 req/s (95 with the full margin): the measured ramp 70, 76, ... 100
    # passes it at 100; its projection (94 + 6) a period earlier
    daemon, _ = make(qps=70.0, control=replace(CONTROL, trend_periods=trend_periods))
    ramp = [70.0 + 6 * i for i in range(6)]
    placed = []
    for qps in ramp:
        tick(daemon, qps=qps)
        placed.append(daemon.orchestrator.placement())
    assert placed.index(MID) == first_up
    # the state holds (clock s, req/s) of the last trend_periods + 1 observations
    kept = tuple(ramp[-(trend_periods + 1):]) if trend_periods else ()
    assert tuple(q for _, q in daemon.state.trend_loads) == kept
