"""Docker Swarm through docker-py: the one module that reads and edits Swarm service specs.

The daemon, the profiler, the lab and the live evaluation all go through it: constraint
parsing (``generation_of``: spaces around ``==`` allowed), spec editing (``updated_spec``,
``forced_spec``: copies that change only the generation constraint and the replica count,
or only ``ForceUpdate``) and the retrying update (``update_service``).

A move rewrites only the generation constraint (``node.labels.<generation label>==<gen>``)
and the replica count; every other part of the service spec is kept as it is (docker-py
replaces the whole Placement when constraints are passed, so the other constraints,
preferences and platforms are carried over explicitly). Updates are start-first, so a new
task runs before an old one stops, and each update re-reads the service first and retries
on "update out of sequence". A rolling update that Swarm paused is started again by
``DockerSwarm.resume`` (a forced update of the same spec).

The spec transformations are pure functions, tested against recorded API replies.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from ecoscale.config import LabelConfig
from ecoscale.model.placement import ServicePlacement
from ecoscale.ports import ActionFailed, ClusterState, ManagedService, SourceUnavailable

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


def updated_spec(spec: Mapping[str, Any], placed: ServicePlacement,
                 label: str = GENERATION_LABEL) -> dict[str, Any]:
    """The service spec with the generation constraint and replicas of ``placed``, a
    start-first update order, and everything else unchanged."""
    new = copy.deepcopy(dict(spec))
    template = new.setdefault("TaskTemplate", {})
    placement = dict(template.get("Placement") or {})
    pattern = _constraint_pattern(label)
    constraints = [c for c in placement.get("Constraints") or [] if not pattern.match(c)]
    constraints.append(f"node.labels.{label}=={placed.generation}")
    placement["Constraints"] = constraints
    template["Placement"] = placement
    new["Mode"] = {"Replicated": {"Replicas": int(placed.replicas)}}
    update = dict(new.get("UpdateConfig") or {})
    update["Order"] = "start-first"
    update.setdefault("Parallelism", 1)
    new["UpdateConfig"] = update
    return new


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


def update_service(api: Any, service: str, change: SpecChange, *,
                   managed_label: str | None = None, attempts: int = MAX_ATTEMPTS,
                   sleep: Callable[[float], None] = time.sleep) -> None:
    """Re-read ``service`` (id or name) through docker-py's low-level ``api``, write back
    ``change(spec)`` in whole, and retry "update out of sequence" (someone else updated in
    between) on a fresh read, up to ``attempts`` times.

    With ``managed_label``, a service no longer labelled ``<managed_label>=true`` is not
    touched. Raises SourceUnavailable (the engine does not answer) or ActionFailed (it
    refused)."""
    for attempt in range(1, attempts + 1):
        current = read_api("inspect", api.inspect_service, service)
        spec = current["Spec"]
        name = spec.get("Name", service)
        if managed_label is not None:
            labels = spec.get("Labels") or {}
            if str(labels.get(managed_label, "")).lower() != "true":
                raise ActionFailed(f"{name} is no longer labelled {managed_label}=true; "
                                   "not touching it")
        new = change(spec)
        try:
            call_api(
                "update", api.update_service, current["ID"],
                version=current["Version"]["Index"],
                task_template=new["TaskTemplate"], name=new["Name"],
                labels=new.get("Labels"), mode=new.get("Mode"),
                update_config=new.get("UpdateConfig"),
                rollback_config=new.get("RollbackConfig"),
                networks=new.get("TaskTemplate", {}).get("Networks"),
                endpoint_spec=new.get("EndpointSpec"),
                fetch_current_spec=True,
            )
            return
        except Exception as exc:
            if not _is_api_error(exc):
                raise
            if OUT_OF_SEQUENCE in str(exc) and attempt < attempts:
                sleep(RETRY_PAUSE_S * attempt)
                continue
            raise ActionFailed(f"{name}: {exc}") from None


def managed_service(service: Mapping[str, Any], tasks: list[Mapping[str, Any]],
                    node_generation: Mapping[str, str], labels: LabelConfig) -> ManagedService:
    """A ManagedService from an inspect reply and the service's tasks."""
    spec = service["Spec"]
    service_labels = spec.get("Labels") or {}
    generation = generation_of(spec, labels.generation)
    replicas = replicas_of(spec)
    running: dict[str, int] = {}
    for task in tasks:
        if (task.get("Status") or {}).get("State") != "running":
            continue
        gen = node_generation.get(task.get("NodeID", ""), "unlabelled")
        running[gen] = running.get(gen, 0) + 1
    if generation is None and running:
        generation = max(running, key=running.get)   # where most tasks run
    placed = (ServicePlacement(generation, replicas)
              if generation is not None and replicas is not None else None)
    return ManagedService(
        name=service_labels.get(labels.service) or spec["Name"],
        target_id=service["ID"],
        target_name=spec["Name"],
        placement=placed,
        running=running,
        paused=str(service_labels.get(labels.paused, "")).lower() in ("true", "1", "yes"),
        update_paused=paused_update_message(service),
    )


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
                 sleep: Callable[[float], None] = time.sleep):
        """``docker_host``: the manager's Docker API (empty: DOCKER_HOST or the local
        socket); ``timeout_s``: per API call (s); ``client``: a docker-py client to use
        instead (tests); ``sleep``: the pause before retrying a conflicting update."""
        import docker

        self.labels = labels or LabelConfig()
        self._docker = docker
        self.docker_host = docker_host
        self.timeout_s = timeout_s
        self._client = client
        self._sleep = sleep

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

    def read(self) -> ClusterState:
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
            gen = ((node.get("Spec") or {}).get("Labels") or {}).get(self.labels.generation)
            if gen:
                node_generation[node["ID"]] = gen
                if (node.get("Status") or {}).get("State") == "ready":
                    generations.add(gen)
        services = read_api("services", api.services,
                            filters={"label": f"{self.labels.managed}=true"})
        tasks = read_api("tasks", api.tasks, filters={"desired-state": "running"})
        by_service: dict[str, list[Mapping[str, Any]]] = {}
        for task in tasks:
            by_service.setdefault(task.get("ServiceID", ""), []).append(task)
        managed = {}
        for service in services:
            item = managed_service(service, by_service.get(service["ID"], []), node_generation,
                                   self.labels)
            managed[item.name] = item
        return ClusterState(True, managed, tuple(sorted(generations)))

    def apply(self, service: ManagedService, placed: ServicePlacement) -> None:
        self._update(service, lambda spec: updated_spec(spec, placed, self.labels.generation))

    def resume(self, service: ManagedService) -> None:
        """Start the service's paused rolling update again: the same spec with
        ``ForceUpdate`` incremented (as `docker service update --force`)."""
        self._update(service, forced_spec)

    def _update(self, service: ManagedService, change: SpecChange) -> None:
        """Re-read the service, update it with ``change(spec)``; retry out of sequence."""
        update_service(self.client.api, service.target_id, change,
                       managed_label=self.labels.managed, sleep=self._sleep)
