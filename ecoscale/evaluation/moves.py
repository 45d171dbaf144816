"""`ecoscale lab moves`: how long a start-first move takes on the lab, and what it does to p99.

A move is a placement change of one service from one generation to the other, as the daemon
makes it (Swarm's start-first rolling update). It is timed, from the update call, in the
phases a user waits for:

- ``running``: the new task runs on the target generation (Swarm's task state);
- ``answering``: it answers /healthz by Swarm DNS through the gateway (so callees reach it);
- ``scraped``: Prometheus scrapes it, up (so the daemon sees it);
- ``old gone``: no task of the service runs on the source generation any more.

The move time is the last of them. Meanwhile a constant open-loop load runs, and the p99 of
the requests sent during the move is set against the p99 of the steady windows before and
after it. The figures are saved in the lab's state (``lab status`` prints them) and choose
``lab evaluate``'s period (at least 3 move times).

The summaries (``MoveTiming``, ``MoveMeasurement``, ``window_latency``) are pure; only
``measure_moves`` touches the lab.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ecoscale.adapters.hostcpu import read_cpu_times, stolen_share, stolen_text
from ecoscale.errors import EcoscaleError, UsageError
from ecoscale.lab.prometheus import SERVICE_JOB, SERVICE_LABEL
from ecoscale.lab.queries import p99_ms_query
from ecoscale.lab.system import NotYet, host_cpus
from ecoscale.loadgen.generator import LoadResult, RequestRecord, percentile, run_load

if TYPE_CHECKING:
    from ecoscale.lab.lab import Lab
    from ecoscale.model.topology import Topology

PHASES = ("running_s", "answering_s", "scraped_s", "old_gone_s")
"""The phases of a move, in the order they usually end (s after the update call)."""
DEFAULT_MOVES = 4
DEFAULT_WINDOW_S = 30.0
"""Wall time given to each move (s): the move, then steady load until the next one."""
DEFAULT_SETTLE_S = 10.0
"""Steady load before the first move (s): the first move's 'before' window."""
WARM_UP_ROUND_S = 10.0
"""Steady load of one warm-up round (s). Before the first move, rounds run until the front
end's server-side p99 over a round is within WARM_P99_OVER_SLO x the SLO, or for at most
WARM_UP_MAX_S. Right after a deploy that re-created every service, the lab's app was seen at
a steady p99 of 320-450 ms at 98 req/s (SLO 70 ms) for over a minute: moves measured then
time the cold start, not the move."""
WARM_UP_MAX_S = 120.0
"""The longest warm-up (s); the measurement's notes say when the app was not warm by then."""
WARM_P99_OVER_SLO = 2.0
"""A warm app's steady p99 at the SLO load is within this many times the SLO."""
POLL_S = 0.25
"""How often the phases are checked (s): their resolution, plus one check's own time."""


@dataclass(frozen=True)
class MoveTiming:
    """One measured move: when each phase ended (s after the update call; None: not within
    the move's window) and the load it ran under."""

    service: str
    source: str
    target: str
    started_s: float
    """When the update was called (s after the load's start)."""
    running_s: float | None = None
    answering_s: float | None = None
    scraped_s: float | None = None
    old_gone_s: float | None = None
    p99_before_ms: float = float("nan")
    """p99 of the steady window before the move (ms, client side)."""
    p99_during_ms: float = float("nan")
    p99_after_ms: float = float("nan")
    requests_during: int = 0
    errors_during: int = 0
    server_p99_before_ms: float = float("nan")
    """The front end's server-side p99 (ms, Prometheus; what the SLO is about) over the
    steady window before the move."""
    server_p99_during_ms: float = float("nan")

    @property
    def total_s(self) -> float | None:
        """The move time: when its last phase ended (s); None when one did not end."""
        ends = [getattr(self, phase) for phase in PHASES]
        return None if any(e is None for e in ends) else max(ends)

    def text(self) -> str:
        phases = ", ".join(f"{p.removesuffix('_s').replace('_', ' ')} "
                           + ("-" if getattr(self, p) is None else f"{getattr(self, p):.1f}")
                           for p in PHASES)
        total = "did not finish" if self.total_s is None else f"{self.total_s:.1f} s"
        return (f"{self.service} {self.source}->{self.target}: {total} ({phases}); p99 "
                f"before {self.p99_before_ms:.0f}, during {self.p99_during_ms:.0f}, after "
                f"{self.p99_after_ms:.0f} ms client side, before {self.server_p99_before_ms:.0f}"
                f", during {self.server_p99_during_ms:.0f} ms server side; "
                f"{self.errors_during} of {self.requests_during} requests failed during it")


@dataclass(frozen=True)
class MoveMeasurement:
    """The moves measured on the lab under one load, and where the numbers came from."""

    app: str
    rate_qps: float
    moves: tuple[MoveTiming, ...]
    slo_ms: float | None = None
    """The profile's SLO the p99s are set against (ms); None when no profile gave one."""
    measured_at: str = ""
    """ISO-8601 UTC time of the measurement."""
    source: str = ""
    """Measured on what: the lab's emulation (nodes, quota or slots)."""
    notes: tuple[str, ...] = field(default=())

    @property
    def _totals(self) -> list[float]:
        """The move times of the finished moves (s)."""
        return [m.total_s for m in self.moves if m.total_s is not None]

    @property
    def move_time_s(self) -> float | None:
        """The median move time of the finished moves (s); None when none finished."""
        return statistics.median(self._totals) if self._totals else None

    @property
    def slowest_s(self) -> float | None:
        return max(self._totals) if self._totals else None

    @property
    def p99_during_ms(self) -> float:
        """The worst client-side p99 during a move (ms)."""
        return _worst(m.p99_during_ms for m in self.moves)

    @property
    def p99_steady_ms(self) -> float:
        """The worst client-side p99 of the steady windows around the moves (ms)."""
        return _worst(v for m in self.moves for v in (m.p99_before_ms, m.p99_after_ms))

    @property
    def server_p99_during_ms(self) -> float:
        """The worst server-side p99 during a move (ms)."""
        return _worst(m.server_p99_during_ms for m in self.moves)

    @property
    def server_p99_steady_ms(self) -> float:
        """The worst server-side p99 of the steady windows before the moves (ms)."""
        return _worst(m.server_p99_before_ms for m in self.moves)

    @property
    def over_slo(self) -> int:
        """Moves that pushed the server-side p99 over the SLO (which is about the server
        side): over it during the move, within it (or no data) in the steady window before.
        0 without an SLO."""
        if self.slo_ms is None:
            return 0
        return sum(1 for m in self.moves if m.server_p99_during_ms > self.slo_ms
                   and not m.server_p99_before_ms > self.slo_ms)

    @property
    def started_over_slo(self) -> int:
        """Moves whose steady window before was already over the SLO (server side): the
        placement they left did not hold the SLO at this load (e.g. the front end on old at
        the SLO load, moved back), so their p99 measures that placement, not the move."""
        if self.slo_ms is None:
            return 0
        return sum(1 for m in self.moves if m.server_p99_before_ms > self.slo_ms)

    def text(self) -> str:
        """One line: the move time (s) and the p99 during moves against steady load."""
        time_s, slowest = self.move_time_s, self.slowest_s
        finished = len(self._totals)
        head = (f"{time_s:.1f} s (median of {finished}/{len(self.moves)} moves, "
                f"slowest {slowest:.1f} s)" if time_s is not None
                else f"no move of {len(self.moves)} finished")
        slo = ""
        if self.slo_ms is not None:
            slo = f"; SLO {self.slo_ms:.0f} ms, a move pushed p99 over it {self.over_slo} time(s)"
            if self.started_over_slo:
                slo += (f" ({self.started_over_slo} move(s) started over it: the placement "
                        "they left did not hold it at this load)")
        errors = sum(m.errors_during for m in self.moves)
        return (f"{head} at {self.rate_qps:g} req/s of {self.app}: p99 during a move up to "
                f"{self.server_p99_during_ms:.0f} ms server side (steady up to "
                f"{self.server_p99_steady_ms:.0f}), {self.p99_during_ms:.0f} ms client side "
                f"(steady up to {self.p99_steady_ms:.0f}){slo}; {errors} failed request(s) "
                f"during moves; measured {self.measured_at}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (the lab's state, ``lab status --json``), with the summary."""
        raw = asdict(self)
        raw["moves"] = [{**asdict(m), "total_s": m.total_s} for m in self.moves]
        raw.update(move_time_s=self.move_time_s, text=self.text())
        return raw

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> MoveMeasurement:
        fields = {k for k in MoveTiming.__dataclass_fields__}
        moves = tuple(MoveTiming(**{k: v for k, v in m.items() if k in fields})
                      for m in raw.get("moves", ()))
        return cls(app=raw["app"], rate_qps=float(raw["rate_qps"]), moves=moves,
                   slo_ms=raw.get("slo_ms"), measured_at=raw.get("measured_at", ""),
                   source=raw.get("source", ""), notes=tuple(raw.get("notes", ())))


def _worst(values: Iterable[float]) -> float:
    """The largest of the values that are not NaN (no data); NaN when none is."""
    return max((v for v in values if not math.isnan(v)), default=float("nan"))


def window_latency(records: Sequence[RequestRecord], start_s: float, end_s: float
                   ) -> tuple[float, int, int]:
    """(p99 ms of the successful requests, requests, failed requests) sent in
    [start_s, end_s) (s after the load's start)."""
    inside = [r for r in records if start_s <= r.at_s < end_s]
    ok = [r.latency_s * 1000 for r in inside if 200 <= r.status < 300]
    return percentile(ok, 99), len(inside), len(inside) - len(ok)


def with_latency(timing: MoveTiming, records: Sequence[RequestRecord], before_s: float,
                 next_start_s: float, settle_s: float = 2.0) -> MoveTiming:
    """``timing`` with the p99s of its windows: ``before_s`` seconds of steady load before
    it, the move itself, and after it (from ``settle_s`` past its end to the next move)."""
    end = timing.started_s + (timing.total_s if timing.total_s is not None
                              else next_start_s - timing.started_s)
    before, _, _ = window_latency(records, timing.started_s - before_s, timing.started_s)
    during, sent, failed = window_latency(records, timing.started_s, end)
    after, _, _ = window_latency(records, end + settle_s, next_start_s)
    return MoveTiming(**{**asdict(timing), "p99_before_ms": before, "p99_during_ms": during,
                         "p99_after_ms": after, "requests_during": sent,
                         "errors_during": failed})


def with_server_p99(timing: MoveTiming, p99_between: Callable[[float, float], float | None],
                    before_s: float) -> MoveTiming:
    """``timing`` with the server-side p99s of the steady window before it and of the move
    itself, from ``p99_between(start_s, end_s)`` (ms; s after the load's start; None: no
    data)."""
    end = timing.started_s + (timing.total_s or 0.0)
    before = p99_between(timing.started_s - before_s, timing.started_s)
    during = p99_between(timing.started_s, end) if timing.total_s else None
    nan = float("nan")
    return MoveTiming(**{**asdict(timing),
                         "server_p99_before_ms": nan if before is None else before,
                         "server_p99_during_ms": nan if during is None else during})


def recorded(raw: Mapping[str, Any] | None, app: str | None = None
             ) -> MoveMeasurement | None:
    """A measurement from its saved form (``Lab.recorded_moves``), if any (of ``app``)."""
    if not raw or (app is not None and raw.get("app") != app):
        return None
    try:
        return MoveMeasurement.from_dict(raw)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


# ---------------------------------------------------------------------- the lab
def _phases(lab: Lab, service: str, source: str, target: str, port: int,
            ) -> dict[str, bool]:
    """Which phases of a move of ``service`` to ``target`` have ended now."""
    tasks = lab.tasks(service)
    new = [t for t in tasks if t["generation"] == target and t["desired"] == "running"
           and t["state"] == "running"]
    done = {"running_s": bool(new),
            "old_gone_s": not any(t["generation"] == source and t["state"] == "running"
                                  for t in tasks)}
    addresses = {t["address"] for t in new if t["address"]}
    if not addresses:
        return {**done, "answering_s": False, "scraped_s": False}
    try:
        answers = lab.probe([service]).get(service, {})
    except (NotYet, EcoscaleError):   # the gateway not answering: not answering yet
        answers = {}
    done["answering_s"] = all(isinstance(answers.get(a), dict)
                              and answers[a].get("service") == service for a in addresses)
    try:
        targets = lab.prometheus.targets_up(SERVICE_JOB, SERVICE_LABEL).get(service, {})
    except EcoscaleError:
        targets = {}
    done["scraped_s"] = all(targets.get(f"{a}:{port}") for a in addresses)
    return done


def time_move(lab: Lab, service: str, target: str, load_start: float, deadline: float,
              clock: Callable[[], float] = time.monotonic) -> MoveTiming:
    """Move ``service`` to ``target`` (its replicas kept) and time its phases until all
    ended or ``deadline`` (``clock`` time) passed."""
    cluster = lab.orchestrator().read()
    managed = cluster.services[service]
    source = managed.placement.generation if managed.placement else ""
    port = lab.apps.app_port()
    began = clock()
    lab.place(service, target, wait=False)
    ended: dict[str, float] = {}
    while len(ended) < len(PHASES) and clock() < deadline:
        done = _phases(lab, service, source, target, port)
        now = clock() - began
        for phase, finished in done.items():
            if finished:
                ended.setdefault(phase, now)
            else:
                ended.pop(phase, None)   # e.g. scraped, then the new task restarted
        if len(ended) < len(PHASES):
            time.sleep(POLL_S)
    return MoveTiming(service, source, target, began - load_start,
                      **{p: ended.get(p) for p in PHASES})


def measure_moves(lab: Lab, services: Sequence[str], *, rate_qps: float,
                  moves: int = DEFAULT_MOVES, window_s: float = DEFAULT_WINDOW_S,
                  settle_s: float = DEFAULT_SETTLE_S, slo_ms: float | None = None,
                  log: Callable[[str], None] = lambda _m: None) -> MoveMeasurement:
    """Under constant load ``rate_qps`` (req/s), move each service of ``services`` in turn
    between 'new' and 'old', ``moves`` times in all (one per ``window_s``), starting from
    'new' after a warm-up (``_warm_up``); time every move and its p99; save the result in
    the lab's state."""
    lab.require_up()
    deployed = lab.app()
    if deployed is None:
        raise EcoscaleError("no app is deployed; run `ecoscale lab deploy APP` first")
    managed = lab.managed_services()
    unknown = [s for s in services if s not in managed]
    if unknown:
        raise UsageError(f"--service: {', '.join(unknown)} not managed services of "
                         f"{deployed.name}; choose from {', '.join(managed)}")
    for generation in ("new", "old"):
        if not lab.nodes_of(generation):
            raise EcoscaleError(f"the lab has no '{generation}' node; a move needs both "
                                "generations (`ecoscale lab up`)")
    for service in services:
        lab.place(service, "new")
    cpu_before = read_cpu_times()
    warmed = _warm_up(lab, deployed.topology, rate_qps, slo_ms, log)
    duration = settle_s + moves * window_s
    log(f"moves: {moves} moves of {', '.join(services)} at {rate_qps:g} req/s, one per "
        f"{window_s:g} s ({duration:g} s)")
    result: dict[str, LoadResult] = {}
    loader = threading.Thread(target=lambda: result.setdefault("load", run_load(
        lab.frontend_url, deployed.topology, rate_qps, duration, seed=11)), daemon=True)
    load_start = time.monotonic()
    loader.start()
    timings = []
    for index in range(moves):
        service = services[index % len(services)]
        target = "old" if (index // len(services)) % 2 == 0 else "new"
        start = load_start + settle_s + index * window_s
        time.sleep(max(0.0, start - time.monotonic()))
        timing = time_move(lab, service, target, load_start, start + window_s - 1.0)
        log(f"  move {index + 1}/{moves}: {service} -> {target}: "
            + (f"{timing.total_s:.1f} s" if timing.total_s is not None else "not finished"))
        timings.append(timing)
    loader.join(duration + 60)
    load = result.get("load")
    if load is None:
        raise EcoscaleError("the load generator did not finish")
    starts = [t.started_s for t in timings] + [settle_s + moves * window_s]
    timed = tuple(with_latency(t, load.records, before_s=min(settle_s, window_s / 3),
                               next_start_s=starts[i + 1]) for i, t in enumerate(timings))
    frontend = deployed.topology.frontend
    timed = tuple(with_server_p99(t, lambda a, b: _server_p99(lab, frontend, load.started_at
                                                               + a, load.started_at + b),
                                  before_s=min(settle_s, window_s / 3)) for t in timed)
    for service in services:   # back where the app is deployed
        lab.place(service, "new")
    measurement = MoveMeasurement(
        app=deployed.name, rate_qps=rate_qps, moves=timed, slo_ms=slo_ms,
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        source=_source(lab),
        notes=(warmed, *_notes(load), stolen_text(stolen_share(cpu_before, read_cpu_times()))))
    lab.record_moves(measurement.to_dict())
    return measurement


def warm(p99_ms: float | None, slo_ms: float | None) -> bool:
    """Whether a steady round's server-side p99 (ms; None: no data) shows the app warm: within
    WARM_P99_OVER_SLO x ``slo_ms`` (without an SLO, one round is the warm-up)."""
    if slo_ms is None:
        return True
    return p99_ms is not None and math.isfinite(p99_ms) and p99_ms <= WARM_P99_OVER_SLO * slo_ms


def warm_up_note(seconds: float, p99_ms: float | None, slo_ms: float | None,
                 rate_qps: float) -> str:
    """What the warm-up found, for the measurement's notes."""
    p99 = "no data" if p99_ms is None or not math.isfinite(p99_ms) else f"{p99_ms:.0f} ms"
    if warm(p99_ms, slo_ms):
        bound = f" (<= {WARM_P99_OVER_SLO:g} x the SLO)" if slo_ms is not None else ""
        return (f"warm-up: {seconds:.0f} s at {rate_qps:g} req/s, then a server-side p99 of "
                f"{p99}{bound}")
    return (f"warm-up: NOT steady after {seconds:.0f} s at {rate_qps:g} req/s (server-side "
            f"p99 {p99}, over {WARM_P99_OVER_SLO:g} x the SLO of {slo_ms:g} ms): the moves "
            "below ran on an app that was already slow")


def _warm_up(lab: Lab, topology: Topology, rate_qps: float, slo_ms: float | None,
             log: Callable[[str], None]) -> str:
    """Steady load in rounds until the app is warm (``warm``) or WARM_UP_MAX_S; returns
    the note saying what was found."""
    began = time.monotonic()
    while True:
        start = time.time()
        run_load(lab.frontend_url, topology, rate_qps, WARM_UP_ROUND_S, seed=7)
        p99 = _server_p99(lab, topology.frontend, start, time.time())
        seconds = time.monotonic() - began
        if warm(p99, slo_ms) or seconds + WARM_UP_ROUND_S > WARM_UP_MAX_S:
            note = warm_up_note(seconds, p99, slo_ms, rate_qps)
            log(f"moves: {note}")
            return note


def _server_p99(lab: Lab, frontend: str, start: float, end: float) -> float | None:
    """The front end's server-side p99 (ms) between two unix times, from Prometheus: its
    histogram's rate over the window (at least 3 scrapes) ending at ``end``."""
    window = max(3 * lab.config.scrape_interval_s, end - start)
    try:
        return lab.prometheus.value(p99_ms_query(frontend, math.ceil(window)), at_s=end)
    except EcoscaleError:
        return None


def _source(lab: Lab) -> str:
    """Where the figures come from: the lab's nodes and how they are emulated."""
    emulation = lab.config.emulation(host_cpus())
    kinds = "; ".join(f"{g}: {how['capacity']}" for g, how in emulation.items())
    return f"measured on the lab (Docker engines on this machine, emulated: {kinds})"


def _notes(load: LoadResult) -> tuple[str, ...]:
    notes = [f"client side: {load.sent} requests, {load.error_count} failed, achieved "
             f"{load.achieved_qps:.1f} req/s"]
    if load.max_send_lag_ms > 50:
        notes.append(f"the load generator lagged up to {load.max_send_lag_ms:.0f} ms: this "
                     "machine could not keep the schedule")
    return tuple(notes)
