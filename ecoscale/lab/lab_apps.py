"""The apps on a running lab: deploy an app, place its services, probe and wait for them.

``LabApps`` is the half of the lab that deals with what runs on it; ``Lab`` (lab.py) owns
the lifecycle (engines, Swarm, Prometheus: up, down, attach, status) and hands itself in
as a ``LabHost``. Moves go through the orchestrator adapter and the one "apply and wait"
(ecoscale.adapters.placing), with the lab's own further checks: every task answers through
the gateway with the deployed app's document, and Prometheus scrapes exactly those tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import docker
import docker.errors
import requests

from ecoscale.adapters.placing import Check, apply_placement, place, summary, wait_placed
from ecoscale.adapters.prometheus import PrometheusClient
from ecoscale.emulator.service import GATEWAY_NAME, PROBE_PATH
from ecoscale.lab import deploy, images, swarm
from ecoscale.lab.apps import LabApp, load_app
from ecoscale.lab.config import LabConfig, NodeSpec, SlotBudget
from ecoscale.lab.prometheus import SERVICE_JOB, SERVICE_LABEL
from ecoscale.lab.system import LabError, NotYet, host_cpus, poll, require_root
from ecoscale.model.placement import ServicePlacement
from ecoscale.ports import Clock, Orchestrator


class LabHost(Protocol):
    """What the apps need from the lab's lifecycle half (``Lab`` is one)."""

    config: LabConfig
    nodes: tuple[NodeSpec, ...]
    clock: Clock

    @property
    def frontend_url(self) -> str: ...

    @property
    def docker_host(self) -> str: ...

    @property
    def prometheus(self) -> PrometheusClient: ...

    def client(self, node: str | None = None) -> docker.DockerClient: ...

    def nodes_of(self, generation: str) -> list[str]: ...

    def orchestrator(self) -> Orchestrator: ...

    def state(self) -> dict[str, Any]: ...

    def save(self, **changes: Any) -> None: ...

    def require_up(self) -> None: ...

    def write_prometheus_config(self, services: list[str], port: int) -> None: ...

    def log(self, message: str) -> None: ...


class LabApps:
    """Deploy, place, probe and wait for the app on the lab ``host``."""

    def __init__(self, host: LabHost):
        self.host = host

    @property
    def config(self) -> LabConfig:
        return self.host.config

    # ------------------------------------------------------------------ deploy
    def deploy(self, app: str, emulation: str | Path | None = None) -> dict[str, Any]:
        """Run ``app`` as one Swarm service per microservice, all on the first generation.

        Replaces a previously deployed app. Services of the same app whose definition did not
        change are kept, and put back on the first generation with one replica. Returns once
        every task runs and answers and Prometheus scrapes it.
        """
        require_root("deploy")
        host = self.host
        host.require_up()
        began = host.clock.now()
        lab_app = replace(load_app(app, emulation), node_speed=self.config.node_speeds())
        first = self.config.manager_generation
        self.refuse_overcommit(self.config.slot_budget(
            host_cpus(), {name: (first, 1) for name in lab_app.topology.services}),
            f"deploying {lab_app.name} ({len(lab_app.topology.services)} services, one "
            f"replica each on '{first}')")
        mgr = host.client()
        image = images.ensure_image(mgr, [host.client(n.name) for n in host.nodes[1:]])
        app_config = deploy.ensure_app_config(mgr, lab_app)
        wanted = {name: deploy.app_service(self.config, lab_app, name, image, app_config)
                  for name in lab_app.topology.services}
        wanted[GATEWAY_NAME] = deploy.gateway_service(self.config, lab_app, image, app_config)
        existing = {s.name: s for s in mgr.services.list()
                    if s.attrs["Spec"].get("Labels", {}).get(deploy.MANAGED_LABEL) == "true"
                    or s.name == GATEWAY_NAME}
        removed, kept, created = [], [], []
        for name, service in existing.items():
            labels = service.attrs["Spec"].get("Labels", {})
            if name not in wanted or labels.get(deploy.SPEC_LABEL) != \
                    wanted[name]["labels"][deploy.SPEC_LABEL]:
                service.remove()
                removed.append(name)
        if GATEWAY_NAME in removed:
            # The new gateway publishes the same host port: let the old task free it first.
            poll(lambda: not self._tasks_alive(GATEWAY_NAME), self.config.timeout_s,
                 "the previous gateway to stop", clock=host.clock)
        initial = ServicePlacement(self.config.manager_generation, 1)
        staying = [n for n in wanted if n in existing and n not in removed]
        reset = apply_placement(host.orchestrator(),
                                {n: initial for n in staying if n != GATEWAY_NAME},
                                self.config.slot_cpus())
        kept = [n for n in staying if n not in reset]
        for name, kwargs in wanted.items():
            if name not in staying:
                mgr.services.create(**kwargs)
                created.append(name)
        host.save(app=lab_app.name, spec_id=lab_app.spec_id(),
                  frontend=lab_app.topology.frontend, app_source=str(app),
                  emulation=str(emulation) if emulation else None)
        host.write_prometheus_config(list(lab_app.topology.services), lab_app.port)
        host.prometheus.reload()
        host.log(f"{lab_app.name}: {len(created)} services created, {len(reset)} put back on "
                 f"'{initial.generation}', {len(kept)} kept, {len(removed)} removed; waiting "
                 "for tasks")
        resumed = self.wait_converged()
        self.wait_scraped()
        deploy.remove_unused_configs(mgr, keep=app_config["ConfigName"])
        seconds = round(host.clock.now() - began, 2)
        host.log(f"{lab_app.name} deployed in {seconds:.1f} s; entry point {host.frontend_url}")
        return {"app": lab_app.name, "services": len(lab_app.topology.services),
                "created": created, "reset": reset, "resumed": resumed, "kept": kept,
                "removed": removed, "seconds": seconds}

    def undeploy(self) -> list[str]:
        """Remove the deployed app's services and its gateway (the lab stays up); returns
        the services removed, once their tasks are gone. A stack whose services carry the
        app's names is then the only one a name mapping can find."""
        require_root("undeploy")
        host = self.host
        mgr = host.client()
        removed = []
        for service in mgr.services.list():
            labels = service.attrs["Spec"].get("Labels", {})
            if labels.get(deploy.MANAGED_LABEL) == "true" or service.name == GATEWAY_NAME:
                service.remove()
                removed.append(service.name)
        poll(lambda: not any(self._tasks_alive(name) for name in removed),
             self.config.timeout_s, "the app's tasks to stop", clock=host.clock)
        host.save(app=None, spec_id=None, frontend=None, app_source=None, emulation=None)
        host.write_prometheus_config([], self.config.emulator_port)
        host.prometheus.reload()
        if removed:
            host.log(f"app removed ({len(removed)} services)")
        return sorted(removed)

    @property
    def deployed_app(self) -> str | None:
        """Name of the deployed app, if any."""
        return self.host.state().get("app")

    def app(self) -> LabApp | None:
        """The deployed app (topology and emulation, as deployed: a shipped app's name or a
        topology file's path), if any."""
        state = self.host.state()
        if not state.get("app"):
            return None
        deployed = load_app(state.get("app_source") or state["app"], state.get("emulation"))
        return replace(deployed, node_speed=self.config.node_speeds())

    def app_port(self) -> int:
        """The port the deployed app's services listen on (the emulator's by default)."""
        app = self.app()
        return app.port if app else self.config.emulator_port

    def managed_services(self) -> list[str]:
        return sorted(s.name for s in self.host.client().services.list(
            filters={"label": f"{deploy.MANAGED_LABEL}=true"}))

    def _tasks_alive(self, service: str) -> bool:
        for node in self.host.nodes:
            if self.host.client(node.name).containers.list(
                    filters={"label": f"com.docker.swarm.service.name={service}"}):
                return True
        return False

    # ------------------------------------------------------------------ place
    def place(self, service: str, generation: str, replicas: int | None = None,
              wait: bool = True) -> None:
        """Pin a managed service to a generation by its placement constraint (and replicas;
        default: as many as now).

        Waits until the tasks run there, answer, and are scraped by Prometheus.
        """
        self.config.generation(generation)
        if not self.host.nodes_of(generation):
            raise LabError(f"generation '{generation}' has no nodes in this lab")
        orchestrator = self.host.orchestrator()
        managed = orchestrator.read().services.get(service)
        if managed is None:
            raise LabError(f"no managed service {service} in the lab; deployed: "
                           f"{', '.join(self.managed_services()) or 'none'}")
        count = replicas if replicas is not None else (
            managed.placement.replicas if managed.placement else 1)
        wanted = {service: ServicePlacement(generation, count)}
        self.refuse_overcommit(self.budget(wanted),
                               f"placing {service} on '{generation}' with {count} replica(s)")
        slots = self.config.slot_cpus()
        if not wait:
            apply_placement(orchestrator, wanted, slots)
            return
        place(orchestrator, wanted, self.host.clock, self.config.timeout_s,
              checks=(self._converged_check([service]), self._scraped_check([service])),
              log=self.host.log, replica_cpus=slots)

    # ------------------------------------------------------------------ slots
    def budget(self, changed: dict[str, ServicePlacement] | None = None) -> SlotBudget:
        """The slots the managed services hold now (with ``changed`` applied) against the
        host's cores (``LabConfig.slot_budget``)."""
        cluster = self.host.orchestrator().read()
        held = {name: (m.placement.generation, m.placement.replicas)
                for name, m in cluster.services.items() if m.placement is not None}
        held.update({name: (p.generation, p.replicas) for name, p in (changed or {}).items()})
        return self.config.slot_budget(host_cpus(), held)

    @staticmethod
    def refuse_overcommit(budget: SlotBudget, what: str) -> None:
        """LabError when ``budget`` is overcommitted: the figure and the fixes."""
        if budget.overcommitted:
            raise LabError(f"{what} would overcommit the lab's slot budget: {budget.text()}; "
                           "fewer replicas, or a lab with smaller slots (`lab up "
                           "--slot-cpus`) or less kept for the system (`--kept-cpus`)")

    def tasks(self, service: str) -> list[dict[str, str]]:
        """Live tasks of a service: node, generation, state, desired state, address."""
        mgr = self.host.client()
        return swarm.task_view(mgr.services.get(service), swarm.node_names(mgr))

    def containers_on(self, node: str) -> dict[str, str]:
        """Service name -> container status, as the node's own engine reports them."""
        found = {}
        for container in self.host.client(node).containers.list(
                filters={"label": "com.docker.swarm.service.name"}):
            found[container.labels["com.docker.swarm.service.name"]] = container.status
        return found

    # ------------------------------------------------------------------ readiness
    def probe(self, services: Iterable[str]) -> dict[str, dict[str, Any]]:
        """/healthz of every task of the services, through the gateway (on the overlay)."""
        names = ",".join(services)
        url = self.host.frontend_url
        try:
            reply = requests.get(f"{url}{PROBE_PATH}", params={"services": names}, timeout=15)
            reply.raise_for_status()
            return reply.json()
        except (requests.RequestException, ValueError) as exc:
            raise NotYet(f"gateway at {url} not answering: {type(exc).__name__}") from exc

    def wait_converged(self, services: Iterable[str] | None = None,
                       timeout_s: float | None = None, resumes: int = 2) -> list[str]:
        """Wait until the services (default: all of the app and the gateway) run exactly
        their replicas where their constraints say, and every task answers with the
        deployed app's document.

        A rolling update that Swarm paused (a new task failed or ended early, which a busy
        host can cause) is resumed by a forced update up to ``resumes`` times per service,
        then is an error. Returns the services it resumed.
        """
        names = list(services) if services is not None else [*self.managed_services(),
                                                              GATEWAY_NAME]
        orchestrator = self.host.orchestrator()
        cluster = orchestrator.read()
        wanted = {n: cluster.services[n].placement for n in names
                  if n in cluster.services and cluster.services[n].placement is not None}
        return wait_placed(orchestrator, wanted, self.host.clock,
                           timeout_s or self.config.timeout_s,
                           checks=(self._converged_check(names),), resumes=resumes,
                           log=self.host.log)

    def _converged_check(self, names: list[str]) -> Check:
        """The lab's check that ``names`` converged: no old task left, the gateway serves
        the deployed app, every task answers by DNS with the deployed app's document."""
        spec_id = self.host.state().get("spec_id")

        def check(_cluster: object) -> str:
            mgr = self.host.client()
            nodes = swarm.node_names(mgr)
            problems = []
            replicas = {}
            for name in names:
                try:
                    service = mgr.services.get(name)
                except docker.errors.NotFound as exc:
                    raise LabError(f"no service {name} in the lab") from exc
                replicas[name] = swarm.replicas_of(service.attrs["Spec"])
                problem = swarm.convergence_problem(service, nodes)
                if problem:
                    problems.append(problem)
            if problems:
                return summary(problems)
            health = self._gateway_health()
            if GATEWAY_NAME in names and (not health or health.get("spec") != spec_id):
                return f"gateway at {self.host.frontend_url} not serving the deployed app yet"
            try:
                answers = self.probe(n for n in names if n != GATEWAY_NAME)
            except NotYet as exc:
                return str(exc)
            for name, tasks in answers.items():
                good = [a for a, h in tasks.items()
                        if isinstance(h, dict) and h.get("service") == name
                        and h.get("spec") == spec_id]
                if len(good) != replicas[name] or len(tasks) != replicas[name]:
                    problems.append(f"{name}: {len(good)}/{replicas[name]} tasks answer by DNS "
                                    f"({len(tasks)} resolved)")
            return summary(problems)

        return check

    def _gateway_health(self) -> dict[str, Any] | None:
        try:
            reply = requests.get(f"{self.host.frontend_url}/healthz", timeout=5)
            return reply.json() if reply.status_code == 200 else None
        except (requests.RequestException, ValueError):
            return None

    def wait_scraped(self, services: Iterable[str] | None = None,
                     timeout_s: float | None = None) -> None:
        """Wait until Prometheus scrapes exactly the live tasks of the services, all up."""
        names = list(services) if services is not None else self.managed_services()
        check = self._scraped_check(names)

        def scraped() -> bool:
            problem = check(None)
            if problem:
                raise NotYet(problem)
            return True

        poll(scraped, timeout_s or self.config.timeout_s, "Prometheus to scrape every task",
             clock=self.host.clock)

    def _scraped_check(self, services: list[str]) -> Callable[[object], str]:
        """'' when Prometheus scrapes exactly the live tasks of ``services``, all up."""
        names = [n for n in services if n != GATEWAY_NAME]
        prom = self.host.prometheus
        port = self.app_port()

        def check(_cluster: object) -> str:
            try:
                answers = self.probe(names)
            except NotYet as exc:
                return str(exc)
            targets = prom.targets_up(SERVICE_JOB, SERVICE_LABEL)
            problems = []
            for name in names:
                expected = {f"{address}:{port}" for address in answers.get(name, {})}
                seen = targets.get(name, {})
                if set(seen) != expected or not all(seen.values()):
                    problems.append(f"{name}: Prometheus has {sorted(seen)} "
                                    f"(up: {sum(seen.values())}), tasks are {sorted(expected)}")
            return summary(problems)

        return check
