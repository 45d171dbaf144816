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

from ecoscale.lab.spanmetrics import RULES_FILE, STACK_JOB
from ecoscale.paths import deploy_dir

SERVICE_JOB = "ecoscale-services"
SERVICE_LABEL = "swarm_service"
"""The target label that carries the Swarm service name (relabelled from the DNS name)."""


def template_text() -> str:
    return (deploy_dir() / "lab" / "prometheus.yml.tmpl").read_text()


def _duration(seconds: float) -> str:
    return f"{int(round(seconds * 1000))}ms"


def _dns_job(job: str, comment: str, names: list[str], port: int,
             scrape_interval_s: float) -> str:
    """A scrape job finding every task of ``names`` by Swarm DNS, labelled SERVICE_LABEL."""
    listed = ", ".join(json.dumps(f"tasks.{name}") for name in names)
    return "\n".join([
        f"  # {comment}",
        f"  - job_name: {job}",
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


def render_config(template: str, services: Iterable[str], port: int,
                  scrape_interval_s: float, stack_services: Iterable[str] = (),
                  stack_port: int | None = None) -> str:
    """prometheus.yml for the given managed services and the Swarm services of served stacks
    (``stack_services``, e.g. ``socialnetwork_user-service``, listening on ``stack_port``,
    default ``port``), pure: no I/O.

    The scrape timeout is 80 % of the interval; DNS is refreshed as often as scraped, so a
    moved task is scraped at its new address within two intervals. The stacks' job feeds the
    recording rules of ``ecoscale.lab.spanmetrics`` (RULES_FILE beside this config).
    """
    names = sorted(set(services))
    if names:
        jobs = _dns_job(SERVICE_JOB, f"Every task of every managed service ({len(names)} "
                        "services).", names, port, scrape_interval_s)
    else:
        jobs = "  # No app deployed yet: `ecoscale lab deploy APP` adds its services here."
    stacked = sorted(set(stack_services))
    if stacked:
        jobs += "\n" + _dns_job(STACK_JOB, f"Every task of the served stacks ({len(stacked)} "
                                "services; `Lab.serve_stack`).", stacked,
                                stack_port or port, scrape_interval_s)
    return string.Template(template).substitute(
        scrape_interval=_duration(scrape_interval_s),
        scrape_timeout=_duration(0.8 * scrape_interval_s),
        refresh_interval=_duration(scrape_interval_s),
        port=port,
        service_jobs=jobs,
        rules_file=RULES_FILE,
    )
