"""Docker Swarm through docker-py: read the managed services, move and scale them.

A move rewrites only the generation constraint (``node.labels.<generation label>==<gen>``)
and the replica count; every other part of the service spec is kept as it is (docker-py
replaces the whole Placement when constraints are passed, so the other constraints,
preferences and platforms are carried over explicitly). Updates are start-first, so a new
task runs before an old one stops, and each update re-reads the service first and retries
on "update out of sequence".

The spec transformations are pure functions, tested against recorded API replies.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from ecoscale.config import LabelConfig
from ecoscale.model.placement import ServicePlacement
from ecoscale.ports import ActionFailed, ClusterState, ManagedService, SourceUnavailable

OUT_OF_SEQUENCE = "update out of sequence"
MAX_ATTEMPTS = 5


def _constraint_pattern(label: str) -> re.Pattern[str]:
    return re.compile(rf"^\s*node\.labels\.{re.escape(label)}\s*==\s*(\S+)\s*$")


def generation_of(spec: Mapping[str, Any], label: str) -> str | None:
    """The generation a service is constrained to, from its spec; None if unconstrained."""
    pattern = _constraint_pattern(label)
    placement = (spec.get("TaskTemplate") or {}).get("Placement") or {}
    for constraint in placement.get("Constraints") or []:
        match = pattern.match(constraint)
        if match:
            return match.group(1)
    return None


def replicas_of(spec: Mapping[str, Any]) -> int | None:
    replicated = (spec.get("Mode") or {}).get("Replicated")
    return int(replicated.get("Replicas", 1)) if replicated is not None else None


def updated_spec(spec: Mapping[str, Any], placed: ServicePlacement,
                 label: str) -> dict[str, Any]:
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
                 timeout_s: float = 30.0, client: Any = None):
        import docker

        self.labels = labels or LabelConfig()
        self._docker = docker
        self.docker_host = docker_host
        self.timeout_s = timeout_s
        self._client = client

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

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call the API; connectivity problems become SourceUnavailable, API errors pass."""
        import requests

        try:
            return fn(*args, **kwargs)
        except self._docker.errors.APIError:
            raise   # an answer from the engine (APIError is a RequestException too)
        except (requests.RequestException, ConnectionError, OSError) as exc:
            raise SourceUnavailable(f"docker API ({what}): {exc}") from None

    def _read_call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._call(what, fn, *args, **kwargs)
        except self._docker.errors.APIError as exc:
            raise SourceUnavailable(f"docker API ({what}): {exc}") from None

    def read(self) -> ClusterState:
        api = self.client.api
        info = self._read_call("info", api.info)
        swarm = info.get("Swarm") or {}
        is_controller = bool(swarm.get("ControlAvailable"))
        if not is_controller:
            return ClusterState(False, {}, ())
        nodes = self._read_call("nodes", api.nodes)
        node_generation = {}
        generations = set()
        for node in nodes:
            gen = ((node.get("Spec") or {}).get("Labels") or {}).get(self.labels.generation)
            if gen:
                node_generation[node["ID"]] = gen
                if (node.get("Status") or {}).get("State") == "ready":
                    generations.add(gen)
        services = self._read_call("services", api.services,
                              filters={"label": f"{self.labels.managed}=true"})
        tasks = self._read_call("tasks", api.tasks, filters={"desired-state": "running"})
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
        def forced(spec: Mapping[str, Any]) -> dict[str, Any]:
            new = copy.deepcopy(dict(spec))
            template = new.setdefault("TaskTemplate", {})
            template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
            return new

        self._update(service, forced)

    def _update(self, service: ManagedService, change: Any) -> None:
        """Re-read the service, update it with ``change(spec)``; retry out of sequence."""
        api = self.client.api
        for attempt in range(1, MAX_ATTEMPTS + 1):
            current = self._read_call("inspect", api.inspect_service, service.target_id)
            labels = (current["Spec"].get("Labels") or {})
            if str(labels.get(self.labels.managed, "")).lower() != "true":
                raise ActionFailed(f"{service.target_name} is no longer labelled "
                                   f"{self.labels.managed}=true; not touching it")
            spec = change(current["Spec"])
            try:
                self._call(
                    "update", api.update_service, service.target_id,
                    version=current["Version"]["Index"],
                    task_template=spec["TaskTemplate"], name=spec["Name"],
                    labels=spec.get("Labels"), mode=spec["Mode"],
                    update_config=spec.get("UpdateConfig"),
                    rollback_config=spec.get("RollbackConfig"),
                    networks=spec.get("TaskTemplate", {}).get("Networks"),
                    endpoint_spec=spec.get("EndpointSpec"),
                    fetch_current_spec=True,
                )
                return
            except self._docker.errors.APIError as exc:
                if OUT_OF_SEQUENCE in str(exc) and attempt < MAX_ATTEMPTS:
                    continue
                raise ActionFailed(f"{service.target_name}: {exc}") from None
