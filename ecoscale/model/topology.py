"""Application topology: services, call graph, endpoints as stages of parallel calls.

An endpoint's ``path`` is a sequence of stages run one after another; the calls inside one
stage run in parallel. A call may carry its callee's own sub-path (same shape), which runs
after the callee's own work and before the call returns.

Pure: parses plain data (already read from YAML) and validates it, reporting every problem
at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from ecoscale.errors import InputError
from ecoscale.values import number_at

SHARE_TOLERANCE = 1e-6
KNOWN_KINDS = ("logic", "memcached", "mongodb", "redis", "infra")


@dataclass(frozen=True)
class Call:
    """One call to ``service``; ``path`` is the callee's own downstream stages."""

    service: str
    path: tuple[tuple[Call, ...], ...] = ()


Stage = tuple[Call, ...]


@dataclass(frozen=True)
class Endpoint:
    name: str
    share: float
    """Fraction of all requests that go to this endpoint (the mix sums to 1)."""
    http: str
    path: tuple[Stage, ...]

    def calls(self) -> Iterator[Call]:
        """Every call of the endpoint, depth first (one per service visit)."""
        yield from _walk(self.path)

    def visits(self) -> dict[str, int]:
        """How many times each service is called per request of this endpoint."""
        counts: dict[str, int] = {}
        for call in self.calls():
            counts[call.service] = counts.get(call.service, 0) + 1
        return counts


def _walk(path: tuple[Stage, ...]) -> Iterator[Call]:
    for stage in path:
        for call in stage:
            yield call
            yield from _walk(call.path)


@dataclass(frozen=True)
class Service:
    name: str
    kind: str
    calls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Topology:
    app: str
    frontend: str
    services: Mapping[str, Service]
    endpoints: tuple[Endpoint, ...]
    source: str = ""
    notes: tuple[str, ...] = field(default=())
    file: str = ""
    """The file it was read from ("" when built in memory)."""

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(self.services)

    def visits_per_request(self) -> dict[str, float]:
        """Mix-weighted calls per front-end request, per service (services in no path: 0)."""
        visits = {name: 0.0 for name in self.services}
        for endpoint in self.endpoints:
            for service, count in endpoint.visits().items():
                visits[service] += endpoint.share * count
        return visits


def parse_topology(data: object, source: str) -> Topology:
    """Build a Topology from parsed YAML, reporting every problem at once (InputError)."""
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise InputError(source, "expected a mapping with keys app, frontend, services, endpoints")
    for key in ("app", "frontend", "services", "endpoints"):
        if key not in data:
            problems.append(f"missing key '{key}' at the top level")
    if problems:
        raise InputError(source, problems)

    services = _parse_services(data["services"], problems)
    frontend = str(data["frontend"])
    if services and frontend not in services:
        problems.append(f"frontend '{frontend}' is not one of the services; add it under services")
    endpoints = _parse_endpoints(data["endpoints"], services, frontend, problems)
    if endpoints:
        total = sum(e.share for e in endpoints)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            shares = ", ".join(f"{e.name}={e.share:g}" for e in endpoints)
            problems.append(
                f"endpoint shares sum to {total:.6g}, not 1 ({shares}); "
                "scale them so that they sum to 1"
            )
    if problems:
        raise InputError(source, problems)
    notes = data.get("notes")
    return Topology(
        app=str(data["app"]),
        frontend=frontend,
        services=services,
        endpoints=tuple(endpoints),
        source=str(data.get("source", "")),
        notes=(() if notes is None else tuple(str(n) for n in notes)
               if isinstance(notes, list) else (str(notes),)),
        file=source,
    )


def _parse_services(raw: object, problems: list[str]) -> dict[str, Service]:
    if not isinstance(raw, Mapping) or not raw:
        problems.append("'services' must be a non-empty mapping of name -> {kind, calls}")
        return {}
    services: dict[str, Service] = {}
    for name, spec in raw.items():
        spec = spec or {}
        if not isinstance(spec, Mapping):
            problems.append(f"service '{name}': expected a mapping with 'kind' and 'calls'")
            continue
        kind = str(spec.get("kind", ""))
        if kind not in KNOWN_KINDS:
            problems.append(
                f"service '{name}': kind '{kind}' is not one of {', '.join(KNOWN_KINDS)}"
            )
        calls = spec.get("calls", []) or []
        if not isinstance(calls, list):
            problems.append(f"service '{name}': 'calls' must be a list of service names")
            calls = []
        services[str(name)] = Service(str(name), kind, tuple(str(c) for c in calls))
    for service in services.values():
        for callee in service.calls:
            if callee not in services:
                problems.append(
                    f"service '{service.name}' calls unknown service '{callee}'; "
                    "declare it under services or remove the call"
                )
    return services


def _parse_endpoints(
    raw: object, services: Mapping[str, Service], frontend: str, problems: list[str]
) -> list[Endpoint]:
    if not isinstance(raw, Mapping) or not raw:
        problems.append("'endpoints' must be a non-empty mapping of name -> {share, http, path}")
        return []
    endpoints = []
    for name, spec in raw.items():
        where = f"endpoint '{name}'"
        if not isinstance(spec, Mapping):
            problems.append(f"{where}: expected a mapping with share, http and path")
            continue
        share = number_at(spec, "share", problems, where=f"{where}: ", fallback=0.0,
                          minimum=0, maximum=1)
        path = _parse_path(spec.get("path"), where, problems)
        endpoint = Endpoint(str(name), float(share), str(spec.get("http", "")), path)
        if services and path:
            _check_calls(endpoint.path, where, services, frontend, parent=None, ancestors=(),
                         problems=problems)
        endpoints.append(endpoint)
    return endpoints


def _parse_path(raw: object, where: str, problems: list[str]) -> tuple[Stage, ...]:
    if not isinstance(raw, list) or not raw:
        problems.append(f"{where}: path must be a non-empty list of stages (lists of calls)")
        return ()
    stages = []
    for index, stage in enumerate(raw):
        if not isinstance(stage, list) or not stage:
            problems.append(f"{where}: stage {index + 1} must be a non-empty list of calls")
            continue
        calls = []
        for item in stage:
            if isinstance(item, str):
                calls.append(Call(item))
            elif isinstance(item, Mapping) and len(item) == 1:
                (service, sub_path), = item.items()
                calls.append(Call(str(service), _parse_path(sub_path, f"{where} -> {service}",
                                                            problems)))
            else:
                problems.append(
                    f"{where}: stage {index + 1}: a call is a service name or "
                    f"{{service: [stages]}}, got {item!r}"
                )
        stages.append(tuple(calls))
    return tuple(stages)


def _check_calls(
    path: tuple[Stage, ...],
    where: str,
    services: Mapping[str, Service],
    frontend: str,
    parent: str | None,
    ancestors: tuple[str, ...],
    problems: list[str],
) -> None:
    """Check that every call is a declared edge and that no call re-enters an ancestor.

    A call back to the front end after the first stage is a cycle too.

    A call in a stage must be a callee of the parent call or of a service earlier in the
    same path (flat paths write a callee's calls as later stages).
    """
    callers: list[str] = [parent] if parent else []
    for stage in path:
        for call in stage:
            if call.service not in services:
                problems.append(f"{where}: unknown service '{call.service}'")
                continue
            if call.service in ancestors or (call.service == frontend and (ancestors or callers)):
                chain = " -> ".join((*ancestors, call.service))
                problems.append(f"{where}: cycle inside the path: {chain}")
                continue
            if callers and not any(call.service in services[c].calls for c in callers
                                   if c in services):
                problems.append(
                    f"{where}: unknown callee '{call.service}': none of "
                    f"{', '.join(callers)} lists it under calls"
                )
            if call.path:
                _check_calls(call.path, where, services, frontend, call.service,
                             (*ancestors, call.service), problems)
        callers.extend(c.service for c in stage)
