"""Apply a placement and wait until it runs (and whatever else the caller waits for).

The one "move these services and wait" of ecoscale: the profiler between experiments, the
live evaluation before each policy, and the lab (``ecoscale lab place``, ``deploy``) use it
through any ``Orchestrator``. Waiting reads the cluster until every service runs exactly
its replicas on its generation and the caller's further checks (the lab: every task
answers and is scraped by Prometheus) hold. A rolling update that the orchestrator paused
is started again (``Orchestrator.resume``) up to ``resumes`` times per service, then is an
error. The clock is injected, so tests wait in virtual time; a timeout names what did not
converge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from ecoscale.errors import EcoscaleError
from ecoscale.model.placement import ServicePlacement
from ecoscale.ports import ActionFailed, Clock, ClusterState, Orchestrator, SourceUnavailable

Check = Callable[[ClusterState], str]
"""A further condition on a cluster that runs the placement: '' when it holds, else what
is not there yet (one line)."""
MAX_RESUMES = 2
"""Forced updates a wait makes to start one service's paused update again."""
SHOWN_PROBLEMS = 4
"""Problems named in a timeout message (the rest are counted)."""


class NotConverged(EcoscaleError):
    """A placement did not run (or a further check did not hold) within its timeout, or an
    update stayed paused; ``problems`` says, per service, what was missing."""

    def __init__(self, message: str, problems: Iterable[str]):
        super().__init__(message)
        self.problems = list(problems)


def summary(problems: list[str], shown: int = SHOWN_PROBLEMS) -> str:
    """The first ``shown`` problems, then how many more."""
    more = f" (+{len(problems) - shown} more)" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more


def _describe(running: Mapping[str, int]) -> str:
    tasks = ", ".join(f"{n} on {g}" for g, n in sorted(running.items()) if n)
    return tasks or "none"


def placement_problems(state: ClusterState, wanted: Mapping[str, ServicePlacement]
                       ) -> list[str]:
    """Per service of ``wanted`` that does not run as wanted yet: what runs instead."""
    problems = []
    for name, placed in wanted.items():
        managed = state.services.get(name)
        if managed is None:
            problems.append(f"{name}: not a managed service of the cluster")
            continue
        running = {g: n for g, n in managed.running.items() if n}
        if running != {placed.generation: placed.replicas}:
            problems.append(f"{name}: running {_describe(running)}, wanted "
                            f"{placed.replicas} on {placed.generation}")
    return problems


def apply_placement(orchestrator: Orchestrator, wanted: Mapping[str, ServicePlacement],
                    replica_cpus: Mapping[str, float] | None = None) -> list[str]:
    """Update every service of ``wanted`` whose placement differs; the services updated.
    With ``replica_cpus`` (generation -> CPUs), a moved task's CPU reservation and limit
    become its new generation's (generations not in it: the resources as they are).

    ActionFailed for a service that is not managed (nothing is updated then)."""
    state = orchestrator.read()
    missing = [name for name in wanted if name not in state.services]
    if missing:
        raise ActionFailed(f"not managed services of the cluster: {', '.join(missing)} "
                           "(is the app deployed, are its services labelled managed?)")
    moved = []
    for name, placed in wanted.items():
        managed = state.services[name]
        if managed.placement != placed:
            orchestrator.apply(managed, placed,
                               replica_cpus=(replica_cpus or {}).get(placed.generation))
            moved.append(name)
    return moved


def wait_placed(orchestrator: Orchestrator, wanted: Mapping[str, ServicePlacement],
                clock: Clock, timeout_s: float, *, checks: Iterable[Check] = (),
                resumes: int = MAX_RESUMES, log: Callable[[str], None] | None = None,
                poll_s: float = 0.5, max_poll_s: float = 3.0) -> list[str]:
    """Wait until the services run as ``wanted`` and every check holds; the services
    whose paused update it resumed. NotConverged after ``timeout_s`` (s), naming what is
    missing, or when an update is still paused after ``resumes`` forced updates."""
    checks = tuple(checks)
    resumed: dict[str, int] = {}
    deadline = clock.now() + timeout_s
    interval = poll_s

    def problems() -> list[str]:
        try:
            state = orchestrator.read()
        except SourceUnavailable as exc:
            return [str(exc)]
        found = []
        for name in wanted:
            managed = state.services.get(name)
            if managed is None or not managed.update_paused:
                continue
            count = resumed.get(name, 0)
            if count >= resumes:
                raise NotConverged(f"{name}: update {managed.update_paused} (resumed "
                                   f"{count} times already)", [managed.update_paused])
            resumed[name] = count + 1
            if log:
                log(f"service {name}: update {managed.update_paused}; resuming it "
                    f"({count + 1}/{resumes})")
            orchestrator.resume(managed)
            found.append(f"{name}: paused update resumed")
        found += placement_problems(state, wanted)
        if found:
            return found
        for check in checks:
            problem = check(state)
            if problem:
                return [problem]
        return []

    while True:
        missing = problems()
        if not missing:
            return sorted(resumed)
        now = clock.now()
        if now >= deadline:
            raise NotConverged(f"the placement did not converge within {timeout_s:g} s: "
                               f"{summary(missing)}", missing)
        clock.sleep(min(interval, deadline - now))
        interval = min(max_poll_s, interval * 1.5)


def place(orchestrator: Orchestrator, wanted: Mapping[str, ServicePlacement], clock: Clock,
          timeout_s: float, *, checks: Iterable[Check] = (), resumes: int = MAX_RESUMES,
          log: Callable[[str], None] | None = None,
          replica_cpus: Mapping[str, float] | None = None) -> list[str]:
    """Apply ``wanted`` (``apply_placement``) and wait until it runs and the checks hold
    (``wait_placed``); the services updated."""
    moved = apply_placement(orchestrator, wanted, replica_cpus)
    wait_placed(orchestrator, wanted, clock, timeout_s, checks=checks, resumes=resumes, log=log)
    return moved
