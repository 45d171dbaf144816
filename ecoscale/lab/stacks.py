"""Stacks on the lab that ecoscale did not deploy: ``docker stack deploy -c FILE STACK``.

An operator's compose file (deploy/examples/socialnetwork-swarm.yml) runs the lab's emulator
image as its services, names the lab's stack network as an external network, and carries no
ecoscale labels. ``LabStacks.serve`` prepares the lab for such a stack of a shipped app:

- the app document its services read (``ECOSCALE_APP_DOCUMENT``, a compose ``configs:`` file),
  with the lab's node speeds, written under the lab's state folder;
- the values that ``docker stack deploy`` substitutes into the file (``stack_env``): no path
  of this machine is in the compose file;
- an entry point on the host (``Lab.stack_url``): a forwarder pinned to the manager that
  reaches the front end's tasks by Swarm DNS (``tasks.<stack>_<front end>``), since the lab
  has no routing mesh for the stack's own published port;
- Prometheus scrapes every task of the stack's services (job ``ecoscale-stacks``) and
  re-exposes them as OpenTelemetry spanmetrics and cAdvisor series (``ecoscale.lab.spanmetrics``).

The served stacks are recorded in the lab's state file; ``Lab.up`` on a running lab removes
the ones an interrupted run left (``remove``), as ``docker stack rm`` would.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
from docker.types import EndpointSpec, RestartPolicy, ServiceMode, UpdateConfig

from ecoscale.adapters.swarm import SWARM_UPDATE_DEFAULTS
from ecoscale.config import TargetConfig
from ecoscale.emulator.service import GATEWAY_NAME, PROBE_PATH
from ecoscale.lab import deploy, images, swarm
from ecoscale.lab.apps import load_app
from ecoscale.lab.lab_apps import LabHost
from ecoscale.lab.prometheus import SERVICE_LABEL
from ecoscale.lab.spanmetrics import STACK_JOB
from ecoscale.lab.system import LabError, NotYet, poll, require_root

STACK_GATEWAY = "ecoscale-stack-gateway"
NAMESPACE_LABEL = "com.docker.stack.namespace"
"""The label `docker stack deploy` puts on every service, network and config of a stack."""
STATE_KEY = "stacks"


def swarm_name(stack: str, service: str) -> str:
    """The Swarm service that `docker stack deploy` makes of a compose service (the target's
    stack rule, ``TargetConfig.target_name``)."""
    return TargetConfig(stack=stack).target_name(service)


@dataclass(frozen=True)
class ServedStack:
    """What a served stack needs to be deployed and driven."""

    stack: str
    app: str
    frontend: str
    services: tuple[str, ...]
    """The topology's service names (each Swarm service is ``<stack>_<name>``)."""
    document: Path
    """The app document the stack's services read (``ECOSCALE_APP_DOCUMENT``)."""
    env: dict[str, str]
    """The variables ``docker stack deploy`` substitutes into the compose file."""
    url: str
    """The host's entry point to the stack's front end."""

    @property
    def swarm_services(self) -> tuple[str, ...]:
        return tuple(swarm_name(self.stack, s) for s in self.services)


def stack_env(docker_host: str, image: str, document: Path, network: str,
              frontend_port: int | None = None) -> dict[str, str]:
    """The environment of `docker stack deploy` for the lab's stack (pure)."""
    env = {"DOCKER_HOST": docker_host, "ECOSCALE_IMAGE": image,
           "ECOSCALE_APP_DOCUMENT": str(document), "ECOSCALE_STACK_NETWORK": network}
    if frontend_port is not None:
        env["SOCIALNETWORK_PORT"] = str(frontend_port)
    return env


def gateway_service(host: LabHost, stack: str, frontend: str, port: int, image: str,
                    app_config: Any) -> dict[str, Any]:
    """docker-py arguments of the stack's entry point: the emulator's gateway, pinned to the
    manager and published on the host, forwarding to every task of the front end."""
    config = host.config
    command = ["/usr/bin/python3", "-s", "-m", "ecoscale.emulator", "--spec", deploy.SPEC_TARGET,
               "--service", GATEWAY_NAME, "--gateway",
               "--peer", f"{frontend}=tasks.{swarm_name(stack, frontend)}:{port}"]
    return {
        "image": image, "command": command, "name": STACK_GATEWAY,
        "labels": {deploy.LAB_LABEL: "stack-gateway", NAMESPACE_LABEL + ".served": stack},
        "constraints": ["node.role==manager"],
        "mode": ServiceMode("replicated", replicas=1),
        "networks": [config.stack_network],
        "endpoint_spec": EndpointSpec(mode="dnsrr", ports={
            config.stack_gateway_port: (port, "tcp", "host")}),
        "update_config": UpdateConfig(parallelism=1, order="stop-first"),
        "restart_policy": RestartPolicy(condition="any", delay=deploy.SECOND_NS),
        "mounts": deploy.runtime_mounts(),
        "configs": [app_config],
        "stop_grace_period": 10 * deploy.SECOND_NS,
    }


class LabStacks:
    """Serve, wait for and remove stacks on the lab ``host``."""

    def __init__(self, host: LabHost):
        self.host = host

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.host.config.stack_gateway_port}"

    def served(self) -> dict[str, dict[str, Any]]:
        """Stack name -> {app, frontend, services, port} of the stacks served now."""
        return dict(self.host.state().get(STATE_KEY) or {})

    def stack_services(self) -> tuple[list[str], int | None]:
        """The Swarm services of every served stack, and the port they listen on."""
        names, port = [], None
        for stack, info in self.served().items():
            names += [swarm_name(stack, s) for s in info["services"]]
            port = info["port"]
        return names, port

    def serve(self, stack: str, app: str, emulation: str | Path | None = None,
              frontend_port: int | None = None) -> ServedStack:
        """Prepare the lab for `docker stack deploy` of ``app`` as ``stack`` (one stack at a
        time: serving another replaces the entry point)."""
        require_root("serve a stack")
        host = self.host
        host.require_up()
        lab_app = replace(load_app(app, emulation), node_speed=host.config.node_speeds())
        folder = host.config.state_dir / STATE_KEY / stack
        folder.mkdir(parents=True, exist_ok=True)
        document = folder / "app.json"
        document.write_bytes(lab_app.document_bytes())
        mgr = host.client()
        image = images.ensure_image(mgr, [host.client(n.name) for n in host.nodes[1:]])
        app_config = deploy.ensure_app_config(mgr, lab_app)
        frontend = lab_app.topology.frontend
        for old in mgr.services.list(filters={"name": STACK_GATEWAY}):
            if old.name == STACK_GATEWAY:
                old.remove()
        poll(lambda: not self._containers(STACK_GATEWAY), host.config.timeout_s,
             "the previous stack entry point to stop", clock=host.clock)
        mgr.services.create(**gateway_service(host, stack, frontend, lab_app.port, image,
                                              app_config))
        host.save(**{STATE_KEY: {stack: {"app": lab_app.name, "frontend": frontend,
                                         "services": list(lab_app.topology.services),
                                         "port": lab_app.port}}})
        self._reload_prometheus()
        env = stack_env(host.docker_host, image, document, host.config.stack_network,
                        frontend_port)
        host.log(f"stack {stack} ({lab_app.name}) served: entry point {self.url}")
        return ServedStack(stack, lab_app.name, frontend, tuple(lab_app.topology.services),
                           document, env, self.url)

    def _reload_prometheus(self) -> None:
        app = self.host.state().get("app")
        services = list(self._app_services()) if app else []
        self.host.write_prometheus_config(services, self.host.config.emulator_port)
        self.host.prometheus.reload()

    def _app_services(self) -> list[str]:
        return sorted(s.name for s in self.host.client().services.list(
            filters={"label": f"{deploy.MANAGED_LABEL}=true"}))

    def _containers(self, service: str) -> bool:
        for node in self.host.nodes:
            if self.host.client(node.name).containers.list(
                    all=False, filters={"label": f"com.docker.swarm.service.name={service}"}):
                return True
        return False

    # ------------------------------------------------------------------ readiness
    def problems(self, stack: str) -> list[str]:
        """Why the served ``stack`` is not ready yet ([] when it is): every service runs its
        replicas and no old task, every task answers through the entry point with the right
        service name, and Prometheus scrapes exactly those tasks, all up."""
        info = self.served().get(stack)
        if info is None:
            raise LabError(f"stack {stack} is not served by the lab; call serve first")
        mgr = self.host.client()
        nodes = swarm.node_names(mgr)
        names = {swarm_name(stack, s): s for s in info["services"]}
        problems = []
        for name in names:
            try:
                service = mgr.services.get(name)
            except docker.errors.NotFound:
                problems.append(f"{name}: no such Swarm service (is the stack deployed?)")
                continue
            problem = swarm.convergence_problem(service, nodes)
            if problem:
                problems.append(problem)
        if problems:
            return problems
        try:
            reply = requests.get(f"{self.url}{PROBE_PATH}",
                                 params={"services": ",".join(names)}, timeout=15)
            answers = reply.json()
        except (requests.RequestException, ValueError) as exc:
            return [f"entry point {self.url} not answering: {type(exc).__name__}"]
        targets = self.host.prometheus.targets_up(STACK_JOB, SERVICE_LABEL)
        for name, service in names.items():
            tasks = answers.get(name) or {}
            replicas = swarm.replicas_of(mgr.services.get(name).attrs["Spec"]) or 0
            good = [a for a, h in tasks.items() if isinstance(h, dict)
                    and h.get("service") == service]
            if len(good) != replicas or len(tasks) != replicas:
                problems.append(f"{name}: {len(good)}/{replicas} tasks answer by DNS")
                continue
            expected = {f"{address}:{info['port']}" for address in tasks}
            seen = targets.get(name, {})
            if set(seen) != expected or not all(seen.values()):
                problems.append(f"{name}: Prometheus has {sorted(seen)}, tasks are "
                                f"{sorted(expected)}")
        return problems

    def wait(self, stack: str, timeout_s: float | None = None) -> float:
        """Wait until ``stack`` is ready (``problems``); returns the seconds it took."""
        began = self.host.clock.now()

        def ready() -> bool:
            problems = self.problems(stack)
            if problems:
                shown = "; ".join(problems[:3])
                raise NotYet(shown + (f" (+{len(problems) - 3} more)" if len(problems) > 3
                                      else ""))
            return True

        poll(ready, timeout_s or self.host.config.timeout_s, f"stack {stack} to be ready",
             clock=self.host.clock)
        return round(self.host.clock.now() - began, 1)

    # ------------------------------------------------------------------ removal
    def remove(self, stack: str) -> list[str]:
        """Remove ``stack`` as `docker stack rm` does (its services, then its configs and
        networks once their tasks are gone), its entry point and its scrape job; returns
        the Swarm services removed."""
        host = self.host
        mgr = host.client()
        label = {"label": f"{NAMESPACE_LABEL}={stack}"}
        services = list(mgr.services.list(filters=label))
        for service in services:
            service.remove()
        gone = [s.name for s in services]
        for gateway in mgr.services.list(filters={"name": STACK_GATEWAY}):
            if gateway.name == STACK_GATEWAY and gateway.attrs["Spec"].get("Labels", {}).get(
                    NAMESPACE_LABEL + ".served") == stack:
                gateway.remove()
                gone.append(STACK_GATEWAY)
        poll(lambda: not any(self._containers(name) for name in gone), host.config.timeout_s,
             f"the tasks of stack {stack} to stop", clock=host.clock)
        for config in mgr.configs.list(filters=label):
            config.remove()
        for network in mgr.networks.list(filters=label):
            network.remove()
        served = self.served()
        if served.pop(stack, None) is not None:
            host.save(**{STATE_KEY: served})
            self._reload_prometheus()
        if gone:
            host.log(f"stack {stack} removed ({len(gone)} services)")
        return gone


MISSING = "<absent>"


def spec_diff(before: Any, after: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Every leaf that differs between two service specs: (dotted path, before, after), a
    missing key as MISSING (a missing mapping counts as an empty one); lists are compared
    whole, but placement constraints item by item (``...Constraints[-]`` removed,
    ``...Constraints[+]`` added). Pure."""
    if isinstance(before, dict) or isinstance(after, dict):
        old = before if isinstance(before, dict) else {} if before == MISSING else None
        new = after if isinstance(after, dict) else {} if after == MISSING else None
        if old is not None and new is not None:
            changes = []
            for key in sorted(set(old) | set(new), key=str):
                where = f"{path}.{key}" if path else str(key)
                changes += spec_diff(old.get(key, MISSING), new.get(key, MISSING), where)
            return changes
    if path.endswith("Placement.Constraints"):
        old_list = before if isinstance(before, list) else []
        new_list = after if isinstance(after, list) else []
        return ([(f"{path}[-]", c, MISSING) for c in old_list if c not in new_list]
                + [(f"{path}[+]", MISSING, c) for c in new_list if c not in old_list])
    return [] if before == after else [(path, before, after)]


def _allowed(where: str, old: Any, new: Any, generation_prefix: str) -> bool:
    """Whether one change is one an adopted service's move may make."""
    if where.endswith(("Placement.Constraints[+]", "Placement.Constraints[-]")):
        constraint = str(old if new == MISSING else new).replace(" ", "")
        return constraint.startswith(generation_prefix + "==")
    if where == "UpdateConfig.Order":
        return old in ("stop-first", MISSING) and new == "start-first"
    if where.startswith("UpdateConfig.") and old == MISSING:   # Swarm's default, written out
        key = where.removeprefix("UpdateConfig.")
        return key in SWARM_UPDATE_DEFAULTS and SWARM_UPDATE_DEFAULTS[key] == new
    return where in ("Mode.Replicated.Replicas", "TaskTemplate.ForceUpdate")


def unexpected_changes(before: dict[str, Any], after: dict[str, Any],
                       generation_label: str = "ecoscale.generation") -> list[str]:
    """What changed in a service spec beyond what an adopted service's move may change: the
    generation constraint, the replica count, the update order from stop-first to
    start-first (an absent update config written out as Swarm's defaults, start-first), and
    ``ForceUpdate`` (the counter of a resumed rolling update). Pure."""
    prefix = f"node.labels.{generation_label}"
    return [f"{where}: {old!r} -> {new!r}" for where, old, new in spec_diff(before, after)
            if not _allowed(where, old, new, prefix)]
