"""``Lab``: a real multi-node Docker Swarm on one machine, with emulated old and new nodes.

``up`` first clears whatever an earlier run left (engines by pidfile, namespaces, links,
cgroups, mounts, the state folder), installs missing Debian packages, starts one dockerd per
node, forms the Swarm, labels the nodes ``ecoscale.generation=<gen>``, builds and copies the
image, creates the overlay networks and starts Prometheus; on a lab that is already up it
removes the stacks it served for an earlier run (``serve_stack``). ``deploy`` runs an app as
one Swarm service per microservice; ``serve_stack`` prepares a stack that the operator
deploys with `docker stack deploy`. ``down`` leaves nothing behind, also after a crash.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from ecoscale.adapters.clock import SYSTEM_CLOCK
from ecoscale.adapters.prometheus import PrometheusClient
from ecoscale.adapters.swarm import generation_of, replicas_of
from ecoscale.adapters.targets import build_target
from ecoscale.config import TargetConfig
from ecoscale.lab import cgroups, deploy, engines, images, swarm
from ecoscale.lab.apps import LabApp
from ecoscale.lab.config import LabConfig, NodeSpec, default_state_dir
from ecoscale.lab.lab_apps import LabApps
from ecoscale.lab.prometheus import render_config, template_text
from ecoscale.lab.spanmetrics import RULES_FILE, stack_rules
from ecoscale.lab.stacks import LabStacks, ServedStack
from ecoscale.lab.system import (
    LabError,
    NotYet,
    delete_link,
    ensure_packages,
    host_cpus,
    link_exists,
    mounts_under,
    netns_list,
    pid_alive,
    poll,
    port_in_use,
    remove_tree,
    require_root,
    stale_sockets,
    stop_pids,
    unmount_all_under,
)
from ecoscale.ports import Clock, Orchestrator

STATE_FILE = "lab.json"
GWBRIDGE = "docker_gwbridge"
"""Bridge that the manager's engine creates in the host namespace for published ports."""
RUN_DOCKER = Path("/run/docker")
RUN_CONTAINERD = Path("/run/containerd")
"""Host folders that engines create whatever their own folders are (/run/docker/plugins;
containerd's shim sockets under /run/containerd/s) and `ip netns` creates (/run/netns).
Removed on down when the lab created them and no file is left in them."""
HOST_FOLDERS = {"run_docker": RUN_DOCKER, "run_containerd": RUN_CONTAINERD,
                "run_netns": Path("/run/netns")}
EMULATION_NOTE = ("old and new servers are EMULATED on one machine: every node is a Docker "
                  "engine on the same CPUs. An older generation is (1) a per-core speed "
                  "factor applied by the service emulator to its CPU work on that node's "
                  "tasks and (2) a CFS CPU quota on the cgroup holding that node's containers, "
                  "or, on a lab of slots, a CPU limit and reservation of one slot on each "
                  "task (see 'emulation'), not other hardware. There is no power measurement "
                  "(no RAPL).")


class Lab:
    """The lab described by a ``LabConfig``; every method acts on the real machine."""

    def __init__(self, config: LabConfig | None = None,
                 log: Callable[[str], None] | None = None, clock: Clock = SYSTEM_CLOCK):
        self.config = config or LabConfig()
        self.nodes: tuple[NodeSpec, ...] = self.config.nodes()
        self._log = log or (lambda _message: None)
        self.clock = clock
        """Every wait and timing of the lab (s); tests pass a FakeClock."""
        self._clients: dict[str, docker.DockerClient] = {}
        self.apps = LabApps(self)
        """What runs on the lab: deploy, place, probe (lab_apps.py)."""
        self.stacks = LabStacks(self)
        """Stacks deployed with `docker stack deploy` (stacks.py)."""

    def log(self, message: str) -> None:
        """Report progress to the caller's log (nothing by default)."""
        self._log(message)

    @classmethod
    def attach(cls, state_dir: str | Path | None = None,
               log: Callable[[str], None] | None = None, clock: Clock = SYSTEM_CLOCK) -> Lab:
        """The lab as it was brought up in ``state_dir`` (its saved config), else the default
        config there: what ``down``, ``status``, ``deploy`` and ``load`` act on."""
        folder = Path(state_dir) if state_dir else default_state_dir()
        try:
            saved = json.loads((folder / STATE_FILE).read_text()).get("config")
        except (OSError, ValueError):
            saved = None
        if saved:
            return cls(LabConfig.from_dict(saved, str(folder / STATE_FILE)), log=log,
                       clock=clock)
        return cls(LabConfig(state_dir=folder), log=log, clock=clock)

    # ------------------------------------------------------------------ addresses
    @property
    def manager(self) -> NodeSpec:
        return self.nodes[0]

    @property
    def docker_host(self) -> str:
        """DOCKER_HOST of the manager's engine."""
        return engines.engine_paths(self.config, self.manager).docker_host

    @property
    def target(self) -> TargetConfig:
        """The lab's Swarm as an orchestrator target (its manager's Docker API)."""
        return TargetConfig("swarm", self.docker_host)

    def orchestrator(self) -> Orchestrator:
        """The orchestrator adapter of the lab's Swarm (built by the one factory)."""
        return build_target(self.target)

    @property
    def node_docker_hosts(self) -> dict[str, str]:
        """Node name -> DOCKER_HOST of its engine."""
        return {n.name: engines.engine_paths(self.config, n).docker_host for n in self.nodes}

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.config.prometheus_port}"

    @property
    def frontend_url(self) -> str:
        """Entry point of the deployed app: the gateway, which forwards to its front end."""
        return f"http://127.0.0.1:{self.config.gateway_port}"

    @property
    def prometheus(self) -> PrometheusClient:
        return PrometheusClient(self.prometheus_url, timeout_s=10.0)

    def client(self, node: str | None = None) -> docker.DockerClient:
        """docker-py client of a node's engine (default: the manager)."""
        name = node or self.manager.name
        if name not in self._clients:
            hosts = self.node_docker_hosts
            if name not in hosts:
                raise LabError(f"no node '{name}'; nodes: {', '.join(hosts)}")
            self._clients[name] = engines.client(hosts[name])
        return self._clients[name]

    def node(self, name: str) -> NodeSpec:
        for node in self.nodes:
            if node.name == name:
                return node
        raise LabError(f"no node '{name}'; nodes: {', '.join(n.name for n in self.nodes)}")

    def nodes_of(self, generation: str) -> list[str]:
        return [n.name for n in self.nodes if n.generation == generation]

    # ------------------------------------------------------------------ state file
    @property
    def state_file(self) -> Path:
        return self.config.state_dir / STATE_FILE

    def state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def save(self, **changes: Any) -> None:
        state = {**self.state(), **changes}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True, default=str) + "\n")
        tmp.replace(self.state_file)

    def record_moves(self, measurement: dict[str, Any]) -> None:
        """Keep the latest move measurement (``evaluation.moves``, JSON-ready): `lab status`
        prints it, `lab evaluate` takes its period from it. A new `lab up` forgets it."""
        self.save(moves=measurement)

    def recorded_moves(self) -> dict[str, Any] | None:
        """The latest move measurement of this lab, if any."""
        return self.state().get("moves") or None

    def _fingerprint(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self.config), default=str))

    # ------------------------------------------------------------------ up
    def up(self) -> dict[str, float]:
        """Bring the lab up (idempotent): seconds spent per step, {} if it was already up."""
        require_root("up")
        if self.healthy():
            for stack in self.stacks.served():   # an interrupted run's
                self.stacks.remove(stack)
            self._log("lab is already up")
            return {}
        timings: dict[str, float] = {}
        began = step = self.clock.now()

        def lap(name: str) -> None:
            nonlocal step
            now = self.clock.now()
            timings[name] = round(now - step, 2)
            step = now

        cleared = self._clear()
        if cleared:
            self._log(f"cleared what an earlier run left: {', '.join(cleared)}")
        lap("clear_s")
        installed = ensure_packages(self.config.install_packages)
        if installed:
            self._log(f"installed {' '.join(installed)}")
        lap("install_s")
        cgroups.cpu_hierarchy()
        busy = [p for p in (self.config.gateway_port, self.config.prometheus_port)
                if port_in_use(p)]
        if busy:
            raise LabError(f"TCP port(s) {', '.join(map(str, busy))} already in use on this "
                           "machine; stop what listens there or choose other ports "
                           "(LabConfig.gateway_port / prometheus_port)")
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self.save(config=self._fingerprint(), phase="starting", app=None, spec_id=None,
                  moves=None,
                  created={"docker_gwbridge": not link_exists(GWBRIDGE),
                           **{key: not path.exists() for key, path in HOST_FOLDERS.items()}})

        self._log(f"starting {len(self.nodes)} engines: "
                  f"{', '.join(f'{n.name} ({n.generation})' for n in self.nodes)}")
        for node in self.nodes:
            quota = self.config.generation(node.generation).quota_us(self.config.cpu_period_us)
            cgroups.create_node_group(self.config.cgroup_name, node.name,
                                      self.config.cpu_period_us, quota)
        engines.create_network(self.config, self.nodes)
        for node in self.nodes:
            engines.start_engine(self.config, node)
        for node in self.nodes:
            self._wait_engine(node)
        lap("engines_s")

        clients = {n.name: self.client(n.name) for n in self.nodes}
        node_ids = swarm.form(self.config, self.nodes, clients)
        mgr = clients[self.manager.name]
        poll(lambda: swarm.check_nodes_ready(mgr, node_ids), self.config.timeout_s,
             "every node to be ready in the Swarm", clock=self.clock)
        swarm.label_nodes(mgr, self.nodes, node_ids)
        self.save(node_ids=node_ids)
        lap("swarm_s")

        image = images.ensure_image(mgr, [clients[n.name] for n in self.nodes[1:]])
        for network in (self.config.network, self.config.stack_network):
            if not mgr.networks.list(names=[network]):
                mgr.networks.create(network, driver="overlay", attachable=True,
                                    labels={deploy.LAB_LABEL: "network"})
        lap("image_s")

        self._log("starting Prometheus")
        self.write_prometheus_config([], self.config.emulator_port)
        _, data_dir = deploy.prometheus_dirs(self.config)
        data_dir.mkdir(parents=True, exist_ok=True)
        mgr.services.create(**deploy.prometheus_service(self.config, image))
        prom = self.prometheus
        poll(prom.ready, self.config.timeout_s, f"Prometheus at {self.prometheus_url}",
             clock=self.clock)
        lap("prometheus_s")
        self.save(phase="up", image=image)
        timings["total_s"] = round(self.clock.now() - began, 2)
        self._log(f"lab up in {timings['total_s']:.1f} s")
        return timings

    def _wait_engine(self, node: NodeSpec) -> None:
        engine = self.client(node.name)

        def ready() -> bool:
            try:
                return bool(engine.ping())
            except (docker.errors.DockerException, requests.RequestException) as exc:
                if engines.engine_pid(self.config, node) is None and \
                        engines.engine_paths(self.config, node).pidfile.exists():
                    engines.raise_engine_failed(self.config, node, "exited")
                raise NotYet(f"{node.name}: {type(exc).__name__}") from exc

        try:
            poll(ready, self.config.timeout_s, f"the engine of node {node.name}", clock=self.clock)
        except LabError:
            engines.raise_engine_failed(self.config, node, "did not become ready")

    # ------------------------------------------------------------------ node loss
    def stop_node(self, name: str) -> int:
        """Kill one worker node as if it lost power: SIGKILL its engine and everything the
        engine started (found by cgroup membership). Returns how many processes died.

        The Swarm sees the node down after its heartbeat times out; ``start_node`` brings it
        back with its state (it rejoins by itself)."""
        require_root("stop a node")
        node = self.node(name)
        if node.manager:
            raise LabError(f"{name} is the Swarm manager: stopping it ends the lab's Swarm; "
                           f"stop a worker ({', '.join(n.name for n in self.nodes[1:])})")
        pids = cgroups.node_pids(self.config.cgroup_name, name)
        survivors = cgroups.kill_node(self.config.cgroup_name, name, clock=self.clock)
        if survivors:
            raise LabError(f"processes {sorted(survivors)} of node {name} do not die")
        self._clients.pop(name, None)
        self._log(f"node {name} stopped ({len(pids)} processes killed)")
        return len(pids)

    def start_node(self, name: str) -> float:
        """Start a stopped worker's engine again and wait until the Swarm has it ready;
        returns the seconds that took."""
        require_root("start a node")
        node = self.node(name)
        began = self.clock.now()
        if engines.engine_pid(self.config, node) is None:
            paths = engines.engine_paths(self.config, node)
            paths.pidfile.unlink(missing_ok=True)   # the killed engine's: not a live one
            unmount_all_under(paths.exec_root)
            engines.start_engine(self.config, node)
        self._clients.pop(name, None)
        self._wait_engine(node)
        node_id = self.state().get("node_ids", {}).get(name)
        if node_id:
            poll(lambda: swarm.check_nodes_ready(self.client(), {name: node_id}),
                 self.config.timeout_s, f"node {name} to be ready in the Swarm again",
                 clock=self.clock)
        seconds = round(self.clock.now() - began, 1)
        self._log(f"node {name} ready again in {seconds:.1f} s")
        return seconds

    def healthy(self) -> bool:
        """Whether the lab is up as configured: engines alive, nodes ready, Prometheus ready."""
        state = self.state()
        if state.get("phase") != "up" or state.get("config") != self._fingerprint():
            return False
        if any(engines.engine_pid(self.config, n) is None for n in self.nodes):
            return False
        try:
            swarm.check_nodes_ready(self.client(), state.get("node_ids", {}))
        except (NotYet, docker.errors.DockerException, requests.RequestException):
            return False
        return self.prometheus.ready()

    def require_up(self) -> None:
        if not self.healthy():
            raise LabError("the lab is not up (or not as configured); run `ecoscale lab up` "
                           "first")

    # ------------------------------------------------------------------ down
    def down(self) -> list[str]:
        """Tear everything down; returns what was removed. LabError if anything is left."""
        require_root("down")
        removed = self._clear()
        left = self.leftovers()
        if left:
            raise LabError("the lab could not remove: " + "; ".join(left))
        self._log("lab is down" + (f" (removed {', '.join(removed)})" if removed else
                                   " (nothing was running)"))
        return removed

    def _clear(self) -> list[str]:
        """Remove every trace of a lab with this configuration, running or crashed."""
        state = self.state()
        created = state.get("created", {})
        removed: list[str] = []
        live = [n for n in self.nodes if engines.engine_pid(self.config, n) is not None]
        for node in sorted(live, key=lambda n: n.manager):  # workers leave first
            # A half-dead engine may not answer: its state folder goes anyway.
            with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
                engines.client(self.node_docker_hosts[node.name], timeout_s=15).swarm.leave(
                    force=True)
        self._clients.clear()
        pids = [pid for pid in (engines.engine_pid(self.config, n) for n in self.nodes) if pid]
        if pids:
            stop_pids(pids, grace_s=30, clock=self.clock)
            removed.append(f"{len(pids)} engine(s)")
        strays = engines.processes_of(self.config.state_dir)
        if strays:
            stop_pids(strays, grace_s=5, clock=self.clock)
            removed.append(f"{len(strays)} containerd/shim process(es)")
        leftover_pids = cgroups.pids_in(self.config.cgroup_name)
        survivors = cgroups.kill_all(self.config.cgroup_name, clock=self.clock)
        if leftover_pids:
            removed.append(f"{len(leftover_pids)} process(es) left in the lab's cgroups")
        if survivors:
            raise LabError(f"processes {sorted(survivors)} in the lab's cgroups do not die")
        mounts = unmount_all_under(self.config.state_dir)
        if mounts:
            removed.append(f"{len(mounts)} mount(s)")
        before = set(netns_list())
        engines.delete_network(self.config)
        gone = before - set(netns_list())
        if gone:
            removed.append(f"netns {', '.join(sorted(gone))}")
        if link_exists(GWBRIDGE) and (created.get("docker_gwbridge") or
                                      (not state and not self._other_engines())):
            delete_link(GWBRIDGE)
            removed.append(GWBRIDGE)
        left = cgroups.remove_groups(self.config.cgroup_name, clock=self.clock)
        if left:
            raise LabError(f"cgroups still busy: {', '.join(map(str, left))}")
        for key, folder in HOST_FOLDERS.items():
            if not (created.get(key) or not state) or self._other_engines():
                continue
            for stale in stale_sockets(folder):    # of shims killed with the engines
                stale.unlink(missing_ok=True)
            if _only_empty_dirs(folder):
                unmount_all_under(folder)  # `ip netns add` bind-mounts /run/netns on itself
                remove_tree(folder)
        if self.config.state_dir.exists():
            remove_tree(self.config.state_dir)
            removed.append(str(self.config.state_dir))
        return removed

    def _other_engines(self) -> bool:
        """Whether a dockerd that is not the lab's runs on this machine (read, never killed)."""
        ours = set(engines.processes_of(self.config.state_dir))
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) not in ours:
                try:
                    if (entry / "comm").read_text().strip() == "dockerd" and \
                            pid_alive(int(entry.name)):
                        return True
                except OSError:
                    continue
        return False

    def leftovers(self) -> list[str]:
        """Everything of this lab that still exists on the machine (empty after ``down``)."""
        found = []
        pids = set(engines.processes_of(self.config.state_dir))
        pids |= cgroups.pids_in(self.config.cgroup_name)
        pids |= {p for n in self.nodes
                 if (p := engines.engine_pid(self.config, n)) is not None}
        live = sorted(p for p in pids if pid_alive(p))
        if live:
            found.append(f"processes {live}")
        namespaces = [n for n in netns_list() if n.startswith(f"{self.config.prefix}-")]
        if namespaces:
            found.append(f"network namespaces {namespaces}")
        links = [p.name for p in Path("/sys/class/net").glob(f"{self.config.prefix}-*")]
        if links:
            found.append(f"links {sorted(links)}")
        if link_exists(GWBRIDGE) and not self._other_engines() and \
                self.state().get("created", {}).get("docker_gwbridge", True):
            found.append(f"link {GWBRIDGE}")
        groups = cgroups.group_dirs(self.config.cgroup_name)
        if groups:
            found.append(f"cgroups {[str(g) for g in groups]}")
        mounts = mounts_under(self.config.state_dir)
        mounts += [m for m in mounts_under(Path("/run/netns"))
                   if Path(m).name.startswith(f"{self.config.prefix}-")]
        if mounts:
            found.append(f"mounts {mounts}")
        if self.config.state_dir.exists():
            found.append(f"folder {self.config.state_dir}")
        return found

    # ------------------------------------------------------------------ apps
    # What runs on the lab is LabApps' (lab_apps.py); these are its entry points.
    def deploy(self, app: str, emulation: str | Path | None = None) -> dict[str, Any]:
        """Run ``app`` on the lab (``LabApps.deploy``)."""
        return self.apps.deploy(app, emulation)

    def undeploy(self) -> list[str]:
        """Remove the deployed app and its gateway (``LabApps.undeploy``)."""
        return self.apps.undeploy()

    @property
    def deployed_app(self) -> str | None:
        """Name of the deployed app, if any."""
        return self.apps.deployed_app

    def app(self) -> LabApp | None:
        """The deployed app (topology and emulation), if any."""
        return self.apps.app()

    def managed_services(self) -> list[str]:
        return self.apps.managed_services()

    def place(self, service: str, generation: str, replicas: int | None = None,
              wait: bool = True) -> None:
        """Pin a managed service to a generation (``LabApps.place``)."""
        self.apps.place(service, generation, replicas, wait)

    def tasks(self, service: str) -> list[dict[str, str]]:
        """Live tasks of a service: node, generation, state, desired state, address."""
        return self.apps.tasks(service)

    def containers_on(self, node: str) -> dict[str, str]:
        """Service name -> container status, as the node's own engine reports them."""
        return self.apps.containers_on(node)

    def probe(self, services: Iterable[str]) -> dict[str, dict[str, Any]]:
        """/healthz of every task of the services, through the gateway."""
        return self.apps.probe(services)

    def wait_converged(self, services: Iterable[str] | None = None,
                       timeout_s: float | None = None, resumes: int = 2) -> list[str]:
        """Wait until the services run and answer (``LabApps.wait_converged``)."""
        return self.apps.wait_converged(services, timeout_s, resumes)

    def wait_scraped(self, services: Iterable[str] | None = None,
                     timeout_s: float | None = None) -> None:
        """Wait until Prometheus scrapes every task (``LabApps.wait_scraped``)."""
        self.apps.wait_scraped(services, timeout_s)

    # ------------------------------------------------------------------ stacks
    # Stacks an operator deploys with `docker stack deploy` (stacks.py: LabStacks).
    def serve_stack(self, stack: str, app: str, emulation: str | Path | None = None,
                    frontend_port: int | None = None) -> ServedStack:
        """Prepare the lab for `docker stack deploy` of ``app`` as ``stack``: its app
        document, the deploy's environment, an entry point and Prometheus' scrape job."""
        return self.stacks.serve(stack, app, emulation, frontend_port)

    @property
    def stack_url(self) -> str:
        """Entry point of the served stack (a forwarder to its front end's tasks)."""
        return self.stacks.url

    def wait_stack(self, stack: str, timeout_s: float | None = None) -> float:
        """Wait until every task of the served stack runs, answers and is scraped (s)."""
        return self.stacks.wait(stack, timeout_s)

    def remove_stack(self, stack: str) -> list[str]:
        """Remove a stack as `docker stack rm` does, with its entry point and scrape job."""
        return self.stacks.remove(stack)

    # ------------------------------------------------------------------ prometheus
    def write_prometheus_config(self, services: list[str], port: int) -> None:
        """Prometheus' scrape config for ``services`` (their tasks listen on ``port``)."""
        config_dir, _ = deploy.prometheus_dirs(self.config)
        config_dir.mkdir(parents=True, exist_ok=True)
        stacked, stack_port = self.stacks.stack_services()
        text = render_config(template_text(), services, port if services else
                             self.config.emulator_port, self.config.scrape_interval_s,
                             stacked, stack_port)
        for name, content in ((RULES_FILE, stack_rules()), ("prometheus.yml", text)):
            tmp = config_dir / f"{name}.tmp"
            tmp.write_text(content)
            tmp.replace(config_dir / name)

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """Nodes (name, generation, ready, emulation), services and where their tasks run."""
        state = self.state()
        result: dict[str, Any] = {
            "up": False, "state_dir": str(self.config.state_dir), "app": state.get("app"),
            "docker_host": self.docker_host, "prometheus_url": self.prometheus_url,
            "frontend_url": self.frontend_url, "emulated": True, "note": EMULATION_NOTE,
            "emulation": self.config.emulation(host_cpus()), "nodes": [], "services": {},
            "moves": self.recorded_moves(),
        }
        swarm_nodes: dict[str, dict[str, str]] = {}
        manager_alive = engines.engine_pid(self.config, self.manager) is not None
        if manager_alive:
            try:
                swarm_nodes = swarm.node_names(self.client())
            except (docker.errors.DockerException, requests.RequestException):
                manager_alive = False
        by_name = {v["name"]: {**v, "id": k} for k, v in swarm_nodes.items()}
        for node in self.nodes:
            pid = engines.engine_pid(self.config, node)
            seen = by_name.get(node.name, {})
            result["nodes"].append({
                "name": node.name, "generation": node.generation, "manager": node.manager,
                "address": node.address, "docker_host": self.node_docker_hosts[node.name],
                "engine_pid": pid, "ready": bool(pid) and seen.get("state") == "ready",
                "availability": seen.get("availability", ""),
                "cpu_quota": cgroups.read_quota(self.config.cgroup_name, node.name),
            })
        result["up"] = state.get("phase") == "up" and all(n["ready"] for n in result["nodes"])
        if manager_alive:
            for service in self.client().services.list():
                spec = service.attrs["Spec"]
                labels = spec.get("Labels", {})
                if labels.get(deploy.MANAGED_LABEL) != "true" and deploy.LAB_LABEL not in labels:
                    continue
                result["services"][service.name] = {
                    "role": "managed" if labels.get(deploy.MANAGED_LABEL) == "true"
                    else labels[deploy.LAB_LABEL],
                    "replicas": replicas_of(spec),
                    "generation": generation_of(spec),
                    "tasks": swarm.task_view(service, swarm_nodes),
                }
        if not self.config.slot_cpus():
            result["slot_budget"] = None
            return result
        held = {name: (s["generation"] or self.config.manager_generation, s["replicas"] or 0)
                for name, s in result["services"].items() if s["role"] == "managed"}
        budget = self.config.slot_budget(host_cpus(), held)
        result["slot_budget"] = {"text": budget.text(), "slots": budget.slots,
                                 "used_cpus": round(budget.used_cpus, 3),
                                 "budget_cpus": budget.budget_cpus,
                                 "host_cpus": budget.host_cpus, "kept_cpus": budget.kept_cpus,
                                 "overcommitted": budget.overcommitted}
        return result


def _only_empty_dirs(path: Path) -> bool:
    """True if ``path`` is a folder with no files anywhere below it (only empty folders)."""
    return path.is_dir() and all(p.is_dir() for p in path.rglob("*"))
