"""A lab of slots (`ecoscale lab up --slot-cpus 0.05 --old-node-cpus 0`, issue 14 part 1) on
the real machine: every task of the app runs with a Swarm CPU limit and reservation of one
slot, the lab's runtime gives that limit a 20-ms CFS period, `lab status` prints the budget,
a placement that would overcommit it is refused, and a second replica on the old node adds
capacity there (no node-wide quota shared by the replicas): two old replicas of a CPU-bound
service serve about twice what one serves (issue 14, done means).

The session's lab (conftest ``lab``) is taken down first when it is up, and this module's
lab is taken down at its end (the next test that needs the session's lab brings it up).
"""

from __future__ import annotations

import time

import pytest
from conftest import REPORT

from ecoscale.adapters.files import load_topology
from ecoscale.lab import Lab, LabConfig
from ecoscale.lab.system import LabError
from ecoscale.loadgen.generator import run_load

SOCIAL = load_topology("socialNetwork")
FRONTEND = SOCIAL.frontend
SLOT_CPUS = 0.05
PERIOD_US = 20_000
"""LabConfig.slot_period_us: 1 ms of CPU per 20 ms for a slot of 0.05."""
LOAD_QPS = 20.0
"""Above what one old front-end replica serves in its slot (its CPU per request on old is
~2.7 ms here: ~18 req/s at 100 %), well within two (~37 req/s)."""


@pytest.fixture(scope="module")
def slotted():
    running = Lab.attach()
    if running.state():
        running.down()   # the session's lab, or a left-over one
    config = LabConfig.with_nodes(slot_cpus=SLOT_CPUS, old_node_cpus=None)
    lab = Lab(config, log=lambda m: print(f"[lab] {m}", flush=True))
    lab.up()
    try:
        lab.deploy("socialNetwork")
        yield lab
    finally:
        lab.down()


def cgroup_limit(lab: Lab, node: str, service: str) -> tuple[int, int]:
    """(cfs_period_us, cfs_quota_us) of the service's container on ``node``."""
    container = lab.client(node).containers.list(
        filters={"label": f"com.docker.swarm.service.name={service}"})[0]
    with open(f"/proc/{container.attrs['State']['Pid']}/cgroup") as groups:
        line = next(x for x in groups if ":cpu:" in x or ":cpu," in x)
    group = "/sys/fs/cgroup/cpu" + line.strip().split(":", 2)[2]
    with open(f"{group}/cpu.cfs_period_us") as period, open(f"{group}/cpu.cfs_quota_us") as q:
        return int(period.read()), int(q.read())


def test_every_task_runs_in_a_slot_with_a_short_cfs_period(slotted):
    lab = slotted
    status = lab.status()
    assert all(n["cpu_quota"] is None for n in status["nodes"])     # no node-wide quota
    for name in SOCIAL.services:
        resources = lab.client().services.get(name).attrs["Spec"]["TaskTemplate"]["Resources"]
        assert resources["Limits"]["NanoCPUs"] == resources["Reservations"]["NanoCPUs"] \
            == int(SLOT_CPUS * 1e9)
    assert cgroup_limit(lab, "new-1", FRONTEND) == (PERIOD_US, int(SLOT_CPUS * PERIOD_US))
    budget = status["slot_budget"]
    REPORT["slots: budget after deploy"] = budget["text"]
    assert budget["slots"] == len(SOCIAL.services) and not budget["overcommitted"]
    assert budget["used_cpus"] == pytest.approx(len(SOCIAL.services) * SLOT_CPUS)


def test_a_placement_that_would_overcommit_the_budget_is_refused_with_the_figure(slotted):
    lab = slotted
    # 26 slots of 0.05 hold 1.30 of the 1.5 CPUs; 5 more replicas would take 1.55
    with pytest.raises(LabError, match=r"31 slots = 1\.55 of 1\.5 CPUs"):
        lab.place("text-service", "new", 6)
    assert lab.client().services.get("text-service").attrs["Spec"]["Mode"]["Replicated"][
        "Replicas"] == 1                                  # nothing was changed


@pytest.mark.measures
def test_a_second_old_replica_adds_capacity_in_its_own_slot(slotted):
    lab = slotted
    results = {}
    for replicas in (1, 2):
        lab.place(FRONTEND, "old", replicas)
        assert cgroup_limit(lab, "old-1", FRONTEND) == (PERIOD_US, int(SLOT_CPUS * PERIOD_US))
        run_load(lab.frontend_url, SOCIAL, 5.0, 5.0, seed=1)          # warm the new tasks
        began = time.monotonic()
        results[replicas] = run_load(lab.frontend_url, SOCIAL, LOAD_QPS, 20.0, seed=2)
        REPORT[f"slots: {replicas} old front-end replica(s) at {LOAD_QPS:g} req/s: p50/p99 "
               "(ms), errors"] = (round(results[replicas].p50_ms), round(
                   results[replicas].p99_ms), results[replicas].error_count)
        print(f"{replicas} replica(s): {time.monotonic() - began:.0f} s")
    lab.place(FRONTEND, "new", 1)
    one, two = results[1], results[2]
    assert two.error_count <= 0.01 * two.sent, two.errors
    assert two.achieved_qps >= 0.9 * LOAD_QPS
    # One replica's slot is saturated (a run here: p50 343 ms against 61 ms with two)
    assert one.p50_ms >= 2.5 * two.p50_ms, (one.summary(), two.summary())


CPU_TOY = """\
# A two-service app with one CPU-bound service, for the replicas test (hand-written).
app: cpuToy
source: tests/integration/test_slots_on_lab.py (hand-written)
frontend: front
services:
  front: {kind: logic, calls: [work]}
  work: {kind: logic}
endpoints:
  compute:
    share: 1.0
    http: GET /compute
    path: [[front], [work]]
"""
CPU_TOY_EMULATION = """\
# How the lab's emulator plays cpuToy (chosen, not measured): work is CPU-bound, 3 ms of CPU
# per request on new, 6 ms on old (half-speed cores); front does next to nothing.
app: cpuToy
port: 8080
kinds:
  logic: {cpu_ms: 0.1, io_ms: 0.0, cv: 0.0}
services:
  work: {cpu_ms: 3.0, cv: 0.1}
"""
SATURATING_QPS = 20.0
"""Offered to both: above what two old replicas of work serve (one: a 0.05 slot over ~6.4 ms of
CPU per request with the emulator's HTTP cost, ~8 req/s; two ~16), far below what front's slot
on new serves (~0.7 ms per request: ~70 req/s). Each run's backlog keeps work's slots busy."""
SATURATING_S, COUNTED_FROM_S = 15.0, 5.0
"""Load for 15 s; completions from 5 s to 15 s count (the backlog has built up by then)."""


@pytest.mark.measures
def test_two_old_replicas_of_a_cpu_bound_service_serve_twice_what_one_serves(slotted,
                                                                            tmp_path):
    lab = slotted
    (tmp_path / "topology.yaml").write_text(CPU_TOY)
    (tmp_path / "emulation.yaml").write_text(CPU_TOY_EMULATION)
    topology = tmp_path / "topology.yaml"
    lab.deploy(str(topology), emulation=tmp_path / "emulation.yaml")
    app = load_topology(str(topology))
    served = {}
    for replicas in (1, 2):
        lab.place("work", "old", replicas)
        running = [t for t in lab.tasks("work")
                   if t["state"] == "running" and t["desired"] == "running"]
        assert [t["generation"] for t in running] == ["old"] * replicas, running
        run_load(lab.frontend_url, app, 2.0, 5.0, seed=1)                 # warm the tasks
        result = run_load(lab.frontend_url, app, SATURATING_QPS, SATURATING_S, seed=2,
                          timeout_s=120.0)
        served[replicas] = result.completed_qps(COUNTED_FROM_S, SATURATING_S)
        REPORT[f"slots: {replicas} old replica(s) of a CPU-bound service, {SATURATING_QPS:g} "
               "req/s offered: served req/s, errors"] = (round(served[replicas], 2),
                                                         result.error_count)
        assert result.error_count == 0, result.errors
        # saturated: the backlog grew (else the figure is the offered load, not capacity)
        assert served[replicas] <= 0.85 * SATURATING_QPS, (
            f"{replicas} replica(s) kept up with {SATURATING_QPS:g} req/s: not saturated, "
            "raise SATURATING_QPS", result.summary())
    ratio = served[2] / served[1]
    REPORT["slots: two old replicas serve x one"] = round(ratio, 2)
    # 2026-12-04, five runs (one beside two busy loops on both host CPUs): one replica served
    # 7.7-7.8 req/s, two 15.3-15.5, ratio 1.99-2.01. Under the node-wide quota (the lab's
    # default) both replicas would share one CPU: the profile's `replica_limits old: 1`.
    assert 1.7 <= ratio <= 2.3, served
