"""Prometheus in the lab: its configuration (rendered from deploy/lab), and a query client.

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
import math
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from ecoscale.lab.system import LabError
from ecoscale.paths import deploy_dir

SERVICE_JOB = "ecoscale-services"
GATEWAY_JOB = "ecoscale-gateway"


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
            "        target_label: swarm_service",
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


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float


class PrometheusClient:
    """Instant queries against the lab's Prometheus (HTTP API v1)."""

    def __init__(self, url: str, timeout_s: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        try:
            reply = self._session.get(f"{self.url}{path}", params=params, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise LabError(f"Prometheus at {self.url} did not answer: {exc}") from exc
        if reply.status_code != 200:
            raise LabError(f"Prometheus {path} answered {reply.status_code}: {reply.text[:300]}")
        body = reply.json()
        if body.get("status") != "success":
            raise LabError(f"Prometheus {path}: {body.get('error', body)}")
        return body["data"]

    def ready(self) -> bool:
        try:
            return self._session.get(f"{self.url}/-/ready", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def reload(self) -> None:
        try:
            reply = self._session.post(f"{self.url}/-/reload", timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise LabError(f"Prometheus at {self.url} did not reload: {exc}") from exc
        if reply.status_code != 200:
            raise LabError(f"Prometheus rejected its new config: {reply.text[:500]}")

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        """An instant vector (``at``: unix time in s, default now)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params)
        if data["resultType"] == "scalar":
            return [Sample({}, float(data["result"][1]))]
        return [Sample(item["metric"], float(item["value"][1])) for item in data["result"]]

    def value(self, expr: str, at: float | None = None) -> float | None:
        """The single value of a query; None when empty or NaN (no data is not zero)."""
        samples = self.query(expr, at)
        if not samples or math.isnan(samples[0].value):
            return None
        return samples[0].value

    def by_label(self, expr: str, label: str, at: float | None = None) -> dict[str, float]:
        """{label value: value} of a query, leaving out NaN."""
        return {s.labels.get(label, ""): s.value for s in self.query(expr, at)
                if not math.isnan(s.value)}

    def targets_up(self, job: str = SERVICE_JOB) -> dict[str, dict[str, bool]]:
        """{swarm_service: {instance: up}} of the active targets of a job."""
        data = self._get("/api/v1/targets", {"state": "active"})
        found: dict[str, dict[str, bool]] = {}
        for target in data.get("activeTargets", []):
            labels = target.get("labels", {})
            if labels.get("job") != job:
                continue
            service = labels.get("swarm_service") or target.get("discoveredLabels", {}).get(
                "__meta_dns_name", "").removeprefix("tasks.")
            found.setdefault(service, {})[labels.get("instance", "")] = \
                target.get("health") == "up"
        return found


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
