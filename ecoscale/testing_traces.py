"""Synthetic traces from a topology, for tests of ``ecoscale topology import``.

:func:`synthesize` draws requests by the endpoint mix and lays each out in time the way the
latency model reads its path: stages one after another, the calls of a stage in parallel, a
call's own sub-path inside its span; a call written as a later stage of a flat path is a
child of an earlier call that lists it (chosen at random among those that may), whose span
then stretches over it. Timings are jittered; some calls get a client span in the caller
around the callee's server span, as real tracers record them, and some calls to storage
services only a client span of the caller that names them (untraced databases).
:func:`jaeger_document` and :func:`zipkin_document` render the result as the two exports.
Seeded: the same seed gives the same traces.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ecoscale.model.topology import Stage, Topology

LEAF_WORK_US = (1000.0, 3000.0)
"""Work of a call without downstream calls (µs, uniform)."""
PRE_WORK_US = (50.0, 300.0)
"""Work of a call before its own sub-path (µs): shorter than any leaf, so that a sub-path
starts while the parallel calls beside it still run."""
POST_WORK_US = (20.0, 80.0)
START_JITTER_US = (0.0, 30.0)
STAGE_GAP_US = (10.0, 50.0)
CLIENT_SPAN_SHARE = 0.3
"""Fraction of calls recorded as a client span in the caller around the server span."""
UNTRACED_STORAGE_SHARE = 0.5
"""Fraction of calls to a storage service (memcached, mongodb, redis) recorded only as a
client span of the caller naming it (``peer.service`` / ``remoteEndpoint``, ``db.system``),
as with databases that are not traced themselves."""
STORAGE_KINDS = ("memcached", "mongodb", "redis")


@dataclass
class SynthSpan:
    span_id: str
    parent: SynthSpan | None
    service: str
    operation: str
    start_us: float
    end_us: float
    children: list[SynthSpan] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    client_of: SynthSpan | None = None
    """For a client span: the server span it wraps."""
    untraced: str = ""
    """For a client span to an untraced storage service: that service (``service`` is then
    the caller)."""
    storage_kind: str = ""


@dataclass
class SynthTrace:
    trace_id: str
    endpoint: str
    spans: list[SynthSpan]


@dataclass
class Synthesis:
    traces: list[SynthTrace]
    edges: set[tuple[str, str]]
    """(caller, callee) pairs the traces contain."""


class _Ids:
    def __init__(self, rng: random.Random):
        self.rng = rng

    def span(self) -> str:
        return f"{self.rng.getrandbits(64):016x}"


def synthesize(topology: Topology, traces: int, seed: int = 1) -> Synthesis:
    """``traces`` requests drawn by the mix, each laid out as spans (µs since an epoch)."""
    rng = random.Random(seed)
    ids = _Ids(rng)
    endpoints = list(topology.endpoints)
    weights = [e.share for e in endpoints]
    out: list[SynthTrace] = []
    edges: set[tuple[str, str]] = set()
    clock = 1_700_000_000_000_000.0
    for _ in range(traces):
        endpoint = rng.choices(endpoints, weights)[0]
        first, rest = endpoint.path[0], endpoint.path[1:]
        if len(first) != 1 or first[0].service != topology.frontend or first[0].path:
            raise ValueError(f"endpoint {endpoint.name}: the first stage must be the front end "
                             "alone")
        clock += rng.uniform(1e5, 1e6)
        root = SynthSpan(ids.span(), None, topology.frontend, endpoint.name, clock, clock)
        method, _, route = endpoint.http.partition(" ")
        if route:
            root.tags = {"http.method": method, "http.route": route}
        cursor = _schedule(root, rest, clock + rng.uniform(*PRE_WORK_US), rng, ids, topology,
                           edges, endpoint.name)
        root.end_us = cursor + rng.uniform(*POST_WORK_US)
        spans = _with_client_spans(root, rng, ids)
        out.append(SynthTrace(f"{rng.getrandbits(128):032x}", endpoint.name, spans))
    return Synthesis(out, edges)


def _schedule(owner: SynthSpan, path: tuple[Stage, ...], t0: float, rng: random.Random,
              ids: _Ids, topology: Topology, edges: set[tuple[str, str]], where: str) -> float:
    """Lay out ``path`` under ``owner`` from ``t0``; returns when its last stage ended."""
    cursor = t0
    history: list[list[SynthSpan]] = []
    for index, stage in enumerate(path):
        parent = _parent(owner, history, stage, rng, topology, f"{where} stage {index + 1}")
        start = cursor + rng.uniform(*STAGE_GAP_US)
        members: list[tuple[SynthSpan, float]] = []
        for call in stage:
            span = SynthSpan(ids.span(), parent, call.service, f"/{call.service}/handle",
                             start + rng.uniform(*START_JITTER_US), 0.0)
            parent.children.append(span)
            edges.add((parent.service, call.service))
            if call.path:
                sub_start = span.start_us + rng.uniform(*PRE_WORK_US)
                last = _schedule(span, call.path, sub_start, rng, ids, topology, edges,
                                 f"{where} -> {call.service}")
                span.end_us = last + rng.uniform(*POST_WORK_US)
                members.append((span, _last_stage_start(span)))
            else:
                span.end_us = span.start_us + rng.uniform(*LEAF_WORK_US)
                members.append((span, float("inf")))
                span.storage_kind = topology.services[call.service].kind
        _keep_nested(members, rng)
        stage_end = max(s.end_us for s, _ in members)
        t = stage_end
        ancestor = parent
        while ancestor is not owner:
            t += rng.uniform(*STAGE_GAP_US)
            ancestor.end_us = max(ancestor.end_us, t)
            assert ancestor.parent is not None
            ancestor = ancestor.parent
        cursor = max(cursor, t)
        history.append([s for s, _ in members])
    return cursor


def _last_stage_start(span: SynthSpan) -> float:
    """When the last of the span's own child stages starts (the latest child start)."""
    return max(c.start_us for c in span.children)


def _keep_nested(members: list[tuple[SynthSpan, float]], rng: random.Random) -> None:
    """Stretch a parallel call so that every sub-path of the stage starts before some other
    call of the stage ends (else the importer rightly reads it as a later stage)."""
    if len(members) < 2:
        return
    for span, last_start in members:
        if last_start == float("inf"):
            continue
        others = [s for s, _ in members if s is not span]
        if max(s.end_us for s in others) <= last_start:
            longest = max(others, key=lambda s: s.end_us)
            longest.end_us = last_start + rng.uniform(*LEAF_WORK_US)


def _parent(owner: SynthSpan, history: list[list[SynthSpan]], stage: Stage,
            rng: random.Random, topology: Topology, where: str) -> SynthSpan:
    """Who calls the stage: the path's owner or an earlier call of the path that lists every
    call of the stage and whose span may stretch over it (every call after it descends
    from it)."""
    wanted = {c.service for c in stage}
    candidates = []
    if wanted <= set(topology.services[owner.service].calls):
        candidates.append(owner)
    for position, earlier in enumerate(history):
        later = [s for stage_spans in history[position + 1:] for s in stage_spans]
        for span in earlier:
            if not wanted <= set(topology.services[span.service].calls):
                continue
            if all(_descends(s, span) for s in later):
                candidates.append(span)
    if not candidates:
        raise ValueError(f"{where}: no one service may call all of {sorted(wanted)}; traces "
                         "cannot show this path")
    return rng.choice(candidates)


def _descends(span: SynthSpan, ancestor: SynthSpan) -> bool:
    current = span.parent
    while current is not None:
        if current is ancestor:
            return True
        current = current.parent
    return False


def _with_client_spans(root: SynthSpan, rng: random.Random, ids: _Ids) -> list[SynthSpan]:
    """Every span depth first; some calls wrapped in a client span in the caller."""
    out: list[SynthSpan] = []

    def walk(span: SynthSpan) -> None:
        out.append(span)
        wrapped: list[SynthSpan] = []
        for child in span.children:
            if (child.storage_kind in STORAGE_KINDS and not child.children
                    and rng.random() < UNTRACED_STORAGE_SHARE):
                child.untraced, child.service = child.service, span.service
                child.operation = f"{child.storage_kind} query"
                child.tags = {"db.system": child.storage_kind}
                wrapped.append(child)
            elif rng.random() < CLIENT_SPAN_SHARE:
                client = SynthSpan(ids.span(), span, span.service, f"call {child.service}",
                                   child.start_us - 5.0, child.end_us + 5.0, [child],
                                   client_of=child)
                child.parent = client
                wrapped.append(client)
            else:
                wrapped.append(child)
        span.children = wrapped
        for child in span.children:
            if child.client_of is not None:
                out.append(child)
                walk(child.client_of)
            else:
                walk(child)

    walk(root)
    return out


def jaeger_document(synthesis: Synthesis) -> dict[str, Any]:
    """The traces as Jaeger's query API returns them (``GET /api/traces``)."""
    data = []
    for trace in synthesis.traces:
        processes: dict[str, dict[str, Any]] = {}
        pid: dict[str, str] = {}
        spans = []
        for span in trace.spans:
            if span.service not in pid:
                pid[span.service] = f"p{len(pid) + 1}"
                processes[pid[span.service]] = {
                    "serviceName": span.service,
                    "tags": [{"key": "hostname", "type": "string", "value": span.service}]}
            references = []
            if span.parent is not None:
                references.append({"refType": "CHILD_OF", "traceID": trace.trace_id,
                                   "spanID": span.parent.span_id})
            tags = [{"key": k, "type": "string", "value": v} for k, v in span.tags.items()]
            kind = "client" if span.client_of is not None or span.untraced else "server"
            tags.append({"key": "span.kind", "type": "string", "value": kind})
            if span.untraced:
                tags.append({"key": "peer.service", "type": "string", "value": span.untraced})
            spans.append({
                "traceID": trace.trace_id, "spanID": span.span_id,
                "operationName": span.operation, "references": references,
                "flags": 1, "startTime": round(span.start_us),
                "duration": round(span.end_us) - round(span.start_us),
                "tags": tags, "logs": [], "processID": pid[span.service], "warnings": None})
        data.append({"traceID": trace.trace_id, "spans": spans, "processes": processes,
                     "warnings": None})
    return {"data": data, "total": 0, "limit": 0, "offset": 0, "errors": None}


def zipkin_document(synthesis: Synthesis) -> list[list[dict[str, Any]]]:
    """The traces as Zipkin's ``GET /api/v2/traces`` returns them (a list of traces).

    A client span and the server span it wraps share one span id (B3 propagation), the
    server one marked ``shared``, as Zipkin's own instrumentation records them.
    """
    out = []
    for trace in synthesis.traces:
        shared_id = {s.client_of.span_id: s.span_id for s in trace.spans
                     if s.client_of is not None}
        spans = []
        for span in trace.spans:
            sid = shared_id.get(span.span_id, span.span_id)
            parent = span.parent
            item: dict[str, Any] = {"traceId": trace.trace_id, "id": sid,
                                    "name": span.operation,
                                    "timestamp": round(span.start_us),
                                    "duration": round(span.end_us) - round(span.start_us),
                                    "localEndpoint": {"serviceName": span.service,
                                                      "ipv4": "10.0.0.1"}}
            if span.client_of is not None or span.untraced:
                item["kind"] = "CLIENT"
                remote = span.untraced or (span.client_of.service if span.client_of else "")
                item["remoteEndpoint"] = {"serviceName": remote}
            else:
                item["kind"] = "SERVER"
            if span.span_id in shared_id:
                item["shared"] = True
                assert parent is not None and parent.parent is not None
                parent = parent.parent
            if parent is not None:
                item["parentId"] = shared_id.get(parent.span_id, parent.span_id)
            if span.tags:
                item["tags"] = dict(span.tags)
            spans.append(item)
        out.append(spans)
    return out
