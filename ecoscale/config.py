"""The daemon's configuration: nested frozen dataclasses, validated with every error at once.

Example (deploy/daemon/ecoscale.yaml has a complete, commented one):

    app: socialNetwork
    table: policy-table.yaml
    interval_s: 15
    prometheus:
      url: http://127.0.0.1:9090
      queries: {qps: "...", p99_ms: "..."}
    carbon: {trace: CISO}
    target: {kind: swarm, docker_host: "unix:///var/run/docker.sock"}
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

from ecoscale.control.decide import ControlSettings
from ecoscale.errors import InputError
from ecoscale.model.spans import SERVICE_LATENCIES
from ecoscale.values import BadNumber, number, number_at

DEFAULT_LISTEN_PORT = 9464


@dataclass(frozen=True)
class PrometheusConfig:
    url: str = "http://127.0.0.1:9090"
    timeout_s: float = 5.0
    stale_after_s: float = 60.0
    """A sample older than this is no data."""
    qps: str = ""
    """PromQL: front-end requests per second (a scalar or a one-element vector)."""
    p99_ms: str = ""
    """PromQL: end-to-end p99 in milliseconds."""
    service_utilisation: str = ""
    """PromQL (optional): per-replica CPU utilisation (0..1), one series per service."""
    service_label: str = "service"
    """The label of ``service_utilisation``'s series that carries the service name."""


ROLE_PLACEHOLDERS = ("{frontend}", "{window}", "{quantile}")
"""What a role query may leave open: the front end's service name, the range (e.g. ``30s``)
and the quantile (0..1; the profiler asks 0.5, 0.95 and 0.99)."""


@dataclass(frozen=True)
class RoleQueries:
    """The PromQL of the metric roles, written once per metric source (the lab's emulator in
    ``ecoscale.lab.queries``; a user's in their pool config's ``queries:``).

    Templates: ``{frontend}``, ``{window}`` and ``{quantile}`` are filled in by ``render``;
    every other character (PromQL's own braces too) is sent as written."""

    qps: str = ""
    """Front-end requests per second (one series)."""
    p99_ms: str = ""
    """End-to-end latency at ``{quantile}`` (ms; one series)."""
    service_p99_ms: str = ""
    """Per-service latency at ``{quantile}`` (ms), one series per service (``service_label``)."""
    service_cpu_cores: str = ""
    """Per-service CPU in cores (all replicas together), one series per service
    (``cpu_service_label``)."""
    service_label: str = "service"
    """The label that carries the service name in ``service_p99_ms``."""
    cpu_service_label: str = ""
    """The label carrying the service name in ``service_cpu_cores``; empty: ``service_label``."""
    service_latency: str = "own"
    """What ``service_p99_ms`` measures (``SERVICE_LATENCIES``): ``own``, each service's own
    time without its downstream calls, the model's input as it is; or ``server-span``, a span
    that lasts through the service's downstream calls (OpenTelemetry spanmetrics'
    ``SPAN_KIND_SERVER``), from which the profiler derives own time (``ecoscale.model.spans``)."""

    @property
    def cpu_label(self) -> str:
        return self.cpu_service_label or self.service_label

    def render(self, role: str, frontend: str, window_s: float, quantile: float = 0.99) -> str:
        """The query of ``role`` (a field name) with its placeholders filled in; the window is
        whole seconds (``30s``)."""
        template: str = getattr(self, role)
        return (template.replace("{frontend}", frontend)
                .replace("{window}", f"{int(round(window_s))}s")
                .replace("{quantile}", f"{quantile:g}"))


ROLES = ("qps", "p99_ms", "service_p99_ms", "service_cpu_cores")
"""The four roles a profiler needs (the daemon needs the first two)."""


def parse_role_queries(raw: Any, where: str, problems: list[str]) -> RoleQueries | None:
    """``queries:`` of a pool config: every role a non-empty string; problems appended."""
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: a mapping of {', '.join(ROLES)} (PromQL) and service_label")
        return None
    before = len(problems)
    queries = _build(RoleQueries, raw, f"{where}.", problems)
    if queries is None or len(problems) > before:
        return None
    for role in ROLES:
        if not getattr(queries, role).strip():
            problems.append(f"{where}.{role}: required (a PromQL query; README \"Metrics are "
                            "configuration\" has worked sets)")
    for label in ("service_label",):
        if not getattr(queries, label).strip():
            problems.append(f"{where}.{label}: required (the label carrying the service name)")
    if queries.service_latency not in SERVICE_LATENCIES:
        problems.append(f"{where}.service_latency: {queries.service_latency!r} is not one of "
                        f"{', '.join(SERVICE_LATENCIES)} (own: service_p99_ms is each service's "
                        "own time; server-span: its server span, callees included)")
    return queries if len(problems) == before else None


Series = tuple[Mapping[str, str], float, float]
"""(labels, sample time s, value): one series of an instant query's reply."""


def label_values(services: Iterable[str], target: TargetConfig | None = None
                 ) -> dict[str, str]:
    """Label value -> topology service: a per-service series may carry the topology's name
    or the orchestrator's name it maps to (cAdvisor's
    ``container_label_com_docker_swarm_service_name``: ``socialnetwork_user-service``)."""
    names = list(services)
    values = {s: s for s in names}
    for service in names:
        if target is not None:
            values.setdefault(target.target_name(service), service)
    return values


def series_problem(field_name: str, query: str, samples: Sequence[Series],
                   label: str | None, values: Mapping[str, str] | None = None,
                   consumer: str = "daemon") -> tuple[str, str]:
    """Check one reply of a role query: (problem, note), each '' when there is none.

    ``label`` None: the role needs exactly one series. Else one series per service: every
    series carries ``label`` and some of its values name a topology service (``values``:
    label value -> service, ``label_values``); the note says how many services have a series
    and which values name none. Messages name the field, the query and the label."""
    where = f"{field_name} {query!r}"
    if not samples:
        return (f"{where} returned nothing: is the metric name right and is its target "
                "scraped?"), ""
    if label is None:
        if len(samples) > 1:
            return (f"{where}: {len(samples)} series, the {consumer} needs one; aggregate "
                    "them (sum, max) in the query"), ""
        return "", ""
    unlabelled = [dict(labels) for labels, _, _ in samples if not labels.get(label)]
    if unlabelled:
        return (f"{where}: {len(unlabelled)} of {len(samples)} series have no label "
                f"'{label}' (e.g. {unlabelled[0]}); aggregate with `sum by ({label})`, or "
                f"name the label that carries the service"), ""
    seen = sorted({str(labels[label]) for labels, _, _ in samples})
    if values is None:
        return "", f"{len(seen)} services"
    named = {values[v] for v in seen if v in values}
    stray = [v for v in seen if v not in values]
    if not named:
        expected = ", ".join(f"'{v}'" for v in list(values)[:3])
        return (f"{where}: no value of label '{label}' names a topology service (it saw "
                f"{', '.join(repr(v) for v in seen[:8])}{' ...' if len(seen) > 8 else ''}; "
                f"expected e.g. {expected}); relabel with label_replace, or set the label "
                "that carries the service name"), ""
    services = set(values.values())
    note = f"{len(named)} services of {len(services)}"
    if stray:
        note += (f"; label '{label}' values that name no service (ignored): "
                 f"{', '.join(stray[:5])}{' ...' if len(stray) > 5 else ''}")
    return "", note


@dataclass(frozen=True)
class CarbonConfig:
    trace: str = "CISO"
    """A shipped carbon trace name or a CSV path (see `ecoscale replay --help`)."""
    start: str = "0h"
    """Where in the trace the daemon's start falls: an offset or an ISO time."""
    speedup: float = 1.0
    """Trace seconds per wall-clock second (>1 replays a trace compressed in time)."""
    factors: str | None = None
    url: str = ""
    """A live intensity API returning JSON; when set it is used instead of the trace."""
    json_field: str = "carbonIntensity"
    fallback_g_per_kwh: float | None = None
    """Used when the source has no value; None: no data (the carbon metrics are NaN)."""


@dataclass(frozen=True)
class LabelConfig:
    managed: str = "ecoscale.managed"
    service: str = "ecoscale.service"
    generation: str = "ecoscale.generation"
    paused: str = "ecoscale.paused"
    emptied: str = "ecoscale.emptied"
    """A node label ecoscale sets (``true``) on a node it paused or drained to empty it (the
    packing of a right-sized table): only such nodes does it make active again, never a
    node an operator paused or drained."""


MAX_SLOT_CPUS = 4096.0
"""Most CPUs (cores) one slot may have."""


def parse_slot_cpus(raw: Any, problems: list[str], where: str = "slot_cpus") -> dict[str, float]:
    """``slot_cpus:`` (a daemon config, a pool file): generation -> the CPUs (cores) of one
    slot of it, one socket, each > 0; problems appended, each naming its field."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: expected a mapping of generation -> CPUs of one slot (one "
                        f"socket; cores > 0), e.g. {{new: 16, old: 10}}; got {raw!r}")
        return {}
    before = len(problems)
    values = {str(g): number_at(raw, g, problems, where=f"{where}.", above=0,
                                maximum=MAX_SLOT_CPUS) for g in raw}
    return {g: float(v) for g, v in values.items()} if len(problems) == before else {}


TARGET_KINDS = ("swarm",)
"""The orchestrator kinds a ``target.kind`` may name (the keys of
ecoscale.adapters.targets.KINDS, which builds them; a unit test keeps the two equal)."""


@dataclass(frozen=True)
class TargetConfig:
    """The orchestrator ecoscale acts on (adapters/targets.py builds it) and how topology
    service names map to the orchestrator's service names.

    With neither ``stack`` nor ``services``, ecoscale manages the services labelled
    ``ecoscale.managed=true`` (named by ``ecoscale.service``, else their own name); labels
    keep working beside a mapping."""

    kind: str = "swarm"
    """Which orchestrator adapter: one of TARGET_KINDS."""
    docker_host: str = ""
    """swarm: the Docker API of a Swarm manager; empty: DOCKER_HOST or the local socket."""
    stack: str = ""
    """Adopt a stack deployed with ``docker stack deploy ... STACK``: the Swarm service of
    topology service ``x`` is ``STACK_x``; empty: no stack rule."""
    services: Mapping[str, str] = field(default_factory=dict)
    """Explicit topology name -> Swarm service name; overrides the stack rule for the
    topology names it lists."""

    @property
    def adopts(self) -> bool:
        """Whether a name mapping is configured (else only labelled services are managed)."""
        return bool(self.stack or self.services)

    def target_name(self, service: str) -> str:
        """The orchestrator's name that topology service ``service`` maps to (its own name
        without a mapping)."""
        if service in self.services:
            return self.services[service]
        return f"{self.stack}_{service}" if self.stack else service

    def service_name(self, target_name: str) -> str | None:
        """The topology name that the orchestrator's service ``target_name`` maps to by
        ``services`` or ``stack``; None when the mapping names it not."""
        for service, name in self.services.items():
            if name == target_name:
                return service
        prefix = f"{self.stack}_"
        if self.stack and target_name.startswith(prefix) and len(target_name) > len(prefix):
            service = target_name[len(prefix):]
            return None if service in self.services else service
        return None

    def in_stack(self, target_name: str) -> bool:
        """Whether the orchestrator's service ``target_name`` belongs to ``stack``."""
        return bool(self.stack) and target_name.startswith(f"{self.stack}_")


@dataclass(frozen=True)
class DaemonConfig:
    app: str
    table: str
    """Policy table written by `ecoscale plan`."""
    profile: str = "default"
    """Latency profile of the app (for the live carbon accounting's utilisation model)."""
    hardware: str = "cloudlab"
    interval_s: float = 15.0
    max_backoff_s: float = 300.0
    dry_run: bool = False
    target: TargetConfig = field(default_factory=TargetConfig)
    """The orchestrator (section ``target:``; a top-level ``docker_host`` is still read as
    ``target.docker_host``)."""
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)
    carbon: CarbonConfig = field(default_factory=CarbonConfig)
    control: ControlSettings = field(default_factory=lambda: ControlSettings(
        no_data_fallback_periods=10))
    labels: LabelConfig = field(default_factory=LabelConfig)
    pause_file: str = ""
    """If this file exists, the daemon observes and decides but does not act."""
    slot_cpus: Mapping[str, float] = field(default_factory=dict)
    """generation -> CPUs (cores) of one slot of it: one socket, which is one Swarm node of
    the generation (README "Shares and node availability"). A right-sized table's replica
    with share s gets a CPU reservation and limit of s x this; required for every
    generation of a table with a right-sized level, unused otherwise."""
    state_file: str = ""
    """Where the control state survives restarts (cooldowns, escalation); empty: memory."""
    listen_address: str = "127.0.0.1"
    listen_port: int = DEFAULT_LISTEN_PORT
    """Own /metrics and /healthz; port 0 disables them."""
    source: str = ""


MIN_INTERVAL_S = 0.1
"""Shortest loop period (s)."""
MAXIMA = {"speedup": 1e6, "fallback_g_per_kwh": 3000.0, "listen_port": 65535}
"""Upper bounds of the numbers that are neither durations nor counts."""
MAX_COUNT = 1_000_000
"""Largest count (periods, replicas, moves) a config may set; ports are checked apart."""
MAX_SECONDS = 30 * 86400.0
"""Longest interval, timeout or window a config may set (s): a month."""
def _kind(expected: type) -> str:
    return {bool: "true or false", str: "a string"}.get(expected, expected.__name__)


def _section(raw: Mapping[str, Any], name: str, problems: list[str]) -> Mapping[str, Any]:
    value = raw.get(name) or {}
    if not isinstance(value, Mapping):
        problems.append(f"{name}: expected a mapping")
        return {}
    return value


def _build(cls: type, raw: Mapping[str, Any], where: str, problems: list[str]) -> Any:
    """Instantiate a flat dataclass from ``raw``, checking names and types."""
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{where}{key}: unknown setting{hint}; known: {', '.join(known)}")
            continue
        default = known[key].default
        expected = None if default is MISSING or default is None else type(default)
        if expected is None and "float" in str(known[key].type) and value is not None:
            expected = float   # an optional number (e.g. fallback_g_per_kwh: None)
        if expected in (int, float):
            try:   # finite, of the right type, never a boolean; no setting is negative
                # (interval_s: parse_config's own check says "> 0, at least 0.1 s")
                value = number(value, f"{where}{key}", integer=expected is int,
                               minimum=None if key == "interval_s" else 0,
                               maximum=MAXIMA.get(key, MAX_SECONDS if key.endswith("_s") else
                                                  MAX_COUNT if expected is int else None))
            except BadNumber as exc:
                problems.append(str(exc))
                continue
            value = expected(value)
        elif expected is not None and not isinstance(value, expected):
            problems.append(f"{where}{key}: expected {_kind(expected)}, got {value!r}")
            continue
        values[key] = value
    try:
        return cls(**values)
    except TypeError as exc:
        problems.append(f"{where}{exc}")
        return None


STACK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
"""What ``docker stack deploy`` accepts as a stack name (and a Swarm service name)."""


def parse_target(raw: Mapping[str, Any], problems: list[str],
                 docker_host: Any = None, where: str = "target") -> TargetConfig | None:
    """The ``target:`` section; ``docker_host`` is the old top-level setting (configs written
    before the section existed), used when the section sets none. Problems (unknown keys and
    kinds, a ``services:`` that is not a mapping of names) are appended, each naming its
    field."""
    raw = dict(raw)
    services_raw = raw.pop("services", None)
    target = _build(TargetConfig, raw, f"{where}.", problems)
    if target is None:
        return None
    before = len(problems)
    if target.kind not in TARGET_KINDS:
        problems.append(f"{where}.kind: unknown orchestrator '{target.kind}'; known kinds: "
                        f"{', '.join(TARGET_KINDS)}")
    if target.stack and not STACK_NAME.match(target.stack):
        problems.append(f"{where}.stack: '{target.stack}' is not a stack name (letters, "
                        "digits, '_', '.', '-'; the STACK of `docker stack deploy -c FILE "
                        "STACK`)")
    services = _service_map(services_raw, f"{where}.services", problems)
    if docker_host is not None:
        if not isinstance(docker_host, str):
            problems.append(f"docker_host: expected a string, got {docker_host!r}")
        elif "docker_host" in raw and raw["docker_host"] != docker_host:
            problems.append(f"docker_host: '{docker_host}' differs from {where}.docker_host "
                            f"'{raw['docker_host']}'; keep only {where}.docker_host")
        else:
            target = replace(target, docker_host=docker_host)
    if len(problems) > before:
        return None
    return replace(target, services=services)


def _service_map(raw: Any, where: str, problems: list[str]) -> dict[str, str]:
    """``target.services``: topology name -> Swarm service name, both non-empty strings, no
    Swarm service named twice."""
    if raw is None:
        return {}
    example = "e.g. {nginx-thrift: socialnetwork_nginx-web-server}"
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: expected a mapping of topology service names to Swarm "
                        f"service names ({example}), got {raw!r}")
        return {}
    services: dict[str, str] = {}
    owner: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key or not isinstance(value, str) \
                or not STACK_NAME.match(value):
            problems.append(f"{where}.{key}: expected a Swarm service name (a string), got "
                            f"{value!r} ({example})")
            continue
        if value in owner:
            problems.append(f"{where}.{key}: '{value}' is already the Swarm service of "
                            f"'{owner[value]}'; one Swarm service per topology service")
            continue
        owner[value] = key
        services[key] = value
    return services


def parse_config(raw: Any, source: str) -> DaemonConfig:
    """Validate a daemon config, reporting every problem at once (InputError)."""
    if not isinstance(raw, Mapping):
        raise InputError(source, "expected a mapping with at least 'app' and 'table'")
    problems: list[str] = []
    for key in ("app", "table"):
        if not raw.get(key):
            problems.append(f"{key}: required")
    prometheus = _build(PrometheusConfig, _section(raw, "prometheus", problems), "prometheus.",
                        problems)
    carbon = _build(CarbonConfig, _section(raw, "carbon", problems), "carbon.", problems)
    labels = _build(LabelConfig, _section(raw, "labels", problems), "labels.", problems)
    target = parse_target(_section(raw, "target", problems), problems, raw.get("docker_host"))
    control_raw = dict(_section(raw, "control", problems))
    control_raw.setdefault("no_data_fallback_periods", 10)
    control = _build(ControlSettings, control_raw, "control.", problems)
    if control is not None:
        problems.extend(f"control.{p}" for p in control.problems())
    slot_cpus = parse_slot_cpus(raw.get("slot_cpus"), problems)
    top = {k: v for k, v in raw.items() if k not in ("prometheus", "carbon", "labels",
                                                      "control", "target", "docker_host",
                                                      "slot_cpus")}
    top.setdefault("app", "")
    top.setdefault("table", "")
    config = _build(DaemonConfig, top, "", problems)
    if prometheus is not None:
        if not prometheus.url.startswith(("http://", "https://")):
            problems.append(f"prometheus.url: '{prometheus.url}' must start with http:// or "
                            "https://")
        for name in ("qps", "p99_ms"):
            if not getattr(prometheus, name).strip():
                problems.append(f"prometheus.{name}: required (a PromQL query)")
        if prometheus.timeout_s <= 0 or prometheus.stale_after_s <= 0:
            problems.append("prometheus.timeout_s and stale_after_s must be > 0")
    if carbon is not None and carbon.speedup <= 0:
        problems.append("carbon.speedup must be > 0")
    if config is not None:
        if not config.interval_s >= MIN_INTERVAL_S:
            problems.append(f"interval_s must be > 0, at least {MIN_INTERVAL_S:g} s (a "
                            "shorter period only busy-loops against Prometheus and Docker)")
        if config.max_backoff_s < config.interval_s:
            problems.append("max_backoff_s must be >= interval_s")
        if not 0 <= config.listen_port <= 65535:
            problems.append("listen_port must be in 0..65535")
    if problems:
        raise InputError(source, problems)
    return DaemonConfig(**{
        **{f.name: getattr(config, f.name) for f in fields(DaemonConfig)},
        "prometheus": prometheus, "carbon": carbon, "labels": labels, "control": control,
        "target": target, "slot_cpus": slot_cpus, "source": source,
    })

