"""``Lab``: a real multi-node Docker Swarm on one machine, with emulated old and new nodes.

``up`` first clears whatever an earlier run left (engines by pidfile, namespaces, links,
cgroups, mounts, the state folder), installs missing Debian packages, starts one dockerd per
node, forms the Swarm, labels the nodes ``ecoscale.generation=<gen>``, builds and copies the
image, creates the overlay network and starts Prometheus. ``deploy`` runs an app as one Swarm
service per microservice. ``down`` leaves nothing behind, also after a crash.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from ecoscale.adapters.targets import build_target
from ecoscale.config import TargetConfig
from ecoscale.emulator.service import GATEWAY_NAME, PROBE_PATH
from ecoscale.lab import cgroups, deploy, engines, images, swarm
from ecoscale.lab.apps import LabApp, load_app
from ecoscale.lab.config import LabConfig, NodeSpec, default_state_dir
from ecoscale.lab.prometheus import PrometheusClient, render_config, template_text
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
    stop_pids,
    unmount_all_under,
)
from ecoscale.ports import Orchestrator

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
                  "tasks and (2) a CFS CPU quota on the cgroup holding that node's containers "
                  "(see 'emulation'), not other hardware. There is no power measurement "
                  "(no RAPL).")


class Lab:
    """The lab described by a ``LabConfig``; every method acts on the real machine."""

    def __init__(self, config: LabConfig | None = None,
                 log: Callable[[str], None] | None = None):
        self.config = config or LabConfig()
        self.nodes: tuple[NodeSpec, ...] = self.config.nodes()
        self._log = log or (lambda _message: None)
        self._clients: dict[str, docker.DockerClient] = {}

    @classmethod
    def attach(cls, state_dir: str | Path | None = None,
               log: Callable[[str], None] | None = None) -> Lab:
        """The lab as it was brought up in ``state_dir`` (its saved config), else the default
        config there: what ``down``, ``status``, ``deploy`` and ``load`` act on."""
        folder = Path(state_dir) if state_dir else default_state_dir()
        try:
            saved = json.loads((folder / STATE_FILE).read_text()).get("config")
        except (OSError, ValueError):
            saved = None
        if saved:
            return cls(LabConfig.from_dict(saved, str(folder / STATE_FILE)), log=log)
        return cls(LabConfig(state_dir=folder), log=log)

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
        return PrometheusClient(self.prometheus_url)

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

    def _state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, **changes: Any) -> None:
        state = {**self._state(), **changes}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True, default=str) + "\n")
        tmp.replace(self.state_file)

    def _fingerprint(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self.config), default=str))

    # ------------------------------------------------------------------ up
    def up(self) -> dict[str, float]:
        """Bring the lab up (idempotent): seconds spent per step, {} if it was already up."""
        require_root("up")
        if self.healthy():
            self._log("lab is already up")
            return {}
        timings: dict[str, float] = {}
        began = step = time.monotonic()

        def lap(name: str) -> None:
            nonlocal step
            now = time.monotonic()
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
        self._save(config=self._fingerprint(), phase="starting", app=None, spec_id=None,
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
             "every node to be ready in the Swarm")
        swarm.label_nodes(mgr, self.nodes, node_ids)
        self._save(node_ids=node_ids)
        lap("swarm_s")

        image = images.ensure_image(mgr, [clients[n.name] for n in self.nodes[1:]])
        if not mgr.networks.list(names=[self.config.network]):
            mgr.networks.create(self.config.network, driver="overlay", attachable=True,
                                labels={deploy.LAB_LABEL: "network"})
        lap("image_s")

        self._log("starting Prometheus")
        self._write_prometheus_config([])
        _, data_dir = deploy.prometheus_dirs(self.config)
        data_dir.mkdir(parents=True, exist_ok=True)
        mgr.services.create(**deploy.prometheus_service(self.config, image))
        prom = self.prometheus
        poll(prom.ready, self.config.timeout_s, f"Prometheus at {self.prometheus_url}")
        lap("prometheus_s")
        self._save(phase="up", image=image)
        timings["total_s"] = round(time.monotonic() - began, 2)
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
            poll(ready, self.config.timeout_s, f"the engine of node {node.name}")
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
        survivors = cgroups.kill_node(self.config.cgroup_name, name)
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
        began = time.monotonic()
        if engines.engine_pid(self.config, node) is None:
            paths = engines.engine_paths(self.config, node)
            paths.pidfile.unlink(missing_ok=True)   # the killed engine's: not a live one
            unmount_all_under(paths.exec_root)
            engines.start_engine(self.config, node)
        self._clients.pop(name, None)
        self._wait_engine(node)
        node_id = self._state().get("node_ids", {}).get(name)
        if node_id:
            poll(lambda: swarm.check_nodes_ready(self.client(), {name: node_id}),
                 self.config.timeout_s, f"node {name} to be ready in the Swarm again")
        seconds = round(time.monotonic() - began, 1)
        self._log(f"node {name} ready again in {seconds:.1f} s")
        return seconds

    def healthy(self) -> bool:
        """Whether the lab is up as configured: engines alive, nodes ready, Prometheus ready."""
        state = self._state()
        if state.get("phase") != "up" or state.get("config") != self._fingerprint():
            return False
        if any(engines.engine_pid(self.config, n) is None for n in self.nodes):
            return False
        try:
            swarm.check_nodes_ready(self.client(), state.get("node_ids", {}))
        except (NotYet, docker.errors.DockerException, requests.RequestException):
            return False
        return self.prometheus.ready()

    def _require_up(self) -> None:
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
        state = self._state()
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
            stop_pids(pids, grace_s=30)
            removed.append(f"{len(pids)} engine(s)")
        strays = engines.processes_of(self.config.state_dir)
        if strays:
            stop_pids(strays, grace_s=5)
            removed.append(f"{len(strays)} containerd/shim process(es)")
        leftover_pids = cgroups.pids_in(self.config.cgroup_name)
        survivors = cgroups.kill_all(self.config.cgroup_name)
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
        left = cgroups.remove_groups(self.config.cgroup_name)
        if left:
            raise LabError(f"cgroups still busy: {', '.join(map(str, left))}")
        for key, folder in HOST_FOLDERS.items():
            if (created.get(key) or not state) and _only_empty_dirs(folder) and \
                    not self._other_engines():
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
                self._state().get("created", {}).get("docker_gwbridge", True):
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
    def deploy(self, app: str, emulation: str | Path | None = None) -> dict[str, Any]:
        """Run ``app`` as one Swarm service per microservice, all on the first generation.

        Replaces a previously deployed app. Services of the same app whose definition did not
        change are kept, and put back on the first generation with one replica. Returns once
        every task runs and answers and Prometheus scrapes it.
        """
        require_root("deploy")
        self._require_up()
        began = time.monotonic()
        lab_app = replace(load_app(app, emulation), node_speed=self.config.node_speeds())
        mgr = self.client()
        image = images.ensure_image(mgr, [self.client(n.name) for n in self.nodes[1:]])
        app_config = deploy.ensure_app_config(mgr, lab_app)
        wanted = {name: deploy.app_service(self.config, lab_app, name, image, app_config)
                  for name in lab_app.topology.services}
        wanted[GATEWAY_NAME] = deploy.gateway_service(self.config, lab_app, image, app_config)
        existing = {s.name: s for s in mgr.services.list()
                    if s.attrs["Spec"].get("Labels", {}).get(deploy.MANAGED_LABEL) == "true"
                    or s.name == GATEWAY_NAME}
        removed, kept, reset, created = [], [], [], []
        for name, service in existing.items():
            labels = service.attrs["Spec"].get("Labels", {})
            if name not in wanted or labels.get(deploy.SPEC_LABEL) != \
                    wanted[name]["labels"][deploy.SPEC_LABEL]:
                service.remove()
                removed.append(name)
        if GATEWAY_NAME in removed:
            # The new gateway publishes the same host port: let the old task free it first.
            poll(lambda: not self._tasks_alive(GATEWAY_NAME), self.config.timeout_s,
                 "the previous gateway to stop")
        initial = self.config.manager_generation
        for name, kwargs in wanted.items():
            if name in existing and name not in removed:
                spec = existing[name].attrs["Spec"]
                if name != GATEWAY_NAME and (swarm.constraint_generation(spec) != initial
                                             or swarm.replicas_of(spec) != 1):
                    swarm.update_service(mgr, name, lambda s: (swarm.set_generation(s, initial),
                                                               swarm.set_replicas(s, 1)))
                    reset.append(name)
                else:
                    kept.append(name)
                continue
            mgr.services.create(**kwargs)
            created.append(name)
        self._save(app=lab_app.name, spec_id=lab_app.spec_id(), frontend=lab_app.topology.frontend)
        self._write_prometheus_config(list(lab_app.topology.services))
        self.prometheus.reload()
        self._log(f"{lab_app.name}: {len(created)} services created, {len(reset)} put back on "
                  f"'{initial}', {len(kept)} kept, {len(removed)} removed; waiting for tasks")
        resumed = self.wait_converged()
        self.wait_scraped()
        deploy.remove_unused_configs(mgr, keep=app_config["ConfigName"])
        seconds = round(time.monotonic() - began, 2)
        self._log(f"{lab_app.name} deployed in {seconds:.1f} s; entry point {self.frontend_url}")
        return {"app": lab_app.name, "services": len(lab_app.topology.services),
                "created": created, "reset": reset, "resumed": resumed, "kept": kept,
                "removed": removed, "seconds": seconds}

    @property
    def deployed_app(self) -> str | None:
        """Name of the deployed app, if any."""
        return self._state().get("app")

    def app(self) -> LabApp | None:
        """The deployed app (topology and emulation), if any."""
        name = self._state().get("app")
        return replace(load_app(name), node_speed=self.config.node_speeds()) if name else None

    def managed_services(self) -> list[str]:
        return sorted(s.name for s in self.client().services.list(
            filters={"label": f"{deploy.MANAGED_LABEL}=true"}))

    def _tasks_alive(self, service: str) -> bool:
        for node in self.nodes:
            if self.client(node.name).containers.list(
                    filters={"label": f"com.docker.swarm.service.name={service}"}):
                return True
        return False

    def place(self, service: str, generation: str, replicas: int | None = None,
              wait: bool = True) -> None:
        """Pin a managed service to a generation by its placement constraint (and replicas).

        Waits until the tasks run there, answer, and are scraped by Prometheus.
        """
        self.config.generation(generation)
        if not self.nodes_of(generation):
            raise LabError(f"generation '{generation}' has no nodes in this lab")

        def mutate(spec: dict[str, Any]) -> None:
            swarm.set_generation(spec, generation)
            if replicas is not None:
                swarm.set_replicas(spec, replicas)

        swarm.update_service(self.client(), service, mutate)
        if wait:
            self.wait_converged([service])
            self.wait_scraped([service])

    def tasks(self, service: str) -> list[dict[str, str]]:
        """Live tasks of a service: node, generation, state, desired state, address."""
        nodes = swarm.node_names(self.client())
        return swarm.task_view(self.client().services.get(service), nodes)

    def containers_on(self, node: str) -> dict[str, str]:
        """Service name -> container status, as the node's own engine reports them."""
        found = {}
        for container in self.client(node).containers.list(
                filters={"label": "com.docker.swarm.service.name"}):
            found[container.labels["com.docker.swarm.service.name"]] = container.status
        return found

    # ------------------------------------------------------------------ readiness
    def probe(self, services: Iterable[str]) -> dict[str, dict[str, Any]]:
        """/healthz of every task of the services, through the gateway (on the overlay)."""
        names = ",".join(services)
        try:
            reply = requests.get(f"{self.frontend_url}{PROBE_PATH}",
                                 params={"services": names}, timeout=15)
            reply.raise_for_status()
            return reply.json()
        except (requests.RequestException, ValueError) as exc:
            raise NotYet(f"gateway at {self.frontend_url} not answering: "
                         f"{type(exc).__name__}") from exc

    def wait_converged(self, services: Iterable[str] | None = None,
                       timeout_s: float | None = None, resumes: int = 2) -> list[str]:
        """Wait until the services (default: all of the app and the gateway) run exactly
        their replicas where their constraints say, and every task answers with the
        deployed app's document.

        A rolling update that Swarm paused (a new task failed or ended early, which a busy
        host can cause) is resumed by a forced update up to ``resumes`` times per service,
        then is an error. Returns the services it resumed.
        """
        state = self._state()
        spec_id = state.get("spec_id")
        names = list(services) if services is not None else [*self.managed_services(),
                                                              GATEWAY_NAME]
        mgr = self.client()
        resumed: dict[str, int] = {}

        def check() -> bool:
            nodes = swarm.node_names(mgr)
            problems = []
            replicas = {}
            for name in names:
                try:
                    service = mgr.services.get(name)
                except docker.errors.NotFound as exc:
                    raise LabError(f"no service {name} in the lab") from exc
                replicas[name] = swarm.replicas_of(service.attrs["Spec"])
                try:
                    problem = swarm.convergence_problem(service, nodes)
                except swarm.UpdatePaused as paused:
                    if resumed.get(name, 0) >= resumes:
                        raise
                    resumed[name] = resumed.get(name, 0) + 1
                    self._log(f"{paused}; resuming it ({resumed[name]}/{resumes})")
                    swarm.update_service(mgr, name, swarm.force_update)
                    problem = f"{name}: paused update resumed"
                if problem:
                    problems.append(problem)
            if problems:
                raise NotYet(_summary(problems))
            health = self._gateway_health()
            if GATEWAY_NAME in names and (not health or health.get("spec") != spec_id):
                raise NotYet(f"gateway at {self.frontend_url} not serving the deployed app yet")
            answers = self.probe(n for n in names if n != GATEWAY_NAME)
            for name, tasks in answers.items():
                good = [a for a, h in tasks.items()
                        if isinstance(h, dict) and h.get("service") == name
                        and h.get("spec") == spec_id]
                if len(good) != replicas[name] or len(tasks) != replicas[name]:
                    problems.append(f"{name}: {len(good)}/{replicas[name]} tasks answer by DNS "
                                    f"({len(tasks)} resolved)")
            if problems:
                raise NotYet(_summary(problems))
            return True

        poll(check, timeout_s or self.config.timeout_s, "services to converge")
        return sorted(resumed)

    def _gateway_health(self) -> dict[str, Any] | None:
        try:
            reply = requests.get(f"{self.frontend_url}/healthz", timeout=5)
            return reply.json() if reply.status_code == 200 else None
        except (requests.RequestException, ValueError):
            return None

    def wait_scraped(self, services: Iterable[str] | None = None,
                     timeout_s: float | None = None) -> None:
        """Wait until Prometheus scrapes exactly the live tasks of the services, all up."""
        names = list(services) if services is not None else self.managed_services()
        names = [n for n in names if n != GATEWAY_NAME]
        prom = self.prometheus
        port = self._app_port()

        def check() -> bool:
            answers = self.probe(names)
            targets = prom.targets_up()
            problems = []
            for name in names:
                expected = {f"{address}:{port}" for address in answers.get(name, {})}
                seen = targets.get(name, {})
                if set(seen) != expected or not all(seen.values()):
                    problems.append(f"{name}: Prometheus has {sorted(seen)} "
                                    f"(up: {sum(seen.values())}), tasks are {sorted(expected)}")
            if problems:
                raise NotYet(_summary(problems))
            return True

        poll(check, timeout_s or self.config.timeout_s, "Prometheus to scrape every task")

    def _app_port(self) -> int:
        app = self.app()
        return app.port if app else self.config.emulator_port

    def _write_prometheus_config(self, services: list[str]) -> None:
        config_dir, _ = deploy.prometheus_dirs(self.config)
        config_dir.mkdir(parents=True, exist_ok=True)
        text = render_config(template_text(), services, self._app_port() if services else
                             self.config.emulator_port, self.config.scrape_interval_s)
        tmp = config_dir / "prometheus.yml.tmp"
        tmp.write_text(text)
        tmp.replace(config_dir / "prometheus.yml")

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """Nodes (name, generation, ready, emulation), services and where their tasks run."""
        state = self._state()
        result: dict[str, Any] = {
            "up": False, "state_dir": str(self.config.state_dir), "app": state.get("app"),
            "docker_host": self.docker_host, "prometheus_url": self.prometheus_url,
            "frontend_url": self.frontend_url, "emulated": True, "note": EMULATION_NOTE,
            "emulation": self.config.emulation(host_cpus()), "nodes": [], "services": {},
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
                    "replicas": swarm.replicas_of(spec),
                    "generation": swarm.constraint_generation(spec),
                    "tasks": swarm.task_view(service, swarm_nodes),
                }
        return result


def _only_empty_dirs(path: Path) -> bool:
    """True if ``path`` is a folder with no files anywhere below it (only empty folders)."""
    return path.is_dir() and all(p.is_dir() for p in path.rglob("*"))


def _summary(problems: list[str], shown: int = 4) -> str:
    more = f" (+{len(problems) - shown} more)" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more
