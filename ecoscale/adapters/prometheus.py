"""Prometheus: instant PromQL queries named by the configuration (the user's metric names).

Every value is checked for freshness: a sample older than ``stale_after_s`` (by the
sample's own timestamp), NaN, +-Inf or an empty result is "no data" (NaN), never a number
that could pass for "SLO met".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import requests

from ecoscale.config import PrometheusConfig
from ecoscale.ports import Metrics, SourceUnavailable

Sample = tuple[dict[str, str], float, float]
"""(labels, sample time s, value) of one series of an instant query."""


class PrometheusClient:
    """The one Prometheus client: the HTTP API's instant query (GET /api/v1/query), the
    active targets, and the readiness and reload endpoints (the lab's Prometheus).

    Every failure is a ``SourceUnavailable`` that names the URL."""

    def __init__(self, url: str, timeout_s: float = 5.0, session: requests.Session | None = None):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = session or requests.Session()

    def _get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        try:
            reply = self.session.get(f"{self.url}{path}", params=params,
                                     timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise SourceUnavailable(f"prometheus at {self.url}: {exc.__class__.__name__}: "
                                    f"{exc}") from None
        try:
            return reply.json()
        except ValueError:
            raise SourceUnavailable(f"prometheus at {self.url}: HTTP {reply.status_code}, "
                                    "not JSON") from None

    def query(self, promql: str, at_s: float | None = None) -> list[Sample]:
        """[(labels, sample time s, value)] for a vector or scalar result (``at_s``: unix
        time in s, default now)."""
        params: dict[str, Any] = {"query": promql}
        if at_s is not None:
            params["time"] = f"{at_s:.3f}"
        return parse_reply(self._get_json("/api/v1/query", params), promql)

    def value(self, promql: str, at_s: float | None = None) -> float | None:
        """The single value of a query; None when empty or NaN (no data is not zero)."""
        samples = self.query(promql, at_s)
        if not samples or math.isnan(samples[0][2]):
            return None
        return samples[0][2]

    def by_label(self, promql: str, label: str, at_s: float | None = None) -> dict[str, float]:
        """{value of ``label``: value} of a query, leaving out NaN."""
        return {labels.get(label, ""): value for labels, _, value in self.query(promql, at_s)
                if not math.isnan(value)}

    def targets_up(self, job: str, service_label: str) -> dict[str, dict[str, bool]]:
        """{service: {instance: up}} of the active targets of ``job``, the service named by
        the target label ``service_label`` (else the DNS name without ``tasks.``)."""
        body = self._get_json("/api/v1/targets", {"state": "active"})
        if body.get("status") != "success":
            raise SourceUnavailable(f"prometheus at {self.url}: targets: "
                                    f"{body.get('error', body)}")
        found: dict[str, dict[str, bool]] = {}
        for target in (body.get("data") or {}).get("activeTargets", []):
            labels = target.get("labels", {})
            if labels.get("job") != job:
                continue
            service = labels.get(service_label) or target.get("discoveredLabels", {}).get(
                "__meta_dns_name", "").removeprefix("tasks.")
            found.setdefault(service, {})[labels.get("instance", "")] = \
                target.get("health") == "up"
        return found

    def ready(self) -> bool:
        """Whether /-/ready answers 200 (False when it does not answer at all)."""
        try:
            return self.session.get(f"{self.url}/-/ready", timeout=self.timeout_s
                                    ).status_code == 200
        except requests.RequestException:
            return False

    def reload(self) -> None:
        """POST /-/reload (needs --web.enable-lifecycle); a refused config raises."""
        try:
            reply = self.session.post(f"{self.url}/-/reload", timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise SourceUnavailable(f"prometheus at {self.url} did not reload: {exc}") from None
        if reply.status_code != 200:
            raise SourceUnavailable(f"prometheus at {self.url} rejected its new config: "
                                    f"{reply.text[:500]}")


def parse_reply(body: Mapping[str, Any], promql: str) -> list[Sample]:
    """Samples of an instant-query reply; an error reply raises SourceUnavailable."""
    if body.get("status") != "success":
        raise SourceUnavailable(f"query {promql!r} failed: {body.get('errorType', '')} "
                                f"{body.get('error', '')}".strip())
    data = body.get("data") or {}
    kind = data.get("resultType")
    result = data.get("result")
    if kind == "scalar":
        stamp, value = result
        return [({}, float(stamp), _number(value))]
    if kind == "vector":
        return [(dict(item.get("metric") or {}), float(item["value"][0]),
                 _number(item["value"][1])) for item in result]
    raise SourceUnavailable(f"query {promql!r}: result type {kind!r}; write an instant "
                            "query that returns a scalar or a vector")


def _number(text: Any) -> float:
    try:
        return float(text)   # Prometheus sends "NaN", "+Inf", "-Inf" as strings
    except (TypeError, ValueError):
        return math.nan


class PromQLMetrics:
    """MetricsSource over the configured queries."""

    def __init__(self, config: PrometheusConfig, client: PrometheusClient | None = None):
        self.config = config
        self.client = client or PrometheusClient(config.url, config.timeout_s)

    def _scalar(self, promql: str, epoch_s: float, what: str,
                problems: list[str]) -> float:
        samples = self.client.query(promql)
        if not samples:
            problems.append(f"{what}: empty result")
            return math.nan
        if len(samples) > 1:
            problems.append(f"{what}: {len(samples)} series; aggregate them (sum, max) in "
                            "the query")
            return math.nan
        _, stamp, value = samples[0]
        return self._fresh(value, stamp, epoch_s, what, problems)

    def _fresh(self, value: float, stamp: float, epoch_s: float, what: str,
               problems: list[str]) -> float:
        if not math.isfinite(value):
            problems.append(f"{what}: {value}")
            return math.nan
        if epoch_s - stamp > self.config.stale_after_s:
            problems.append(f"{what}: stale ({epoch_s - stamp:.0f} s old)")
            return math.nan
        return value

    def read(self, epoch_s: float) -> Metrics:
        problems: list[str] = []
        qps = self._scalar(self.config.qps, epoch_s, "qps", problems)
        p99 = self._scalar(self.config.p99_ms, epoch_s, "p99_ms", problems)
        utilisation: dict[str, float] = {}
        if self.config.service_utilisation:
            for labels, stamp, value in self.client.query(self.config.service_utilisation):
                service = labels.get(self.config.service_label)
                if service:
                    utilisation[service] = self._fresh(value, stamp, epoch_s,
                                                       f"utilisation of {service}", problems)
        return Metrics(qps=qps, p99_ms=p99, service_utilisation=utilisation,
                       problems=tuple(problems))
