"""The role queries of the lab's emulated services (``ecoscale_emulator_*``): the defaults of
``--pool lab``, of the daemon config for the lab (deploy/daemon/lab.yaml) and of the live
evaluation. Any other app names its own in configuration (README "Metrics are configuration").

- front-end QPS and end-to-end latency: the front end's server-side request histogram (it
  includes every downstream call: the end-to-end latency);
- per-service latency: as each caller sees its calls (queueing at the callee included), by
  ``callee`` relabelled to ``service``; the front end, whose only caller is the lab's gateway,
  by its own work instead (its request histogram would be the whole request);
- per-service CPU: process CPU seconds per second of all its tasks (one replica is one event
  loop, so 1.0 is a saturated replica).
"""

from __future__ import annotations

from ecoscale.config import RoleQueries

_SERVICE_CALLS = ("label_replace(1000 * histogram_quantile({quantile}, sum by (le, callee) "
                  "(rate(ecoscale_emulator_call_duration_seconds_bucket"
                  '{service!="ecoscale-gateway"}[{window}]))), "service", "$1", "callee", '
                  '"(.+)")')
_FRONTEND_OWN = ("1000 * histogram_quantile({quantile}, sum by (le, service) (rate("
                 'ecoscale_emulator_own_duration_seconds_bucket{service="{frontend}"}'
                 "[{window}])))")

LAB_QUERIES = RoleQueries(
    qps='sum(rate(ecoscale_emulator_requests_total{service="{frontend}"}[{window}]))',
    p99_ms=("1000 * histogram_quantile({quantile}, sum by (le) (rate("
            'ecoscale_emulator_request_duration_seconds_bucket{service="{frontend}"}'
            "[{window}])))"),
    service_p99_ms=f"{_SERVICE_CALLS} or {_FRONTEND_OWN}",
    service_cpu_cores="sum by (service) (rate(ecoscale_emulator_process_cpu_seconds_total"
                      "[{window}]))",
    service_label="service",
)
"""The emulator's role queries (templates; see ``RoleQueries.render``)."""


def lab_queries(frontend: str, window_s: float) -> dict[str, str]:
    """The daemon's ``prometheus.qps`` and ``prometheus.p99_ms`` for the lab's app."""
    return {role: LAB_QUERIES.render(role, frontend, window_s) for role in ("qps", "p99_ms")}


def qps_query(service: str, window_s: float) -> str:
    """PromQL: requests per second served by a service (all its tasks)."""
    return LAB_QUERIES.render("qps", service, window_s)


def p99_ms_query(service: str, window_s: float, endpoint: str | None = None,
                 quantile: float = 0.99) -> str:
    """PromQL: a service's server-side latency at ``quantile`` (ms) over ``window_s``,
    optionally of one endpoint (the front end's is the end-to-end latency)."""
    query = LAB_QUERIES.render("p99_ms", service, window_s, quantile)
    if endpoint:
        query = query.replace(f'service="{service}"', f'service="{service}",endpoint="{endpoint}"')
    return query


def per_service_p99_ms_query(frontend: str, window_s: float, quantile: float = 0.99) -> str:
    """PromQL: every service's latency at ``quantile`` (ms), one series per ``service``."""
    return LAB_QUERIES.render("service_p99_ms", frontend, window_s, quantile)


def cpu_query(window_s: float) -> str:
    """PromQL: CPU cores used per service (process CPU of all its tasks)."""
    return LAB_QUERIES.render("service_cpu_cores", "", window_s)
