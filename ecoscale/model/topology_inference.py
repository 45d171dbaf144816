"""Infer an application topology from distributed-trace spans (Jaeger, Zipkin, ...).

From spans (trace id, span id, parent id, service, operation, start and duration in µs) this
builds the project's topology: the services, who calls whom, each endpoint as stages of
parallel calls and the request mix. Per trace, spans of one service that nest (a client span
inside its server span, an internal operation) are one visit of that service; the children of
a visit that overlap in time are one stage, sequential ones successive stages. A call's later
stages that start after every other call of its stage has ended are written as stages of the
enclosing path (the flat form of the shipped topologies, see ``model/topology.py``). Each
endpoint (the root span's operation) takes the structure most of its traces agree on; the mix
is the root operations' counts.

What cannot be placed is reported as a :class:`Finding` naming the trace and the span, never
guessed: orphan spans (a parent that is not in the trace), clock skew (a child outside its
parent), cycles (a service inside its own call chain, or parent ids that loop), spans without
a service name, traces without one root, and traces that disagree with their endpoint's
structure.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ecoscale.errors import InputError
from ecoscale.model.topology import Call, Endpoint, Stage, Topology, parse_topology

SHARE_DIGITS = 4
"""Endpoint shares are written rounded to this many decimals (they still sum to 1)."""
MAX_DEPTH = 256
"""Most spans nested in one another that are followed; a deeper trace is a finding (and
the recursion stays far from Python's limit)."""
KIND_WORDS = (("memcached", "memcached"), ("mongodb", "mongodb"), ("mongo", "mongodb"),
              ("redis", "redis"))
"""Service-name fragments that give a storage kind when no span says (first match wins)."""
DB_SYSTEMS = {"mongodb": "mongodb", "redis": "redis", "memcached": "memcached"}
"""``db.system`` / ``db.type`` tag values -> topology kind."""


@dataclass(frozen=True)
class Span:
    """One span as the readers hand it over; times in microseconds."""

    trace_id: str
    span_id: str
    parent_id: str
    """"" for a root span."""
    service: str
    """"" when the export carries no service name."""
    operation: str
    start_us: float
    duration_us: float
    http: str = ""
    """"METHOD /route" when the span's tags say it (root spans: the endpoint's ``http``)."""
    db_system: str = ""
    """The ``db.system`` (or ``db.type``) tag: with ``remote_service``, that service's kind."""
    remote_service: str = ""
    """For a client span: the service called (Zipkin ``remoteEndpoint``, ``peer.service``).
    A client span without children then stands for a call to that (untraced) service."""

    @property
    def end_us(self) -> float:
        return self.start_us + self.duration_us


@dataclass(frozen=True)
class Finding:
    """Something that could not be placed, naming the trace and the span."""

    kind: str
    """orphan, skew, cycle, no-service, roots, duplicate, disagreement, frontend, http,
    depth, no-structure."""
    trace_id: str
    span_id: str
    message: str

    def line(self) -> str:
        span = f" span {self.span_id}" if self.span_id else ""
        return f"{self.kind}: trace {self.trace_id}{span}: {self.message}"


@dataclass(frozen=True)
class EndpointEvidence:
    """How many traces an endpoint had, and how many agree with the structure written."""

    name: str
    operation: str
    traces: int
    """Traces whose root is this operation (the mix counts these)."""
    placed: int
    """Traces that could be placed (no finding left them out)."""
    agreeing: int
    """Placed traces with the structure written."""


@dataclass(frozen=True)
class Inference:
    """The result: a topology (None when nothing could be placed) and what was found."""

    topology: Topology | None
    findings: tuple[Finding, ...]
    traces: int
    spans: int
    endpoints: tuple[EndpointEvidence, ...] = ()
    problems: tuple[str, ...] = field(default=())
    """Why no topology came out, or why the inferred one does not validate."""


@dataclass
class _Visit:
    """One visit of a service in one trace (same-service spans merged), µs."""

    service: str
    span_id: str
    start_us: float
    end_us: float
    children: list[_Visit] = field(default_factory=list)


@dataclass
class _Member:
    """A call while its path is built: times kept for the lifting rule, µs."""

    service: str
    start_us: float
    end_us: float
    sub: list[_IStage]


@dataclass
class _IStage:
    members: list[_Member]

    @property
    def start_us(self) -> float:
        return min(m.start_us for m in self.members)

    @property
    def end_us(self) -> float:
        return max(m.end_us for m in self.members)


@dataclass
class _Placed:
    """A trace that could be placed: its root, path and the calls (caller, callee) seen."""

    trace_id: str
    root_span: str
    path: tuple[Stage, ...]
    edges: set[tuple[str, str]]


def infer_topology(spans: Iterable[Span], app: str, source: str = "") -> Inference:
    """Infer the topology of ``app`` from ``spans`` of any number of traces."""
    traces: dict[str, list[Span]] = {}
    count = 0
    for span in spans:
        traces.setdefault(span.trace_id, []).append(span)
        count += 1
    findings: list[Finding] = []
    roots: dict[str, Span] = {}
    placed: dict[str, _Placed] = {}
    for trace_id, trace in traces.items():
        root, result = _place_trace(trace_id, trace, findings)
        if root is not None:
            roots[trace_id] = root
        if result is not None:
            placed[trace_id] = result
    named = [r.service for r in roots.values() if r.service]
    if not named:
        return Inference(None, tuple(findings), len(traces), count,
                         problems=("no trace has exactly one root span (a span without a "
                                   "parent) with a service name; export whole traces",))
    frontend = Counter(named).most_common(1)[0][0]
    for trace_id, root in roots.items():
        if root.service and root.service != frontend:
            findings.append(Finding("frontend", trace_id, root.span_id,
                                    f"the root is in service '{root.service}', not in the "
                                    f"front end '{frontend}' of most traces; left out"))
    by_operation: dict[str, list[str]] = {}
    for trace_id, root in roots.items():
        if root.service == frontend:
            by_operation.setdefault(root.operation, []).append(trace_id)
    names = _endpoint_names(list(by_operation))
    endpoints: list[tuple[Endpoint, int]] = []
    evidence: list[EndpointEvidence] = []
    edges: set[tuple[str, str]] = set()
    visited_order: list[str] = [frontend]
    kinds: dict[str, Counter[str]] = {}
    for span in (s for trace in traces.values() for s in trace):
        if span.remote_service and span.db_system.lower() in DB_SYSTEMS:
            # a call to a database; the same tag on a span of the caller's own names the
            # database it uses, not the caller's kind
            kinds.setdefault(span.remote_service, Counter())[
                DB_SYSTEMS[span.db_system.lower()]] += 1
    for operation, trace_ids in by_operation.items():
        name = names[operation]
        good = [placed[t] for t in trace_ids if t in placed]
        if not good:
            findings.append(Finding("no-structure", trace_ids[0], roots[trace_ids[0]].span_id,
                                    f"endpoint '{name}': none of its {len(trace_ids)} traces "
                                    "could be placed; left out of the topology"))
            evidence.append(EndpointEvidence(name, operation, len(trace_ids), 0, 0))
            continue
        votes = Counter(p.path for p in good)
        path, agreeing = votes.most_common(1)[0]
        for other in good:
            if other.path != path:
                findings.append(Finding(
                    "disagreement", other.trace_id, other.root_span,
                    f"endpoint '{name}': this trace's structure {_path_text(other.path)} "
                    f"differs from the one {agreeing} of {len(good)} traces agree on "
                    f"({_path_text(path)}); the latter is written"))
        for p in good:
            edges |= p.edges
        for call in _walk(path):
            if call.service not in visited_order:
                visited_order.append(call.service)
        http = _most_common([roots[t].http for t in trace_ids if roots[t].http])
        if not http:
            http = operation if re.match(r"^[A-Z]+ /", operation) else ""
        if not http:
            findings.append(Finding("http", trace_ids[0], roots[trace_ids[0]].span_id,
                                    f"endpoint '{name}': its root spans carry no http.method "
                                    "and http.route (or http.target) tags; http is written "
                                    "empty: fill in 'METHOD /path' for the load generator"))
        endpoints.append((Endpoint(name, 0.0, http, path), len(trace_ids)))
        evidence.append(EndpointEvidence(name, operation, len(trace_ids), len(good), agreeing))
    if not endpoints:
        return Inference(None, tuple(findings), len(traces), count, tuple(evidence),
                         problems=("no endpoint could be placed; see the findings",))
    for caller, callee in sorted(edges):
        for service in (caller, callee):
            if service not in visited_order:
                visited_order.append(service)
    endpoints.sort(key=lambda item: (-item[1], item[0].name))   # the mix's order, busiest first
    shares = _shares([n for _, n in endpoints])
    data = {
        "app": app,
        "source": source,
        "notes": [],
        "frontend": frontend,
        "services": {
            name: {"kind": _kind(name, kinds.get(name)),
                   "calls": sorted({callee for caller, callee in edges if caller == name})}
            for name in visited_order
        },
        "endpoints": {
            e.name: {"share": share, "http": e.http, "path": path_data(e.path)}
            for (e, _), share in zip(endpoints, shares, strict=True)
        },
    }
    try:
        topology = parse_topology(data, source or app)
    except InputError as exc:
        return Inference(None, tuple(findings), len(traces), count, tuple(evidence),
                         problems=tuple(exc.problems))
    return Inference(topology, tuple(findings), len(traces), count, tuple(evidence))


def _place_trace(trace_id: str, trace: list[Span],
                 findings: list[Finding]) -> tuple[Span | None, _Placed | None]:
    """The trace's root (if exactly one) and its placed structure (if nothing is wrong)."""
    spans: dict[str, Span] = {}
    ok = True
    unique: list[Span] = []
    clashes: list[str] = []
    for span in trace:
        if spans.get(span.span_id) == span:
            continue   # the same span twice (one trace in two exports): one span
        unique.append(span)
        if span.span_id in spans:
            clashes.append(span.span_id)
        spans[span.span_id] = span
    if clashes:
        findings.append(Finding("duplicate", trace_id, clashes[0],
                                f"{len(clashes)} spans have the id of another, different span "
                                "(the same trace from two different exports?); the trace is "
                                "left out"))
        ok = False
    trace = unique
    roots = [s for s in trace if not s.parent_id]
    for span in trace:
        if span.parent_id and span.parent_id not in spans:
            findings.append(Finding("orphan", trace_id, span.span_id,
                                    f"its parent span {span.parent_id} is not in the trace "
                                    "(an incomplete export); the trace is left out of the "
                                    "structure: export whole traces"))
            ok = False
        if not span.service:
            findings.append(Finding("no-service", trace_id, span.span_id,
                                    f"operation '{span.operation}' has no service name; the "
                                    "trace is left out of the structure: set the tracer's "
                                    "service name"))
            ok = False
    cycle = _parent_cycle(spans)
    if cycle:
        findings.append(Finding("cycle", trace_id, cycle[0],
                                f"parent ids loop ({' -> '.join(cycle)}); the trace is left "
                                "out"))
        ok = False
    if len(roots) != 1:
        what = "no root span" if not roots else (
            f"{len(roots)} root spans ({', '.join(r.span_id for r in roots[:5])})")
        findings.append(Finding("roots", trace_id, roots[0].span_id if roots else "",
                                f"{what}, not one; the trace is left out"))
        return None, None
    root = roots[0]
    if not ok:
        return root, None
    children: dict[str, list[Span]] = {}
    for span in trace:
        if span.parent_id:
            children.setdefault(span.parent_id, []).append(span)
    problems_before = len(findings)
    visit = _visit(root, children, trace_id, (), 0, findings)
    if visit is None or len(findings) > problems_before:
        return root, None
    edges: set[tuple[str, str]] = set()
    _collect_edges(visit, edges)
    top = _Member(visit.service, visit.start_us, visit.end_us, _stages(visit.children))
    path = ((Call(top.service),), *(_frozen(s) for s in top.sub))
    return root, _Placed(trace_id, root.span_id, path, edges)


def _parent_cycle(spans: Mapping[str, Span]) -> list[str]:
    """Span ids of one loop of parent ids, or [] when there is none."""
    done: set[str] = set()
    for start in spans:
        chain: list[str] = []
        seen: set[str] = set()
        current = start
        while current in spans and current not in done:
            if current in seen:
                return chain[chain.index(current):] + [current]
            seen.add(current)
            chain.append(current)
            current = spans[current].parent_id
        done |= seen
    return []


def _visit(span: Span, children: Mapping[str, list[Span]], trace_id: str,
           chain: tuple[str, ...], depth: int, findings: list[Finding]) -> _Visit | None:
    """The service visit that ``span`` starts (None after a finding)."""
    visit = _Visit(span.service, span.span_id, span.start_us, span.end_us)
    chain = (*chain, span.service)
    if not _absorb(visit, span, children, trace_id, chain, depth, findings):
        return None
    return visit


def _absorb(visit: _Visit, span: Span, children: Mapping[str, list[Span]], trace_id: str,
            chain: tuple[str, ...], depth: int, findings: list[Finding]) -> bool:
    """Add ``span``'s children to ``visit`` (same-service children merged into it);
    ``depth`` is how many spans lie above ``span``."""
    if depth > MAX_DEPTH:
        findings.append(Finding("depth", trace_id, span.span_id,
                                f"more than {MAX_DEPTH} spans nest above it; the trace is "
                                "left out"))
        return False
    kids = children.get(span.span_id, [])
    for child in kids:
        late = max(span.start_us - child.start_us, child.end_us - span.end_us)
        if late > 0:
            findings.append(Finding("skew", trace_id, child.span_id,
                                    f"{child.service or '?'} '{child.operation}' lies "
                                    f"{late:g} µs outside its parent span {span.span_id} "
                                    f"({span.service} '{span.operation}'): clock skew between "
                                    "hosts, or a call that outlives its caller; the trace is "
                                    "left out of the structure (sync the hosts' clocks)"))
            return False
        if child.service == span.service:
            if not _absorb(visit, child, children, trace_id, chain, depth + 1, findings):
                return False
            continue
        if child.service in chain:
            findings.append(Finding("cycle", trace_id, child.span_id,
                                    f"{' -> '.join((*chain, child.service))}: a service "
                                    "inside its own call chain; the trace is left out of the "
                                    "structure"))
            return False
        sub = _visit(child, children, trace_id, chain, depth + 1, findings)
        if sub is None:
            return False
        visit.children.append(sub)
    remote = span.remote_service
    if not kids and remote and remote != span.service:
        if remote in chain:
            findings.append(Finding("cycle", trace_id, span.span_id,
                                    f"{' -> '.join((*chain, remote))}: a service inside its "
                                    "own call chain; the trace is left out of the structure"))
            return False
        visit.children.append(_Visit(remote, span.span_id, span.start_us, span.end_us))
    return True


def _collect_edges(visit: _Visit, edges: set[tuple[str, str]]) -> None:
    for child in visit.children:
        edges.add((visit.service, child.service))
        _collect_edges(child, edges)


def _stages(visits: list[_Visit]) -> list[_IStage]:
    """Children as stages (overlapping ones together), with the lifting rule applied."""
    stages: list[_IStage] = []
    end = float("-inf")
    for visit in sorted(visits, key=lambda v: (v.start_us, v.end_us, v.service)):
        member = _Member(visit.service, visit.start_us, visit.end_us, _stages(visit.children))
        if stages and visit.start_us < end:
            stages[-1].members.append(member)
        else:
            stages.append(_IStage([member]))
        end = max(end, visit.end_us)
    lifted: list[_IStage] = []
    for stage in stages:
        lifted.append(stage)
        lifted.extend(_lift_tail(stage))
    return lifted


def _lift_tail(stage: _IStage) -> list[_IStage]:
    """The later stages of one member that start after every other member has ended.

    They are written as stages after ``stage`` in the enclosing path: with one member, all
    of its stages; with several, at most one member can have such a tail.
    """
    for member in stage.members:
        others_end = max((m.end_us for m in stage.members if m is not member),
                         default=float("-inf"))
        for index, sub in enumerate(member.sub):
            if sub.start_us >= others_end:
                tail = member.sub[index:]
                member.sub = member.sub[:index]
                return tail
    return []


def _frozen(stage: _IStage) -> Stage:
    calls = [Call(m.service, tuple(_frozen(s) for s in m.sub)) for m in stage.members]
    return tuple(sorted(calls, key=lambda c: (c.service, repr(c.path))))


def _walk(path: tuple[Stage, ...]) -> Iterable[Call]:
    for stage in path:
        for call in stage:
            yield call
            yield from _walk(call.path)


def path_data(path: tuple[Stage, ...]) -> list[list[Any]]:
    """A path as the topology YAML writes it: stages of names or {name: sub-path}."""
    return [[{c.service: path_data(c.path)} if c.path else c.service for c in stage]
            for stage in path]


def topology_data(topology: Topology) -> dict[str, Any]:
    """The topology as the YAML mapping :func:`parse_topology` reads back."""
    data: dict[str, Any] = {"app": topology.app}
    if topology.source:
        data["source"] = topology.source
    data["frontend"] = topology.frontend
    data["services"] = {s.name: {"kind": s.kind, "calls": list(s.calls)}
                        for s in topology.services.values()}
    data["endpoints"] = {e.name: {"share": e.share, "http": e.http, "path": path_data(e.path)}
                         for e in topology.endpoints}
    if topology.notes:
        data["notes"] = list(topology.notes)
    return data


def normal_form(path: tuple[Stage, ...]) -> tuple[Stage, ...]:
    """``path`` as the importer writes it: a call alone in its stage has its sub-path
    written as the following stages (the same latency), and calls inside a stage sorted.

    Traces cannot tell the two spellings apart; a topology in this form round trips.
    """
    out: list[Stage] = []
    for stage in path:
        calls = [Call(c.service, normal_form(c.path)) for c in stage]
        if len(calls) == 1 and calls[0].path:
            out.append((Call(calls[0].service),))
            out.extend(calls[0].path)
        else:
            out.append(tuple(sorted(calls, key=lambda c: (c.service, repr(c.path)))))
    return tuple(out)


def _path_text(path: tuple[Stage, ...]) -> str:
    """A short one-line spelling of a path: [a] [b c{[d]}]."""
    def call_text(call: Call) -> str:
        return call.service + ("{" + " ".join(stage_text(s) for s in call.path) + "}"
                               if call.path else "")

    def stage_text(stage: Stage) -> str:
        return "[" + " ".join(call_text(c) for c in stage) + "]"

    text = " ".join(stage_text(s) for s in path)
    return text if len(text) <= 200 else text[:197] + "..."


def _endpoint_names(operations: list[str]) -> dict[str, str]:
    """Operation -> endpoint name: the operation without a leading HTTP method, other
    characters than letters, digits, '.', '_' and '-' replaced by '-', unique."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for operation in operations:
        bare = re.sub(r"^(?i:get|post|put|delete|patch|head|options) +(?=/)", "", operation)
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", bare).strip("-") or "endpoint"
        name, n = base, 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        names[operation] = name
    return names


def _most_common(values: list[str]) -> str:
    return Counter(values).most_common(1)[0][0] if values else ""


def _kind(service: str, hints: Counter[str] | None) -> str:
    """A service's kind: what its spans' db.system tags say, else its name, else logic."""
    if hints:
        return hints.most_common(1)[0][0]
    lowered = service.lower()
    for word, kind in KIND_WORDS:
        if word in lowered:
            return kind
    return "logic"


def _shares(counts: list[int]) -> list[float]:
    """Counts -> fractions rounded to SHARE_DIGITS that sum to 1 (the largest absorbs the
    rounding)."""
    total = sum(counts)
    shares = [round(c / total, SHARE_DIGITS) for c in counts]
    largest = max(range(len(counts)), key=lambda i: counts[i])
    shares[largest] = round(1.0 - sum(s for i, s in enumerate(shares) if i != largest),
                            SHARE_DIGITS)
    return shares
