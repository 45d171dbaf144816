"""Own time from server spans: the inverse of the model's composition at one measured point.

The model (``ecoscale.model.latency``) composes each service's **own** p99 over an endpoint's
stages: a call costs its callee's own time plus the callee's sub-path (``Call.path``), and the
front end's own time is the first stage of every endpoint. A tracer's **server span** of a
service (OpenTelemetry spanmetrics: ``SPAN_KIND_SERVER``) lasts through its downstream calls,
so a span already holds what the composition adds again. ``own_times`` takes the spans of one
measured point (same experiment, same load) and returns the own times that the composition
maps back onto those spans:

- a service X visited by calls c (one per visit, over every endpoint) with sub-paths P(c):
  ``own(X) = span(X) - sum_c w(c) * path_latency(P(c), own)``, ``w(c)`` = the share of X's
  visits that c makes (its endpoint's share over ``Topology.visits_per_request``): a span
  histogram mixes all of X's visits, so a leaf visit (no sub-path) weighs in at zero;
- the front end, whose span is the request: ``own = span - mix_p99(own, front end at 0)``,
  the model's own mix rule (slowest endpoint with >= 1 % of requests);
- the sub-paths are composed from the callees' derived own times by the model itself, so for
  a callee with one sub-path this is the same as composing the callees' spans, and it stays
  exact where a callee has several.

A p99 of a sum is at most the sum of the p99s, so the difference can come out at or below
zero at a noisy point while the service did work: own time is clamped at
``OWN_TIME_FLOOR_FRACTION`` of the service's span, a positive share of what was measured (a
curve needs p99 > 0, and a service whose span is mostly callees still costs its hop). The
clamped services are returned so that the profile can say how many points were clamped.

Pure: no I/O; floats in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ecoscale.model.latency import E2EModel, path_latency
from ecoscale.model.topology import Stage, Topology

SERVICE_LATENCIES = ("own", "server-span")
"""What a per-service latency query measures: ``own`` (the service's own work, the model's
input as it is) or ``server-span`` (a server span that includes its downstream calls)."""
OWN_TIME_FLOOR_FRACTION = 0.05
"""The least own time, as a fraction of the service's span (see the module docstring)."""


@dataclass(frozen=True)
class OwnTimes:
    """Own p99 (ms) per service at one point; NaN where its span was not measured."""

    own_ms: Mapping[str, float]
    clamped: tuple[str, ...]
    """Services whose difference fell below the floor and were set to it."""


SubPaths = Mapping[str, tuple[tuple[float, tuple[Stage, ...]], ...]]
"""service -> (weight, sub-path) per visit; the weights of a service sum to 1."""


def sub_paths(topology: Topology) -> SubPaths:
    """Each service's visits (front end excluded) with their sub-paths, weighted by the share
    of its visits per request that each one makes."""
    visits = topology.visits_per_request()
    out: dict[str, list[tuple[float, tuple[Stage, ...]]]] = {}
    for endpoint in topology.endpoints:
        for call in endpoint.calls():
            if call.service != topology.frontend and visits[call.service] > 0:
                out.setdefault(call.service, []).append(
                    (endpoint.share / visits[call.service], call.path))
    return {service: tuple(paths) for service, paths in out.items()}


def own_times(topology: Topology, span_ms: Mapping[str, float],
              paths: SubPaths | None = None,
              floor_fraction: float = OWN_TIME_FLOOR_FRACTION) -> OwnTimes:
    """Own p99 (ms) per service from the server-span p99s ``span_ms`` of one point.

    A service without a finite span gets NaN and adds nothing to its callers' sub-paths (what
    was not measured is not subtracted: the caller keeps it, an over- not an under-estimate).
    ``paths``: ``sub_paths(topology)``, passed in when converting many points."""
    paths = sub_paths(topology) if paths is None else paths
    frontend = topology.frontend
    mix = E2EModel(topology)
    spans = {s: float(span_ms.get(s, math.nan)) for s in topology.services}
    own = dict(spans)
    clamped: set[str] = set()
    # Each round derives every service from the previous round's own times of its callees;
    # a callee at depth d below a service is final after d rounds, so as many rounds as
    # services reach the fixed point of any topology whose sub-paths nest without cycles.
    for _ in range(len(spans) + 1):
        known = {s: (v if math.isfinite(v) else 0.0) for s, v in own.items()}
        derived: dict[str, float] = {}
        clamped = set()
        for service, span in spans.items():
            if not math.isfinite(span):
                derived[service] = math.nan
                continue
            if service == frontend:
                below = float(mix.mix_p99({**known, frontend: 0.0}))
            else:
                below = sum(weight * float(path_latency(path, known))
                            for weight, path in paths.get(service, ()) if path)
            floor = floor_fraction * span
            if span - below < floor:
                clamped.add(service)
            derived[service] = max(span - below, floor)
        if _same(derived, own):
            break
        own = derived
    return OwnTimes(own, tuple(sorted(clamped)))


def _same(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    return all((math.isnan(a[s]) and math.isnan(b[s])) or a[s] == b[s] for s in a)
