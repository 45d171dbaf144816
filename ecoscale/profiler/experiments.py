"""The profiler's pool configuration and experiment plan (pure).

A pool is a set of Swarm nodes labelled by generation, a Prometheus that scrapes the app, and
a front-end URL to drive load at. The plan follows the papers: an all-new sweep (finds the
saturation and the SLO at 75 % of it), an all-old sweep (per-service p99 for the pruner),
then one critical service at a time on old at the SLO load (the criticality ranking).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ecoscale.config import (
    RoleQueries,
    TargetConfig,
    parse_role_queries,
    parse_slot_cpus,
    parse_target,
)
from ecoscale.errors import InputError
from ecoscale.model.latency import parse_replica_limits
from ecoscale.values import number_at


@dataclass(frozen=True)
class PoolConfig:
    name: str
    frontend_url: str
    prometheus_url: str
    docker_host: str = ""
    generations: tuple[str, ...] = ("new", "old")
    """Newest first; the node label ecoscale.generation carries these names."""
    slot_cpus: Mapping[str, float] = field(default_factory=dict)
    """CPUs of one slot per generation: CPU seconds per second that make utilisation 1."""
    loads_qps: tuple[float, ...] = (20.0, 40.0, 60.0, 80.0, 100.0)
    """Front-end loads of the sweeps, req/s, ascending."""
    warmup_s: float = 10.0
    measure_s: float = 30.0
    settle_timeout_s: float = 300.0
    """How long a placement change may take to converge."""
    settle_per_move_s: float = 1.5
    """Extra warm-up after a placement change, per service moved (s; at most MAX_SETTLE_S):
    freshly started tasks are cold, and the engines are still busy with the old ones."""
    emulation: str = ""
    """How old/new differ when they are emulated (stated in every profile), else empty."""
    replica_limits: Mapping[str, int] = field(default_factory=dict)
    """generation -> most replicas of one service that add capacity: the generation's CPUs
    over one replica's (a node whose services share one CPU quota gains nothing from a
    second replica there). Written into the profile, where the planner honours it."""
    hardware: str = "cloudlab"
    seed: int = 1
    queries: RoleQueries | None = None
    """The role queries (``queries:`` of the pool file; ``--pool lab``: the emulator's);
    None: the pool names none, and measuring it is an error that says so."""
    source: str = ""
    """Where the pool config came from (a file, or ``ecoscale lab``)."""
    target: TargetConfig = field(default_factory=TargetConfig)
    """The orchestrator and the name mapping (section ``target:``; a top-level
    ``docker_host`` is still read as ``target.docker_host``): with ``stack`` or
    ``services`` the profiler moves the services of a stack it did not deploy."""

    @property
    def newest(self) -> str:
        return self.generations[0]

    @property
    def service_latency(self) -> str:
        """What the per-service p99 query measures (``RoleQueries.service_latency``)."""
        return self.queries.service_latency if self.queries else "own"

    @property
    def oldest(self) -> str:
        return self.generations[-1]


def parse_pool(raw: Any, source: str) -> PoolConfig:
    """Validate a pool config (YAML mapping), every problem at once."""
    if not isinstance(raw, Mapping):
        raise InputError(source, "expected a mapping with frontend_url and prometheus_url")
    problems = []
    for key in ("frontend_url", "prometheus_url"):
        value = str(raw.get(key, ""))
        if not value.startswith(("http://", "https://")):
            problems.append(f"{key}: required, an http:// URL (got {value!r})")
    generations = tuple(str(g) for g in raw.get("generations", ("new", "old")))
    if len(generations) < 2 or len(set(generations)) != len(generations):
        problems.append("generations: at least two distinct names, newest first")
    loads = raw.get("loads_qps", PoolConfig.loads_qps)
    if isinstance(loads, list | tuple) and loads:
        before = len(problems)
        loads = tuple(number_at(dict(enumerate(loads)), i, problems, where="loads_qps.",
                                above=0, maximum=1e6) for i in range(len(loads)))
        if len(problems) == before and list(loads) != sorted(set(loads)):
            problems.append("loads_qps: distinct loads in ascending order")
    else:
        problems.append("loads_qps: a list of distinct loads > 0 in ascending order")
        loads = PoolConfig.loads_qps
    numbers = {}
    for key in ("warmup_s", "measure_s", "settle_timeout_s", "settle_per_move_s"):
        zero_ok = key in ("warmup_s", "settle_per_move_s")
        numbers[key] = float(number_at(raw, key, problems, default=getattr(PoolConfig, key),
                                       fallback=getattr(PoolConfig, key), maximum=86_400,
                                       **({"minimum": 0} if zero_ok else {"above": 0})))
    slot_cpus = parse_slot_cpus(raw.get("slot_cpus"), problems)
    seed = number_at(raw, "seed", problems, default=1, fallback=1, integer=True, minimum=0)
    limits, limit_problems = parse_replica_limits(raw.get("replica_limits"))
    problems.extend(limit_problems)
    target_raw = raw.get("target") or {}
    if isinstance(target_raw, TargetConfig):
        target: TargetConfig | None = target_raw
    elif isinstance(target_raw, Mapping):
        target = parse_target(target_raw, problems, raw.get("docker_host"))
    else:
        problems.append(f"target: expected a mapping (kind, docker_host, stack, services), "
                        f"got {target_raw!r}")
        target = None
    queries = raw.get("queries")
    if isinstance(queries, RoleQueries) or queries is None:
        role_queries = queries
    else:
        role_queries = parse_role_queries(queries, "queries", problems)
    if problems:
        raise InputError(source, problems)
    return PoolConfig(
        name=str(raw.get("name", "pool")),
        frontend_url=str(raw["frontend_url"]),
        prometheus_url=str(raw["prometheus_url"]),
        docker_host=target.docker_host if target else "",
        generations=generations,
        slot_cpus={k: float(v) for k, v in slot_cpus.items()},
        loads_qps=loads,
        emulation=str(raw.get("emulation", "")),
        replica_limits=limits,
        hardware=str(raw.get("hardware", "cloudlab")),
        seed=int(seed),
        queries=role_queries,
        source=source,
        target=target or TargetConfig(),
        **numbers,
    )


@dataclass(frozen=True)
class Experiment:
    """One placement and the loads to measure it at."""

    name: str
    """'all-new', 'all-old', 'alone-old:<service>' or 'reference-new:before|after'."""
    on_old: tuple[str, ...]
    """Services on the oldest generation; the rest on the newest."""
    loads_qps: tuple[float, ...]


def sweep_plan(pool: PoolConfig, services: tuple[str, ...]) -> list[Experiment]:
    """The first two sweeps; the criticality experiments need their results first."""
    return [
        Experiment("all-new", (), pool.loads_qps),
        Experiment("all-old", services, pool.loads_qps),
    ]


REFERENCE = "reference-new"
"""All on new at exactly the SLO load, measured before and after the criticality points:
the baseline each service's end-to-end rise is taken against (interpolating the all-new
sweep would take it from points far from the SLO load)."""


def criticality_plan(critical: tuple[str, ...], slo_load_qps: float) -> list[Experiment]:
    if not critical:
        return []
    alone = [Experiment(f"alone-old:{s}", (s,), (slo_load_qps,)) for s in critical]
    return [Experiment(f"{REFERENCE}:before", (), (slo_load_qps,)), *alone,
            Experiment(f"{REFERENCE}:after", (), (slo_load_qps,))]


MAX_SETTLE_S = 30.0


def settle_s(pool: PoolConfig, moves: int) -> float:
    """Extra warm-up after a placement change that moved ``moves`` services (s)."""
    return min(MAX_SETTLE_S, pool.settle_per_move_s * moves)


SLICE_S = 5
"""The end-to-end p99 of a window is the median of the p99s of its SLICE_S-second slices
(when the window holds at least three): one stall of the machine (an engine busy, a
collection) then shifts one slice, not the point. On a busy 2-core lab, a whole-window p99
of 15 s scattered by +-15 ms between identical points; the per-service quantiles and the
p50/p95 stay whole-window."""


def sliced_window(window_s: float) -> bool:
    """Whether a measured window of ``window_s`` seconds gets the sliced end-to-end p99."""
    return int(round(window_s)) // SLICE_S >= 3


def point_seconds(pool: PoolConfig) -> float:
    return pool.warmup_s + pool.measure_s


def estimate_s(pool: PoolConfig, experiments: list[Experiment], moves: int,
               move_s: float = 20.0) -> float:
    """Expected duration: every point's warm-up and window, plus placement changes."""
    points = sum(len(e.loads_qps) for e in experiments)
    return points * point_seconds(pool) + moves * (move_s + pool.settle_per_move_s)
