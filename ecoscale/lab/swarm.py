"""The lab's Swarm: forming it, labelling its nodes, and reading where its tasks run.

Service specs are read and edited by ecoscale.adapters.swarm alone (constraint parsing, the
spec editor, the retrying update); this module only forms the lab's Swarm and looks at its
nodes and tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import docker

from ecoscale.adapters.swarm import (
    GENERATION_LABEL,
    TERMINAL_STATES,
    generation_of,
    paused_update_message,
    replicas_of,
)
from ecoscale.config import LabelConfig
from ecoscale.lab.config import LabConfig, NodeSpec
from ecoscale.lab.system import NotYet

NODE_LABEL = "ecoscale.node"
GENERATION_CONSTRAINT = f"node.labels.{GENERATION_LABEL}"
EMPTIED_LABEL = LabelConfig().emptied


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
    """Swarm node id -> {name, generation, state, availability} from the node labels the
    lab set (availability: active, pause or drain, and whether ecoscale's daemon emptied
    it: the packing of a right-sized table)."""
    found = {}
    for node in mgr.nodes.list():
        labels = node.attrs.get("Spec", {}).get("Labels", {})
        availability = node.attrs.get("Spec", {}).get("Availability", "active")
        if labels.get(EMPTIED_LABEL) == "true":
            availability += " (emptied by ecoscale)"
        found[node.id] = {"name": labels.get(NODE_LABEL, node.attrs["Description"]["Hostname"]),
                          "generation": labels.get(GENERATION_LABEL, ""),
                          "state": node.attrs["Status"]["State"],
                          "availability": availability}
    return found


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


def convergence_problem(service: Any, nodes: Mapping[str, Mapping[str, str]]) -> str:
    """'' when the service runs exactly its replicas where its constraint says and no old
    task is still stopping, else why not (a paused update included: the lab's services
    that the orchestrator does not manage, e.g. the gateway, are not resumed)."""
    spec = service.attrs["Spec"]
    name = spec["Name"]
    paused = paused_update_message(service.attrs)
    if paused:
        return f"{name}: update {paused}"
    wanted = replicas_of(spec)
    generation = generation_of(spec)
    tasks = task_view(service, nodes)
    running = [t for t in tasks if t["desired"] == "running" and t["state"] == "running"]
    stopping = [t for t in tasks if t["desired"] != "running"]
    if wanted is not None and len(running) != wanted:
        errors = "; ".join(sorted({t["error"] for t in tasks if t["error"]}))
        return (f"{name}: {len(running)}/{wanted} tasks running"
                + (f" ({errors})" if errors else ""))
    misplaced = [t["node"] for t in running if generation and t["generation"] != generation]
    if misplaced:
        return f"{name}: tasks on {', '.join(misplaced)}, not on '{generation}' nodes"
    if stopping:
        return f"{name}: {len(stopping)} old task(s) still stopping"
    return ""
