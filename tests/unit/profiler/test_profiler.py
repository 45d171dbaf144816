import dataclasses
import math

import numpy as np
import pytest

from ecoscale.adapters.files import parse_profile, read_yaml
from ecoscale.errors import InputError
from ecoscale.lab.queries import LAB_QUERIES
from ecoscale.model.app import AppModel
from ecoscale.model.placement import Placement
from ecoscale.profiler.build import build_profile, prune_measured, ranking_measured
from ecoscale.profiler.experiments import criticality_plan, parse_pool
from ecoscale.profiler.fit import Point, SweepPoint, fit_curve, saturation_and_slo
from ecoscale.profiler.main import write_profile
from ecoscale.profiler.runner import sliced_p99
from ecoscale.profiler.store import E2E, Row, append_rows, compact, finished_points, read_rows
from ecoscale.testing import server_spans


def test_fit_recovers_a_queue():
    mu = 500.0
    loads = np.array([50, 100, 200, 300, 400, 450])
    p99 = 0.3 + 1.0 / (1 - loads / mu)
    curve = fit_curve([Point(x, y, 0.9 * x / mu) for x, y in zip(loads, p99, strict=True)])
    assert curve.saturation_qps == pytest.approx(mu, rel=0.05)
    assert curve.points[0][0] == 0.0 and curve.points[-1][0] == 450
    assert curve.points[-1][2] == pytest.approx(0.81, abs=0.01)


def test_fit_makes_p99_non_decreasing_and_flat_curves_unsaturated():
    curve = fit_curve([Point(10, 2.0, 0.1), Point(20, 1.5, 0.2), Point(30, 2.1, 0.3)])
    ys = [row[1] for row in curve.points]
    assert ys == sorted(ys)
    flat = fit_curve([Point(x, 1.0, 0.0) for x in (10, 20, 30)])
    assert flat.saturation_qps >= 30 * 10


def test_saturation_is_the_last_load_served():
    points = [SweepPoint(100, 100, 0, 5), SweepPoint(200, 199, 0, 6), SweepPoint(300, 290, 0, 9),
              SweepPoint(400, 320, 0.03, 80)]
    saturation, slo_load, slo_ms = saturation_and_slo(points)
    assert saturation == 290 and slo_load == pytest.approx(217.5)
    assert 6 < slo_ms < 9
    knee = [SweepPoint(100, 100, 0, 5), SweepPoint(200, 200, 0, 15), SweepPoint(300, 300, 0, 30)]
    assert saturation_and_slo(knee)[0] == 200   # served, but p99 6x the low-load p99
    with pytest.raises(ValueError, match="served none"):
        saturation_and_slo([SweepPoint(100, 10, 0.5, 5)])


def test_pool_config_reports_every_problem():
    with pytest.raises(InputError) as info:
        parse_pool({"frontend_url": "x", "loads_qps": [30, 10], "measure_s": 0,
                    "generations": ["new"]}, "pool.yaml")
    assert len(info.value.problems) == 5
    with pytest.raises(InputError, match="replica_limits"):
        parse_pool({"frontend_url": "http://a", "prometheus_url": "http://b",
                    "replica_limits": {"old": 0}}, "pool.yaml")


def test_lab_replica_limits_are_each_generations_cpus_over_one_replicas():
    from ecoscale.lab.config import LabConfig
    from ecoscale.lab.pool import replica_limits

    # a lab of slots: 0.05 CPU each within a budget of 2 - 0.5 host CPUs on each generation
    slotted = LabConfig.with_nodes(slot_cpus=0.05, old_node_cpus=None)
    assert replica_limits(slotted.emulation(host_cpus=2)) == {"new": 30, "old": 30}
    # the default: old is one node with one quota'd CPU for all its services; new shares the
    # host's CPUs; one replica is one event loop (one CPU)
    earlier = LabConfig()
    assert replica_limits(earlier.emulation(host_cpus=2)) == {"new": 2, "old": 1}
    assert replica_limits(earlier.emulation(host_cpus=8))["new"] == 8
    assert replica_limits(slotted.emulation(host_cpus=8))["new"] == 150   # (8 - 0.5) / 0.05


def rows_from_model(model, loads, experiment, on_old, replicas=1):
    """Rows as the profiler would record them, from a model standing in for a pool."""
    placement = Placement(tuple(
        (s, __import__("ecoscale.model.placement", fromlist=["x"]).ServicePlacement(
            "old" if s in on_old else "new", replicas)) for s in model.services))
    out = []
    for q in loads:
        per_service = model.service_p99(placement, q)
        util = model.utilisation(placement, q)
        for s, placed in placement.items:
            out.append(Row(experiment, q, s, placed.generation, placed.replicas, q, 0.0,
                           math.nan, math.nan, float(per_service[s]),
                           cpu_utilisation=float(util[s])))
        p99 = float(model.e2e_p99(placement, q))
        achieved = q if math.isfinite(p99) else q * 0.7
        out.append(Row(experiment, q, E2E, "", 0, achieved, 0.0, math.nan, math.nan, p99))
    return out


def test_build_profile_from_model_measurements(social_model, hardware):
    services = social_model.services
    loads = [500, 1000, 2000, 3000, 3600, 3900, 4200]
    rows = rows_from_model(social_model, loads, "all-new", ())
    rows += rows_from_model(social_model, loads[:5], "all-old", services)
    for s in ("user-timeline-service", "media-service"):
        rows += rows_from_model(social_model, [2925.0], f"alone-old:{s}", (s,))
    pool = parse_pool({"name": "sim", "frontend_url": "http://a", "prometheus_url": "http://b",
                       "loads_qps": loads, "replica_limits": {"old": 1}}, "sim")
    document = build_profile(rows, social_model.topology, hardware, pool, "2026-01-01T00:00Z",
                             "sim.csv")
    profile = parse_profile(document, "sim.yaml")
    measured = document["measured"]
    # the all-new p99 is past 4x its low-load value at 3900 req/s: the knee
    assert measured["saturation_qps"] == 3600
    assert measured["slo_load_qps"] == pytest.approx(0.75 * 3600)
    assert measured["slo_ms"] < 50 and document["slo_ms"] == measured["slo_ms"]
    assert "user-timeline-service" in measured["critical"]
    assert "media-service" in measured["non_critical"]
    ranking = [r["service"] for r in measured["ranking"]]
    assert ranking[0] == "user-timeline-service"
    assert 0.9 < document["e2e_calibration"] < 1.1
    assert profile.kind == "measured" and "pool 'sim'" in profile.provenance["statement"]
    assert document["provenance"]["power_source"]
    assert document["replica_limits"] == {"old": 1} and profile.replica_limits == {"old": 1}


def as_server_spans(rows: list[Row], topology) -> list[Row]:
    """The rows as a tracer's server spans would show them: per point, each service's p99 is
    its own time plus its callees' (``ecoscale.testing.server_spans``)."""
    own: dict[tuple[str, float], dict[str, float]] = {}
    for row in rows:
        if row.service != E2E:
            own.setdefault((row.experiment, row.offered_qps), {})[row.service] = row.p99_ms
    spans = {point: server_spans(topology, values) for point, values in own.items()}
    return [row if row.service == E2E else
            dataclasses.replace(row, p99_ms=spans[(row.experiment, row.offered_qps)][row.service])
            for row in rows]


def sweep_rows(model) -> tuple[list[Row], list[float]]:
    loads = [500, 1000, 2000, 3000, 3600, 3900, 4200]
    rows = rows_from_model(model, loads, "all-new", ())
    rows += rows_from_model(model, loads[:5], "all-old", model.services)
    for s in ("user-timeline-service", "media-service"):
        rows += rows_from_model(model, [2925.0], f"alone-old:{s}", (s,))
    return rows, loads


def sim_pool(loads: list[float], service_latency: str):
    queries = dataclasses.replace(LAB_QUERIES, service_latency=service_latency)
    return parse_pool({"name": "sim", "frontend_url": "http://a", "prometheus_url": "http://b",
                       "loads_qps": loads, "queries": queries}, "sim")


def curves(document) -> list[float]:
    """Every number of the profile's curves, in order."""
    return [value for per_gen in document["services"].values()
            for curve in per_gen.values() for row in curve["points"] for value in row]


def test_a_profile_from_server_spans_is_the_profile_from_own_times(social_model, hardware,
                                                                   tmp_path):
    topology = social_model.topology
    own_rows, loads = sweep_rows(social_model)
    span_rows = as_server_spans(own_rows, topology)
    frontend = [(own.p99_ms, span.p99_ms) for own, span in zip(own_rows, span_rows, strict=True)
                if own.service == topology.frontend]
    assert all(span > 3 * own for own, span in frontend)   # a span holds the whole request
    from_own = build_profile(own_rows, topology, hardware, sim_pool(loads, "own"), "t",
                             "sim.csv")
    from_spans = build_profile(span_rows, topology, hardware, sim_pool(loads, "server-span"),
                               "t", "sim.csv")
    assert curves(from_spans) == pytest.approx(curves(from_own), abs=2e-4)
    for key in ("critical", "non_critical"):
        assert set(from_spans["measured"][key]) == set(from_own["measured"][key])
    assert from_spans["e2e_calibration"] == pytest.approx(from_own["e2e_calibration"],
                                                          abs=1e-5)
    assert "server spans" in from_spans["provenance"]["service_latency"]
    assert "as measured" in from_own["provenance"]["service_latency"]
    points = len({(r.experiment, r.offered_qps) for r in span_rows})
    summary = from_spans["measured"]["own_time"]
    assert summary["points"] == points and summary["clamped"] == 0
    assert "own_time" not in from_own["measured"]
    # read as if they were own times, the spans make the front end look critical: its span
    # holds every callee's rise on old
    naive = build_profile(span_rows, topology, hardware, sim_pool(loads, "own"), "t",
                          "sim.csv")
    assert topology.frontend in naive["measured"]["critical"]
    assert topology.frontend not in from_spans["measured"]["critical"]

    # the raw CSV keeps the spans; a refit of it gives the same profile
    raw = tmp_path / "sim.csv"
    append_rows(raw, span_rows)
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    for out in (first, second):
        write_profile(out, raw, topology, hardware, sim_pool(loads, "server-span"), 0.05)
    assert curves(read_yaml(first)) == curves(read_yaml(second))
    assert curves(read_yaml(first)) == pytest.approx(curves(from_spans), abs=2e-4)  # CSV: 6 digits
    kept = {(r.experiment, r.offered_qps, r.service): r.p99_ms for r in read_rows(raw)}
    assert all(kept[(r.experiment, r.offered_qps, r.service)] == pytest.approx(r.p99_ms,
                                                                             rel=1e-5)
               for r in span_rows if math.isfinite(r.p99_ms))


def test_a_clamped_own_time_is_counted_in_the_profile(social_model, hardware):
    topology = social_model.topology
    own_rows, loads = sweep_rows(social_model)
    span_rows = as_server_spans(own_rows, topology)
    # one point's front-end span below what its callees take (noise of p99s that add up)
    low = [dataclasses.replace(r, p99_ms=0.5 * r.p99_ms)
           if r.service == topology.frontend and r.experiment == "all-new" and
           r.offered_qps == loads[0] else r for r in span_rows]
    document = build_profile(low, topology, hardware, sim_pool(loads, "server-span"), "t",
                             "sim.csv")
    summary = document["measured"]["own_time"]
    assert summary["clamped"] == 1 and summary["clamped_by_service"] == {topology.frontend: 1}
    assert "5 %" in summary["floor"]


def test_the_all_new_curves_reach_the_point_that_set_the_saturation(social_model, hardware):
    # the top load was served at 97 % of what was offered: it sets the saturation, and its
    # achieved load lies below its offered one
    loads = [500.0, 1500.0, 2500.0]
    rows = [dataclasses.replace(r, achieved_qps=0.97 * r.offered_qps)
            if r.offered_qps == loads[-1] else r
            for r in rows_from_model(social_model, loads, "all-new", ())]
    rows += rows_from_model(social_model, loads, "all-old", social_model.services)
    document = build_profile(rows, social_model.topology, hardware, sim_pool(loads, "own"),
                             "t", "sim.csv")
    assert document["measured"]["saturation_qps"] == pytest.approx(0.97 * loads[-1])
    visits = social_model.visits["post-storage-service"]
    last = document["services"]["post-storage-service"]["new"]["points"][-1][0]
    assert last == pytest.approx(visits * 0.97 * loads[-1], rel=1e-3)
    profile = parse_profile(document, "sim.yaml")
    all_new = Placement.uniform(social_model.services, "new")
    modelled = AppModel(social_model.topology, profile, hardware).e2e_p99(
        all_new, document["measured"]["slo_load_qps"])
    assert float(modelled) == pytest.approx(document["slo_ms"], rel=1e-4)


def test_store_resumes_and_drops_unfinished_points(tmp_path):
    path = tmp_path / "raw.csv"
    a = [Row("all-new", 10, "svc", "new", 1, 10, 0, 1, 2, 3), Row("all-new", 10, E2E, "", 0,
                                                                 10, 0, 1, 2, 3)]
    partial = [Row("all-new", 20, "svc", "new", 1, 20, 0, 1, 2, 3)]
    append_rows(path, a + partial)
    with path.open("a") as handle:
        handle.write("all-new,30,svc,new,1,30")     # a line cut by an interruption
    assert finished_points(read_rows(path)) == {("all-new", 10.0)}
    assert compact(path) == 1
    assert len(read_rows(path)) == 2


def test_the_raw_csv_keeps_a_windows_times_to_the_millisecond(tmp_path):
    """A 2026 Unix time at the measured figures' six digits would round to 10,000 s."""
    path = tmp_path / "raw.csv"
    start = 1_796_310_123.456
    append_rows(path, [Row("all-new", 10, E2E, "", 0, 10, 0, 1.23456789, 2, 3,
                           window_start=start, window_end=start + 15)])
    (row,) = read_rows(path)
    assert row.window_start == start and row.window_end == start + 15
    assert row.p50_ms == 1.23457   # the measured figures keep their six digits


def test_criticality_is_measured_against_all_new_at_the_slo_load(social_model):
    # the all-new sweep is saturated right past the SLO load: interpolating it there
    # would inflate the baseline; the reference points measured at the SLO load set it
    rows = rows_from_model(social_model, [1000, 3000, 4200], "all-new", ())
    slo_load = 2925.0
    reference = [r for r in rows_from_model(social_model, [slo_load], "reference-new:before", ())
                 if r.service == E2E][0]
    rows += rows_from_model(social_model, [slo_load], "reference-new:before", ())
    rows += rows_from_model(social_model, [slo_load], "reference-new:after", ())
    alone = rows_from_model(social_model, [slo_load], "alone-old:media-service",
                            ("media-service",))
    rows += alone
    ranking = dict(ranking_measured(rows, ["media-service"], slo_load))
    e2e_alone = [r for r in alone if r.service == E2E][0].p99_ms
    assert ranking["media-service"] == pytest.approx(e2e_alone - reference.p99_ms)
    plan = criticality_plan(("a", "b"), slo_load)
    assert [e.name for e in plan] == ["reference-new:before", "alone-old:a", "alone-old:b",
                                      "reference-new:after"]
    assert criticality_plan((), slo_load) == []


def test_one_stalled_reference_point_does_not_shift_every_rise():
    # the after reference met a stalled machine (4 x its p99); the before reference and the
    # all-new sweep at the SLO load agree, and the baseline stays where they put it
    def e2e(experiment: str, load: float, p99_ms: float) -> Row:
        return Row(experiment, load, E2E, "", 0, load, 0.0, math.nan, math.nan, p99_ms)

    rows = [e2e("all-new", 1000, 40.0), e2e("all-new", 3000, 60.0),   # 50 ms at 2000 req/s
            e2e("reference-new:before", 2000, 49.0), e2e("reference-new:after", 2000, 196.0),
            e2e("alone-old:media-service", 2000, 70.0)]
    ranking = dict(ranking_measured(rows, ["media-service"], 2000.0))
    assert ranking["media-service"] == pytest.approx(70.0 - 50.0)   # not 70 - (49 + 196) / 2


def test_pruner_uses_the_generational_gap_at_the_pruning_load():
    # a noisy short sweep: on old the CPU-heavy service's p99 even falls with load, but at
    # the pruning load it is far slower than on new; the I/O-bound one rose on old with the
    # shared node's load, yet is as fast there as on new at the same load
    def rows(experiment: str, generation: str, p99: dict[str, list[float]]) -> list[Row]:
        return [Row(experiment, q, s, generation, 1, q, 0.0, math.nan, math.nan, values[i])
                for s, values in p99.items() for i, q in enumerate((15.0, 30.0))]

    measured = (rows("all-new", "new", {"cpu-heavy": [18.0, 18.5], "io-bound": [13.0, 16.0]})
                + rows("all-old", "old", {"cpu-heavy": [75.0, 72.0], "io-bound": [8.0, 17.0]}))
    critical, non_critical = prune_measured(measured, slo_ms=60.0, threshold=0.1,
                                            oldest="old", peak_qps=30.0, newest="new")
    assert critical == {"cpu-heavy": pytest.approx(72.0 - 18.5)}
    assert non_critical == {"io-bound": pytest.approx(17.0 - 16.0)}
    # without an all-new point at the pruning load, the rise within the old sweep decides
    only_old = [r for r in measured if r.experiment == "all-old"]
    critical, non_critical = prune_measured(only_old, 60.0, 0.1, "old", 30.0, "new")
    assert critical == {"io-bound": pytest.approx(9.0)}
    assert non_critical == {"cpu-heavy": pytest.approx(-3.0)}


def test_end_to_end_p99_is_the_median_of_the_windows_slices():
    class SlicedPrometheus:
        """p99 (s) per 5-s slice ending at each time; one slice holds a stall."""

        def __init__(self) -> None:
            self.asked: list[tuple[str, float]] = []

        def query(self, promql: str, at_s: float) -> list[tuple[dict, float, float]]:
            self.asked.append((promql, at_s))
            return [({}, at_s, {100.0: 40.0, 95.0: 2500.0, 90.0: 42.0}[at_s])]

    prometheus = SlicedPrometheus()
    assert sliced_p99(prometheus, LAB_QUERIES, "nginx-thrift", 15, 100.0) == pytest.approx(42.0)
    assert all("[5s]" in q and 'service="nginx-thrift"' in q for q, _ in prometheus.asked)
    assert math.isnan(sliced_p99(prometheus, LAB_QUERIES, "nginx-thrift", 10, 100.0))  # < 3


def test_a_model_saturated_at_the_slo_load_is_a_warning_not_a_silent_calibration(
        social_model, hardware):
    from ecoscale.profiler.build import calibration

    loads = [500.0, 1500.0, 2500.0]
    rows = rows_from_model(social_model, loads, "all-new", ())
    rows += rows_from_model(social_model, loads, "all-old", social_model.services)
    pool = sim_pool(loads, "own")
    document = build_profile(rows, social_model.topology, hardware, pool, "t", "sim.csv")
    assert "calibration_warning" not in document["measured"]
    saturation = document["measured"]["saturation_qps"]
    # far past every curve's saturation the all-new model has no finite p99: no factor
    assert calibration(document, social_model.topology, hardware, pool, 100 * saturation,
                       document["slo_ms"]) is None
    assert calibration(document, social_model.topology, hardware, pool,
                       document["measured"]["slo_load_qps"], document["slo_ms"]) > 0


def test_the_calibration_warning_is_in_the_profile(social_model, hardware, monkeypatch):
    import ecoscale.profiler.build as build

    loads = [500.0, 1500.0, 2500.0]
    rows = rows_from_model(social_model, loads, "all-new", ())
    monkeypatch.setattr(build, "calibration", lambda *args: None)
    document = build.build_profile(rows, social_model.topology, hardware,
                                   sim_pool(loads, "own"), "t", "sim.csv")
    assert document["e2e_calibration"] == 1.0
    assert "saturates below the SLO load" in document["measured"]["calibration_warning"]


def measured_and_refit(tmp_path, rows, topology, hardware, measured_pool, refit_pool):
    """Write the profile and its CSV as the measuring run does, then --refit it."""
    from ecoscale.profiler.main import recorded_pool

    raw = tmp_path / "sim.csv"
    append_rows(raw, rows)
    first, second = tmp_path / "sim.yaml", tmp_path / "sim.refit.yaml"
    write_profile(first, raw, topology, hardware, measured_pool, 0.05)
    pool, created = recorded_pool(raw, refit_pool)
    write_profile(second, raw, topology, hardware, pool, 0.05, created=created, record=False)
    return first, second


def test_a_refit_reproduces_the_measured_profile_byte_for_byte(social_model, hardware,
                                                               tmp_path):
    rows, loads = sweep_rows(social_model)
    pool = dataclasses.replace(sim_pool(loads, "own"), replica_limits={"old": 1})
    first, second = measured_and_refit(tmp_path, rows, social_model.topology, hardware,
                                       pool, pool)
    assert first.read_bytes() == second.read_bytes()
    assert read_yaml(second)["replica_limits"] == {"old": 1}


def test_a_refit_uses_the_recorded_sweep_settings_not_the_pool_defaults(
        social_model, hardware, tmp_path, capsys):
    rows, loads = sweep_rows(social_model)
    measured = dataclasses.replace(sim_pool(loads, "own"), warmup_s=5.0, measure_s=20.0,
                                   replica_limits={"new": 2, "old": 1}, emulation="emulated")
    defaults = sim_pool((15.0, 30.0), "own")   # the pool config as it reads today
    first, second = measured_and_refit(tmp_path, rows, social_model.topology, hardware,
                                       measured, defaults)
    assert first.read_bytes() == second.read_bytes()
    provenance = read_yaml(second)["provenance"]
    assert provenance["loads_qps"] == [float(q) for q in loads]
    assert (provenance["warmup_s"], provenance["measure_s"]) == (5.0, 20.0)
    assert read_yaml(second)["replica_limits"] == {"new": 2, "old": 1}
    assert "no recorded sweep settings" not in capsys.readouterr().err


def test_a_refit_without_recorded_settings_says_it_uses_the_pool_config(tmp_path, capsys):
    from ecoscale.profiler.main import recorded_pool

    pool = sim_pool((15.0, 30.0), "own")
    assert recorded_pool(tmp_path / "old.csv", pool) == (pool, None)
    assert "no recorded sweep settings in" in capsys.readouterr().err
