"""Forming the lab's Swarm, labelling its nodes, and reading and updating its services."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import docker
import docker.errors

from ecoscale.adapters.swarm import paused_update_message
from ecoscale.lab.config import LabConfig, NodeSpec
from ecoscale.lab.system import LabError, NotYet

GENERATION_LABEL = "ecoscale.generation"
NODE_LABEL = "ecoscale.node"
GENERATION_CONSTRAINT = f"node.labels.{GENERATION_LABEL}"
TERMINAL_STATES = {"complete", "shutdown", "failed", "rejected", "orphaned", "remove"}


def form(config: LabConfig, nodes: tuple[NodeSpec, ...],
         clients: Mapping[str, docker.DockerClient]) -> dict[str, str]:
    """Init the Swarm on the manager, join every other engine; returns node name -> node id."""
    manager = nodes[0]
    mgr = clients[manager.name]
    mgr.swarm.init(advertise_addr=manager.address, listen_addr=f"{manager.address}:2377",
                   default_addr_pool=[config.overlay_pool], subnet_size=24)
    mgr.swarm.reload()
    token = mgr.swarm.attrs["JoinTokens"]["Worker"]
    for node in nodes[1:]:
        clients[node.name].swarm.join(remote_addrs=[f"{manager.address}:2377"],
                                      join_token=token, listen_addr=f"{node.address}:2377",
                                      advertise_addr=node.address)
    return {node.name: clients[node.name].info()["Swarm"]["NodeID"] for node in nodes}


def check_nodes_ready(mgr: docker.DockerClient, node_ids: Mapping[str, str]) -> bool:
    """True when every node is ready and active; NotYet says which is not."""
    states = {n.id: n.attrs["Status"]["State"] for n in mgr.nodes.list()}
    waiting = [name for name, node_id in node_ids.items() if states.get(node_id) != "ready"]
    if waiting:
        raise NotYet(f"nodes not ready: {', '.join(waiting)} "
                     f"({', '.join(states.get(node_ids[w], 'absent') for w in waiting)})")
    return True


def label_nodes(mgr: docker.DockerClient, nodes: tuple[NodeSpec, ...],
                node_ids: Mapping[str, str]) -> None:
    for node in nodes:
        swarm_node = mgr.nodes.get(node_ids[node.name])
        spec = dict(swarm_node.attrs["Spec"])
        spec["Labels"] = {**spec.get("Labels", {}), GENERATION_LABEL: node.generation,
                          NODE_LABEL: node.name}
        swarm_node.update(spec)


def node_names(mgr: docker.DockerClient) -> dict[str, dict[str, str]]:
    """Swarm node id -> {name, generation, state} from the node labels the lab set."""
    found = {}
    for node in mgr.nodes.list():
        labels = node.attrs.get("Spec", {}).get("Labels", {})
        found[node.id] = {"name": labels.get(NODE_LABEL, node.attrs["Description"]["Hostname"]),
                          "generation": labels.get(GENERATION_LABEL, ""),
                          "state": node.attrs["Status"]["State"]}
    return found


def update_service(mgr: docker.DockerClient, name: str,
                   mutate: Callable[[dict[str, Any]], None], attempts: int = 5) -> None:
    """Re-read the service, let ``mutate`` change its spec in place, write it back.

    The whole spec is sent back, so nothing the mutation does not touch is lost; "update out
    of sequence" (someone else updated in between) is retried on a fresh read.
    """
    for attempt in range(attempts):
        service = mgr.services.get(name)
        spec = service.attrs["Spec"]
        mutate(spec)
        try:
            mgr.api.update_service(
                service.id, service.version, task_template=spec["TaskTemplate"],
                name=spec["Name"], labels=spec.get("Labels"), mode=spec.get("Mode"),
                update_config=spec.get("UpdateConfig"),
                rollback_config=spec.get("RollbackConfig"),
                networks=spec.get("TaskTemplate", {}).get("Networks"),
                endpoint_spec=spec.get("EndpointSpec"), fetch_current_spec=False)
            return
        except docker.errors.APIError as exc:
            if "out of sequence" in str(exc) and attempt + 1 < attempts:
                time.sleep(0.2 * (attempt + 1))
                continue
            raise LabError(f"updating service {name} failed: {exc}") from exc


def set_generation(spec: dict[str, Any], generation: str) -> None:
    """Replace the generation constraint of a service spec, keeping every other one."""
    placement = spec.setdefault("TaskTemplate", {}).setdefault("Placement", {})
    kept = [c for c in placement.get("Constraints") or []
            if not c.replace(" ", "").startswith(GENERATION_CONSTRAINT)]
    placement["Constraints"] = [*kept, f"{GENERATION_CONSTRAINT}=={generation}"]


def set_replicas(spec: dict[str, Any], replicas: int) -> None:
    spec["Mode"] = {"Replicated": {"Replicas": int(replicas)}}


def constraint_generation(spec: Mapping[str, Any]) -> str | None:
    """The generation a service is pinned to by its constraint, if any."""
    for constraint in spec.get("TaskTemplate", {}).get("Placement", {}).get("Constraints") or []:
        compact = constraint.replace(" ", "")
        if compact.startswith(GENERATION_CONSTRAINT + "=="):
            return compact.split("==", 1)[1]
    return None


def replicas_of(spec: Mapping[str, Any]) -> int:
    return int(spec.get("Mode", {}).get("Replicated", {}).get("Replicas", 1))


def task_view(service: Any, nodes: Mapping[str, Mapping[str, str]]) -> list[dict[str, str]]:
    """Live tasks of a service: node, generation, state, desired state, address."""
    view = []
    for task in service.tasks():
        state = task["Status"]["State"]
        desired = task.get("DesiredState", "")
        if desired != "running" and state in TERMINAL_STATES:
            continue
        node = nodes.get(task.get("NodeID", ""), {})
        addresses = [a.split("/")[0] for att in task.get("NetworksAttachments") or []
                     for a in att.get("Addresses") or []]
        view.append({"node": node.get("name", ""), "generation": node.get("generation", ""),
                     "state": state, "desired": desired,
                     "address": addresses[0] if addresses else "",
                     "error": task["Status"].get("Err", "")})
    return sorted(view, key=lambda t: (t["desired"] != "running", t["node"]))


class UpdatePaused(LabError):
    """Swarm paused a service's rolling update (a new task failed or ended early)."""

    def __init__(self, service: str, message: str):
        super().__init__(f"service {service}: update {message}")
        self.service = service


def paused_update(service: Any) -> str:
    """Swarm's "state: message" when it paused the service's update, else ''."""
    return paused_update_message(service.attrs)


def force_update(spec: dict[str, Any]) -> None:
    """Make the next update replace the tasks even if nothing else changed, which also
    resumes a paused update (``docker service update --force``)."""
    template = spec.setdefault("TaskTemplate", {})
    template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1


def convergence_problem(service: Any, nodes: Mapping[str, Mapping[str, str]]) -> str:
    """'' when the service runs exactly its replicas where its constraint says, else why
    not; UpdatePaused when Swarm paused its update."""
    spec = service.attrs["Spec"]
    name = spec["Name"]
    paused = paused_update(service)
    if paused:
        raise UpdatePaused(name, paused)
    wanted = replicas_of(spec)
    generation = constraint_generation(spec)
    tasks = task_view(service, nodes)
    running = [t for t in tasks if t["desired"] == "running" and t["state"] == "running"]
    stopping = [t for t in tasks if t["desired"] != "running"]
    if len(running) != wanted:
        errors = "; ".join(sorted({t["error"] for t in tasks if t["error"]}))
        return (f"{name}: {len(running)}/{wanted} tasks running"
                + (f" ({errors})" if errors else ""))
    misplaced = [t["node"] for t in running if generation and t["generation"] != generation]
    if misplaced:
        return f"{name}: tasks on {', '.join(misplaced)}, not on '{generation}' nodes"
    if stopping:
        return f"{name}: {len(stopping)} old task(s) still stopping"
    return ""
