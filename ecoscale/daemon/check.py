"""`ecoscale run --check`: build every adapter the daemon would use and talk to it once.

Each check returns one ``CheckResult`` (component, ok, what was found, a hint when it failed),
so that the command reports every component, says which one fails and exits non-zero.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ecoscale.adapters.carbon import HttpCarbon
from ecoscale.adapters.targets import STOP_FIRST_NOTE, adoption, describe_target
from ecoscale.config import DaemonConfig, label_values, series_problem
from ecoscale.daemon.packing import right_sized
from ecoscale.daemon.wiring import Adapters
from ecoscale.errors import EcoscaleError
from ecoscale.model.app import AppModel
from ecoscale.planner.table import PolicyTable
from ecoscale.ports import ClusterState, SourceUnavailable

LAB_HINT = "is the lab up? `ecoscale lab status`"


@dataclass(frozen=True)
class CheckResult:
    component: str
    ok: bool
    detail: str
    hint: str = ""
    warning: bool = False
    """ok, but worth a look (no managed service yet, no traffic yet)."""
    details: tuple[str, ...] = ()
    """Lines shown under the result (the adoption report's table)."""

    def line(self) -> str:
        mark = "FAIL" if not self.ok else ("warn" if self.warning else "ok")
        hint = f"\n         hint: {self.hint}" if self.hint and (not self.ok or self.warning) \
            else ""
        shown = "".join(f"\n         {line}" for line in self.details)
        return f"  {mark:<5}{self.component}: {self.detail}{hint}{shown}"


def table_profile_name(table: PolicyTable) -> str | None:
    """The profile name the table was planned from (``provenance.profile`` reads
    "<name> (<kind>): <statement>"), None when the table does not say."""
    text = str(table.provenance.get("profile", "") or "").strip()
    if not text:
        return None
    return text.split(" (", 1)[0].split(":", 1)[0].strip() or None


def check_profile(config: DaemonConfig, table: PolicyTable, model: AppModel) -> CheckResult:
    planned = table_profile_name(table)
    used = model.profile.name
    if planned is None:
        return CheckResult("profile", True, f"'{used}' (the table names no profile in its "
                           "provenance)", warning=True,
                           hint="plan the table with `ecoscale plan` to record its profile")
    if planned != used:
        return CheckResult(
            "profile", False,
            f"{config.table} was planned from profile '{planned}' (provenance.profile), the "
            f"config {config.source} says profile '{config.profile}' (= '{used}')",
            hint=f"set `profile: {planned}` in the config, or plan again with "
                 f"`ecoscale plan --profile {used} --out {config.table}`")
    return CheckResult("profile", True, f"'{used}', the table's own")


def check_prometheus(config: DaemonConfig, adapters: Adapters,
                     services: Sequence[str] = ()) -> CheckResult:
    """Run each configured query once: qps and p99_ms must give one series; the utilisation
    query (when set) series with the label ``service_label`` whose values name ``services``
    (the topology's, by their own or their Swarm name; not checked when empty)."""
    prom = config.prometheus
    client = adapters.prometheus(config)
    values = label_values(services, config.target) if services else None
    problems: list[str] = []
    notes: list[str] = []
    for name in ("qps", "p99_ms", "service_utilisation"):
        query = getattr(prom, name)
        if not query:
            continue
        try:
            samples = client.query(query)
        except SourceUnavailable as exc:
            if str(exc).startswith("prometheus at"):   # not reachable at all
                return CheckResult("prometheus", False, str(exc),
                                   hint=f"{LAB_HINT} (prometheus.url is {prom.url})")
            problems.append(f"prometheus.{name} {query!r}: {exc}")
            continue
        per_service = name == "service_utilisation"
        problem, note = series_problem(f"prometheus.{name}", query, samples,
                                       prom.service_label if per_service else None, values)
        if problem:
            problems.append(problem)
        elif per_service:
            notes.append(f"{name} {note}")
        else:
            value = samples[0][2]
            notes.append(f"{name} {value:.4g}" if math.isfinite(value)
                         else f"{name} {value} (no traffic yet?)")
    if problems:
        return CheckResult("prometheus", False, f"{prom.url}: " + "; ".join(problems),
                           hint="try the query in Prometheus' own UI (/graph)")
    return CheckResult("prometheus", True, f"{prom.url}: " + ", ".join(notes))


def check_docker(config: DaemonConfig, table: PolicyTable, adapters: Adapters) -> CheckResult:
    """Build the Docker client, ask whether this engine is a Swarm manager, and report what
    the target's mapping finds for the table's services (the adoption report, in
    ``details``). A table service that is not found is an error with a mapping configured
    (the fix: its ``services:`` entry), a warning without one (the app may not be deployed
    yet: the daemon manages what it finds)."""
    where = describe_target(config.target)
    try:
        state = adapters.orchestrator(config).read()
    except SourceUnavailable as exc:
        return CheckResult("docker", False, str(exc),
                           hint=f"{LAB_HINT} (target.docker_host: {where})")
    if not state.is_controller:
        return CheckResult("docker", False, f"{where} is not a Swarm manager: only a manager "
                           "acts", hint="point target.docker_host at a manager's socket "
                                        "(`docker node ls` works there)")
    wanted = [s for s, _ in table.levels[0].placement.items]
    report = adoption(wanted, state, config.target, config.labels)
    missing = [s for s, _, _ in report.unmapped]
    detail = (f"{where}: a Swarm manager, {len(state.services)} managed services "
              f"({report.mapping}), generations with a ready node: "
              f"{', '.join(state.generations) or 'none'}")
    details = tuple(report.lines())
    if right_sized(table):   # its sockets are nodes: show what the packing works with
        details += tuple(node_lines(state, table.generations))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                          else "")
        if config.target.adopts:
            return CheckResult("docker", False, f"{detail}; unmapped: {shown}",
                               hint=report.fix(), details=details)
        return CheckResult("docker", True, f"{detail}; not running: {shown}", warning=True,
                           hint="deploy the app first (e.g. `ecoscale lab deploy "
                                f"{config.app}`), or map a stack you deployed with "
                                "target.stack / target.services; the daemon manages what it "
                                "finds", details=details)
    if report.ambiguous:
        return CheckResult("docker", False, f"{detail}; {report.problem()}",
                           hint=report.fix(), details=details)
    if report.stop_first:
        detail += f"; {STOP_FIRST_NOTE} ({len(report.stop_first)} services)"
    return CheckResult("docker", True, detail, details=details)


def node_lines(state: ClusterState, generations: Sequence[str]) -> list[str]:
    """One line per node of the table's generations: its availability and tasks (a
    right-sized table keeps as many nodes of a generation active as it has sockets)."""
    lines = []
    for node in state.nodes:
        if node.generation not in generations:
            continue
        mark = " (emptied by ecoscale)" if node.emptied else ""
        ready = "" if node.ready else ", NOT READY"
        count = node.task_count
        lines.append(f"node {node.name}: {node.generation} {node.availability}{mark}{ready}, "
                     f"{count} task{'s' * (count != 1)}")
    return lines


def check_carbon(config: DaemonConfig, adapters: Adapters,
                 epoch_s: float | None = None) -> CheckResult:
    """Load the carbon trace, or ask the live URL once."""
    epoch_s = time.time() if epoch_s is None else epoch_s
    try:
        source = adapters.carbon(config, epoch_s)
    except EcoscaleError as exc:
        return CheckResult("carbon", False, str(exc),
                           hint="carbon.trace: a shipped trace name or a CSV path")
    value = source.intensity(epoch_s)
    inner = getattr(source, "inner", source)
    if isinstance(inner, HttpCarbon) and inner.last_problem:
        return CheckResult("carbon", False, f"{inner.describe()}: {inner.last_problem}",
                           hint="check carbon.url, its json_field and any token it needs")
    if not math.isfinite(value):
        return CheckResult("carbon", False, f"{source.describe()}: no value now",
                           hint="set carbon.fallback_g_per_kwh or fix the source")
    return CheckResult("carbon", True, f"{source.describe()}: {value:.0f} gCO2e/kWh now")


def run_checks(config: DaemonConfig, table: PolicyTable, model: AppModel,
               adapters: Adapters | None = None) -> list[CheckResult]:
    """Every check, each one's failure caught and reported as that component's."""
    adapters = adapters or Adapters()
    services = [s for s, _ in table.levels[0].placement.items]
    checks: dict[str, Callable[[], CheckResult]] = {
        "profile": lambda: check_profile(config, table, model),
        "prometheus": lambda: check_prometheus(config, adapters, services),
        "docker": lambda: check_docker(config, table, adapters),
        "carbon": lambda: check_carbon(config, adapters),
    }
    results = []
    for name, check in checks.items():
        try:
            results.append(check())
        except Exception as exc:   # one broken adapter must not hide the others' results
            results.append(CheckResult(name, False, f"{type(exc).__name__}: {exc}",
                                       hint=LAB_HINT if name in ("prometheus", "docker")
                                       else ""))
    return results
