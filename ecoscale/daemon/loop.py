"""The daemon: observe -> decide -> act, once per interval.

``run_once`` is one iteration (tests call it directly with fakes and a fake clock);
``run_forever`` repeats it with back-off, signal handling and its own HTTP endpoints.
Reconcile first: every loop reads the Swarm before deciding, so a restarted daemon picks
up where the Swarm is and never repeats an action that already took effect.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ecoscale.config import DaemonConfig
from ecoscale.control.decide import (
    Capacity,
    ControlState,
    decide,
    keep_off_lost_capacity,
    toward_new,
)
from ecoscale.control.policy import Cause, Move, Observation
from ecoscale.daemon.packing import (
    NodeChange,
    NodePlan,
    Sizing,
    plan_nodes,
    running_packing,
    sizing,
)
from ecoscale.daemon.telemetry import Health, Log, Telemetry
from ecoscale.daemon.wiring import changed_clients, restart_only_changes
from ecoscale.errors import EcoscaleError
from ecoscale.model.app import AppModel
from ecoscale.model.placement import Placement, ServicePlacement
from ecoscale.planner.table import PolicyTable
from ecoscale.ports import (
    ActionFailed,
    CarbonSource,
    Clock,
    ClusterState,
    ManagedService,
    Metrics,
    MetricsSource,
    NodeAvailability,
    Orchestrator,
    SourceUnavailable,
)

MAX_RESUMES = 2
"""Forced updates the daemon makes to start one service's paused update again, per placement."""


@dataclass(frozen=True)
class Update:
    """One service update to make: a move (or, with the same placement before and after, a
    change of CPU budget or a restart), each task's CPU budget, and whether to replace
    every task even where nothing else changes."""

    move: Move
    replica_cpus: float | None = None
    """CPUs (cores) each task reserves and is limited to; None: the resources as they are."""
    cpus_before: float | None = None
    """The budget its tasks had (their reservation, cores); None: none set."""
    restart: bool = False
    """A forced update: moves the service's tasks off nodes being emptied."""

    @property
    def toward_more(self) -> bool | None:
        """True when the update gives the service more (a newer generation, more replicas,
        a larger budget), False when less, None when neither (a restart)."""
        move = self.move
        if move.before != move.after:
            return None   # a placement change: the generation order decides (``toward_new``)
        if self.replica_cpus is None or self.cpus_before == self.replica_cpus:
            return None
        return self.cpus_before is None or self.replica_cpus > self.cpus_before


@dataclass(frozen=True)
class Action:
    """A move the daemon made (``applied``), tried (``error``) or held (dry run, pause)."""

    move: Move
    applied: bool
    error: str = ""
    replica_cpus: float | None = None
    """The CPU budget (cores per task) the update set; None: left as it was."""
    cpus_before: float | None = None
    restart: bool = False

    @property
    def service(self) -> str:
        return self.move.service

    @property
    def before(self) -> ServicePlacement:
        return self.move.before

    @property
    def after(self) -> ServicePlacement:
        return self.move.after

    @property
    def reason(self) -> str:
        return self.move.reason

    @property
    def cause(self) -> Cause:
        return self.move.cause


@dataclass(frozen=True)
class NodeAction:
    """A node's availability the daemon set (``applied``), tried (``error``) or held."""

    node: str
    generation: str
    before: str
    after: str
    reason: str
    applied: bool
    error: str = ""


@dataclass(frozen=True)
class TickReport:
    epoch_s: float
    """When the loop began (the injected clock, Unix epoch s)."""
    healthy: bool
    problems: tuple[str, ...]
    actions: tuple[Action, ...] = ()
    note: str = ""
    node_actions: tuple[NodeAction, ...] = ()


def table_digest(table: PolicyTable) -> str:
    text = json.dumps([(lv.max_load_qps, lv.max_ci_g_per_kwh, lv.placement.items)
                       for lv in table.levels], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_state(path: str, state: ControlState, digest: str) -> None:
    """Write the control state atomically (a crash leaves the old file or the new one)."""
    if not path:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps({"table": digest, "state": asdict(state)}), encoding="utf-8")
    os.replace(tmp, target)


def load_state(path: str, digest: str, log: Log | None = None,
               epoch_s: float | None = None) -> ControlState:
    """The saved state; with another table, only the per-service cooldowns are kept.
    ``epoch_s`` (the daemon's clock, Unix epoch s; default the wall clock) stamps the name
    a corrupt file is moved aside to.

    A file that cannot be parsed is moved aside to ``<file>.corrupt-<UTC time>`` (kept for a
    post-mortem) and logged, and the daemon starts from a fresh state (it reconciles from the
    Swarm anyway); a file that cannot be read at all is an error naming it."""
    target = Path(path) if path else None
    if target is None or not target.exists():
        return ControlState()
    try:
        text = target.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    except OSError as exc:
        raise EcoscaleError(f"state_file {path}: cannot read it ({exc.strerror}); fix its "
                            "permissions or set state_file to a writable place") from None
    try:
        data = json.loads(text)
        raw = data["state"]
        saved = ControlState(**{**raw, "last_move_s": dict(raw.get("last_move_s", {})),
                                "not_running_since": dict(raw.get("not_running_since", {}))})
        if not all(isinstance(v, int | float) for v in saved.last_move_s.values()):
            raise TypeError("last_move_s holds a value that is not a time")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(
            time.time() if epoch_s is None else epoch_s))
        aside = target.with_name(f"{target.name}.corrupt-{stamp}")
        try:
            os.replace(target, aside)
        except OSError as move_error:
            raise EcoscaleError(f"state_file {path} is corrupt ({type(exc).__name__}: {exc}) "
                                f"and cannot be moved aside ({move_error.strerror}); remove it"
                                ) from None
        if log is not None:
            log("state_corrupt", level="error", state_file=path, moved_to=str(aside),
                error=f"{type(exc).__name__}: {exc}",
                hint="starting from a fresh state: cooldowns and escalation are reset, the "
                     "placement is read from the Swarm")
        return ControlState()
    if data.get("table") != digest:
        return ControlState(last_move_s=saved.last_move_s)
    return saved


@dataclass
class Daemon:
    config: DaemonConfig
    table: PolicyTable
    orchestrator: Orchestrator
    metrics: MetricsSource
    carbon: CarbonSource
    clock: Clock
    model: AppModel | None = None
    telemetry: Telemetry = field(default_factory=Telemetry)
    health: Health = field(default_factory=Health)
    log: Log = field(default_factory=Log)
    state: ControlState | None = None
    stop_requested: bool = False
    updates_paused: dict[str, str] = field(default_factory=dict)
    """Managed services whose rolling update Swarm paused, with Swarm's message."""
    capacity_lost: dict[str, str] = field(default_factory=dict)
    """Services the node-loss rule keeps off a generation that cannot run them, and why."""
    generations_ready: tuple[str, ...] = ()
    resumes: dict[str, tuple[Any, int]] = field(default_factory=dict)
    """Per service: the placement whose paused update was resumed, and how many times."""
    nodes_seen: dict[str, str] = field(default_factory=dict)
    """Node -> its availability after the last loop (table generations; /healthz)."""
    node_notes: tuple[str, ...] = ()
    """What the last node plan could not do as the packing asks (logged when it changes)."""
    sockets: dict[str, int] | None = None
    """Generation -> sockets of the packing in force; None: not a packing."""
    decision_note: str = ""
    """The last loop's decision note (level, escalation, a miss; logged when it changes)."""
    adapters: Any = None
    """An ecoscale.daemon.wiring.Adapters: rebuilds a client whose settings a reload changed
    (None: a reload that changes them is refused)."""
    _last_carbon_s: float | None = None
    _saved: tuple[Any, ...] | None = None
    """(state, table digest, path) last written to the state file."""

    def __post_init__(self) -> None:
        self.digest = table_digest(self.table)
        if self.log.clock is None:   # log lines carry the daemon's clock
            self.log.clock = self.clock.now
        if self.state is None:
            self.state = load_state(self.config.state_file, self.digest, self.log,
                                    self.clock.now())
        self.health.max_age_s = max(60.0, 4 * self.config.interval_s)
        self.telemetry.slo.set(self.table.slo_ms)

    # ---- observe ---------------------------------------------------------------------------
    def _observe(self, now: float) -> tuple[ClusterState | None, Metrics, float, list[str]]:
        problems: list[str] = []
        try:
            swarm = self.orchestrator.read()
        except SourceUnavailable as exc:
            problems.append(str(exc))
            self.telemetry.errors.labels("docker").inc()
            swarm = None
        try:
            metrics = self.metrics.read(now)
        except SourceUnavailable as exc:
            problems.append(str(exc))
            self.telemetry.errors.labels("prometheus").inc()
            metrics = Metrics(problems=(str(exc),))
        ci = self.carbon.intensity(now)
        if not math.isfinite(ci):
            self.telemetry.errors.labels("carbon").inc()
        return swarm, metrics, ci, problems

    def paused_globally(self) -> bool:
        return bool(self.config.pause_file) and Path(self.config.pause_file).exists()

    # ---- one loop ------------------------------------------------------------------------
    def run_once(self) -> TickReport:
        began = self.clock.monotonic()
        now = self.clock.now()
        swarm, metrics, ci, problems = self._observe(now)
        self.telemetry.intensity.set(ci)
        self.telemetry.load.set(metrics.qps)
        self.telemetry.p99.set(metrics.p99_ms)
        self.telemetry.slo_met.set(math.nan if not math.isfinite(metrics.p99_ms)
                                   else float(metrics.p99_ms <= self.table.slo_ms))
        if swarm is None:
            return self._finish(now, began, problems, (), "docker API unreachable: no action")
        if not swarm.is_controller:
            problems.append("this engine is not a Swarm manager: only a manager acts")
            return self._finish(now, began, problems, (), "not a manager: no action")
        # the table's services only: a stack rule maps the stack's others too (a tracing
        # agent), which the daemon neither moves, resumes nor counts in its gauges
        swarm = swarm.only(s for s, _ in self.table.levels[0].placement.items)
        services = tuple(s for s in swarm.services if swarm.services[s].placement is not None)
        previous = self.state or ControlState()
        # on a right-sized table, with the shares its reservations hold (the decision's
        # share moves and shrink hold compare what runs)
        current = running_packing(swarm.placement(services), swarm.services, self.table,
                                  previous.level, self.config.slot_cpus)
        self._account_carbon(now, swarm, metrics, ci)
        self._report_paused_updates(swarm)
        paused = frozenset(s for s in services if swarm.services[s].paused)
        observation = Observation(clock_s=now, qps=metrics.qps, p99_ms=metrics.p99_ms,
                                  ci_g_per_kwh=ci, current=current,
                                  utilisation=metrics.service_utilisation, paused=paused)
        decision, state = decide(observation, previous, self.table, self.config.control)
        capacity = Capacity(frozenset(swarm.generations),
                            {s: swarm.services[s].running.get(p.generation, 0)
                             for s, p in current.items})
        decision, state, lost = keep_off_lost_capacity(
            decision, previous, state, current, capacity, self._order(current),
            self.config.control, now, paused)
        self._report_capacity(self._still_displaced(lost, state, capacity), capacity)
        self.telemetry.decisions.inc()
        if metrics.problems:
            problems.extend(f"metrics: {p}" for p in metrics.problems)
        hold = self.config.dry_run or self.paused_globally()
        self.telemetry.paused.set(float(self.paused_globally()))
        changes = current.changes(decision.placement)
        sized = sizing(decision.placement, current, self.table, state.level,
                       self.config.slot_cpus)
        plan = self._node_plan(swarm, sized, frozenset(services) - paused)
        node_actions = self._set_nodes(plan.before_moves, hold)
        actions = []
        for update in self._updates(swarm, current, decision, changes, sized, plan):
            service = update.move.service
            if hold:
                action = Action(update.move, False, "", update.replica_cpus,
                                update.cpus_before, update.restart)
                if self.config.dry_run:
                    self._count_action(action, dry_run=True)
            elif self.stop_requested:
                # SIGTERM: the action in flight finished; the rest waits for the next daemon
                state = _forget_move(state, service, self.state)
                continue
            else:
                action = self._act(swarm.services[service], update)
                if not action.applied:
                    state = _forget_move(state, service, self.state)
                elif service not in decision.moves:   # a budget or restart: it settles too
                    state = ControlState(**{**asdict(state), "last_move_s": {
                        **state.last_move_s, service: now}})
            actions.append(action)
            self._log_action(action)   # at once: a crash right after loses no line
        if not self.stop_requested:
            node_actions += self._set_nodes(plan.after_moves, hold)
        self._report_nodes(swarm, plan, sized, node_actions)
        if not hold and not self.stop_requested:
            self._resume_paused_updates(swarm, {a.service for a in actions if a.applied})
        if hold:
            state = ControlState(**{**asdict(state),
                                    "last_move_s": dict((self.state or state).last_move_s)})
        self.state = state
        if (state, self.digest, self.config.state_file) != self._saved:
            save_state(self.config.state_file, state, self.digest)   # only what changed
            self._saved = (state, self.digest, self.config.state_file)
        self.telemetry.level.set((state.level or 0) + 1)
        self.telemetry.escalation.set(state.escalation)
        return self._finish(now, began, problems, tuple(actions), decision.note,
                            tuple(node_actions))

    # ---- shares and node availability (daemon/packing.py) --------------------------------
    def _updates(self, swarm: ClusterState, current: Placement, decision: Any,
                 changes: list[tuple[str, ServicePlacement, ServicePlacement]],
                 sized: Sizing, plan: NodePlan) -> list[Update]:
        """The service updates of this loop: the decision's moves (with the CPU budget the
        packing gives), then CPU budgets that differ from the running one, then restarts
        of services whose tasks are on a node being emptied; toward more capacity first
        (newer generation, more replicas, a larger budget), then restarts, then the rest."""
        order = self._order(current)
        updates: list[Update] = []
        touched = set()
        for service, before, after in changes:
            move = decision.moves.get(service) or Move(service, before, after, Cause.TABLE,
                                                       decision.note)
            managed = swarm.services[service]
            cpus = sized.replica_cpus.get(service)
            same_tasks = before.generation == after.generation and (
                cpus is None or managed.has_cpu_budget(cpus))
            updates.append(Update(move, cpus, managed.cpu_reservation,
                                  restart=service in plan.vacate and same_tasks))
            touched.add(service)
        movable = {s for s, m in swarm.services.items() if not m.paused}
        for service, cpus in sized.replica_cpus.items():
            managed = swarm.services.get(service)
            if service in touched or service not in movable or managed is None or \
                    service not in current or managed.has_cpu_budget(cpus):
                continue
            placed = current[service]
            had = "none" if managed.cpu_reservation is None else f"{managed.cpu_reservation:g}"
            why = sized.packing or "one slot per replica outside the packing"
            updates.append(Update(
                Move(service, placed, placed, Cause.PACKING,
                     f"{service}: {placed}: CPU budget {had} -> {cpus:g} cores per replica "
                     f"({why})"),
                cpus, managed.cpu_reservation, restart=service in plan.vacate))
            touched.add(service)
        for service, nodes in plan.vacate.items():
            managed = swarm.services.get(service)
            if service in touched or service not in movable or managed is None or \
                    service not in current or managed.updating or managed.update_paused:
                continue   # an update in flight moves its tasks; a paused one is resumed
            placed = current[service]
            updates.append(Update(
                Move(service, placed, placed, Cause.PACKING,
                     f"{service}: {placed}: its tasks move off {', '.join(nodes)}, which "
                     "is being emptied (a forced start-first update)"),
                None, managed.cpu_reservation, restart=True))

        def rank(update: Update) -> int:
            move = update.move
            if move.before != move.after:
                return 0 if toward_new(move.before, move.after, order) else 2
            more = update.toward_more
            return 1 if more is None else 0 if more else 2

        return sorted(updates, key=rank)

    def _node_plan(self, swarm: ClusterState, sized: Sizing,
                   movable: frozenset[str]) -> NodePlan:
        """The node changes the packing in force asks for; none when the orchestrator
        cannot set availability or reports no node."""
        if not swarm.nodes or not isinstance(self.orchestrator, NodeAvailability):
            return NodePlan()
        return plan_nodes(swarm.nodes, sized, self.table.generations, movable)

    def _set_nodes(self, changes: tuple[NodeChange, ...], hold: bool) -> list[NodeAction]:
        """Set each node's availability (held in a dry run or while paused), logging each."""
        done = []
        for change in changes:
            if self.stop_requested:
                break
            error = ""
            applied = False
            if not hold:
                try:
                    self.orchestrator.set_availability(  # type: ignore[attr-defined]
                        change.node, change.availability)
                    applied = True
                except (SourceUnavailable, ActionFailed) as exc:
                    error = str(exc)
            action = NodeAction(change.node.name, change.node.generation,
                                change.node.availability, change.availability, change.reason,
                                applied, error)
            self.telemetry.node_changes.labels(
                change.availability, "true" if self.config.dry_run else "false").inc(
                    float(applied or self.config.dry_run))
            self.log("node", level="warning" if error else "info", node=action.node,
                     generation=action.generation, change=f"{action.before} -> {action.after}",
                     reason=action.reason, applied=applied, dry_run=self.config.dry_run,
                     paused=self.paused_globally() and not self.config.dry_run,
                     error=error or None)
            done.append(action)
        return done

    def _report_nodes(self, swarm: ClusterState, plan: NodePlan, sized: Sizing,
                      done: list[NodeAction]) -> None:
        """The nodes' availability after this loop (metrics, /healthz) and the plan's notes
        (logged when they change)."""
        if plan.notes != self.node_notes:
            for note in plan.notes:
                self.log("node_plan", level="warning", note=note)
            self.node_notes = plan.notes
        self.sockets = dict(sized.sockets) if sized.sockets is not None else None
        now = {n.name: n.availability for n in swarm.nodes
               if n.generation in self.table.generations}
        now.update({a.node: a.after for a in done if a.applied})
        self.nodes_seen = now
        generation = {n.name: n.generation for n in swarm.nodes}
        counts: dict[tuple[str, str], int] = {}
        for name, availability in now.items():
            key = (generation[name], availability)
            counts[key] = counts.get(key, 0) + 1
        for gen in self.table.generations:
            for availability in ("active", "pause", "drain"):
                self.telemetry.nodes.labels(gen, availability).set(
                    counts.get((gen, availability), 0))

    def _order(self, current: Placement) -> tuple[str, ...]:
        """Generations newest first: the table's, then any other that runs now (a table
        reloaded without a generation still has services there)."""
        order = self.table.generations
        extra = sorted({p.generation for _, p in current.items} - set(order))
        return (*order, *extra)

    def _still_displaced(self, lost: dict[str, str], state: ControlState,
                         capacity: Capacity) -> dict[str, str]:
        """The rule's services, and those it moved earlier that the table level in force
        still wants on a generation without a ready node (held only by a cooldown now)."""
        out = dict(lost)
        if state.level is None:
            return out
        wanted = dict(self.table.levels[state.level].placement.items)
        for name, why in self.capacity_lost.items():
            if name not in out and name in wanted and \
                    wanted[name].generation not in capacity.ready:
                out[name] = why
        return out

    def _report_capacity(self, lost: dict[str, str], capacity: Capacity) -> None:
        """Log each service the node-loss rule takes over (once) and gives back, and set
        the metrics: ready generations and displaced services."""
        for name in sorted(lost.keys() - self.capacity_lost.keys()):
            self.log("capacity_lost", level="warning", service=name, why=lost[name],
                     ready=sorted(capacity.ready))
        for name in sorted(self.capacity_lost.keys() - lost.keys()):
            self.log("capacity_back", service=name, was=self.capacity_lost[name])
        self.capacity_lost = dict(lost)
        self.generations_ready = tuple(g for g in self.table.generations
                                       if g in capacity.ready)
        for generation in self.table.generations:
            self.telemetry.generation_ready.labels(generation).set(
                float(generation in capacity.ready))
        self.telemetry.displaced.set(len(lost))

    def _resume_paused_updates(self, swarm: ClusterState, acted: set[str]) -> None:
        """Start each paused rolling update again with a forced update (Swarm pauses when a
        new task fails or ends early, which a busy host can cause), at most
        MAX_RESUMES times per service and placement; after that it stays paused and
        reported until the next move."""
        resume = getattr(self.orchestrator, "resume", None)
        if resume is None:
            return

        for name in sorted(self.updates_paused):
            managed = swarm.services.get(name)
            if managed is None or name in acted or managed.paused:
                continue
            placed, count = self.resumes.get(name, (managed.placement, 0))
            if placed != managed.placement:
                count = 0
            if count >= MAX_RESUMES:
                continue
            try:
                resume(managed)
            except (SourceUnavailable, ActionFailed) as exc:
                self.log("update_resume_failed", level="warning", service=name, error=str(exc))
                continue
            self.resumes[name] = (managed.placement, count + 1)
            self.telemetry.updates_resumed.inc()
            self.log("update_resumed", level="warning", service=name, attempt=count + 1,
                     of=MAX_RESUMES, swarm=self.updates_paused[name])

    def _report_paused_updates(self, swarm: ClusterState) -> None:
        """Log each service whose rolling update Swarm paused, once per pause, and count them.

        Nothing else changes: the tasks being replaced keep serving, and the daemon's next
        change to the service starts a new update."""
        stuck = {name: s.update_paused for name, s in swarm.services.items() if s.update_paused}
        for name in sorted(stuck.keys() - self.updates_paused.keys()):
            self.log("update_paused", level="warning", service=name, swarm=stuck[name],
                     hint="a new task failed on its node; `docker service ps` says why, "
                          "`docker service update --force` or the next move retries it")
        self.updates_paused = stuck
        self.telemetry.updates_paused.set(len(stuck))

    def _log_action(self, action: Action) -> None:
        move = action.move
        cpus = None
        if action.replica_cpus is not None:
            had = "none" if action.cpus_before is None else f"{action.cpus_before:g}"
            cpus = f"{had} -> {action.replica_cpus:g}"
        self.log("action", service=action.service,
                 change=f"{action.before} -> {action.after}", reason=action.reason,
                 applied=action.applied, dry_run=self.config.dry_run,
                 paused=self.paused_globally() and not self.config.dry_run,
                 error=action.error or None, cause=move.cause.value, capped=move.capped,
                 wanted_replicas=move.wanted_replicas, cpus_per_replica=cpus,
                 restart=action.restart or None)

    def _count_action(self, action: Action, dry_run: bool) -> None:
        """Count an update in ecoscale_actions_total by direction (toward more capacity:
        ``new``), cause and dry run."""
        move = action.move
        more = Update(move, action.replica_cpus, action.cpus_before).toward_more
        if move.before != move.after:
            order = self._order(Placement(((move.service, move.before),)))
            more = toward_new(move.before, move.after, order)
        direction = "new" if more else "old"
        self.telemetry.actions.labels(direction, move.cause.value,
                                      "true" if dry_run else "false").inc()

    def _act(self, managed: ManagedService, update: Update) -> Action:
        move = update.move
        try:
            if update.replica_cpus is None and not update.restart:
                self.orchestrator.apply(managed, move.after)
            else:
                self.orchestrator.apply(managed, move.after, replica_cpus=update.replica_cpus,
                                        restart=update.restart)
        except (SourceUnavailable, ActionFailed) as exc:
            self.telemetry.action_failures.labels(managed.name).inc()
            return Action(move, False, str(exc), update.replica_cpus, update.cpus_before,
                          update.restart)
        action = Action(move, True, "", update.replica_cpus, update.cpus_before,
                        update.restart)
        self._count_action(action, dry_run=False)
        return action

    def _finish(self, now: float, began: float, problems: list[str],
                actions: tuple[Action, ...], note: str,
                node_actions: tuple[NodeAction, ...] = ()) -> TickReport:
        healthy = not problems
        self.telemetry.healthy.set(float(healthy))
        self.telemetry.loop_seconds.observe(self.clock.monotonic() - began)
        details = {"level": (self.state.level or 0) + 1 if self.state else None,
                   "escalation": self.state.escalation if self.state else 0,
                   "dry_run": self.config.dry_run, "paused": self.paused_globally(),
                   "updates_paused": sorted(self.updates_paused),
                   "capacity_lost": dict(self.capacity_lost),
                   "generations_ready": list(self.generations_ready),
                   "nodes": dict(self.nodes_seen), "sockets": self.sockets,
                   "node_notes": list(self.node_notes),
                   "note": note}
        self.health.update(problems, self.clock.now(), details)
        if note and note != self.decision_note:   # why it holds, without a line per loop
            self.log("decision", note=note)
            self.decision_note = note
        if problems:
            self.log("unhealthy", level="warning", problems=problems)
        return TickReport(now, healthy, tuple(problems), actions, note, node_actions)

    # ---- live carbon accounting ----------------------------------------------------------
    def _account_carbon(self, now: float, swarm: ClusterState, metrics: Metrics,
                        ci: float) -> None:
        """Carbon rate of the running tasks (gCO2e/h) per generation, and its integral.

        ``AppModel.carbon_of_what_ran`` at each service's utilisation by its rule
        (``UTILISATION_RULE``: measured, else modelled from the profile at the measured load,
        else peak); the slots counted by each source are a metric of their own."""
        if self.model is None:
            return
        running_by_gen: dict[str, int] = {}
        for managed in swarm.services.values():
            for generation, count in managed.running.items():
                running_by_gen[generation] = running_by_gen.get(generation, 0) + count
        measured = {(name, generation): metrics.service_utilisation[name]
                    for name, managed in swarm.services.items()
                    if name in metrics.service_utilisation
                    for generation in managed.running}
        ran = self.model.carbon_of_what_ran(
            {name: managed.running for name, managed in swarm.services.items()}, measured,
            metrics.qps, ci, hours=1.0)
        rates = {**{(g, "embodied"): v for g, v in ran.embodied_g.items()},
                 **{(g, "operational"): v for g, v in ran.operational_g.items()}}
        for source, slots in ran.slots_by_source.items():
            self.telemetry.utilisation_source.labels(source).set(slots)
        for generation, count in running_by_gen.items():
            self.telemetry.running.labels(generation).set(count)
        for name, managed in swarm.services.items():
            if managed.placement is not None:
                self.telemetry.replicas.labels(name, managed.placement.generation).set(
                    managed.placement.replicas)
        for (generation, kind), rate in rates.items():
            self.telemetry.carbon_rate.labels(generation, kind).set(rate)
            if self._last_carbon_s is not None and math.isfinite(rate):
                hours = max(0.0, now - self._last_carbon_s) / 3600
                self.telemetry.carbon_total.labels(generation, kind).inc(rate * hours)
        self._last_carbon_s = now

    # ---- forever -----------------------------------------------------------------------
    def run_forever(self, reload: Any = None) -> int:
        """Loop until SIGTERM/SIGINT; SIGHUP calls ``reload()`` (which returns a new
        (config, table) or raises to keep the old). Returns the exit code."""
        wake = getattr(self.clock, "wake", None)
        reload_requested = threading.Event()

        def on_stop(signum: int, _frame: Any) -> None:
            self.stop_requested = True
            self.log("stopping", signal=signal.Signals(signum).name)
            if wake is not None:
                wake.set()

        def on_hup(_signum: int, _frame: Any) -> None:
            reload_requested.set()
            if wake is not None:
                wake.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        failures = 0
        self.log("started", app=self.config.app, table=self.config.table,
                 dry_run=self.config.dry_run, interval_s=self.config.interval_s,
                 carbon=self.carbon.describe())
        while not self.stop_requested:
            if reload_requested.is_set():
                reload_requested.clear()
                self._reload(reload)
            report = self.run_once()
            if self.stop_requested:
                break
            failures = 0 if report.healthy else failures + 1
            self.clock.sleep(backoff_s(failures, self.config.interval_s,
                                       self.config.max_backoff_s))
        self.log("stopped")
        return 0

    def _reload(self, reload: Any) -> None:
        """Apply a new config and table from ``reload()`` (which returns (config, table) or
        (config, table, model)), rebuilding each client whose settings changed; a bad new
        config, a client that cannot be built, or a change that needs a restart keeps
        everything as it was, and the log line says why."""
        if reload is None:
            return
        try:
            config, table, *rest = reload()
            restart = restart_only_changes(self.config, config)
            if restart:
                raise EcoscaleError(f"{', '.join(restart)} changed: the HTTP server is bound "
                                    "once, so that needs a restart; nothing was reloaded")
            clients = self._build_clients(config)
        except Exception as exc:   # a bad new config keeps the old one running
            self.log("reload-rejected", level="error", error=str(exc),
                     kept=self.config.source or None)
            return
        for name, client in clients.items():
            setattr(self, name, client)
        if rest and rest[0] is not None:
            self.model = rest[0]
        self.config = config
        if table_digest(table) != self.digest:
            self.table = table
            self.digest = table_digest(table)
            self.state = ControlState(last_move_s=(self.state or ControlState()).last_move_s)
        self.health.max_age_s = max(60.0, 4 * self.config.interval_s)
        self.telemetry.slo.set(self.table.slo_ms)
        self.log("reloaded", table=config.table, rebuilt=sorted(clients) or None)

    def _build_clients(self, config: DaemonConfig) -> dict[str, Any]:
        """New clients for the settings that differ from the running config's."""
        changed = changed_clients(self.config, config)
        if changed and self.adapters is None:
            raise EcoscaleError(f"settings of {', '.join(changed)} changed, and this daemon "
                                "cannot build clients (no adapters); restart it")
        built: dict[str, Any] = {}
        for name in changed:
            if name == "metrics":
                built[name] = self.adapters.metrics(config)
            elif name == "orchestrator":
                built[name] = self.adapters.orchestrator(config)
            else:
                built[name] = self.adapters.carbon(config, self.clock.now())
        return built


def backoff_s(failures: int, interval_s: float, max_backoff_s: float) -> float:
    """The wait before the next loop: the interval, doubled per failed loop after the first,
    at most ``max_backoff_s``."""
    if failures <= 1:
        return interval_s
    return min(interval_s * 2 ** min(failures - 1, 20), max_backoff_s)


def _forget_move(state: ControlState, service: str, before: ControlState | None) -> ControlState:
    """A move that did not happen must not start a cooldown."""
    last = dict(state.last_move_s)
    previous = (before.last_move_s if before else {}).get(service)
    if previous is None:
        last.pop(service, None)
    else:
        last[service] = previous
    return ControlState(**{**asdict(state), "last_move_s": last})

