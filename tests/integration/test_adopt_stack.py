"""Bring your own app, end to end on the real lab: a stack that ecoscale did not deploy.

socialNetwork is deployed with the real `docker stack deploy -c
deploy/examples/socialnetwork-swarm.yml socialnetwork` (a compose file shaped like
DeathStarBench's docker-compose-swarm.yml, no ecoscale labels in it) on the lab's manager.
Its metrics are the operator's kind, not the emulator's: the lab's Prometheus re-exposes the
tasks' series as OpenTelemetry spanmetrics and cAdvisor CPU (ecoscale/lab/spanmetrics.py),
and the shipped pool and daemon configs (deploy/examples/) query only those. Then, as the
README's "Bring your own app" path goes: `ecoscale adopt`, `ecoscale profile --pool` (a
short sweep), `ecoscale plan`, and `ecoscale run` through a load step (low, then high). Every
service's spec before and after differs only in the generation constraint, the replica count
and (where it was stop-first) the update order. A config whose query returns nothing fails
`run --check`, naming the query.

The profile's per-service curves are own times derived from the server spans
(``service_latency: server-span`` in the pool file, ``ecoscale.model.spans``), and the plan
is made at twice the measured SLO (``RUN_SLO_FACTOR``), every level up to the SLO load
holding it. The profiler gives every service back as it found it, its own update settings
included (asserted before the daemon runs).

The whole module adds 7-10 minutes to `./test.sh` on a busy 2-core machine (lab up and the
lab's own app deployed first: 17 s). Measured in runs here (2026-12-02): the stack deployed
until every task ran, answered and was scraped in 18-38 s; the short profile took 210-490 s
(the spread is the number of criticality points: 0 to 6 services came out critical); the
profile's SLO was 22-53 ms at 50.5 req/s (the table is planned at twice it, RUN_SLO_FACTOR);
after the step up the first service ran on new 7-12 s later (1-8 services moved; the last
three runs of this module: 6.7, 7.9 and 7.4 minutes).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from conftest import REPORT
from waiting import Load, daemon_actions, daemon_detail, daemon_gauge, free_port, wait_for

from ecoscale.adapters.files import (
    load_hardware,
    load_table,
    load_topology,
    parse_profile,
    read_yaml,
    write_table,
)
from ecoscale.adapters.swarm import update_order
from ecoscale.lab import Lab
from ecoscale.lab.stacks import ServedStack, swarm_name, unexpected_changes
from ecoscale.lab.swarm import node_names, task_view
from ecoscale.model.app import AppModel
from ecoscale.model.placement import Placement
from ecoscale.paths import deploy_dir, project_root

APP = "socialNetwork"
STACK = "socialnetwork"
EXAMPLES = deploy_dir() / "examples"
COMPOSE = EXAMPLES / "socialnetwork-swarm.yml"
POOL = EXAMPLES / "socialnetwork-pool.yaml"
DAEMON = EXAMPLES / "socialnetwork-daemon.yaml"
UNMAPPED = "jaeger-agent"
"""A service of the stack that is not in the topology: listed unmapped, never touched."""
SWEEP = ["--loads", "20,45,70", "--warmup-s", "3", "--measure-s", "15",
         "--prune-threshold", "1.0"]
"""A short sweep: 3 loads, 15-s windows (the 5-s-sliced p99 needs three slices); the high
prune threshold keeps the criticality experiments few on a noisy 2-core machine."""
MODEL_OVER_MEASURED_BOUND = 2.5
"""Stated bound: the profile's model of all-new at the SLO load, before its calibration, over
the measured SLO. The worked query set's server spans become own time in the profile
(``service_latency: server-span``); the model's sum of per-stage p99s still lies above the
measured p99 of the sum (1.26-1.42x in three runs, 1.5-1.7x in refits of two earlier runs'
CSVs; read as own times, the spans gave 2.6-3.3x)."""
INTERVAL_S = 4.0
DEPLOY_BOUND_S = 120.0
"""Stated bound: 26 services deployed, running, answering and scraped (18-38 s measured)."""
PROFILE_BOUND_S = 720.0
"""Stated bound of the short profile (210-490 s measured: 0 to 6 criticality points)."""
MOVE_BOUND_S = 15 * INTERVAL_S + 60
"""Stated bound: a service on new within 15 periods of the step up, with 60 s for Swarm to
start the moved tasks (12 s measured); the wait is longer so that a slow move fails here
with its time."""
CONTROL = {"slo_miss_periods": 3, "escalation_hold_s": 60, "cooldown_s": 10,
           "no_data_fallback_periods": 1000, "settle_s": 8}
RUN_SLO_FACTOR = 2.0
"""The table is planned, and the daemon run, at this many times the profile's SLO. The
profile's SLO is all-new's p99 at the SLO load as the profiler measures it: the median of the
p99s of 5-s slices. The daemon reads the p99 pooled over its query's window, which on this
stack lies above it at every load: all-new at 7 req/s read 38 ms over 60 s (p90 24 ms) against
a profile SLO of 25.6 ms in a run here (2026-12-02), whose all-new p99s were 25.4, 24.4 and 33
ms at 20, 45 and 70 req/s. At the profile's SLO itself the daemon saw the SLO missed from its
first period, and so (rightly, by its rules) moved nothing to old in 300 s, in that run and
in a clean-clone .ci/run (SLO 43.5 ms)."""
LOW_FRACTION, HIGH_FRACTION = 0.15, 1.0
"""The load step, as fractions of the profile's SLO load."""


def ecoscale(*args: str, timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ecoscale", *args], capture_output=True,
                          text=True, timeout=timeout_s, cwd=project_root())


def docker_cli(lab: Lab, *args: str, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DOCKER_HOST": lab.docker_host, **(env or {})})


def specs(client: docker.DockerClient) -> dict[str, dict[str, Any]]:
    """Swarm service name -> spec of every service of the stack."""
    return {s.name: s.attrs["Spec"] for s in client.services.list(
        filters={"label": f"com.docker.stack.namespace={STACK}"})}


def running(lab: Lab, topology_services) -> dict[str, dict[str, int]]:
    """Topology name -> {generation: running tasks}, read from Swarm itself."""
    client = lab.client()
    nodes = node_names(client)
    found = {}
    for name in topology_services:
        tasks = task_view(client.services.get(swarm_name(STACK, name)), nodes)
        counts: dict[str, int] = {}
        for task in tasks:
            if task["desired"] == "running" and task["state"] == "running":
                counts[task["generation"]] = counts.get(task["generation"], 0) + 1
        found[name] = counts
    return found


def plan(profile: Path, table: Path, slo_ms: float) -> None:
    """`ecoscale plan` at ``slo_ms`` for a peak at the profile's SLO load (the default); every
    level within the peak holds it."""
    done = ecoscale("plan", "--profile", str(profile), "--out", str(table), "--slo-ms",
                    f"{slo_ms:.4f}", "--prune-threshold", "0.3")
    assert done.returncode == 0, done.stderr[-3000:]
    peak = float(read_yaml(profile)["measured"]["slo_load_qps"])
    missed = [(level["max_load_qps"], level["p99_ms_at_max_load"])
              for level in read_yaml(table)["levels"]
              if not level["feasible"] and float(level["max_load_qps"]) <= peak * 1.0001]
    assert not missed, (slo_ms, missed)


def all_new_model_ms(profile: Path) -> tuple[float, float]:
    """(uncalibrated, calibrated) model p99 (ms) of all-new at the profile's SLO load."""
    fitted = parse_profile(read_yaml(profile), str(profile))
    topology = load_topology(APP)
    all_new = Placement.uniform(topology.service_names, "new")
    load = float(fitted.slo_load_qps)
    raw = AppModel(topology, replace(fitted, e2e_calibration=1.0), load_hardware())
    return (float(raw.e2e_p99(all_new, load)),
            float(raw.e2e_p99(all_new, load)) * fitted.e2e_calibration)


def settled(lab: Lab, services, log: Path) -> dict[str, dict[str, int]] | None:
    """The running placement once the daemon has made no action for three periods and every
    service runs on one generation with some on old; else None."""
    records = daemon_actions(log, applied_only=True)
    if not records:
        return None
    now = running(lab, services)
    quiet = time.time() - max(_ts(r["ts"]) for r in records) >= 3 * INTERVAL_S
    one_each = all(len(counts) == 1 for counts in now.values())
    return now if quiet and one_each and any("old" in c for c in now.values()) else None


def _ts(text: str) -> float:
    """Seconds since the epoch of a log line's ISO-8601 UTC time."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def stack(lab: Lab) -> Iterator[ServedStack]:
    """The stack deployed by `docker stack deploy` from the shipped compose file."""
    lab.up()                                   # a no-op on a running lab (clears old stacks)
    lab.remove_stack(STACK)                    # an interrupted run's, if any
    # The lab's own socialNetwork carries the same names (labelled ecoscale.managed): the
    # mapping would find both. Later tests deploy it again (fixture social_network).
    lab.undeploy()
    served = lab.serve_stack(STACK, APP, frontend_port=free_port())
    began = time.monotonic()
    done = docker_cli(lab, "stack", "deploy", "-c", str(COMPOSE), STACK, env=served.env)
    assert done.returncode == 0, done.stderr
    lab.wait_stack(STACK)
    ready_s = round(time.monotonic() - began, 1)
    REPORT["stack deploy until ready (s)"] = ready_s
    assert ready_s < DEPLOY_BOUND_S, ready_s
    yield served
    began = time.monotonic()
    left = specs(lab.client())
    done = docker_cli(lab, "stack", "rm", STACK)
    assert done.returncode == 0 or not left, done.stderr
    lab.remove_stack(STACK)                    # waits for the tasks; entry point, scrape job
    REPORT["stack rm (s)"] = round(time.monotonic() - began, 1)
    assert not specs(lab.client())


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("adopt-stack")


def pool_file(lab: Lab, folder: Path) -> Path:
    """The shipped pool file; it already points at this lab (asserted)."""
    raw = read_yaml(POOL)
    assert (raw["frontend_url"], raw["prometheus_url"], raw["target"]["docker_host"]) == (
        lab.stack_url, lab.prometheus_url, lab.docker_host)
    assert raw["target"]["stack"] == STACK
    path = folder / "pool.yaml"
    path.write_text(POOL.read_text())
    return path


def daemon_file(lab: Lab, folder: Path, table: Path, profile: Path, port: int,
                **changes: Any) -> Path:
    """The shipped daemon config, with this run's table, profile, state and a short loop."""
    raw = read_yaml(DAEMON)
    assert raw["target"]["docker_host"] == lab.docker_host
    assert raw["prometheus"]["url"] == lab.prometheus_url
    raw.update({"table": str(table), "profile": str(profile), "interval_s": INTERVAL_S,
                "state_file": str(folder / "state.json"), "pause_file": str(folder / "pause"),
                "listen_port": port, "control": CONTROL})
    raw["prometheus"] = {**raw["prometheus"], "stale_after_s": 30,
                         **{k: raw["prometheus"][k].replace("[30s]", "[10s]")
                            for k in ("qps", "p99_ms")}}
    raw.update(changes)
    path = folder / f"daemon-{port}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_the_stack_runs_the_operators_metrics(stack: ServedStack, lab: Lab):
    """The README's worked query set answers on the lab, per topology service."""
    load = Load(stack.url, 30.0)
    try:
        queries = read_yaml(POOL)["queries"]
        prometheus = lab.prometheus

        def answered() -> dict[str, Any] | None:
            found = {}
            for role in ("qps", "p99_ms", "service_p99_ms", "service_cpu_cores"):
                promql = (queries[role].replace("{frontend}", "nginx-thrift")
                          .replace("{window}", "10s").replace("{quantile}", "0.99"))
                found[role] = prometheus.query(promql)
            per_service = {s[0].get("service_name") for s in found["service_p99_ms"]
                           if math.isfinite(s[2])}
            per_cpu = {s[0].get("service") for s in found["service_cpu_cores"]}
            # the 10-s rate covers the offered 30 req/s once 10 s of load are scraped
            ok = (found["qps"] and found["qps"][0][2] > 20 and found["p99_ms"]
                  and called <= per_service and set(stack.services) <= per_cpu)
            return found if ok else None

        # a server span per service that the mix calls; CPU of every service
        called = {c.service for e in load_topology(APP).endpoints for c in e.calls()}
        assert len(called) >= 10, called

        found = wait_for("the spanmetrics and cAdvisor series of every service", answered, 90)
    finally:
        load.close()
    qps = found["qps"][0][2]
    assert qps < 40, qps                 # 30 req/s offered
    assert all(s[2] > 0 for s in found["service_p99_ms"] if s[0]["service_name"] in called)
    REPORT["stack: spanmetrics QPS at 30 req/s offered"] = round(qps, 1)


@pytest.mark.measures
def test_adopt_profile_plan_and_run_change_only_placement(stack: ServedStack, lab: Lab,
                                                          work: Path):
    client = lab.client()
    before = specs(client)
    assert set(before) == {*stack.swarm_services, swarm_name(STACK, UNMAPPED)}
    for spec in before.values():             # nothing of ecoscale in what the operator wrote
        assert not [k for k in spec.get("Labels") or {} if k.startswith("ecoscale.")]

    # the adoption report: every topology service mapped, the stranger left alone
    pool = pool_file(lab, work)
    done = ecoscale("adopt", "--pool", str(pool), "--json", timeout_s=120)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and not report["unmapped"]
    assert {r["service"]: r["target_name"] for r in report["services"]} == {
        s: swarm_name(STACK, s) for s in stack.services}
    assert report["not_in_topology"] == [swarm_name(STACK, UNMAPPED)]
    stop_first = {s for s in stack.services if update_order(before[swarm_name(STACK, s)]) ==
                  "stop-first"}
    assert set(report["stop_first"]) == stop_first and stop_first   # their moves start first

    # the profile, from the operator's metrics
    profile = work / "stack.yaml"
    began = time.monotonic()
    done = ecoscale("profile", "--pool", str(pool), "--out", str(profile), *SWEEP)
    profile_s = round(time.monotonic() - began, 1)
    REPORT["stack: profile (s)"] = profile_s
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert profile_s < PROFILE_BOUND_S, profile_s
    # the profiler gave every service back as it found it, its own update settings too
    given_back = specs(client)
    assert {n: s.get("UpdateConfig") for n, s in given_back.items()} == {
        n: s.get("UpdateConfig") for n, s in before.items()}
    changed = {name: unexpected_changes(before[name], given_back[name]) for name in before}
    assert not any(changed.values()), {k: v for k, v in changed.items() if v}
    document = read_yaml(profile)
    measured = document["measured"]
    slo_load, slo_ms = float(measured["slo_load_qps"]), float(measured["slo_ms"])
    REPORT["stack: SLO load (req/s), SLO (ms)"] = (round(slo_load, 1), round(slo_ms, 1))
    assert "server spans" in document["provenance"]["service_latency"]
    own_time = measured["own_time"]
    REPORT["stack: own times derived, clamped at the floor"] = (own_time["derived"],
                                                               own_time["clamped"])
    model_ms, calibrated_ms = all_new_model_ms(profile)
    REPORT["stack: model all-new p99 at the SLO load, uncalibrated (ms)"] = round(model_ms, 1)
    REPORT["stack: e2e_calibration"] = document["e2e_calibration"]
    assert calibrated_ms == pytest.approx(slo_ms, rel=1e-3), (calibrated_ms, slo_ms)
    assert 0.8 * slo_ms <= model_ms <= MODEL_OVER_MEASURED_BOUND * slo_ms, (model_ms, slo_ms)

    # the table, at RUN_SLO_FACTOR x the measured SLO
    table = work / "table.yaml"
    plan(profile, table, RUN_SLO_FACTOR * slo_ms)
    policy = load_table(table)
    # compressed time, as in test_daemon.py: step down after 20 s, not the planned 300 s
    write_table(table, replace(policy, hysteresis=replace(policy.hysteresis,
                                                          down_stabilisation_s=20.0)))
    on_new = [sum(p.generation == "new" for _, p in level.placement.items)
              for level in policy.levels]
    assert min(on_new) < len(stack.services), on_new    # some level uses old

    # the daemon through a load step
    port = free_port()
    config = daemon_file(lab, work, table, profile, port)
    log = work / "daemon.log"
    load = Load(stack.url, LOW_FRACTION * slo_load)
    handle = log.open("ab")
    daemon = subprocess.Popen([sys.executable, "-m", "ecoscale", "run", "--config",
                               str(config)], stdout=handle, stderr=subprocess.STDOUT,
                              cwd=project_root())

    def detail() -> str:
        levels = [(round(level.max_load_qps, 1), n) for level, n in zip(policy.levels, on_new,
                                                                         strict=True)]
        return (f"{daemon_detail(log, port)}\ntable levels (up to req/s, services on new of "
                f"{len(stack.services)}): {levels}; load {LOW_FRACTION * slo_load:.1f} req/s")

    def moved_to_old() -> bool:
        assert daemon.poll() is None, f"the daemon exited ({daemon.returncode}): {detail()}"
        assert load.error is None, f"the load stopped: {load.error!r}"
        return any(r["change"].endswith("old") for r in daemon_actions(log, applied_only=True))

    try:
        wait_for("a move to old at low load", moved_to_old, 300, 2, detail=detail)
        low = wait_for("the low-load placement running and settled", lambda: settled(
            lab, stack.services, log), 300, 1, detail=detail)
        REPORT["stack: daemon's p99 at low load, settled / run SLO (ms)"] = (
            daemon_gauge(port, "ecoscale_p99_milliseconds"), round(RUN_SLO_FACTOR * slo_ms, 1))
        load.rate = HIGH_FRACTION * slo_load
        stepped = time.monotonic()
        moved = wait_for("a service moved from old to new after the step up", lambda: [
            s for s, counts in running(lab, stack.services).items()
            if "old" in low[s] and set(counts) == {"new"}], 600, 2, detail=detail)
        moved_s = round(time.monotonic() - stepped)
        REPORT["stack: old -> new after the step up (s)"] = moved_s
        REPORT["stack: moved to new"] = len(moved)
        assert moved_s <= MOVE_BOUND_S, moved_s
    finally:
        load.close()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=120)
    assert code == 0, log.read_text()[-3000:]

    # every spec changed only where a move may change it
    wait_for("no rolling update in progress", lambda: all(
        (s.attrs.get("UpdateStatus") or {}).get("State") in (None, "completed")
        for s in docker.DockerClient(base_url=lab.docker_host).services.list(
            filters={"label": f"com.docker.stack.namespace={STACK}"})), 300, 2)
    after = specs(docker.DockerClient(base_url=lab.docker_host))
    assert set(after) == set(before)
    problems = {name: unexpected_changes(before[name], after[name]) for name in before}
    assert not any(problems.values()), {k: v for k, v in problems.items() if v}
    assert after[swarm_name(STACK, UNMAPPED)] == before[swarm_name(STACK, UNMAPPED)]
    order = {name: (update_order(before[name]), update_order(after[name]))
             for name in before if name != swarm_name(STACK, UNMAPPED)}
    touched = {r["service"] for r in daemon_actions(log, applied_only=True)}
    assert touched <= set(stack.services), touched
    assert all(order[swarm_name(STACK, s)][1] == "start-first" for s in touched), order
    assert any(order[swarm_name(STACK, s)][0] == "stop-first" for s in touched), order


def test_run_check_fails_on_a_query_that_returns_nothing(stack: ServedStack, lab: Lab,
                                                         work: Path):
    table, profile = work / "table.yaml", work / "stack.yaml"
    assert table.exists() and profile.exists(), "the profiling test writes them first"
    good = daemon_file(lab, work, table, profile, free_port())
    done = ecoscale("run", "--config", str(good), "--check", timeout_s=300)
    assert done.returncode == 0, done.stdout + done.stderr
    wrong = 'traces_span_metrics_calls_total{service_name="nginx-thrift-typo"'
    raw = read_yaml(good)
    raw["prometheus"]["qps"] = raw["prometheus"]["qps"].replace(
        'traces_span_metrics_calls_total{service_name="nginx-thrift"', wrong)
    bad = work / "daemon-bad.yaml"
    bad.write_text(yaml.safe_dump(raw, sort_keys=False))
    done = ecoscale("run", "--config", str(bad), "--check", timeout_s=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL prometheus" in done.stdout and "nginx-thrift-typo" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_profile_check_names_a_query_whose_series_lack_the_service_label(
        stack: ServedStack, lab: Lab, work: Path):
    pool = pool_file(lab, work)
    done = ecoscale("profile", "--pool", str(pool), "--check", timeout_s=300)
    assert done.returncode == 0, done.stdout + done.stderr
    raw = read_yaml(pool)
    raw["queries"]["service_label"] = "service"       # spanmetrics carry service_name
    bad = work / "pool-bad.yaml"
    bad.write_text(yaml.safe_dump(raw, sort_keys=False))
    done = ecoscale("profile", "--pool", str(bad), "--check", timeout_s=300)
    assert done.returncode == 1, done.stdout + done.stderr
    text = done.stdout + done.stderr
    assert "service_p99_ms" in text and "'service'" in text, text
    assert "Traceback" not in text


def test_lab_up_clears_the_stack_an_interrupted_run_left(stack: ServedStack, lab: Lab):
    """Last: the stack is still deployed, as after a run killed before its teardown."""
    assert specs(lab.client())
    assert lab.up() == {}                      # the lab itself was up: kept
    assert not specs(lab.client())
    assert stack.stack not in lab.stacks.served()
    assert "ecoscale-stack-gateway" not in {s.name for s in lab.client().services.list()}
