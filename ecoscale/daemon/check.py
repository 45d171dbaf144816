"""`ecoscale run --check`: build every adapter the daemon would use and talk to it once.

Each check returns one ``CheckResult`` (component, ok, what was found, a hint when it failed),
so that the command reports every component, says which one fails and exits non-zero.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ecoscale.adapters.carbon import HttpCarbon
from ecoscale.adapters.targets import describe_target
from ecoscale.config import DaemonConfig
from ecoscale.daemon.wiring import Adapters
from ecoscale.errors import EcoscaleError
from ecoscale.model.app import AppModel
from ecoscale.planner.table import PolicyTable
from ecoscale.ports import SourceUnavailable

LAB_HINT = "is the lab up? `ecoscale lab status`"


@dataclass(frozen=True)
class CheckResult:
    component: str
    ok: bool
    detail: str
    hint: str = ""
    warning: bool = False
    """ok, but worth a look (no managed service yet, no traffic yet)."""

    def line(self) -> str:
        mark = "FAIL" if not self.ok else ("warn" if self.warning else "ok")
        hint = f"\n         hint: {self.hint}" if self.hint and (not self.ok or self.warning) \
            else ""
        return f"  {mark:<5}{self.component}: {self.detail}{hint}"


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


def check_prometheus(config: DaemonConfig, adapters: Adapters) -> CheckResult:
    """Run each configured query once: qps and p99_ms must give one series; the utilisation
    query (when set) series with the label ``service``."""
    prom = config.prometheus
    client = adapters.prometheus(config)
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
        if not samples:
            problems.append(f"prometheus.{name} {query!r} returned nothing: is the metric "
                            "name right and is its target scraped?")
            continue
        if name == "service_utilisation":
            label = prom.service_label
            unlabelled = [labels for labels, _, _ in samples if not labels.get(label)]
            if unlabelled:
                problems.append(f"prometheus.{name} {query!r}: {len(unlabelled)} of "
                                f"{len(samples)} series have no label '{label}' (e.g. "
                                f"{unlabelled[0]}); aggregate with `sum by ({label})` or "
                                "set prometheus.service_label")
                continue
            notes.append(f"{name} {len(samples)} services")
            continue
        if len(samples) > 1:
            problems.append(f"prometheus.{name} {query!r}: {len(samples)} series, the daemon "
                            "needs one; aggregate them (sum, max) in the query")
            continue
        value = samples[0][2]
        notes.append(f"{name} {value:.4g}" if math.isfinite(value)
                     else f"{name} {value} (no traffic yet?)")
    if problems:
        return CheckResult("prometheus", False, f"{prom.url}: " + "; ".join(problems),
                           hint="try the query in Prometheus' own UI (/graph)")
    return CheckResult("prometheus", True, f"{prom.url}: " + ", ".join(notes))


def check_docker(config: DaemonConfig, table: PolicyTable, adapters: Adapters) -> CheckResult:
    """Build the Docker client, ask whether this engine is a Swarm manager, count the
    managed services and name the table's services the Swarm does not run."""
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
    missing = [s for s in wanted if s not in state.services]
    detail = (f"{where}: a Swarm manager, {len(state.services)} managed services "
              f"(label {config.labels.managed}=true), generations with a ready node: "
              f"{', '.join(state.generations) or 'none'}")
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                          else "")
        return CheckResult("docker", True, f"{detail}; not running: {shown}", warning=True,
                           hint="deploy the app first (e.g. `ecoscale lab deploy "
                                f"{config.app}`); the daemon manages what it finds")
    return CheckResult("docker", True, detail)


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
    checks: dict[str, Callable[[], CheckResult]] = {
        "profile": lambda: check_profile(config, table, model),
        "prometheus": lambda: check_prometheus(config, adapters),
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
