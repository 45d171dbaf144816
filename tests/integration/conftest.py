"""The real lab for integration tests: one Docker Swarm for the whole session.

Fixtures for every integration test module (lab, profiler, live evaluation, daemon):

- ``lab`` (session): ``ecoscale.lab.Lab`` brought up once (default ``LabConfig``: one new
  node = Swarm manager, one old node), with socialNetwork deployed, every service on 'new'.
  Torn down at the end of the session; the teardown fails if anything is left on the machine.
- ``social_network`` (function): the same lab, with socialNetwork (re)deployed so that every
  service is back on 'new' with one replica (cheap when nothing moved: ~1 s).
- ``cpu_heavy_lab`` (function): ``social_network`` with the test's own emulation, in which
  CPU_HEAVY needs CPU_HEAVY_MS of CPU per request (shipped: 2 ms); the shipped emulation is
  deployed again afterwards.

Nothing here is ever skipped: without root, or when the lab cannot come up (e.g. Docker
could not be installed), the tests fail and say what is missing.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _pytest.runner import runtestprotocol

from ecoscale.adapters.files import read_yaml, write_yaml
from ecoscale.adapters.hostcpu import read_cpu_times, stolen_share
from ecoscale.errors import EcoscaleError
from ecoscale.lab import Lab, LabConfig
from ecoscale.lab.apps import emulation_path

APP = "socialNetwork"
CPU_HEAVY = "home-timeline-service"
CPU_HEAVY_MS = 5.0
"""CPU per request (ms) of CPU_HEAVY in ``cpu_heavy_lab``. With the shipped 2 ms, its slowdown
on old (+2 ms of work on 70 % of requests) is within a short window's p99 noise on a busy
2-core machine (+-15 ms); at 5 ms it queues on the old node and stands clear of the noise."""
HOST_FOLDERS = ("/run/docker", "/run/containerd", "/run/netns")
"""Host folders the engines and `ip netns` create outside the lab's own folder."""
QUIET_WAIT_S = 120.0
"""The longest wait for a quiet host CPU before one ``measures`` test (s)."""
QUIET_BUDGET_S = 360.0
"""The longest wait for a quiet host CPU over the whole session (s): a machine that stays
noisy costs the suite at most this, and the tests then run (and report the steal)."""
REPORT: dict[str, object] = {}
"""Measured figures, printed at the end of the session (lab up / deploy times, p99s...)."""


def _log(message: str) -> None:
    print(f"[lab {time.strftime('%H:%M:%S')}] {message}", flush=True)


def host_snapshot() -> dict[str, bool]:
    """Host-wide things the lab may create, as they were before it started."""
    return {"docker_gwbridge": Path("/sys/class/net/docker_gwbridge").exists(),
            "etc_docker_key": Path("/etc/docker/key.json").exists(),
            **{folder: Path(folder).exists() for folder in HOST_FOLDERS}}


def host_traces(config: LabConfig, before: dict[str, bool]) -> list[str]:
    """What of the lab is still on the machine, checked independently of ``ecoscale.lab``."""
    prefix = f"{config.prefix}-"
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           check=False).stdout.split()
    found += [f"netns {n}" for n in netns if n.startswith(prefix)]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                           check=False).stdout.splitlines()
    names = [line.split(":")[1].strip().split("@")[0] for line in links if ":" in line]
    found += [f"link {n}" for n in names if n.startswith(prefix)]
    if "docker_gwbridge" in names and not before["docker_gwbridge"]:
        found.append("link docker_gwbridge")
    state = str(config.state_dir)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            status = (entry / "status").read_text()
            if state in cmdline and "State:\tZ" not in status:
                found.append(f"process {entry.name}: {cmdline.replace(chr(0), ' ')[:80]}")
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*/{config.cgroup_name}")]
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith(state) or point.startswith(f"/run/netns/{prefix}"):
            found.append(f"mount {point}")
    if config.state_dir.exists():
        found.append(f"folder {config.state_dir}")
    found += [f"folder {folder}" for folder in HOST_FOLDERS
              if Path(folder).exists() and not before[folder]]
    if Path("/etc/docker/key.json").exists() and not before["etc_docker_key"]:
        found.append("file /etc/docker/key.json")
    return found


@pytest.fixture(scope="session")
def host_before() -> dict[str, bool]:
    return host_snapshot()


@pytest.fixture(scope="session")
def lab(host_before: dict[str, bool]) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("the lab integration tests need root: they start Docker engines, network "
                    "namespaces and cgroups. Run ./test.sh as root.", pytrace=False)
    the_lab = Lab(LabConfig(), log=_log)
    began = time.monotonic()
    try:
        REPORT["lab up (s)"] = the_lab.up().get("total_s", "already up")
        deployed = the_lab.deploy(APP)
    except EcoscaleError as exc:
        with contextlib.suppress(Exception):
            the_lab.down()
        pytest.fail(f"the lab could not come up, so no integration test can run: {exc}",
                    pytrace=False)
    REPORT[f"deploy {APP} (s)"] = deployed["seconds"]
    REPORT["lab up + deploy (s)"] = round(time.monotonic() - began, 1)
    yield the_lab
    began = time.monotonic()
    the_lab.down()
    REPORT["lab down (s)"] = round(time.monotonic() - began, 1)
    left = host_traces(the_lab.config, host_before)
    assert not left, f"`lab down` left things behind: {left}"


@pytest.fixture
def social_network(lab: Lab) -> Lab:
    """The lab with socialNetwork deployed and every service back on 'new', 1 replica."""
    if lab.deployed_app != APP or not lab.healthy():
        lab.up()
    lab.deploy(APP)
    return lab


@pytest.fixture
def cpu_heavy_lab(social_network: Lab, tmp_path: Path) -> Iterator[Lab]:
    """The lab running socialNetwork with CPU_HEAVY at CPU_HEAVY_MS; the shipped emulation is
    deployed again afterwards."""
    emulation = read_yaml(emulation_path(APP))
    emulation["services"][CPU_HEAVY] = {**emulation["services"].get(CPU_HEAVY, {}),
                                        "cpu_ms": CPU_HEAVY_MS}
    path = tmp_path / "emulation.yaml"
    write_yaml(path, emulation, f"# the shipped emulation, {CPU_HEAVY} at {CPU_HEAVY_MS} ms\n")
    social_network.deploy(APP, emulation=path)
    yield social_network
    social_network.deploy(APP)


_quiet_waited_s = [0.0]
CPU_BEFORE = pytest.StashKey()
"""The host's CPU times when a test's call began (``hostcpu.CpuTimes``)."""


STOLEN_DURING = pytest.StashKey()
"""The share of the host's CPU demand the hypervisor took during a test's call (or None)."""
REMEASURE_STOLEN_SHARE = 0.15
"""A ``measures`` test that fails while the hypervisor took at least this share of the host's
CPU demand is measured once more (``pytest_runtest_protocol``). Seen in four clean-clone CI
runs (2026-12-02/03): measuring tests failed at 19-32 % (p99s 3-7x their usual value at the
same load), and at 4 % and 15 % (a bound that was wrong, test_moves_on_lab.STALL_MS; the
adopt test, cause not known); tests passed at 1-56 % (one far from its bounds passes slowed
too); 3-s probes of an idle machine here: 0-13 %."""
REMEASURE_BY_S = 75 * 60.0
"""No second measurement that would end after this much session time (s): CI stops at 90
minutes, and the suite takes 60-63."""
_SESSION_BEGAN = time.monotonic()
MEASURING_AGAIN = pytest.StashKey()
"""True on a ``measures`` test's second attempt (its wait for a quiet CPU is not cut short by
QUIET_BUDGET_S)."""


def percent(share: float | None) -> str:
    """A share (0..1) of the host's CPU demand as the reports print it."""
    return "not known" if share is None else f"{100 * share:.0f} %"


def steal_since(item) -> str:
    """The share of the host's CPU demand the hypervisor took since ``item``'s call began."""
    return percent(stolen_share(item.stash.get(CPU_BEFORE, None), read_cpu_times()))


@pytest.fixture(autouse=True)
def host_cpu_steal(request):
    """Before a test marked ``measures``, wait (bounded: QUIET_WAIT_S, QUIET_BUDGET_S) for a
    quiet host CPU (``waiting.wait_for_quiet_cpu``); for such a test, the share of the host's
    CPU demand stolen by the hypervisor while it ran goes into the session's REPORT (a failed
    integration test's report says it too: ``pytest_runtest_makereport``)."""
    from waiting import wait_for_quiet_cpu
    measures = request.node.get_closest_marker("measures") is not None
    again = request.node.stash.get(MEASURING_AGAIN, False)
    waited, probe = 0.0, None
    if measures:
        waited, probe = wait_for_quiet_cpu(QUIET_WAIT_S if again else max(
            0.0, min(QUIET_WAIT_S, QUIET_BUDGET_S - _quiet_waited_s[0])))
        _quiet_waited_s[0] += waited
    request.node.stash[CPU_BEFORE] = read_cpu_times()
    yield
    if measures:
        REPORT.setdefault("host CPU demand stolen by the hypervisor, measuring tests", {})[
            request.node.name[:60]] = (
            ("second attempt: " if again else "")
            + f"{steal_since(request.node)} (waited {waited:.0f} s for a quiet CPU before it, "
            f"last probe {percent(probe)})")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # noqa: ARG001
    """A failed integration test's report says how much CPU the hypervisor took meanwhile."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and CPU_BEFORE in item.stash:
        item.stash[STOLEN_DURING] = stolen_share(item.stash[CPU_BEFORE], read_cpu_times())
        if report.failed:
            report.sections.append(("host CPU", "demand stolen by the hypervisor during the "
                                    "test: " + percent(item.stash[STOLEN_DURING])))


def remeasure_reason(item, reports, attempt_s: float) -> str | None:
    """Why a ``measures`` test whose attempt gave ``reports`` and took ``attempt_s`` should be
    measured again (its call failed while the hypervisor took at least REMEASURE_STOLEN_SHARE
    of the host's CPU demand, and another attempt ends within REMEASURE_BY_S), or None."""
    call = next((r for r in reports if r.when == "call"), None)
    stolen = item.stash.get(STOLEN_DURING, None)
    if (call is None or not call.failed or stolen is None or stolen < REMEASURE_STOLEN_SHARE
            or time.monotonic() - _SESSION_BEGAN + attempt_s > REMEASURE_BY_S):
        return None
    crash = getattr(call.longrepr, "reprcrash", None)
    failure = crash.message.splitlines()[0][:200] if crash is not None else "failed"
    return (f"failed ({failure}) while the hypervisor took {percent(stolen)} of the host's CPU "
            f"demand, after {attempt_s:.0f} s")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    """A ``measures`` test that fails on a machine the hypervisor slowed (``remeasure_reason``)
    runs once more, its fixtures set up afresh (a new lab deploy, a new tmp_path) after the
    wait for a quiet CPU; the second attempt's result is the test's, and the first attempt's
    failure goes into the session's REPORT (and into the second's report, if that fails too).
    Every other test runs as pytest runs it."""
    if item.get_closest_marker("measures") is None:
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    began = time.monotonic()
    reports = runtestprotocol(item, nextitem=nextitem, log=False)
    why = remeasure_reason(item, reports, time.monotonic() - began)
    if why is not None:
        REPORT.setdefault("measured again (the first attempt on a slowed machine)", {})[
            item.name[:60]] = why
        first = next(r for r in reports if r.when == "call")
        item.stash[MEASURING_AGAIN] = True
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
        for report in reports:
            if report.when == "call" and report.failed:
                report.sections.append(("first attempt", f"{why}\n{first.longreprtext[-3000:]}"))
    for report in reports:
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    if REPORT:
        terminalreporter.section("ecoscale lab: measured")
        for key, value in REPORT.items():
            terminalreporter.write_line(f"{key}: {value}")


LAB_TEST_ORDER = ("test_lab.py", "test_profile_on_lab.py", "test_moves_on_lab.py",
                  "test_evaluate_on_lab.py")
"""Run first, in this order: the lab's own tests check the substrate on a lab no other test
has touched, and the profiler and the live evaluation measure before the daemon tests
restart Prometheus (series of tasks gone during the outage come back from its WAL without
staleness markers and linger for the 5-minute lookback)."""


INTEGRATION_DIR = Path(__file__).parent


def pytest_collection_modifyitems(session, config, items) -> None:  # noqa: ARG001
    """Every test under tests/integration is marked ``integration`` (none can be forgotten;
    ``-m "not integration"`` leaves them out). The unit tests run first (a freshly started
    machine settles meanwhile), then the lab's own tests, then the rest."""
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)

    def rank(item) -> int:
        if not item.path.is_relative_to(INTEGRATION_DIR):
            return -1
        name = item.path.name
        return LAB_TEST_ORDER.index(name) if name in LAB_TEST_ORDER else len(LAB_TEST_ORDER)

    items.sort(key=rank)
