"""How the daemon builds its adapters from a config: one place, so that `run`, `run --check`
and a SIGHUP reload build the same clients (and tests swap in fakes from ecoscale/testing.py).
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from ecoscale.config import DaemonConfig, TargetConfig
from ecoscale.ports import CarbonSource, Metrics, MetricsSource, Orchestrator


class Adapters:
    """Builds the real clients: Prometheus over HTTP, the orchestrator the config's
    ``target`` names (adapters/targets.py), carbon from a trace or a live API."""

    def prometheus(self, config: DaemonConfig) -> Any:
        """The instant-query client (``query(promql) -> [(labels, time s, value)]``)."""
        from ecoscale.adapters.prometheus import PrometheusClient

        return PrometheusClient(config.prometheus.url, config.prometheus.timeout_s)

    def metrics(self, config: DaemonConfig) -> MetricsSource:
        from ecoscale.adapters.prometheus import PromQLMetrics

        source = PromQLMetrics(config.prometheus, client=self.prometheus(config))
        return TopologyNamed(source, config.target) if config.target.adopts else source

    def orchestrator(self, config: DaemonConfig) -> Orchestrator:
        from ecoscale.adapters.targets import build_target

        return build_target(config.target, config.labels, config.source or "the config")

    def carbon(self, config: DaemonConfig, started_at_s: float) -> CarbonSource:
        from ecoscale.adapters.carbon import carbon_source

        return carbon_source(config.carbon, started_at_s)


class TopologyNamed:
    """A MetricsSource whose per-service utilisation may name services by their Swarm name
    (cAdvisor's ``container_label_com_docker_swarm_service_name``): the target's mapping
    renames them to the topology's (``socialnetwork_user-service`` -> ``user-service``)."""

    def __init__(self, inner: MetricsSource, target: TargetConfig):
        self.inner = inner
        self.target = target

    def read(self, epoch_s: float) -> Metrics:
        metrics = self.inner.read(epoch_s)
        renamed = {self.target.service_name(name) or name: value
                   for name, value in metrics.service_utilisation.items()}
        return replace(metrics, service_utilisation=renamed)


CLIENT_SETTINGS: dict[str, tuple[str, ...]] = {
    "metrics": ("prometheus", "target.stack", "target.services"),
    "orchestrator": ("target", "labels"),
    "carbon": ("carbon",),
}
"""Which config settings each client is built from: a reload that changes one of them
rebuilds that client (a dotted name is a setting of a section: the metrics rename services
by the target's mapping)."""

RESTART_SETTINGS = ("listen_address", "listen_port")
"""Settings a reload cannot apply (the HTTP server is bound once): changing them needs a
restart, and a reload that changes them is refused."""


def changed_clients(old: DaemonConfig, new: DaemonConfig) -> list[str]:
    """The clients (keys of CLIENT_SETTINGS) whose settings differ between two configs."""
    return [client for client, names in CLIENT_SETTINGS.items()
            if any(_setting(old, n) != _setting(new, n) for n in names)]


def _setting(config: DaemonConfig, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def restart_only_changes(old: DaemonConfig, new: DaemonConfig) -> list[str]:
    """Settings that changed but take effect only at a restart."""
    known = {f.name for f in fields(DaemonConfig)}
    return [n for n in RESTART_SETTINGS if n in known and getattr(old, n) != getattr(new, n)]
