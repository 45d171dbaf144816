"""In-memory stand-ins for the daemon's ports, for tests: a fake clock, metrics you set,
an orchestrator that records what it is asked to do, a fixed carbon intensity; and the toy
policy table the control and daemon tests share (``toy_table``); server spans from a model
(``server_spans``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ecoscale.model.latency import E2EModel, path_latency
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.model.topology import Topology
from ecoscale.planner.table import Hysteresis, PolicyTable, TableLevel
from ecoscale.ports import (
    ACTIVE,
    DRAIN,
    ActionFailed,
    ClusterState,
    ManagedService,
    Metrics,
    NodeState,
    SourceUnavailable,
)


@dataclass
class FakeClock:
    """Virtual time: ``sleep`` advances it at once. ``now`` (epoch s) and ``monotonic`` read
    the same virtual time; ``tick_s`` is added to it at every ``monotonic`` read (a fake
    duration for what is timed)."""

    t: float = 1_000_000.0
    slept: list[float] = field(default_factory=list)
    tick_s: float = 0.0

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        self.t += self.tick_s
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class InMemoryMetrics:
    qps: float = math.nan
    p99_ms: float = math.nan
    utilisation: dict[str, float] = field(default_factory=dict)
    down: bool = False
    reads: int = 0

    def read(self, epoch_s: float) -> Metrics:
        self.reads += 1
        if self.down:
            raise SourceUnavailable("prometheus (fake) is down")
        return Metrics(self.qps, self.p99_ms, dict(self.utilisation))


@dataclass
class FixedCarbon:
    value: float = 250.0

    def intensity(self, epoch_s: float) -> float:
        return self.value

    def describe(self) -> str:
        return f"fixed {self.value:g} g/kWh"


@dataclass
class RecordingOrchestrator:
    """An Orchestrator of managed services held in memory (it behaves as a Swarm does);
    ``applied`` records every update.

    With ``nodes`` (``of(..., nodes={"old": 2})``) it is also a ``NodeAvailability``
    whose tasks run on nodes: an update places the service's tasks afresh, one per active
    ready node of its generation in turn (the fewest tasks first, as Swarm spreads), and a
    drained node's tasks go to the other active nodes (pending where there is none)."""

    services: dict[str, ManagedService] = field(default_factory=dict)
    is_controller: bool = True
    down: bool = False
    refuse: set[str] = field(default_factory=set)
    applied: list[tuple[str, ServicePlacement]] = field(default_factory=list)
    ready: set[str] = field(default_factory=lambda: {"new", "old"})
    """Generations with a ready node (``lose_node`` / ``restore_node`` change it)."""
    resumed: list[str] = field(default_factory=list)
    """Services whose paused update ``resume`` started again."""
    nodes: dict[str, NodeState] = field(default_factory=dict)
    """Nodes by name; empty: the services' tasks run on no particular node."""
    updates: list[tuple[str, ServicePlacement, float | None, bool]] = field(
        default_factory=list)
    """Every update: (service, placement, CPU budget, restart)."""
    availability_set: list[tuple[str, str]] = field(default_factory=list)
    """Every node availability set: (node, availability)."""
    refuse_nodes: set[str] = field(default_factory=set)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """Updates and node changes in the order made: ("update", service, placement) and
    ("node", node, availability)."""

    @classmethod
    def of(cls, placement: Placement, nodes: dict[str, int] | None = None,
           **kwargs: object) -> RecordingOrchestrator:
        """Services placed as ``placement``; ``nodes``: generation -> how many nodes
        (``<generation>-1``, ``-2``...), all active, the tasks spread over them."""
        services = {
            name: ManagedService(name, f"id-{name}", f"app_{name}", placed,
                                 {placed.generation: placed.replicas})
            for name, placed in placement.items
        }
        fake = cls(services=services, **kwargs)  # type: ignore[arg-type]
        for generation, count in (nodes or {}).items():
            for index in range(1, count + 1):
                name = f"{generation}-{index}"
                fake.nodes[name] = NodeState(f"id-{name}", name, generation, True, ACTIVE)
        for name in services:
            fake._place(name)
        return fake

    def read(self) -> ClusterState:
        if self.down:
            raise SourceUnavailable("docker (fake) is down")
        return ClusterState(self.is_controller, dict(self.services), tuple(sorted(self.ready)),
                            nodes=tuple(self.nodes.values()))

    def apply(self, service: ManagedService, placed: ServicePlacement, *,
              replica_cpus: float | None = None, restart: bool = False) -> None:
        if self.down:
            raise SourceUnavailable("docker (fake) is down")
        if service.name in self.refuse:
            raise ActionFailed(f"{service.name}: refused (fake)")
        self.applied.append((service.name, placed))
        self.updates.append((service.name, placed, replica_cpus, restart))
        self.events.append(("update", service.name, str(placed)))
        # A new update also ends a paused one, as in Swarm; tasks start only where a node is.
        running = {placed.generation: placed.replicas} if placed.generation in self.ready \
            else {}
        budget = {} if replica_cpus is None else {"cpu_reservation": replica_cpus,
                                                  "cpu_limit": replica_cpus}
        self.services[service.name] = replace(self.services[service.name], placement=placed,
                                              running=running, update_paused="", **budget)
        self._place(service.name)

    def set_availability(self, node: NodeState, availability: str) -> None:
        if self.down:
            raise SourceUnavailable("docker (fake) is down")
        if node.name in self.refuse_nodes:
            raise ActionFailed(f"node {node.name}: refused (fake)")
        self.availability_set.append((node.name, availability))
        self.events.append(("node", node.name, availability))
        self.nodes[node.name] = replace(self.nodes[node.name], availability=availability,
                                        emptied=availability != ACTIVE)
        if availability == DRAIN:
            for name in dict(self.nodes[node.name].tasks):
                self._place(name)

    def _place(self, service: str) -> None:
        """Run ``service``'s tasks on the active ready nodes of its generation, spread."""
        if not self.nodes:
            return
        managed = self.services[service]
        for name, node in self.nodes.items():
            if service in node.tasks:
                self.nodes[name] = replace(node, tasks={s: n for s, n in node.tasks.items()
                                                        if s != service})
        placed = managed.placement
        if placed is None:
            return
        open_nodes = [n for n in self.nodes.values() if n.generation == placed.generation
                      and n.ready and n.availability == ACTIVE]
        placed_count = 0
        for _ in range(placed.replicas):
            if not open_nodes:
                break
            target = min(open_nodes, key=lambda n: (n.tasks.get(service, 0), n.task_count,
                                                    n.name))
            node = self.nodes[target.name]
            self.nodes[target.name] = replace(node, tasks={
                **node.tasks, service: node.tasks.get(service, 0) + 1})
            open_nodes = [self.nodes[n.name] for n in open_nodes]
            placed_count += 1
        self.services[service] = replace(
            managed, running={placed.generation: placed_count} if placed_count else {})

    def tasks_on(self, node: str) -> dict[str, int]:
        """Service -> its tasks on ``node``."""
        return dict(self.nodes[node].tasks)

    def lose_node(self, generation: str) -> None:
        """The only node of ``generation`` is gone: its tasks stop, new ones stay pending."""
        self.ready.discard(generation)
        for name, service in self.services.items():
            if generation in service.running:
                running = {g: n for g, n in service.running.items() if g != generation}
                self.services[name] = replace(service, running=running)

    def restore_node(self, generation: str) -> None:
        """The node is back: pending tasks of services placed on ``generation`` start."""
        self.ready.add(generation)
        for name, service in self.services.items():
            if service.placement is not None and service.placement.generation == generation:
                self.services[name] = replace(
                    service, running={generation: service.placement.replicas})

    def resume(self, service: ManagedService) -> None:
        """A forced update: Swarm starts the paused update again (here: it completes)."""
        if self.down:
            raise SourceUnavailable("docker (fake) is down")
        self.resumed.append(service.name)
        self.services[service.name] = replace(self.services[service.name], update_paused="")

    def pause(self, name: str, paused: bool = True) -> None:
        self.services[name] = replace(self.services[name], paused=paused)

    def placement(self) -> Placement:
        return Placement(tuple((n, s.placement) for n, s in self.services.items()
                               if s.placement is not None))


def vector_reply(*series: tuple[dict[str, str], float, float | str]) -> dict[str, Any]:
    """The body Prometheus' instant-query API sends for a vector: (labels, time s, value)."""
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": dict(labels), "value": [stamp, str(value)]} for labels, stamp, value in series
    ]}}


@dataclass
class RecordedPrometheus:
    """An instant-query client answering from recorded reply bodies, by query text.

    A reply is a body (as `vector_reply` builds, or one recorded from a real Prometheus) or
    a callable taking the query time and returning one; an unknown query gets an empty
    vector. ``down`` makes every query fail as an unreachable server does."""

    replies: dict[str, Any] = field(default_factory=dict)
    down: bool = False
    queries: list[str] = field(default_factory=list)
    url: str = "http://prometheus.fake:9090"

    def query(self, promql: str, at_s: float | None = None) -> list[tuple[dict[str, str],
                                                                          float, float]]:
        from ecoscale.adapters.prometheus import parse_reply

        self.queries.append(promql)
        if self.down:
            raise SourceUnavailable(f"prometheus at {self.url}: ConnectionError: (fake) down")
        body = self.replies.get(promql, vector_reply())
        if callable(body):
            body = body(at_s)
        return parse_reply(body, promql)


@dataclass
class FakeAdapters:
    """An ecoscale.daemon.wiring.Adapters that builds fakes and records each build as
    (client, the setting it was built from); a client named in ``fail`` cannot be built."""

    prometheus_client: Any = field(default_factory=RecordedPrometheus)
    orchestrator_fake: Any = field(default_factory=RecordingOrchestrator)
    carbon_value: float = 250.0
    fail: set[str] = field(default_factory=set)
    built: list[tuple[str, str]] = field(default_factory=list)

    def _build(self, client: str, setting: str) -> None:
        if client in self.fail:
            from ecoscale.errors import InputError

            raise InputError(setting, f"(fake) {client} cannot be built")
        self.built.append((client, setting))

    def prometheus(self, config: Any) -> Any:
        self._build("prometheus", config.prometheus.url)
        return self.prometheus_client

    def metrics(self, config: Any) -> Any:
        self._build("metrics", config.prometheus.url)
        return InMemoryMetrics()

    def orchestrator(self, config: Any) -> Any:
        self._build("orchestrator", config.target.docker_host)
        return self.orchestrator_fake

    def carbon(self, config: Any, started_at_s: float) -> Any:
        self._build("carbon", config.carbon.url or config.carbon.trace)
        return FixedCarbon(self.carbon_value)


class FakeDockerAPI:
    """The part of docker-py's low-level API that ``DockerSwarm`` uses, held in memory, so
    that the real adapter (spec parsing, re-read before update, retry on "update out of
    sequence") runs against it. Tasks start at once on a generation that has a node.

    Faults, drawn from ``rng`` (a ``random.Random``): ``fail_rate`` of updates are refused
    with an API error; ``out_of_sequence_rate`` of updates find the version moved on (a
    concurrent writer), which the adapter re-reads and retries; ``out_of_sequence_burst``
    such answers in a row exhaust its attempts (then the update fails); ``lost_reply_rate``
    of updates are made but their reply is lost (a connection reset), so the daemon cannot
    tell. ``noop_updates`` counts updates to where a service already was: repeated actions."""

    def __init__(self, placement: Placement, rng: Any, labels: Any = None,
                 fail_rate: float = 0.0, out_of_sequence_rate: float = 0.0,
                 out_of_sequence_burst: float = 0.0, lost_reply_rate: float = 0.0):
        from ecoscale.config import LabelConfig

        self.labels = labels or LabelConfig()
        self.rng = rng
        self.fail_rate = fail_rate
        self.out_of_sequence_rate = out_of_sequence_rate
        self.out_of_sequence_burst = out_of_sequence_burst
        self.lost_reply_rate = lost_reply_rate
        self.lost_replies = 0
        self.noop_updates = 0
        self.ready = {"new", "old"}
        self.down = False
        """The API does not answer at all (every call fails as a dead socket does)."""
        self.services: dict[str, dict[str, Any]] = {}
        self.updates = 0
        self.refused = 0
        self.out_of_sequence = 0
        self._burst = 0
        for name, placed in placement.items:
            self.services[f"id-{name}"] = {
                "ID": f"id-{name}", "Version": {"Index": 1},
                "Spec": {"Name": f"app_{name}",
                         "Labels": {self.labels.managed: "true", self.labels.service: name},
                         "TaskTemplate": {"ContainerSpec": {"Image": "emulator"},
                                          "Placement": {"Constraints": [
                                              f"node.labels.{self.labels.generation}=="
                                              f"{placed.generation}", "node.role==worker"]}},
                         "Mode": {"Replicated": {"Replicas": placed.replicas}}}}

    # ---- reads ---------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {"Swarm": {"ControlAvailable": True, "NodeID": "node-new"}}

    def nodes(self) -> list[dict[str, Any]]:
        return [{"ID": f"node-{g}", "Spec": {"Labels": {self.labels.generation: g}},
                 "Status": {"State": "ready" if g in self.ready else "down"}}
                for g in ("new", "old")]

    def services_list(self, filters: Any = None) -> list[dict[str, Any]]:
        # the live dicts: the adapter only reads them (and deep-copies a spec it updates)
        return list(self.services.values())

    def tasks(self, filters: Any = None) -> list[dict[str, Any]]:
        from ecoscale.adapters.swarm import generation_of, replicas_of

        out = []
        for service in self.services.values():
            generation = generation_of(service["Spec"], self.labels.generation)
            for index in range(replicas_of(service["Spec"]) or 0):
                state = "running" if generation in self.ready else "pending"
                out.append({"ServiceID": service["ID"], "NodeID": f"node-{generation}",
                            "Slot": index + 1, "Status": {"State": state}})
        return out

    def inspect_service(self, service_id: str) -> dict[str, Any]:
        service = self.services[service_id]
        return {**service, "Version": dict(service["Version"])}

    # ---- writes --------------------------------------------------------------------------
    def update_service(self, service_id: str, version: int, task_template: Any = None,
                       name: Any = None, labels: Any = None, mode: Any = None,
                       update_config: Any = None, **_: Any) -> None:
        import docker.errors

        service = self.services[service_id]
        if self._burst > 0 or self.rng.random() < self.out_of_sequence_rate:
            if self._burst == 0 and self.rng.random() < self.out_of_sequence_burst:
                self._burst = 5   # more than the adapter's attempts: this update fails
            self._burst = max(0, self._burst - 1)
            service["Version"]["Index"] += 1   # someone else wrote in between
            self.out_of_sequence += 1
        if version != service["Version"]["Index"]:
            raise docker.errors.APIError("rpc error: code = Unknown desc = update out of "
                                         "sequence")
        if self.rng.random() < self.fail_rate:
            self.refused += 1
            raise docker.errors.APIError("rpc error: code = Unavailable desc = (fake) the "
                                         "manager refused the update")
        from ecoscale.adapters.swarm import generation_of, replicas_of

        new_spec = {**service["Spec"], "TaskTemplate": task_template, "Name": name,
                    "Labels": labels, "Mode": mode, "UpdateConfig": update_config}
        key = self.labels.generation
        if (generation_of(new_spec, key), replicas_of(new_spec)) == \
                (generation_of(service["Spec"], key), replicas_of(service["Spec"])):
            self.noop_updates += 1   # a repeated action: the service is already there
        service["Spec"] = new_spec
        service["Version"]["Index"] += 1
        self.updates += 1
        if self.rng.random() < self.lost_reply_rate:
            import requests

            self.lost_replies += 1   # done, but the daemon never hears so
            raise requests.ConnectionError("(fake) connection reset before the reply")

    def placement(self) -> Placement:
        from ecoscale.adapters.swarm import generation_of, replicas_of

        return Placement(tuple(
            (s["Spec"]["Labels"][self.labels.service],
             ServicePlacement(generation_of(s["Spec"], self.labels.generation) or "",
                              replicas_of(s["Spec"]) or 0))
            for s in self.services.values()))


class FakeDockerClient:
    """``docker.DockerClient`` as ``DockerSwarm`` uses it: only ``.api``."""

    def __init__(self, api: FakeDockerAPI):
        self.api = _ApiView(api)


class _ApiView:
    def __init__(self, api: FakeDockerAPI):
        self._api = api

    def __getattr__(self, name: str) -> Any:
        if self._api.down:
            import requests

            def unreachable(*_args: Any, **_kwargs: Any) -> Any:
                raise requests.ConnectionError("(fake) the manager's socket does not answer")

            return unreachable
        if name == "services":
            return self._api.services_list
        return getattr(self._api, name)


# ---- soak in virtual time -----------------------------------------------------------------
@dataclass
class SoakReport:
    """What a soak run saw: counts of ticks, actions and faults, and the bounds it held."""

    ticks: int = 0
    simulated_s: float = 0.0
    wall_s: float = 0.0
    actions_applied: int = 0
    actions_failed: int = 0
    """Actions the Swarm refused (each logged with its error, then retried next loop)."""
    failed_logged: int = 0
    """``action`` log lines with applied=false and an error: must equal actions_failed."""
    refused: int = 0
    out_of_sequence: int = 0
    lost_replies: int = 0
    """Updates made whose reply was lost: the next loop reads the Swarm and must not redo them."""
    repeated_actions: int = 0
    """Updates to where a service already was (must be 0)."""
    unhealthy_ticks: int = 0
    prometheus_outages: int = 0
    docker_outages: int = 0
    node_losses: int = 0
    max_state_entries: int = 0
    """Largest per-service map in the control state (bounded by the number of services)."""
    max_state_file_bytes: int = 0
    metric_samples: tuple[int, int] = (0, 0)
    """Samples the daemon's own /metrics exposes after the first simulated day and at the end
    (it grows only as label values first appear: a service's first refused update...)."""
    rss_mb_day_one: float = math.nan
    """Resident set size (VmRSS, MB) after the first simulated day (warm: every code path
    and cache has been through), to compare with the end."""
    metric_series_max: int = 0
    """The most label sets of any one metric at the end (bounded: services x generations)."""
    traced_growth_bytes: int | None = None
    """Python heap growth (tracemalloc, bytes) from the end of warm-up to the end, when
    measured, over the source lines that allocated more than one new block: a leak per loop
    adds hundreds of blocks, while one block that appears or grows once is an interpreter
    table resizing (the interned-strings dict: 3.7 MB at once when a test session has
    imported many modules), not a leak."""
    converged: bool = False
    """After the faults stopped: the Swarm runs the level's placement and nothing is left."""
    leftover_actions: int = 0


class _CountingStream:
    """A log stream that counts action lines and keeps only the last few (bounded memory)."""

    def __init__(self) -> None:
        from collections import deque

        self.tail: Any = deque(maxlen=20)
        self.failed_logged = 0

    def write(self, text: str) -> int:
        if text.strip():
            self.tail.append(text)
            if '"event": "action"' in text and '"applied": false' in text \
                    and '"error": null' not in text:
                self.failed_logged += 1
        return len(text)

    def flush(self) -> None:
        return


def soak(table: Any, days: float, *, seed: int = 1, interval_s: float = 15.0,
         state_file: str = "", model: Any = None, trace_memory_after_s: float | None = None,
         calm_s: float = 4 * 3600.0, faults: bool = True) -> SoakReport:
    """Drive ``Daemon.run_once`` through ``days`` of virtual time, sleeping as ``run_forever``
    does (the interval, backed off while unhealthy), against the real Prometheus and Docker
    adapters on fakes: recorded reply shapes from ``RecordedPrometheus`` and a
    ``FakeDockerAPI`` that refuses updates, answers out of sequence, goes unreachable, and
    loses its old node for hours. Load is a daily cycle from 15 % to 95 % of the table's
    peak with noise, p99 under the SLO but for short misses. Then ``calm_s`` without faults
    (and a steady load) shows that every refused action was retried: nothing is left to do.
    """
    import random
    import time as wall
    import tracemalloc

    from ecoscale.adapters.prometheus import PromQLMetrics
    from ecoscale.adapters.swarm import DockerSwarm
    from ecoscale.config import DaemonConfig, PrometheusConfig
    from ecoscale.control.decide import ControlSettings, target_placement
    from ecoscale.daemon.loop import Daemon, backoff_s
    from ecoscale.daemon.telemetry import Log

    rng = random.Random(seed)
    clock = FakeClock(t=1_700_000_000.0)
    start = clock.t
    first = table.levels[0].placement
    api = FakeDockerAPI(first, random.Random(seed + 1), fail_rate=0.03 if faults else 0.0,
                        out_of_sequence_rate=0.05 if faults else 0.0,
                        out_of_sequence_burst=0.1 if faults else 0.0,
                        lost_reply_rate=0.03 if faults else 0.0)
    # a conflicting update is retried at once: the retry pauses take no virtual time
    swarm = DockerSwarm(client=FakeDockerClient(api), sleep=lambda _s: None)
    qps_query, p99_query = "sum(rate(requests_total[1m]))", "1000 * histogram_quantile(0.99, x)"
    shape = {"qps": 0.0, "p99": 0.0, "fault": ""}

    def reply(key: str) -> Any:
        def answer(_at: float | None) -> Any:
            fault = shape["fault"]
            if fault == "error":
                return {"status": "error", "errorType": "execution", "error": "(fake) timeout"}
            if fault == "empty":
                return vector_reply()
            stamp = clock.now() - (120.0 if fault == "stale" else rng.uniform(0, 10))
            value: float | str = "NaN" if fault == "nan" else shape[key]
            return vector_reply(({}, stamp, value))
        return answer

    prometheus = RecordedPrometheus({qps_query: reply("qps"), p99_query: reply("p99")})
    prometheus.queries = _Discard()   # type: ignore[assignment]  (a month of queries)
    config = DaemonConfig(
        app=table.app, table="table.yaml", interval_s=interval_s, max_backoff_s=300.0,
        state_file=state_file, listen_port=0,
        prometheus=PrometheusConfig(qps=qps_query, p99_ms=p99_query, stale_after_s=60.0),
        control=ControlSettings(no_data_fallback_periods=10))
    stream = _CountingStream()
    daemon = Daemon(config=config, table=table, orchestrator=swarm,
                    metrics=PromQLMetrics(config.prometheus, client=prometheus),
                    carbon=FixedCarbon(250.0), clock=clock, model=model, log=Log(stream))
    report = SoakReport()
    end = start + days * 86400.0
    miss_left = outage_left = docker_left = node_left = 0
    failures = 0
    began = wall.perf_counter()
    traced_from: int | None = None
    day_one_samples = 0

    def metric_samples() -> int:
        return sum(len(m.samples) for m in daemon.telemetry.registry.collect())

    def step(faulty: bool, steady_qps: float | None = None) -> Any:
        nonlocal miss_left, outage_left, docker_left, node_left, failures
        now = clock.now() - start
        daily = 0.5 - 0.5 * math.cos(2 * math.pi * now / 86400.0)
        shape["qps"] = steady_qps if steady_qps is not None else max(0.0, table.peak_qps * (
            0.15 + 0.8 * daily) * rng.uniform(0.95, 1.05))
        if faulty and miss_left == 0 and rng.random() < 0.003:
            miss_left = rng.randint(3, 8)
        shape["p99"] = table.slo_ms * (1.5 if miss_left else rng.uniform(0.3, 0.8))
        miss_left = max(0, miss_left - 1)
        shape["fault"] = ""
        if faulty:
            if outage_left == 0 and rng.random() < 0.0005:
                outage_left = rng.randint(5, 60)
                report.prometheus_outages += 1
            if docker_left == 0 and rng.random() < 0.0005:
                docker_left = rng.randint(5, 60)
                report.docker_outages += 1
            if node_left == 0 and rng.random() < 0.0003:
                node_left = rng.randint(60, 720)
                report.node_losses += 1
                api.ready.discard("old")
            draw = rng.random()
            shape["fault"] = ("error" if outage_left else "empty" if draw < 0.003 else
                              "nan" if draw < 0.006 else "stale" if draw < 0.008 else "")
        outage_left, docker_left = max(0, outage_left - 1), max(0, docker_left - 1)
        api.down = docker_left > 0
        if node_left:
            node_left -= 1
            if node_left == 0:
                api.ready.add("old")
        tick = daemon.run_once()
        report.ticks += 1
        report.unhealthy_ticks += not tick.healthy
        for action in tick.actions:
            if action.applied:
                report.actions_applied += 1
            elif action.error:
                report.actions_failed += 1
        state = daemon.state
        if state is not None:
            report.max_state_entries = max(report.max_state_entries, len(state.last_move_s),
                                           len(state.not_running_since))
        if state_file:
            from pathlib import Path

            report.max_state_file_bytes = max(report.max_state_file_bytes,
                                              Path(state_file).stat().st_size)
        failures = 0 if tick.healthy else failures + 1
        clock.advance(backoff_s(failures, interval_s, config.max_backoff_s))
        return tick

    while clock.now() < end:
        step(faults)
        if trace_memory_after_s is not None and traced_from is None and \
                clock.now() - start >= trace_memory_after_s:
            tracemalloc.start()
            traced_from = tracemalloc.take_snapshot()
        if not day_one_samples and clock.now() - start >= 86400.0:
            day_one_samples = metric_samples()
            report.rss_mb_day_one = rss_mb()
    if traced_from is not None:
        report.traced_growth_bytes = sum(
            stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(traced_from,
                                                                              "lineno")
            if stat.count_diff > 1)
        tracemalloc.stop()
    report.metric_samples = (day_one_samples or metric_samples(), metric_samples())
    report.metric_series_max = max(
        len({tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
             for sample in family.samples})
        for family in daemon.telemetry.registry.collect())
    api.fail_rate = api.out_of_sequence_rate = api.out_of_sequence_burst = 0.0
    api.lost_reply_rate = 0.0
    api.down, api.ready = False, {"new", "old"}
    calm_end = clock.now() + calm_s
    while clock.now() < calm_end:
        tick = step(False, steady_qps=table.peak_qps * 0.5)
    report.leftover_actions = len(tick.actions)
    state = daemon.state
    wanted = target_placement(table, state.level or 0, state.escalation, config.control)
    report.converged = not tick.actions and api.placement() == wanted
    report.refused, report.out_of_sequence = api.refused, api.out_of_sequence
    report.lost_replies, report.repeated_actions = api.lost_replies, api.noop_updates
    report.failed_logged = stream.failed_logged
    report.simulated_s = clock.now() - start
    report.wall_s = wall.perf_counter() - began
    return report


def rss_mb() -> float:
    """This process's resident set size (VmRSS) in MB; NaN where /proc is not there."""
    from pathlib import Path

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


class _Discard:
    """A list that keeps nothing (``append`` only)."""

    def append(self, _item: Any) -> None:
        return


# ---- the toy policy table ----------------------------------------------------------------
TOY_NEW1 = ServicePlacement("new", 1)
TOY_OLD1, TOY_OLD2 = ServicePlacement("old", 1), ServicePlacement("old", 2)
TOY_LOW = Placement((("a", TOY_OLD1), ("b", TOY_OLD1), ("c", TOY_OLD1)))
TOY_MID = Placement((("a", TOY_OLD2), ("b", TOY_OLD1), ("c", TOY_OLD1)))
TOY_HIGH = Placement((("a", TOY_NEW1), ("b", TOY_OLD2), ("c", TOY_OLD1)))
TOY_LEVELS: tuple[tuple[float, Placement], ...] = (
    (100.0, TOY_LOW), (200.0, TOY_MID), (300.0, TOY_HIGH))
"""(max load req/s, placement) of the toy table's one ladder: all on old at 100 req/s, a
scaled out on old at 200, a on new and b scaled out at 300."""


def toy_table(levels: Sequence[tuple[float, Placement]] = TOY_LEVELS,
              **fields: Any) -> PolicyTable:
    """A small hand-made policy table: services a and b critical (a most: +3 ms alone on old,
    b +1 ms) and c not, one ladder of ``levels`` (max load req/s, placement; p99 5 ms,
    carbon 1 g/h, feasible) for every intensity, SLO 10 ms, peak = the top level's load,
    generations new and old (C 2.8), hysteresis up 95 %, down 85 %, 300 s. ``fields``
    replace any other field of the table (``app``, ``ranking``, ``provenance``...)."""
    table = PolicyTable(
        app="toy", slo_ms=10.0, peak_qps=levels[-1][0], newest="new",
        levels=tuple(TableLevel(load, math.inf, placed, {}, 5.0, 1.0, True)
                     for load, placed in levels),
        ranking=(("a", 3.0), ("b", 1.0)), non_critical={"c": 0.0}, critical={"a": 3, "b": 1},
        hysteresis=Hysteresis(0.95, 0.85, 300.0), carbon_ratio={"new": 1.0, "old": 2.8})
    return replace(table, **fields)


TOY_TABLE = toy_table()
"""``toy_table()``: the three levels of TOY_LEVELS."""


def server_spans(topology: Topology, own_ms: dict[str, float]) -> dict[str, float]:
    """Server-span p99s (ms) as a tracer would see them on a pool that the model describes
    exactly, from each service's own p99 ``own_ms``: each visit lasts its service's own time
    plus its sub-path (the model's composition of own times), a service's span is the mean
    over its visits weighted by how often each happens, and the front end's span is the
    request (the model's mix p99). ``ecoscale.model.spans.own_times`` inverts it."""
    visits = topology.visits_per_request()
    spans = {s: (0.0 if visits[s] > 0 else own_ms[s]) for s in topology.services}
    for endpoint in topology.endpoints:
        for call in endpoint.calls():
            if call.service != topology.frontend:
                lasts = own_ms[call.service] + float(path_latency(call.path, own_ms))
                spans[call.service] += endpoint.share / visits[call.service] * lasts
    spans[topology.frontend] = float(E2EModel(topology).mix_p99(own_ms))
    return spans
