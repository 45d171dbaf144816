"""Prometheus in the lab: its configuration (rendered from deploy/lab); the one client is
``ecoscale.adapters.prometheus.PrometheusClient``.

The managed services are found by Swarm DNS service discovery (``dns_sd_configs``,
``tasks.<service>``, type A): one target per task, on any node, relabelled with
``swarm_service``. The queries of the emulated services are in ``ecoscale.lab.queries``.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable

from ecoscale.paths import deploy_dir

SERVICE_JOB = "ecoscale-services"
GATEWAY_JOB = "ecoscale-gateway"
SERVICE_LABEL = "swarm_service"
"""The target label that carries the Swarm service name (relabelled from the DNS name)."""


def template_text() -> str:
    return (deploy_dir() / "lab" / "prometheus.yml.tmpl").read_text()


def _duration(seconds: float) -> str:
    return f"{int(round(seconds * 1000))}ms"


def render_config(template: str, services: Iterable[str], port: int,
                  scrape_interval_s: float) -> str:
    """prometheus.yml for the given managed services (pure: no I/O).

    The scrape timeout is 80 % of the interval; DNS is refreshed as often as scraped, so a
    moved task is scraped at its new address within two intervals.
    """
    names = sorted(set(services))
    if names:
        listed = ", ".join(json.dumps(f"tasks.{name}") for name in names)
        jobs = "\n".join([
            f"  # Every task of every managed service ({len(names)} services).",
            f"  - job_name: {SERVICE_JOB}",
            "    dns_sd_configs:",
            f"      - names: [{listed}]",
            "        type: A",
            f"        port: {port}",
            f"        refresh_interval: {_duration(scrape_interval_s)}",
            "    relabel_configs:",
            "      - source_labels: [__meta_dns_name]",
            "        regex: 'tasks\\.(.+)'",
            f"        target_label: {SERVICE_LABEL}",
        ])
    else:
        jobs = "  # No app deployed yet: `ecoscale lab deploy APP` adds its services here."
    return string.Template(template).substitute(
        scrape_interval=_duration(scrape_interval_s),
        scrape_timeout=_duration(0.8 * scrape_interval_s),
        refresh_interval=_duration(scrape_interval_s),
        port=port,
        service_jobs=jobs,
    )
