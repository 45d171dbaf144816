"""Prometheus in the lab: its configuration (rendered from deploy/lab); the one client is
``ecoscale.adapters.prometheus.PrometheusClient``.

The managed services are found by Swarm DNS service discovery (``dns_sd_configs``,
``tasks.<service>``, type A): one target per task, on any node, relabelled with
``swarm_service``. Useful queries (also in the README):

- front-end QPS: ``sum(rate(ecoscale_emulator_requests_total{service="<frontend>"}[30s]))``
- end-to-end p99 (ms): ``1000 * histogram_quantile(0.99, sum by (le)
  (rate(ecoscale_emulator_request_duration_seconds_bucket{service="<frontend>"}[30s])))``
- per-service p99 (ms): the same, ``sum by (service, le)`` without the service filter
- per-service CPU (cores): ``sum by (service) (rate(ecoscale_emulator_process_cpu_seconds_total
  [30s]))`` — one replica is one event loop, so 1.0 is a saturated replica.

The functions at the end build exactly these (the README shows them with a 30 s window).
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


def p99_ms_query(service: str, window_s: float, endpoint: str | None = None,
                 quantile: float = 0.99) -> str:
    """PromQL: a service's p-quantile latency (ms) over the last ``window_s``."""
    selector = f'service="{service}"' + (f',endpoint="{endpoint}"' if endpoint else "")
    return (f"1000 * histogram_quantile({quantile}, sum by (le) (rate("
            f"ecoscale_emulator_request_duration_seconds_bucket{{{selector}}}"
            f"[{int(round(window_s))}s])))")


def per_service_p99_ms_query(window_s: float, quantile: float = 0.99) -> str:
    """PromQL: every service's p-quantile latency (ms), one series per ``service``."""
    return (f"1000 * histogram_quantile({quantile}, sum by (service, le) (rate("
            f"ecoscale_emulator_request_duration_seconds_bucket[{int(round(window_s))}s])))")


def qps_query(service: str, window_s: float) -> str:
    """PromQL: requests per second served by a service (all its tasks)."""
    return (f'sum(rate(ecoscale_emulator_requests_total{{service="{service}"}}'
            f"[{int(round(window_s))}s]))")


def cpu_query(window_s: float) -> str:
    """PromQL: CPU cores used per service (process CPU of all its tasks)."""
    return (f"sum by (service) (rate(ecoscale_emulator_process_cpu_seconds_total"
            f"[{int(round(window_s))}s]))")
