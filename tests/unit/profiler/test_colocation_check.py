"""The co-location check's pure part on synthetic raw rows: plan, fit, prediction, errors."""

import math

import pytest

from ecoscale.adapters.files import load_topology
from ecoscale.model.colocation import shared_p99_at
from ecoscale.profiler.colocation import (
    alone_curves,
    alone_name,
    check_services,
    colocated_name,
    colocated_points,
    colocation_plan,
    format_table,
    summarise,
    table_rows,
)
from ecoscale.profiler.store import E2E, Row

TOPOLOGY = load_topology("socialNetwork")
VISITS = TOPOLOGY.visits_per_request()
A, B = "home-timeline-service", "post-storage-service"
MU = {A: 160.0, B: 300.0}
"""Synthetic saturation (per-replica req/s) of each service's queue on old."""
LOADS = (40.0, 70.0, 100.0)


def queue_p99(service: str, replica_qps: float) -> float:
    """The synthetic service's p99 (ms) alone at per-replica load ``replica_qps``."""
    return 5.0 + 10.0 / (1.0 - replica_qps / MU[service])


def utilisation(service: str, replica_qps: float) -> float:
    return replica_qps / MU[service]


def rows_at(experiment: str, offered: float, on_old: tuple[str, ...],
            p99: dict[str, float]) -> list[Row]:
    """A finished point: one row per service (those given p99 on old), the e2e row last."""
    rows = []
    for service in (A, B):
        x = VISITS[service] * offered
        generation = "old" if service in on_old else "new"
        rows.append(Row(experiment, offered, service, generation, 1, offered, 0.0,
                        math.nan, math.nan, p99.get(service, 3.0),
                        cpu_utilisation=utilisation(service, x)))
    rows.append(Row(experiment, offered, E2E, "", 0, offered, 0.0, math.nan, math.nan, 50.0))
    return rows


def alone_rows() -> list[Row]:
    rows = []
    for service in (A, B):
        for offered in LOADS:
            x = VISITS[service] * offered
            rows += rows_at(alone_name(service), offered, (service,),
                            {service: queue_p99(service, x)})
    return rows


def colocated_rows(measured_p99) -> list[Row]:
    """Co-located points whose p99s ``measured_p99(service, x, others_utilisation)`` gives."""
    rows = []
    for offered in LOADS:
        x = {s: VISITS[s] * offered for s in (A, B)}
        p99 = {s: measured_p99(s, x[s], utilisation(other, x[other]))
               for s, other in ((A, B), (B, A))}
        rows += rows_at(colocated_name((A, B)), offered, (A, B), p99)
    return rows


def test_the_plan_measures_each_alone_then_all_together_load_by_load():
    plan = colocation_plan((A, B), LOADS)
    names = [alone_name(A), alone_name(B), colocated_name((A, B))]
    assert [e.name for e in plan] == names * len(LOADS)
    assert [e.on_old for e in plan] == [(A,), (B,), (A, B)] * len(LOADS)
    assert [e.loads_qps for e in plan] == [(q,) for q in LOADS for _ in names]


@pytest.mark.parametrize("services,fragment", [
    pytest.param((A,), "at least two", id="one"),
    pytest.param((A, A), "named twice", id="twice"),
    pytest.param((A, "nope"), "nope: not a service of socialNetwork", id="unknown"),
    pytest.param((A, "nginx-thrift"), "is the front end", id="frontend"),
])
def test_bad_service_lists_are_refused_with_the_fix(services, fragment):
    problems = check_services(services, TOPOLOGY)
    assert any(fragment in p for p in problems), problems
    assert check_services((A, B), TOPOLOGY) == []


def test_alone_curves_use_only_each_services_own_alone_experiment():
    rows = alone_rows()
    curves = alone_curves(rows, TOPOLOGY, (A, B), "old")
    x = VISITS[A] * 70.0
    assert curves[A].p99_at(x) == pytest.approx(queue_p99(A, x), rel=1e-3)
    assert curves[A].util_at(x) == pytest.approx(utilisation(A, x), rel=1e-3)
    assert curves[A].saturation_qps == pytest.approx(MU[A], rel=0.1)
    # B's rows in A's alone experiment ran on new: no old curve comes from them
    only_a = [r for r in rows if r.experiment == alone_name(A)]
    assert set(alone_curves(only_a, TOPOLOGY, (A, B), "old")) == {A}


def test_a_socket_that_behaves_as_the_model_says_gives_no_error():
    rows = alone_rows()
    curves = alone_curves(rows, TOPOLOGY, (A, B), "old")
    rows += colocated_rows(lambda s, x, others: shared_p99_at(curves[s], x, others))
    points = colocated_points(rows, TOPOLOGY, (A, B), "old", curves)
    assert [(p.offered_qps, p.service) for p in points] == [
        (q, s) for q in LOADS for s in (A, B)]
    for p in points:
        assert p.others_measured == pytest.approx(p.others_modelled, rel=1e-3)
        assert p.error_pct("measured") == pytest.approx(0.0, abs=1e-6)
        assert p.error_pct("modelled") == pytest.approx(0.0, abs=0.5)
        assert p.predicted_ms["alone"] < p.measured_p99_ms   # sharing costs latency
    summary = summarise(points, "measured")
    assert summary.points == 6 and summary.max_abs_pct < 1e-6


def test_a_socket_slower_than_the_model_is_reported_optimistic_by_how_much():
    rows = alone_rows()
    curves = alone_curves(rows, TOPOLOGY, (A, B), "old")
    rows += colocated_rows(lambda s, x, others: 1.25 * shared_p99_at(curves[s], x, others))
    points = colocated_points(rows, TOPOLOGY, (A, B), "old", curves)
    for p in points:   # predicted = measured / 1.25: 20 % below
        assert p.error_pct("measured") == pytest.approx(-20.0, abs=1e-6)
        assert p.error_ms("measured") == pytest.approx(-0.2 * p.measured_p99_ms)
    summary = summarise(points, "measured")
    assert summary.direction == "optimistic" and summary.optimistic == 6
    assert summary.median_abs_pct == pytest.approx(20.0)
    text = format_table(points)
    assert "median |error| 20.0 %" in text and "optimistic: 6 of 6" in text
    table = table_rows(points)
    assert table[0]["error_measured_pct"] == pytest.approx(-20.0)


def test_the_others_utilisation_is_scaled_from_slot_to_socket():
    rows = alone_rows()
    curves = alone_curves(rows, TOPOLOGY, (A, B), "old")
    rows += colocated_rows(lambda s, x, others: queue_p99(s, x))
    full = colocated_points(rows, TOPOLOGY, (A, B), "old", curves)
    half = colocated_points(rows, TOPOLOGY, (A, B), "old", curves, socket_per_slot=0.5)
    for f, h in zip(full, half, strict=True):
        assert h.others_measured == pytest.approx(f.others_measured / 2)
        assert h.predicted_ms["measured"] < f.predicted_ms["measured"]


def test_no_measurement_means_no_error_rather_than_a_perfect_one():
    rows = alone_rows()
    curves = alone_curves(rows, TOPOLOGY, (A, B), "old")
    rows += colocated_rows(lambda s, x, others: math.nan)
    points = colocated_points(rows, TOPOLOGY, (A, B), "old", curves)
    assert all(math.isnan(p.error_pct("measured")) for p in points)
    summary = summarise(points, "measured")
    assert summary.points == 0 and summary.direction == "no points"


def _shared_old_node():
    from ecoscale.lab.config import LabConfig

    return LabConfig.with_nodes(old_node_cpus=1.0, slot_cpus=None)


SHARED_OLD_NODE = _shared_old_node()


def test_the_colocation_run_refuses_a_lab_whose_old_services_do_not_share_a_node():
    from ecoscale.errors import UsageError
    from ecoscale.evaluation.colocation import require_shared_old_node
    from ecoscale.lab.config import LabConfig

    require_shared_old_node(SHARED_OLD_NODE)
    with pytest.raises(UsageError, match="--slot-cpus 0 --old-node-cpus 1"):
        require_shared_old_node(LabConfig.with_nodes(slot_cpus=0.05))   # nothing shared


def test_the_command_writes_the_error_table_and_a_report_that_says_where_from(tmp_path):
    import csv

    from ecoscale.evaluation.colocation import ColocationOptions, write_results
    from ecoscale.profiler.experiments import PoolConfig
    from ecoscale.profiler.store import append_rows

    rows = alone_rows()
    curves = alone_curves(rows, TOPOLOGY, (A, B), "old")
    rows += colocated_rows(lambda s, x, others: 1.1 * shared_p99_at(curves[s], x, others))
    append_rows(tmp_path / "colocation-raw.csv", rows)
    pool = PoolConfig("lab", "http://a", "http://b", slot_cpus={"new": 1.0, "old": 1.0})
    points = write_results(ColocationOptions(services=(A, B), loads_qps=LOADS), TOPOLOGY,
                           pool, SHARED_OLD_NODE.emulation(2), tmp_path)
    with (tmp_path / "colocation.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(points) == 6
    assert float(table[0]["error_measured_pct"]) == pytest.approx(-100 * 0.1 / 1.1, abs=1e-3)
    report = (tmp_path / "report.md").read_text()
    assert "EMULATED on one 2-CPU machine" in report and "CFS quota" in report
    assert "median |error| 9.1 %" in report and "(optimistic)" in report


def test_a_prediction_at_saturation_is_counted_apart_not_averaged_in():
    from ecoscale.profiler.colocation import ColocatedPoint

    def point(predicted: float) -> ColocatedPoint:
        return ColocatedPoint(A, 70.0, 49.0, 0.2, 0.3, 0.3, 100.0,
                              {"measured": predicted, "modelled": predicted, "alone": 80.0})

    points = [point(90.0), point(80.0), point(130.0), point(math.inf)]
    summary = summarise(points, "measured")
    assert summary.points == 3 and summary.saturated == 1
    assert summary.median_pct == pytest.approx(-10.0)
    assert summary.max_abs_pct == pytest.approx(30.0)
    assert summary.direction == "optimistic" and summary.optimistic == 2
    assert "1 more predicted saturated (inf)" in format_table(points)
