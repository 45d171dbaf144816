"""Docker Swarm through docker-py: the one module that reads and edits Swarm service specs.

The daemon, the profiler, the lab and the live evaluation all go through it: constraint
parsing (``generation_of``: spaces around ``==`` allowed), spec editing (``updated_spec``,
``forced_spec``: copies that change only the generation constraint, the replica count,
the update order and, when asked, the CPU budget, or only ``ForceUpdate``), the names
(``topology_name``: the target's mapping, then ecoscale's labels) and the retrying update
(``update_service``, ``update_node``).

A move rewrites only the generation constraint (``node.labels.<generation label>==<gen>``),
the replica count and, where it is stop-first or absent, ``UpdateConfig.Order`` (not for a
service publishing a host-mode port: ``host_mode_ports``); with a CPU budget (a
right-sized table's share, ``with_replica_cpus``) also the ``NanoCPUs`` of
``TaskTemplate.Resources.Limits`` and ``.Reservations`` (their memory and other fields
kept). Every other part of the service spec is written back as it was read (the other
constraints, preferences, platforms, the other ``Mode`` and ``UpdateConfig`` fields, and
whatever a ``docker stack deploy`` left out stays out). Updates are start-first, so a new
task runs before an old one stops, and each update re-reads the service first and retries
on "update out of sequence". A rolling update that Swarm paused is started again by
``DockerSwarm.resume`` (a forced update of the same spec).

Nodes: ``DockerSwarm.read`` reports each node's availability and tasks
(``ports.NodeState``), and ``set_availability`` (``ports.NodeAvailability``) pauses, drains
or activates one, changing only its ``Availability`` and ecoscale's ``emptied`` label.

The spec is written whole, from ecoscale's own read, with docker-py's
``fetch_current_spec=False``: with ``True``, docker-py inspects the service again *with the
engine's defaults inserted* and fills every part the spec lacks from that (a
``RollbackConfig``, ``ContainerSpec.StopGracePeriod``, ``Resources``...), so a spec
written once would no longer be the user's.

The spec transformations are pure functions, tested against recorded API replies.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from ecoscale.config import LabelConfig, TargetConfig
from ecoscale.model.placement import ServicePlacement
from ecoscale.ports import (
    ACTIVE,
    MIN_TASK_CPUS,
    ActionFailed,
    ClusterState,
    ManagedService,
    NodeState,
    SourceUnavailable,
)

OUT_OF_SEQUENCE = "update out of sequence"
MAX_ATTEMPTS = 5
RETRY_PAUSE_S = 0.2
"""Pause before the n-th retry of a conflicting update: n x this (s)."""
GENERATION_LABEL = LabelConfig().generation
"""The node label that carries a node's generation (``ecoscale.generation``)."""

SpecChange = Callable[[Mapping[str, Any]], dict[str, Any]]
"""A service spec -> the spec to write (a new dict; the input is not modified)."""


def _constraint_pattern(label: str) -> re.Pattern[str]:
    return re.compile(rf"^\s*node\.labels\.{re.escape(label)}\s*==\s*(\S+)\s*$")


def generation_of(spec: Mapping[str, Any], label: str = GENERATION_LABEL) -> str | None:
    """The generation a service is constrained to, from its spec; None if unconstrained."""
    pattern = _constraint_pattern(label)
    placement = (spec.get("TaskTemplate") or {}).get("Placement") or {}
    for constraint in placement.get("Constraints") or []:
        match = pattern.match(constraint)
        if match:
            return match.group(1)
    return None


def replicas_of(spec: Mapping[str, Any]) -> int | None:
    """Desired replicas of a replicated service (Swarm's default: 1 when the spec names no
    count, or no mode at all); None for a global service, which has no count."""
    mode = spec.get("Mode") or {"Replicated": {}}
    replicated = mode.get("Replicated")
    if replicated is None:
        return None
    return int(replicated.get("Replicas", 1))


SWARM_UPDATE_DEFAULTS: Mapping[str, Any] = {
    "Parallelism": 1, "FailureAction": "pause", "Monitor": 5_000_000_000,
    "MaxFailureRatio": 0, "Order": "stop-first"}
"""The update config Swarm applies to a service whose spec has none (swarmkit's
api/defaults; Monitor in ns). A move writes it, start-first, where the spec had none: an
``UpdateConfig`` of only ``Order`` would mean Parallelism 0, every task at once."""
START_FIRST = "start-first"


def update_order(spec: Mapping[str, Any]) -> str:
    """The spec's update order: ``start-first`` or ``stop-first`` (Swarm's default when the
    spec says none)."""
    return str((spec.get("UpdateConfig") or {}).get("Order") or "stop-first")


HOST_PORT_KEEPS_ORDER = "host-mode port"
"""How ``update_order`` marks an order a move keeps: ``stop-first (kept: host-mode port
8080)``."""


def host_mode_ports(spec: Mapping[str, Any]) -> tuple[int, ...]:
    """The ports the service publishes in host mode (on the node itself, not the routing
    mesh). A start-first task on the node of the task it replaces cannot bind them, and the
    update hangs with the new task pending, so a move keeps such a service's own order."""
    ports = ((spec.get("EndpointSpec") or {}).get("Ports")) or []
    return tuple(int(p.get("PublishedPort") or p.get("TargetPort") or 0) for p in ports
                 if str(p.get("PublishMode", "")).lower() == "host")


def move_order(spec: Mapping[str, Any]) -> str:
    """The update order a move of this service runs with, as the adoption report shows it:
    ``start-first``, or the service's own order kept beside its host-mode ports."""
    ports = host_mode_ports(spec)
    order = update_order(spec)
    if not ports or order == START_FIRST:
        return order
    return f"{order} (kept: {HOST_PORT_KEEPS_ORDER} {', '.join(map(str, ports))})"


NANO = 1_000_000_000
"""NanoCPUs per CPU (Swarm's unit of CPU resources)."""


def cpu_budget(spec: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """(reservation, limit) of each task's CPUs (cores) in a service spec; None where unset."""
    resources = (spec.get("TaskTemplate") or {}).get("Resources") or {}

    def cores(part: str) -> float | None:
        nano = (resources.get(part) or {}).get("NanoCPUs")
        return int(nano) / NANO if nano else None

    return cores("Reservations"), cores("Limits")


def with_replica_cpus(spec: dict[str, Any], cpus: float) -> dict[str, Any]:
    """``spec`` (modified in place, and returned) with each task reserving and limited to
    ``cpus`` (cores, at least MIN_TASK_CPUS, to the millicore): only the ``NanoCPUs`` of
    ``TaskTemplate.Resources.Reservations`` and ``.Limits`` change."""
    nano = max(round(cpus * 1000), round(MIN_TASK_CPUS * 1000)) * (NANO // 1000)
    template = spec.setdefault("TaskTemplate", {})
    resources = dict(template.get("Resources") or {})
    for part in ("Reservations", "Limits"):
        resources[part] = {**(resources.get(part) or {}), "NanoCPUs": nano}
    template["Resources"] = resources
    return spec


def updated_spec(spec: Mapping[str, Any], placed: ServicePlacement,
                 label: str = GENERATION_LABEL,
                 replica_cpus: float | None = None) -> dict[str, Any]:
    """The service spec with the generation constraint and replicas of ``placed``, a
    start-first update order, with ``replica_cpus`` each task's CPU reservation and limit
    (``with_replica_cpus``; None: the resources as they are), and everything else unchanged
    (no field added but those: an absent ``UpdateConfig`` becomes Swarm's defaults,
    start-first). A service that publishes a host-mode port keeps its own order
    (``host_mode_ports``). ActionFailed for a global service (it has no replica count)."""
    new = copy.deepcopy(dict(spec))
    mode = new.get("Mode") or {"Replicated": {}}
    if "Replicated" not in mode:
        raise ActionFailed(f"{spec.get('Name', 'the service')} is not a replicated service "
                           f"(mode {', '.join(mode) or 'none'}): ecoscale moves and scales "
                           "replicated services only")
    template = new.setdefault("TaskTemplate", {})
    placement = dict(template.get("Placement") or {})
    pattern = _constraint_pattern(label)
    constraints = [c for c in placement.get("Constraints") or [] if not pattern.match(c)]
    constraints.append(f"node.labels.{label}=={placed.generation}")
    placement["Constraints"] = constraints
    template["Placement"] = placement
    replicated = dict(mode["Replicated"] or {})
    replicated["Replicas"] = int(placed.replicas)
    new["Mode"] = {**mode, "Replicated": replicated}
    if not host_mode_ports(spec):   # else its own order (``host_mode_ports``)
        update = dict(new.get("UpdateConfig") or SWARM_UPDATE_DEFAULTS)
        update["Order"] = START_FIRST
        new["UpdateConfig"] = update
    if replica_cpus is not None:
        with_replica_cpus(new, replica_cpus)
    return new


def released_spec(spec: Mapping[str, Any], replicas: int,
                  label: str = GENERATION_LABEL) -> dict[str, Any]:
    """The service spec without its generation constraint (an empty constraint list and
    then an empty placement left out, as a spec that never had them) and with ``replicas``;
    everything else unchanged."""
    new = updated_spec(spec, ServicePlacement("-", replicas), label)
    placement = new["TaskTemplate"]["Placement"]
    pattern = _constraint_pattern(label)
    placement["Constraints"] = [c for c in placement["Constraints"] if not pattern.match(c)]
    if not placement["Constraints"]:
        del placement["Constraints"]
    if not placement:
        del new["TaskTemplate"]["Placement"]
    return new


def with_update_config(spec: Mapping[str, Any], update_config: Mapping[str, Any] | None
                       ) -> dict[str, Any]:
    """The spec with ``update_config`` as its ``UpdateConfig`` (None: none, as a spec that
    never had one), everything else unchanged: a service given back its own update order."""
    new = copy.deepcopy(dict(spec))
    if update_config is None:
        new.pop("UpdateConfig", None)
    else:
        new["UpdateConfig"] = copy.deepcopy(dict(update_config))
    return new


ROLLING = ("updating", "rollback_started")
"""``UpdateStatus.State`` of a service whose rolling update is still replacing tasks."""
GIVE_BACK_WAIT_S = 120.0
"""How long ``give_back_update_order`` waits for the service's rolling update to end (s)."""


def forced_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The same spec with ``ForceUpdate`` incremented (``docker service update --force``):
    the tasks are replaced even though nothing else changed, which also starts a paused
    rolling update again."""
    new = copy.deepcopy(dict(spec))
    template = new.setdefault("TaskTemplate", {})
    template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
    return new


def _is_api_error(exc: BaseException) -> bool:
    """An answer from the engine (docker.errors.APIError; a RequestException too)."""
    import docker.errors

    return isinstance(exc, docker.errors.APIError)


def call_api(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the Docker API; connectivity problems become SourceUnavailable, API errors (an
    answer from the engine) pass."""
    import requests

    try:
        return fn(*args, **kwargs)
    except (requests.RequestException, ConnectionError, OSError) as exc:
        if _is_api_error(exc):
            raise
        raise SourceUnavailable(f"docker API ({what}): {exc}") from None


def read_api(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A read: an API error is SourceUnavailable too (nothing can be read now)."""
    try:
        return call_api(what, fn, *args, **kwargs)
    except Exception as exc:
        if _is_api_error(exc):
            raise SourceUnavailable(f"docker API ({what}): {exc}") from None
        raise


SpecCheck = Callable[[Mapping[str, Any]], str]
"""A service spec just read -> '' when it may be updated, else why not (one line)."""


def update_arguments(spec: Mapping[str, Any]) -> dict[str, Any]:
    """docker-py ``APIClient.update_service`` keyword arguments that write ``spec`` as it is:
    each part passed, absent parts as None (docker-py then sends them absent), and
    ``fetch_current_spec=False`` (with True it would fill them from a read with the
    engine's defaults inserted). A spec's deprecated top-level ``Networks`` is passed as
    ``networks`` (docker-py moves it into the task template, as the engine does)."""
    template = spec.get("TaskTemplate")
    old_networks = spec.get("Networks") if not (template or {}).get("Networks") else None
    return dict(task_template=template, name=spec.get("Name"), labels=spec.get("Labels"),
                mode=spec.get("Mode"), update_config=spec.get("UpdateConfig"),
                rollback_config=spec.get("RollbackConfig"), networks=old_networks,
                endpoint_spec=spec.get("EndpointSpec"), fetch_current_spec=False)


def versioned_update(read: Callable[[], Mapping[str, Any]],
                     write: Callable[[Mapping[str, Any]], None],
                     describe: Callable[[Mapping[str, Any]], str], *,
                     attempts: int = MAX_ATTEMPTS,
                     sleep: Callable[[float], None] = time.sleep) -> None:
    """``write(read())`` of a Swarm object (a service, a node) at the version read, retried
    on a fresh read when the answer is "update out of sequence" (someone else updated in
    between), up to ``attempts`` times. Raises SourceUnavailable (the engine does not
    answer) or ActionFailed (it refused; the message opens with ``describe(object read)``)."""
    for attempt in range(1, attempts + 1):
        current = read()
        try:
            call_api("update", write, current)
            return
        except Exception as exc:
            if not _is_api_error(exc):
                raise
            if OUT_OF_SEQUENCE in str(exc) and attempt < attempts:
                sleep(RETRY_PAUSE_S * attempt)
                continue
            raise ActionFailed(f"{describe(current)}: {exc}") from None


def update_service(api: Any, service: str, change: SpecChange, *,
                   check: SpecCheck | None = None, attempts: int = MAX_ATTEMPTS,
                   sleep: Callable[[float], None] = time.sleep) -> None:
    """Re-read ``service`` (id or name) through docker-py's low-level ``api``, write back
    ``change(spec)`` in whole, and retry "update out of sequence" (``versioned_update``).

    With ``check``, a service whose fresh spec it refuses (no longer the service ecoscale
    mapped) is not touched. Raises SourceUnavailable (the engine does not answer) or
    ActionFailed (it refused)."""
    def read() -> Mapping[str, Any]:
        current = read_api("inspect", api.inspect_service, service)
        refusal = check(current["Spec"]) if check is not None else ""
        if refusal:
            raise ActionFailed(f"{refusal}; not touching it")
        return current

    def write(current: Mapping[str, Any]) -> None:
        api.update_service(current["ID"], version=current["Version"]["Index"],
                           **update_arguments(change(current["Spec"])))

    versioned_update(read, write, lambda current: current["Spec"].get("Name", service),
                     attempts=attempts, sleep=sleep)


def availability_spec(spec: Mapping[str, Any], availability: str,
                      label: str = LabelConfig().emptied) -> dict[str, Any]:
    """A node spec with ``availability`` and, when it is not active, ecoscale's ``label``
    (``true``: ecoscale emptied this node) set, the label removed when active; nothing else
    changes."""
    new = copy.deepcopy(dict(spec))
    new["Availability"] = availability
    labels = dict(new.get("Labels") or {})
    if availability == ACTIVE:
        labels.pop(label, None)
    else:
        labels[label] = "true"
    new["Labels"] = labels
    return new


def update_node(api: Any, node_id: str, availability: str, label: str = LabelConfig().emptied,
                *, attempts: int = MAX_ATTEMPTS,
                sleep: Callable[[float], None] = time.sleep) -> None:
    """Re-read node ``node_id`` and write its spec with ``availability`` (``availability_spec``),
    retrying "update out of sequence"; SourceUnavailable or ActionFailed."""
    def write(current: Mapping[str, Any]) -> None:
        api.update_node(current["ID"], current["Version"]["Index"],
                        availability_spec(current["Spec"], availability, label))

    def describe(current: Mapping[str, Any]) -> str:
        return f"node {(current.get('Description') or {}).get('Hostname') or node_id}"

    versioned_update(lambda: read_api("inspect node", api.inspect_node, node_id), write,
                     describe, attempts=attempts, sleep=sleep)


def topology_name(spec: Mapping[str, Any], labels: LabelConfig,
                  target: TargetConfig | None = None) -> str | None:
    """The topology service a Swarm service spec stands for, None when it is not managed:
    the target's explicit ``services`` map, else a service labelled ``<managed>=true`` by its
    ``<service>`` label, else the ``stack`` rule (``STACK_x`` is ``x``), else (labelled
    managed) its own name."""
    target = target or TargetConfig()
    name = str(spec.get("Name", ""))
    service_labels = spec.get("Labels") or {}
    mapped = target.service_name(name)
    if mapped is not None and name in target.services.values():
        return mapped
    if str(service_labels.get(labels.managed, "")).lower() == "true":
        return str(service_labels.get(labels.service) or mapped or name)
    return mapped


def managed_service(service: Mapping[str, Any], tasks: list[Mapping[str, Any]],
                    node_generation: Mapping[str, str], labels: LabelConfig,
                    name: str | None = None) -> ManagedService:
    """A ManagedService from an inspect reply and the service's tasks; ``name``: the
    topology name it maps to (default: its ``<service>`` label, else its Swarm name)."""
    spec = service["Spec"]
    service_labels = spec.get("Labels") or {}
    generation = generation_of(spec, labels.generation)
    source = "constraint" if generation is not None else ""
    replicas = replicas_of(spec)
    running: dict[str, int] = {}
    for task in tasks:
        if (task.get("Status") or {}).get("State") != "running":
            continue
        gen = node_generation.get(task.get("NodeID", ""), "unlabelled")
        running[gen] = running.get(gen, 0) + 1
    if generation is None and running:
        generation = max(running, key=running.get)   # where most tasks run
        source = "tasks"
    placed = (ServicePlacement(generation, replicas)
              if generation is not None and replicas is not None else None)
    reservation, limit = cpu_budget(spec)
    return ManagedService(
        name=name or service_labels.get(labels.service) or spec["Name"],
        target_id=service["ID"],
        target_name=spec["Name"],
        placement=placed,
        running=running,
        paused=str(service_labels.get(labels.paused, "")).lower() in ("true", "1", "yes"),
        update_paused=paused_update_message(service),
        update_order=move_order(spec),
        replicas=replicas,
        placement_source=source,
        cpu_reservation=reservation,
        cpu_limit=limit,
        updating=(service.get("UpdateStatus") or {}).get("State") in UPDATING,
    )


UPDATING = ("updating", "rollback_started")
"""``UpdateStatus.State`` of a service whose tasks are being replaced now."""
TERMINAL_STATES = frozenset({"complete", "shutdown", "failed", "rejected", "orphaned",
                             "remove"})
"""Task states of a task that no longer runs (its desired state may still say running)."""


def node_states(nodes: list[Mapping[str, Any]], tasks: list[Mapping[str, Any]],
                services: list[Mapping[str, Any]], managed: Mapping[str, str],
                labels: LabelConfig) -> tuple[NodeState, ...]:
    """Each node with its availability and the tasks on it: per managed service (``managed``:
    Swarm service id -> topology name) and, by Swarm name, the replicated services ecoscale
    does not manage (a global service runs on every node and is left out)."""
    kinds = {str(s["ID"]): s["Spec"] for s in services}
    on_node: dict[str, dict[str, int]] = {}
    others: dict[str, set[str]] = {}
    for task in tasks:
        node = task.get("NodeID")
        if not node or (task.get("Status") or {}).get("State") in TERMINAL_STATES:
            continue
        service_id = str(task.get("ServiceID", ""))
        if service_id in managed:
            counts = on_node.setdefault(node, {})
            counts[managed[service_id]] = counts.get(managed[service_id], 0) + 1
        elif service_id in kinds and replicas_of(kinds[service_id]) is not None:
            others.setdefault(node, set()).add(str(kinds[service_id].get("Name", service_id)))
    out = []
    for node in nodes:
        spec = node.get("Spec") or {}
        node_labels = spec.get("Labels") or {}
        out.append(NodeState(
            node_id=str(node["ID"]),
            name=str((node.get("Description") or {}).get("Hostname") or node["ID"]),
            generation=str(node_labels.get(labels.generation) or ""),
            ready=(node.get("Status") or {}).get("State") == "ready",
            availability=str(spec.get("Availability") or ACTIVE),
            emptied=str(node_labels.get(labels.emptied, "")).lower() == "true",
            tasks=dict(sorted(on_node.get(str(node["ID"]), {}).items())),
            other_tasks=tuple(sorted(others.get(str(node["ID"]), ())))))
    return tuple(sorted(out, key=lambda n: (n.generation, n.name)))


def paused_update_message(service: Mapping[str, Any]) -> str:
    """Swarm's message when it paused the service's rolling update, else ''."""
    status = service.get("UpdateStatus") or {}
    if status.get("State") not in ("paused", "rollback_paused"):
        return ""
    return f"{status['State']}: {status.get('Message') or 'no message'}"


class DockerSwarm:
    """Orchestrator over the Docker API of a Swarm manager."""

    def __init__(self, docker_host: str = "", labels: LabelConfig | None = None,
                 timeout_s: float = 30.0, client: Any = None,
                 sleep: Callable[[float], None] = time.sleep,
                 target: TargetConfig | None = None):
        """``docker_host``: the manager's Docker API (empty: DOCKER_HOST or the local
        socket); ``timeout_s``: per API call (s); ``client``: a docker-py client to use
        instead (tests); ``sleep``: the pause before retrying a conflicting update;
        ``target``: the name mapping (``stack``, ``services``; default: labels only)."""
        import docker

        self.labels = labels or LabelConfig()
        self.target = target or TargetConfig(docker_host=docker_host)
        self._docker = docker
        self.docker_host = docker_host
        self.timeout_s = timeout_s
        self._client = client
        self._sleep = sleep
        self._update_configs: dict[str, Mapping[str, Any] | None] = {}
        """Service id -> its ``UpdateConfig`` (None: none) before this adapter first
        changed it (``give_back_update_order``)."""

    @property
    def client(self) -> Any:
        """The Docker client, connected on first use (an engine that is down now may be up
        at the next loop)."""
        if self._client is None:
            try:
                if self.docker_host:
                    self._client = self._docker.DockerClient(base_url=self.docker_host,
                                                             timeout=self.timeout_s)
                else:
                    self._client = self._docker.from_env(timeout=self.timeout_s)
            except self._docker.errors.DockerException as exc:
                raise SourceUnavailable(f"docker API at {self.docker_host or 'DOCKER_HOST'}: "
                                        f"{exc}") from None
        return self._client

    def name_of(self, spec: Mapping[str, Any]) -> str | None:
        """The topology name of a Swarm service spec; None when ecoscale does not manage it."""
        return topology_name(spec, self.labels, self.target)

    def read(self) -> ClusterState:
        """The managed services: with a mapping (``target.stack``/``services``) every Swarm
        service it maps, beside those labelled managed; without one, the labelled ones."""
        api = self.client.api
        info = read_api("info", api.info)
        swarm = info.get("Swarm") or {}
        is_controller = bool(swarm.get("ControlAvailable"))
        if not is_controller:
            return ClusterState(False, {}, ())
        nodes = read_api("nodes", api.nodes)
        node_generation = {}
        generations = set()
        for node in nodes:
            spec = node.get("Spec") or {}
            gen = (spec.get("Labels") or {}).get(self.labels.generation)
            if gen:
                node_generation[node["ID"]] = gen
                # a node an operator drained runs nothing: no capacity (one ecoscale
                # emptied is still capacity, made active before a move needs it)
                drained = spec.get("Availability") == "drain" and str(
                    (spec.get("Labels") or {}).get(self.labels.emptied, "")).lower() != "true"
                if (node.get("Status") or {}).get("State") == "ready" and not drained:
                    generations.add(gen)
        # every service: the managed ones, and the others whose tasks keep a node busy
        services = read_api("services", api.services)
        tasks = read_api("tasks", api.tasks, filters={"desired-state": "running"})
        by_service: dict[str, list[Mapping[str, Any]]] = {}
        for task in tasks:
            by_service.setdefault(task.get("ServiceID", ""), []).append(task)
        managed = {}
        ambiguous: dict[str, list[str]] = {}
        for service in sorted(services, key=lambda s: str(s["Spec"].get("Name", ""))):
            name = self.name_of(service["Spec"])
            if name is None:
                continue
            if name in managed:   # two for one name: the first by Swarm name, and reported
                ambiguous.setdefault(name, [managed[name].target_name]).append(
                    str(service["Spec"].get("Name", "")))
                continue
            managed[name] = managed_service(service, by_service.get(service["ID"], []),
                                            node_generation, self.labels, name)
        ids = {s.target_id: name for name, s in managed.items()}
        return ClusterState(True, managed, tuple(sorted(generations)),
                            {name: tuple(names) for name, names in ambiguous.items()},
                            node_states(nodes, tasks, services, ids, self.labels))

    def apply(self, service: ManagedService, placed: ServicePlacement, *,
              replica_cpus: float | None = None, restart: bool = False) -> None:
        """``ports.Orchestrator.apply``: ``updated_spec``, and ``forced_spec`` on top of it
        with ``restart``."""
        def change(spec: Mapping[str, Any]) -> dict[str, Any]:
            new = updated_spec(spec, placed, self.labels.generation, replica_cpus)
            return forced_spec(new) if restart else new

        self._update(service, change)

    def set_availability(self, node: NodeState, availability: str) -> None:
        """``ports.NodeAvailability``: the node's ``Availability``, and the ``emptied`` label
        set while it is not active (``availability_spec``)."""
        update_node(self.client.api, node.node_id, availability, self.labels.emptied,
                    sleep=self._sleep)

    def release(self, service: ManagedService, replicas: int) -> None:
        """Remove the generation constraint (``ports.Releasing``): the profiler gives back a
        service that had none."""
        self._update(service, lambda spec: released_spec(spec, replicas,
                                                         self.labels.generation))

    def give_back_update_order(self, service: ManagedService,
                               wait_s: float = GIVE_BACK_WAIT_S) -> None:
        """The service's own ``UpdateConfig`` again, as before this adapter first changed it
        (``ports.Releasing``), written once its rolling update is no longer replacing tasks
        (at most ``wait_s`` s): written while tasks are still being replaced, the rest of
        them would be replaced in the user's order (stop-first drops capacity). Only
        ``UpdateConfig`` changes, so no task is replaced for it."""
        if service.target_id not in self._update_configs:
            return
        deadline = time.monotonic() + wait_s
        while True:
            current = read_api("inspect", self.client.api.inspect_service, service.target_id)
            if ((current.get("UpdateStatus") or {}).get("State") not in ROLLING
                    or time.monotonic() >= deadline):
                break
            self._sleep(1.0)
        before = self._update_configs[service.target_id]
        if (current.get("Spec") or {}).get("UpdateConfig") != before:   # else: nothing to do
            self._update(service, lambda spec: with_update_config(spec, before))
        del self._update_configs[service.target_id]   # after: ``_update`` keeps what it saw

    def resume(self, service: ManagedService) -> None:
        """Start the service's paused rolling update again: the same spec with
        ``ForceUpdate`` incremented (as `docker service update --force`)."""
        self._update(service, forced_spec)

    def still_mapped(self, service: ManagedService, spec: Mapping[str, Any]) -> str:
        """'' when the fresh ``spec`` is still the Swarm service of ``service.name``, else
        why not (its managed label removed, the mapping changed)."""
        name = self.name_of(spec)
        if name == service.name:
            return ""
        swarm_name = spec.get("Name", service.target_name)
        if name is None and not self.target.adopts:
            return f"{swarm_name} is no longer labelled {self.labels.managed}=true"
        now = f"maps to '{name}'" if name else "maps to no topology service"
        return (f"{swarm_name} no longer stands for topology service '{service.name}' (it "
                f"{now}; check target.stack, target.services and its labels)")

    def _update(self, service: ManagedService, change: SpecChange) -> None:
        """Re-read the service, update it with ``change(spec)``; retry out of sequence. The
        service's ``UpdateConfig`` before its first update here is kept
        (``give_back_update_order``)."""
        def remembering(spec: Mapping[str, Any]) -> dict[str, Any]:
            if service.target_id not in self._update_configs:
                config = spec.get("UpdateConfig")
                self._update_configs[service.target_id] = (
                    None if config is None else copy.deepcopy(dict(config)))
            return change(spec)

        update_service(self.client.api, service.target_id, remembering,
                       check=lambda spec: self.still_mapped(service, spec), sleep=self._sleep)
