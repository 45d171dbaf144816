"""Read trace exports (Jaeger JSON, Zipkin v2 JSON) into spans for topology inference.

- Jaeger: what the query API's ``GET /api/traces`` returns (and the UI's "Download JSON"):
  ``{"data": [{"traceID", "spans": [{"spanID", "operationName", "references": [{"refType":
  "CHILD_OF", "spanID"}], "startTime", "duration", "processID", "tags"}], "processes":
  {"p1": {"serviceName"}}}]}``; times in µs since the epoch. One trace object alone is
  accepted too.
- Zipkin v2: ``GET /api/v2/traces`` (a list of traces, each a list of spans) or
  ``GET /api/v2/trace/{id}`` and ``/api/v2/spans`` payloads (a flat list of spans): ``traceId``,
  ``id``, ``parentId``, ``name``, ``timestamp``, ``duration`` (µs), ``localEndpoint.serviceName``,
  ``kind``, ``remoteEndpoint.serviceName``, ``tags``, ``shared``. A server span that shares its
  id with the client span (B3) becomes the client span's child.

A malformed file is an InputError naming the file, the trace and the span, the field and the
fix (every problem at once, up to :data:`MAX_PROBLEMS`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ecoscale.adapters.files import read_text
from ecoscale.errors import InputError
from ecoscale.model.topology_inference import Span
from ecoscale.values import BadNumber, number

FORMATS = ("jaeger", "zipkin")
MAX_TRACE_BYTES = 512 * 2**20
"""Largest trace export read (bytes)."""
MAX_PROBLEMS = 20
"""Problems listed per file; the rest are counted."""
EXPORT_HINT = {
    "jaeger": "export it with curl 'http://JAEGER:16686/api/traces?service=FRONTEND&limit=N'",
    "zipkin": "export it with curl 'http://ZIPKIN:9411/api/v2/traces?serviceName=FRONTEND"
              "&limit=N'",
}


@dataclass(frozen=True)
class TraceFile:
    """The spans of one export and what it was read as."""

    path: str
    format: str
    traces: int
    spans: tuple[Span, ...]


class _Problems:
    def __init__(self, source: str):
        self.source = source
        self.items: list[str] = []
        self.more = 0

    def add(self, text: str) -> None:
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(text)
        else:
            self.more += 1

    def raise_if_any(self) -> None:
        if self.items:
            extra = [f"... and {self.more} more"] if self.more else []
            raise InputError(self.source, self.items + extra)


def read_trace_file(path: Path, fmt: str = "auto") -> TraceFile:
    """Read one export; ``fmt`` is "jaeger", "zipkin" or "auto" (told by its shape)."""
    text = read_text(path, "trace export", limit_bytes=MAX_TRACE_BYTES)
    source = str(path)
    try:
        document = json.loads(text)
    except RecursionError:
        raise InputError(source, "JSON nested too deeply to be a trace export; give a Jaeger "
                                 f"or Zipkin v2 JSON export ({EXPORT_HINT['jaeger']})") from None
    except json.JSONDecodeError as exc:
        raise InputError(source, f"not JSON ({exc.msg} at line {exc.lineno} column "
                                 f"{exc.colno}); give a Jaeger or Zipkin v2 JSON export "
                                 f"({EXPORT_HINT['jaeger']})") from None
    return parse_trace_document(document, source, fmt)


def detect_format(document: Any) -> str:
    """"jaeger", "zipkin" or "" from the document's shape."""
    if isinstance(document, Mapping) and ("data" in document or "spans" in document):
        return "jaeger"
    if isinstance(document, list):
        return "zipkin"
    return ""


def parse_trace_document(document: Any, source: str, fmt: str = "auto") -> TraceFile:
    """Spans from a parsed export (see the module's docstring for the shapes)."""
    found = detect_format(document)
    if fmt == "auto":
        if not found:
            raise InputError(source, "neither a Jaeger export (an object with 'data': [traces]) "
                                     "nor a Zipkin v2 one (a list of traces or of spans); "
                                     f"{EXPORT_HINT['jaeger']}, or {EXPORT_HINT['zipkin']}")
        fmt = found
    if fmt not in FORMATS:
        raise InputError(source, f"unknown format '{fmt}'; use one of {', '.join(FORMATS)}")
    if found and found != fmt:
        raise InputError(source, f"read as {fmt}, but it is shaped like a {found} export; "
                                 f"give --format {found} or --format auto")
    if fmt == "jaeger":
        return _jaeger(document, source)
    return _zipkin(document, source)


def _jaeger(document: Any, source: str) -> TraceFile:
    problems = _Problems(source)
    if isinstance(document, Mapping) and "data" in document:
        traces = document["data"]
        if not isinstance(traces, list):
            raise InputError(source, "'data' must be a list of traces; "
                                     f"{EXPORT_HINT['jaeger']}")
    else:
        traces = [document]
    spans: list[Span] = []
    for t_index, trace in enumerate(traces):
        if not isinstance(trace, Mapping):
            problems.add(f"data[{t_index}]: a trace must be an object with traceID, spans and "
                         "processes")
            continue
        trace_id = trace.get("traceID")
        if not isinstance(trace_id, str) or not trace_id:
            problems.add(f"data[{t_index}]: field 'traceID' missing or not text; export the "
                         "trace again")
            trace_id = f"data[{t_index}]"
        processes = trace.get("processes") or {}
        if not isinstance(processes, Mapping):
            problems.add(f"trace {trace_id}: 'processes' must map process ids to "
                         "{serviceName}")
            processes = {}
        raw_spans = trace.get("spans")
        if not isinstance(raw_spans, list):
            problems.add(f"trace {trace_id}: field 'spans' missing or not a list")
            continue
        for s_index, raw in enumerate(raw_spans):
            span = _jaeger_span(raw, trace_id, s_index, processes, problems)
            if span is not None:
                spans.append(span)
    problems.raise_if_any()
    return TraceFile(source, "jaeger", len(traces), tuple(spans))


def _jaeger_span(raw: Any, trace_id: str, index: int, processes: Mapping[str, Any],
                 problems: _Problems) -> Span | None:
    if not isinstance(raw, Mapping):
        problems.add(f"trace {trace_id} spans[{index}]: a span must be an object")
        return None
    span_id = raw.get("spanID")
    if not isinstance(span_id, str) or not span_id:
        problems.add(f"trace {trace_id} spans[{index}]: field 'spanID' missing or not text; "
                     "export the trace again")
        return None
    where = f"trace {trace_id} span {span_id}"
    operation = raw.get("operationName", "")
    if not isinstance(operation, str):
        problems.add(f"{where}: field 'operationName' must be text, got {operation!r}")
        operation = ""
    start = _micros(raw, "startTime", where, problems)
    duration = _micros(raw, "duration", where, problems)
    service = ""
    process = raw.get("process")
    if not isinstance(process, Mapping):
        pid = raw.get("processID")
        if not isinstance(pid, str):
            problems.add(f"{where}: field 'processID' missing (and no 'process'); export "
                         "whole traces from the query API, which lists the processes")
            return None
        process = processes.get(pid)
    if isinstance(process, Mapping) and isinstance(process.get("serviceName"), str):
        service = process["serviceName"]
    parent = _jaeger_parent(raw, where, problems)
    tags = _jaeger_tags(raw.get("tags"), where, problems)
    if start is None or duration is None or parent is None:
        return None
    return Span(trace_id=str(raw.get("traceID") or trace_id), span_id=span_id,
                parent_id=parent, service=service, operation=operation, start_us=start,
                duration_us=duration, http=_http(tags),
                db_system=tags.get("db.system", tags.get("db.type", "")),
                remote_service=tags.get("peer.service", "")
                if tags.get("span.kind") == "client" else "")


def _jaeger_parent(raw: Mapping[str, Any], where: str, problems: _Problems) -> str | None:
    """The CHILD_OF reference's span id (else FOLLOWS_FROM's, else parentSpanID, else "")."""
    references = raw.get("references") or []
    if not isinstance(references, list):
        problems.add(f"{where}: field 'references' must be a list of "
                     "{refType, traceID, spanID}")
        return None
    by_type: dict[str, str] = {}
    for ref in references:
        if not isinstance(ref, Mapping) or not isinstance(ref.get("spanID"), str):
            problems.add(f"{where}: a reference without 'spanID': {ref!r}")
            return None
        by_type.setdefault(str(ref.get("refType", "CHILD_OF")), ref["spanID"])
    legacy = raw.get("parentSpanID")
    return (by_type.get("CHILD_OF") or by_type.get("FOLLOWS_FROM")
            or (legacy if isinstance(legacy, str) and legacy.strip("0") else ""))


def _jaeger_tags(raw: Any, where: str, problems: _Problems) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        problems.add(f"{where}: field 'tags' must be a list of {{key, type, value}}")
        return {}
    return {str(t["key"]): str(t.get("value", "")) for t in raw
            if isinstance(t, Mapping) and "key" in t}


def _zipkin(document: Any, source: str) -> TraceFile:
    problems = _Problems(source)
    if not isinstance(document, list):
        raise InputError(source, "a Zipkin v2 export is a list of traces (lists of spans) or "
                                 f"of spans; {EXPORT_HINT['zipkin']}")
    if document and all(isinstance(t, list) for t in document):
        groups = document
    elif all(isinstance(s, Mapping) for s in document):
        groups = [document]
    else:
        raise InputError(source, "mixes lists and objects at the top level; a Zipkin v2 export "
                                 "is a list of traces (lists of spans) or a list of spans")
    spans: list[Span] = []
    trace_ids: set[str] = set()
    for group in groups:
        raw_spans = [_zipkin_span(raw, index, problems) for index, raw in enumerate(group)]
        read = [s for s in raw_spans if s is not None]
        spans.extend(_join_shared(read))
        trace_ids |= {s[0].trace_id for s in read}
    problems.raise_if_any()
    return TraceFile(source, "zipkin", len(trace_ids), tuple(spans))


def _zipkin_span(raw: Any, index: int, problems: _Problems) -> tuple[Span, bool] | None:
    if not isinstance(raw, Mapping):
        problems.add(f"span [{index}]: a span must be an object with traceId, id, timestamp, "
                     "duration")
        return None
    trace_id, span_id = raw.get("traceId"), raw.get("id")
    if not isinstance(trace_id, str) or not trace_id:
        problems.add(f"span [{index}] (id {span_id!r}): field 'traceId' missing or not text")
        return None
    if not isinstance(span_id, str) or not span_id:
        problems.add(f"trace {trace_id} span [{index}]: field 'id' missing or not text")
        return None
    where = f"trace {trace_id} span {span_id}"
    start = _micros(raw, "timestamp", where, problems)
    duration = _micros(raw, "duration", where, problems)
    parent = raw.get("parentId", "") or ""
    if not isinstance(parent, str):
        problems.add(f"{where}: field 'parentId' must be text, got {parent!r}")
        return None
    local = raw.get("localEndpoint") or {}
    remote = raw.get("remoteEndpoint") or {}
    tags = raw.get("tags") or {}
    if not isinstance(local, Mapping) or not isinstance(remote, Mapping):
        problems.add(f"{where}: localEndpoint and remoteEndpoint must be objects "
                     "({serviceName, ipv4, port})")
        return None
    if not isinstance(tags, Mapping):
        problems.add(f"{where}: field 'tags' must be an object of text values")
        return None
    tags = {str(k): str(v) for k, v in tags.items()}
    name = raw.get("name", "")
    if start is None or duration is None:
        return None
    span = Span(trace_id=trace_id, span_id=span_id, parent_id=parent,
                service=str(local.get("serviceName") or ""),
                operation=name if isinstance(name, str) else "",
                start_us=start, duration_us=duration, http=_http(tags),
                db_system=tags.get("db.system", tags.get("db.type", "")),
                remote_service=str(remote.get("serviceName") or "")
                if raw.get("kind") == "CLIENT" else "")
    return span, raw.get("shared") is True


def _join_shared(read: list[tuple[Span, bool]]) -> list[Span]:
    """A shared (server) span with the id of a client span: the client span's child, and
    the parent of the spans below that id."""
    unshared = {(s.trace_id, s.span_id) for s, shared in read if not shared}
    renamed: dict[tuple[str, str], str] = {}
    out: list[Span] = []
    for span, shared in read:
        key = (span.trace_id, span.span_id)
        if shared and key in unshared:
            new_id = f"{span.span_id}.server"
            renamed[key] = new_id
            out.append(_replace(span, span_id=new_id, parent_id=span.span_id))
        else:
            out.append(span)
    if not renamed:
        return out
    result = []
    for span in out:
        key = (span.trace_id, span.parent_id)
        is_server_of = span.span_id == renamed.get(key)
        if key in renamed and not is_server_of:
            span = _replace(span, parent_id=renamed[key])
        result.append(span)
    return result


def _replace(span: Span, **changes: str) -> Span:
    from dataclasses import replace

    return replace(span, **changes)


def _micros(raw: Mapping[str, Any], key: str, where: str, problems: _Problems) -> float | None:
    """A time field in µs (a whole or decimal number >= 0), or None after a problem."""
    value = raw.get(key)
    if value is None:
        problems.add(f"{where}: field '{key}' missing (µs); a span without it cannot be "
                     "placed in time: export finished traces")
        return None
    try:
        return float(number(value, f"{where}: field '{key}' (µs)", minimum=0))
    except BadNumber as exc:
        problems.add(str(exc))
        return None


def _http(tags: Mapping[str, str]) -> str:
    """"METHOD /route" from the OpenTelemetry / OpenTracing http tags, or ""."""
    method = tags.get("http.method") or tags.get("http.request.method") or ""
    route = (tags.get("http.route") or tags.get("http.target") or tags.get("http.path")
             or tags.get("url.path") or "")
    if not route:
        url = tags.get("http.url") or tags.get("url.full") or ""
        route = urlsplit(url).path if url else ""
    return f"{method.upper()} {route}" if method and route.startswith("/") else ""
