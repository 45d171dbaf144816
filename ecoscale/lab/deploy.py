"""Swarm service definitions of the lab: the app's services, the gateway, Prometheus.

Every container runs the lab image (the emulator's code on an empty base) with the host's
interpreter bind-mounted read-only (``images.HOST_RUNTIME``). The app's document reaches every
task as a Swarm config, so it is on any node without a shared folder.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import (
    ConfigReference,
    EndpointSpec,
    Mount,
    Resources,
    RestartPolicy,
    ServiceMode,
    UpdateConfig,
)

from ecoscale.emulator.service import GATEWAY_NAME
from ecoscale.lab.apps import LabApp
from ecoscale.lab.config import LabConfig
from ecoscale.lab.images import host_runtime_dirs
from ecoscale.lab.swarm import GENERATION_CONSTRAINT

PROMETHEUS_NAME = "ecoscale-prometheus"
SPEC_TARGET = "/etc/ecoscale/app.json"
PROMETHEUS_CONFIG_TARGET = "/etc/ecoscale-prometheus"
PROMETHEUS_PORT = 9090
MANAGED_LABEL = "ecoscale.managed"
SERVICE_LABEL = "ecoscale.service"
APP_LABEL = "ecoscale.app"
LAB_LABEL = "ecoscale.lab"
"""Role of a lab-owned object that is not a managed service: gateway, prometheus, app-spec."""
SPEC_LABEL = "ecoscale.spec"
"""Hash of what a service runs; a redeploy recreates only services whose hash changed."""
SECOND_NS = 1_000_000_000
NODE_ENV = "ECOSCALE_NODE={{.Node.Hostname}}"
"""Swarm fills in the node's host name: the emulator looks up that node's speed."""


def runtime_mounts() -> list[Mount]:
    return [Mount(target=p, source=p, type="bind", read_only=True) for p in host_runtime_dirs()]


def ensure_app_config(mgr: docker.DockerClient, app: LabApp) -> ConfigReference:
    """The app's document as a Swarm config (named by its hash, created once)."""
    name = f"ecoscale-{app.name}-{app.spec_id()}"
    existing = [c for c in mgr.configs.list(filters={"name": name}) if c.name == name]
    if existing:
        config = existing[0]
    else:
        config = mgr.configs.create(name=name, data=app.document_bytes(),
                                    labels={LAB_LABEL: "app-spec", APP_LABEL: app.name})
    return ConfigReference(config.id, name, filename=SPEC_TARGET, mode=0o444)


def remove_unused_configs(mgr: docker.DockerClient, keep: str) -> None:
    for config in mgr.configs.list(filters={"label": f"{LAB_LABEL}=app-spec"}):
        if config.name != keep:
            # Still referenced by a task that is stopping: removed by the next deploy.
            with contextlib.suppress(docker.errors.APIError):
                config.remove()


def spec_hash(*parts: object) -> str:
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:12]


def _emulator_command(service: str, gateway: bool = False) -> list[str]:
    command = ["/usr/bin/python3", "-s", "-m", "ecoscale.emulator", "--spec", SPEC_TARGET,
               "--service", service]
    return [*command, "--gateway"] if gateway else command


def slot_resources(cpus: float | None) -> Resources | None:
    """A task's Swarm CPU limit and reservation of one slot (None: no limit)."""
    if cpus is None:
        return None
    nano = int(round(cpus * SECOND_NS))
    return Resources(cpu_limit=nano, cpu_reservation=nano)


def app_service(config: LabConfig, app: LabApp, service: str, image: str,
                app_config: ConfigReference) -> dict[str, Any]:
    """docker-py ``services.create`` arguments of one microservice of the app: one replica on
    the first generation, in one slot of it (``GenerationSpec.slot_cpus``)."""
    slot = config.generation(config.manager_generation).slot_cpus
    return {
        "image": image,
        "command": _emulator_command(service),
        "name": service,
        "labels": {MANAGED_LABEL: "true", SERVICE_LABEL: service, APP_LABEL: app.name,
                   SPEC_LABEL: spec_hash(image, app.spec_id(), service, slot)},
        "container_labels": {SERVICE_LABEL: service, APP_LABEL: app.name},
        "constraints": [f"{GENERATION_CONSTRAINT}=={config.manager_generation}"],
        "mode": ServiceMode("replicated", replicas=1),
        "networks": [config.network],
        "endpoint_spec": EndpointSpec(mode="dnsrr"),
        "update_config": UpdateConfig(parallelism=1, order="start-first",
                                      failure_action="pause", monitor=2 * SECOND_NS),
        "restart_policy": RestartPolicy(condition="any", delay=SECOND_NS),
        "mounts": runtime_mounts(),
        "configs": [app_config],
        "env": [NODE_ENV],
        "resources": slot_resources(slot),
        "stop_grace_period": 10 * SECOND_NS,
    }


def gateway_service(config: LabConfig, app: LabApp, image: str,
                    app_config: ConfigReference) -> dict[str, Any]:
    """The host-reachable entry point: forwards to the app's front end by Swarm DNS.

    Pinned to the manager and published there (mode=host, no routing mesh here), so that
    ``Lab.frontend_url`` keeps working wherever the front end itself runs. It adds one HTTP
    hop (~0.3 ms on the lab machine) to client-side latency, not to the front end's own
    server-side histogram.
    """
    return {
        "image": image,
        "command": _emulator_command(GATEWAY_NAME, gateway=True),
        "name": GATEWAY_NAME,
        "labels": {LAB_LABEL: "gateway", APP_LABEL: app.name,
                   SPEC_LABEL: spec_hash(image, app.spec_id(), GATEWAY_NAME,
                                         config.gateway_port)},
        "constraints": ["node.role==manager"],
        "mode": ServiceMode("replicated", replicas=1),
        "networks": [config.network],
        "endpoint_spec": EndpointSpec(mode="dnsrr", ports={
            config.gateway_port: (app.port, "tcp", "host")}),
        "update_config": UpdateConfig(parallelism=1, order="stop-first"),
        "restart_policy": RestartPolicy(condition="any", delay=SECOND_NS),
        "mounts": runtime_mounts(),
        "configs": [app_config],
        "stop_grace_period": 10 * SECOND_NS,
    }


def prometheus_dirs(config: LabConfig) -> tuple[Path, Path]:
    """(config folder, data folder) of the lab's Prometheus under the state folder."""
    root = config.state_dir / "prometheus"
    return root / "config", root / "data"


def prometheus_service(config: LabConfig, image: str) -> dict[str, Any]:
    """Prometheus: the host's binary in the lab image, on both overlays (the lab's app's and
    the served stacks'), pinned to the manager."""
    config_dir, data_dir = prometheus_dirs(config)
    return {
        "image": image,
        "command": ["/usr/bin/prometheus",
                    f"--config.file={PROMETHEUS_CONFIG_TARGET}/prometheus.yml",
                    "--storage.tsdb.path=/prometheus",
                    "--storage.tsdb.retention.time=2d",
                    f"--web.listen-address=0.0.0.0:{PROMETHEUS_PORT}",
                    "--web.enable-lifecycle"],
        "name": PROMETHEUS_NAME,
        "labels": {LAB_LABEL: "prometheus"},
        "constraints": ["node.role==manager"],
        "mode": ServiceMode("replicated", replicas=1),
        "networks": [config.network, config.stack_network],   # the lab's app, served stacks
        "endpoint_spec": EndpointSpec(mode="dnsrr", ports={
            config.prometheus_port: (PROMETHEUS_PORT, "tcp", "host")}),
        "update_config": UpdateConfig(parallelism=1, order="stop-first"),
        "restart_policy": RestartPolicy(condition="any", delay=SECOND_NS),
        "mounts": [*runtime_mounts(),
                   Mount(target=PROMETHEUS_CONFIG_TARGET, source=str(config_dir), type="bind",
                         read_only=True),
                   Mount(target="/prometheus", source=str(data_dir), type="bind")],
        "stop_grace_period": 10 * SECOND_NS,
    }
