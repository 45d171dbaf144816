import csv

import numpy as np
import pytest

from ecoscale.cli import main
from ecoscale.control.policy import Decision
from ecoscale.model.packing import packed_e2e_p99, packed_e2e_p99_at
from ecoscale.model.placement import Placement
from ecoscale.replay.baselines import StaticPolicy
from ecoscale.replay.engine import RIGHT_SIZED_REFERENCE, SUMMARY_COLUMNS, replay
from ecoscale.replay.policies import all_policies
from ecoscale.replay.report import OUTPUT_NAMES, write_outputs
from ecoscale.replay.rightsized import (
    TARGET_SOCKET_UTILISATION,
    PackedPolicy,
    RightSizedNewPolicy,
    hpa_replicas,
    pack_for_slo,
    right_sized_new,
)
from ecoscale.replay.scenario import ReplayOptions, build_scenario


@pytest.fixture(scope="module")
def scenario():
    return build_scenario(ReplayOptions(duration="3h", start="12h"))


@pytest.mark.parametrize("fraction", [0.1, 0.4, 0.7, 1.0], ids=lambda f: f"{f:.0%}-of-peak")
def test_right_sized_new_keeps_the_slo_on_fewer_sockets(scenario, fraction):
    model, slo = scenario.model, scenario.slo_ms
    load = fraction * float(np.max(scenario.load_qps))
    plan = right_sized_new(model, load, slo)
    assert not plan.fallback
    assert plan.p99_ms <= slo
    assert float(packed_e2e_p99(model, plan.packed, np.array([load]))[0]) == pytest.approx(
        plan.p99_ms)
    assert plan.packed.slots()["new"] < len(model.services)       # all-new: one each
    assert {p.generation for _, p in plan.packed.items} == {"new"}
    for socket in plan.packed.sockets:
        assert len(socket.replicas) == 1 or socket.reserved <= TARGET_SOCKET_UTILISATION + 1e-9
    for service, placed in plan.packed.items:
        assert placed.replicas >= hpa_replicas(model, service, "new", load)


def test_right_sized_new_needs_more_sockets_at_higher_load(scenario):
    model, slo = scenario.model, scenario.slo_ms
    low = right_sized_new(model, 300.0, slo).packed.slots()["new"]
    high = right_sized_new(model, 2500.0, slo).packed.slots()["new"]
    assert low < high


def test_an_slo_no_packing_meets_falls_back_to_one_socket_per_replica(scenario):
    model = scenario.model
    placement = Placement.uniform(model.services, "new")
    plan = pack_for_slo(model, placement, 1000.0, slo_ms=0.5)
    assert plan.fallback
    assert plan.packed.slots() == {"new": len(model.services)}


@pytest.fixture(scope="module")
def result(scenario):
    model = scenario.model
    peak = float(np.max(scenario.load_qps))
    return replay(scenario, [StaticPolicy("all-new", Placement.uniform(model.services, "new")),
                             RightSizedNewPolicy(RIGHT_SIZED_REFERENCE, model, scenario.slo_ms,
                                                 peak)])


def test_the_replay_scores_right_sized_new_packed(result):
    rows = result.summary().set_index("policy")
    sized = rows.loc[RIGHT_SIZED_REFERENCE]
    assert sized.saving_vs_all_new_pct > 30.0        # sockets shared: less embodied and idle
    assert sized.slo_violation_pct <= 1.0
    assert sized.saving_vs_right_sized_new_pct == 0.0
    expected = 100 * (1 - rows.loc["all-new", "carbon_kg"] / sized.carbon_kg)
    assert rows.loc["all-new", "saving_vs_right_sized_new_pct"] == pytest.approx(expected)
    steps = result.steps()
    sockets = steps[steps.policy == RIGHT_SIZED_REFERENCE].slots_new
    assert sockets.max() < len(result.scenario.model.services)


def test_without_right_sized_new_the_column_is_empty(scenario):
    model = scenario.model
    summary = replay(scenario, [StaticPolicy("all-new", Placement.uniform(model.services,
                                                                          "new"))]).summary()
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert np.isnan(summary.saving_vs_right_sized_new_pct).all()


def test_summary_csv_has_the_column_last_and_the_cli_runs_the_reference(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["replay", "--duration", "2h", "--policies", "all-old", "--no-plots",
                 "--out", str(out)])
    assert code == 0
    note = "right-sized-new runs too, as the second reference for savings (without a row)"
    assert note in capsys.readouterr().err
    with open(out / "summary.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == SUMMARY_COLUMNS
    assert SUMMARY_COLUMNS[-1] == "saving_vs_right_sized_new_pct"
    assert [r["policy"] for r in rows] == ["all-new", "all-old"]
    by_policy = {r["policy"]: r for r in rows}
    assert float(by_policy["all-new"]["saving_vs_right_sized_new_pct"]) < 0.0
    assert float(by_policy["all-old"]["saving_vs_right_sized_new_pct"]) > 0.0
    code = main(["replay", "--duration", "2h", "--policies", "right-sized-new", "--no-plots",
                 "--out", str(out)])
    with open(out / "summary.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["policy"] for r in rows] == ["all-new", "right-sized-new"]
    assert float(rows[1]["saving_vs_right_sized_new_pct"]) == 0.0
    assert "rs-new %" in (out / "report.md").read_text(encoding="utf-8")


def test_outputs_and_plots_with_the_packed_policies(tmp_path):
    scenario = build_scenario(ReplayOptions(duration="1h"))
    result = replay(scenario, all_policies(
        scenario, names=("all-new", "right-sized-new", "ecoscale", "ecoscale-packed")))
    written = write_outputs(result, tmp_path)
    assert sorted(p.name for p in written) == sorted(OUTPUT_NAMES)
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "right-sized policies (right-sized-new, ecoscale-packed)" in report
    steps = result.steps()
    run = next(r for r in result.runs if r.name == "ecoscale-packed")
    rows = steps[steps.policy == run.name]
    # a packed run's slots are its sockets in use: at most one per replica
    sockets = [len(p.sockets) for p in run.placements]
    replicas = [sum(placed.replicas for _, placed in p.items) for p in run.placements]
    assert list(rows.slots_old + rows.slots_new) == sockets
    assert all(s <= r for s, r in zip(sockets, replicas, strict=True))


class _Recording:
    """An inner policy that keeps what it saw and always asks for one placement."""

    name = "recording"
    feedback = frozenset({"p99"})

    def __init__(self, placement):
        self.placement = placement
        self.seen = []

    def initial_state(self):
        return None

    def decide(self, observation, state):
        self.seen.append(observation)
        return Decision(self.placement), state


def test_ecoscale_packed_runs_the_inner_placement_and_feeds_back_its_packed_p99(scenario):
    model = scenario.model
    plain = Placement.uniform(model.services, "old", 2)
    wanted = pack_for_slo(model, plain, float(np.max(scenario.load_qps)), scenario.slo_ms,
                          TARGET_SOCKET_UTILISATION).packed
    inner = _Recording(wanted)
    policy = PackedPolicy("packed", inner, model)
    result = replay(scenario, [policy])
    run = result.runs[0]
    assert all(p is wanted for p in run.placements)   # the decision's shares, as they are
    later = inner.seen[5]
    assert later.current is wanted
    assert later.p99_ms == pytest.approx(packed_e2e_p99_at(model, wanted, later.qps))
    assert later.p99_ms != pytest.approx(float(model.e2e_p99(plain, later.qps)))
    scored = run.p99_ms[4]
    assert scored == pytest.approx(packed_e2e_p99_at(model, wanted,
                                                     float(scenario.load_qps[4])))


@pytest.fixture(scope="module")
def small():
    """A small instance the packed oracle proves: an hour, the trace scaled to 200 req/s."""
    return build_scenario(ReplayOptions(duration="1h", start="12h", peak_qps=200.0))


def test_oracle_packed_is_shown_where_it_finishes_and_no_policy_beats_it(small):
    from ecoscale.replay.policies import OraclePackedPolicy
    notes = []
    policies = all_policies(small, names=("all-new", "ecoscale-packed", "oracle-packed"),
                            notes=notes)
    assert notes == []
    oracle = next(p for p in policies if p.name == "oracle-packed")
    assert isinstance(oracle, OraclePackedPolicy) and oracle.finished
    rows = replay(small, policies).summary().set_index("policy")
    assert rows.loc["oracle-packed", "slo_violation_pct"] == 0.0
    assert rows.loc["oracle-packed", "carbon_kg"] <= rows.loc["ecoscale-packed", "carbon_kg"]


def test_oracle_packed_that_does_not_finish_is_left_out_with_a_note(small):
    from ecoscale.planner.table import build_table
    from ecoscale.replay.policies import OraclePackedPolicy
    table = build_table(small.model, small.slo_ms, float(np.max(small.load_qps)))
    oracle = OraclePackedPolicy(small, table, time_limit_s=1e-3)
    assert not oracle.finished
    assert "oracle-packed: not shown" in oracle.note and "within 0.001 s" in oracle.note
