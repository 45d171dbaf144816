"""How the daemon builds its adapters from a config: one place, so that `run`, `run --check`
and a SIGHUP reload build the same clients (and tests swap in fakes from ecoscale/testing.py).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from ecoscale.config import DaemonConfig
from ecoscale.ports import CarbonSource, MetricsSource, Orchestrator


class Adapters:
    """Builds the real clients: Prometheus over HTTP, the orchestrator the config's
    ``target`` names (adapters/targets.py), carbon from a trace or a live API."""

    def prometheus(self, config: DaemonConfig) -> Any:
        """The instant-query client (``query(promql) -> [(labels, time s, value)]``)."""
        from ecoscale.adapters.prometheus import PrometheusClient

        return PrometheusClient(config.prometheus.url, config.prometheus.timeout_s)

    def metrics(self, config: DaemonConfig) -> MetricsSource:
        from ecoscale.adapters.prometheus import PromQLMetrics

        return PromQLMetrics(config.prometheus, client=self.prometheus(config))

    def orchestrator(self, config: DaemonConfig) -> Orchestrator:
        from ecoscale.adapters.targets import build_target

        return build_target(config.target, config.labels, config.source or "the config")

    def carbon(self, config: DaemonConfig, started_at_s: float) -> CarbonSource:
        from ecoscale.adapters.carbon import carbon_source

        return carbon_source(config.carbon, started_at_s)


CLIENT_SETTINGS: dict[str, tuple[str, ...]] = {
    "metrics": ("prometheus",),
    "orchestrator": ("target", "labels"),
    "carbon": ("carbon",),
}
"""Which config settings each client is built from: a reload that changes one of them
rebuilds that client."""

RESTART_SETTINGS = ("listen_address", "listen_port")
"""Settings a reload cannot apply (the HTTP server is bound once): changing them needs a
restart, and a reload that changes them is refused."""


def changed_clients(old: DaemonConfig, new: DaemonConfig) -> list[str]:
    """The clients (keys of CLIENT_SETTINGS) whose settings differ between two configs."""
    return [client for client, names in CLIENT_SETTINGS.items()
            if any(getattr(old, n) != getattr(new, n) for n in names)]


def restart_only_changes(old: DaemonConfig, new: DaemonConfig) -> list[str]:
    """Settings that changed but take effect only at a restart."""
    known = {f.name for f in fields(DaemonConfig)}
    return [n for n in RESTART_SETTINGS if n in known and getattr(old, n) != getattr(new, n)]
