"""Recording rules that show a stack's emulated services as an operator's own sources would.

A stack deployed with ``docker stack deploy`` (``Lab.serve_stack``) is scraped by its own job
(``STACK_JOB``). These rules re-expose its ``ecoscale_emulator_*`` series under the names and
labels of two sources that real deployments have, so that a pool or daemon config written for
them (README "Metrics are configuration") runs against the lab unchanged, and the emulator's
own names are not needed:

- the OpenTelemetry collector's spanmetrics connector (its default namespace
  ``traces.span.metrics``, histograms in milliseconds): every server span of a service,
  ``traces_span_metrics_duration_milliseconds_bucket|sum|count`` and
  ``traces_span_metrics_calls_total``, labelled ``service_name`` (the service's own name, as
  its tracer reports it), ``span_name`` (the endpoint), ``span_kind="SPAN_KIND_SERVER"`` and
  ``status_code``. A server span lasts from the request read to the response written, with
  its downstream calls: the emulator's ``request_duration_seconds``;
- cAdvisor's container CPU, ``container_cpu_usage_seconds_total``, labelled with Swarm's
  container labels ``container_label_com_docker_swarm_service_name`` (``<stack>_<service>``)
  and ``container_label_com_docker_stack_namespace`` (the stack): the emulator's process CPU.

Every series stays one per task (``instance``): a sum over tasks would drop when a task
moves, which ``rate()`` would read as a counter reset. Bucket bounds become milliseconds by
one rule per bound (PromQL cannot rewrite a label's number), from the emulator's own bounds.
Pure: no I/O.
"""

from __future__ import annotations

import json

from ecoscale.emulator.metrics import latency_buckets_s

STACK_JOB = "ecoscale-stacks"
"""The scrape job of the services of served stacks (the rules read only its series)."""
SPAN_DURATION = "traces_span_metrics_duration_milliseconds"
SPAN_CALLS = "traces_span_metrics_calls_total"
CONTAINER_CPU = "container_cpu_usage_seconds_total"
SERVICE_NAME_LABEL = "container_label_com_docker_swarm_service_name"
STACK_LABEL = "container_label_com_docker_stack_namespace"
SOURCE_DURATION = "ecoscale_emulator_request_duration_seconds"
SOURCE_REQUESTS = "ecoscale_emulator_requests_total"
SOURCE_CPU = "ecoscale_emulator_process_cpu_seconds_total"
SWARM_SERVICE = "swarm_service"
"""The scrape job's target label with the task's Swarm service name."""
RULES_FILE = "stack-rules.yml"
"""The rules file beside prometheus.yml (``rule_files`` of the rendered config)."""


def _le(seconds: float) -> str:
    """A bound as the emulator writes ``le`` (``ecoscale.emulator.metrics``)."""
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def _ms(seconds: float) -> str:
    """The same bound in milliseconds, written as short as it is exact (``1.2``, ``10000``)."""
    value = round(seconds * 1000.0, 9)
    return str(int(value)) if value.is_integer() else repr(value)


def _span_labels(expr: str) -> str:
    """``expr`` with the spanmetrics labels: service -> service_name, endpoint -> span_name,
    span_kind SERVER; the emulator's own labels dropped."""
    renamed = (f'label_replace(label_replace(label_replace({expr}, "service_name", "$1", '
               f'"service", "(.*)"), "span_name", "$1", "endpoint", "(.*)"), "span_kind", '
               f'"SPAN_KIND_SERVER", "", "")')
    return f"sum without (service, endpoint, {SWARM_SERVICE}) ({renamed})"


def _rule(record: str, expr: str) -> str:
    return f"      - record: {record}\n        expr: {json.dumps(expr)}"


def stack_rules(job: str = STACK_JOB) -> str:
    """The rules file (YAML) for the series of ``job``."""
    selector = f'job="{job}"'
    rules = []
    for bound in (*latency_buckets_s(), float("inf")):
        le, le_ms = ("+Inf", "+Inf") if bound == float("inf") else (_le(bound), _ms(bound))
        source = f'{SOURCE_DURATION}_bucket{{{selector}, le="{le}"}}'
        rules.append(_rule(f"{SPAN_DURATION}_bucket", _span_labels(
            f'label_replace({source}, "le", "{le_ms}", "", "")')))
    rules.append(_rule(f"{SPAN_DURATION}_sum",
                       _span_labels(f"1000 * {SOURCE_DURATION}_sum{{{selector}}}")))
    rules.append(_rule(f"{SPAN_DURATION}_count",
                       _span_labels(f"{SOURCE_DURATION}_count{{{selector}}}")))
    ok = _span_labels(f'label_replace({SOURCE_REQUESTS}{{{selector}, code=~"[23].."}}, '
                      '"status_code", "STATUS_CODE_UNSET", "", "")')
    failed = _span_labels(f'label_replace({SOURCE_REQUESTS}{{{selector}, code!~"[23].."}}, '
                          '"status_code", "STATUS_CODE_ERROR", "", "")')
    rules.append(_rule(SPAN_CALLS, f"sum without (code) ({ok})"))
    rules.append(_rule(SPAN_CALLS, f"sum without (code) ({failed})"))
    cpu = (f'label_replace(label_replace({SOURCE_CPU}{{{selector}}}, "{SERVICE_NAME_LABEL}", '
           f'"$1", "{SWARM_SERVICE}", "(.+)"), "{STACK_LABEL}", "$1", "{SWARM_SERVICE}", '
           '"([^_]+)_.+")')
    rules.append(_rule(CONTAINER_CPU, f"sum without (service, {SWARM_SERVICE}) ({cpu})"))
    header = ("# Rendered by ecoscale/lab/spanmetrics.py: the served stacks' emulated services "
              "as\n# OpenTelemetry spanmetrics and cAdvisor series (README \"Bring your own "
              "app\").\n")
    return (header + "groups:\n  - name: ecoscale-stack-sources\n    rules:\n"
            + "\n".join(rules) + "\n")
