"""cgroup v1 groups of the lab, all below ``/<cgroup_name>`` in every hierarchy.

- ``/<cgroup_name>/<node>``: each node's engine runs with ``--cgroup-parent`` set to it, so
  every container of that node lives below it; a generation with limited capacity gets its
  CFS quota there (``cpu.cfs_period_us`` / ``cpu.cfs_quota_us`` in the cpu hierarchy).
- ``/<cgroup_name>/engine-<node>`` in the pids hierarchy: the engine process joins it before
  it starts, so dockerd and everything it spawns (containerd, shims, docker-proxy) stay
  findable by membership even after a crash, never by name. It joins the group of that name
  in the cpu hierarchy too, whose low CPU weight (``LabConfig.engine_cpu_shares``) keeps the
  engines' work of a move (starting a task) from stalling the app's containers.

Tear-down kills every process in these groups and removes them bottom-up in every hierarchy.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from pathlib import Path

from ecoscale.adapters.clock import SYSTEM_CLOCK
from ecoscale.lab.system import LabError
from ecoscale.ports import Clock


def hierarchies() -> dict[str, Path]:
    """Mounted cgroup hierarchies: comma-joined v1 controllers (or 'cgroup2') -> mount point."""
    found: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = right.split()
        if len(fields) >= 3 and fields[0] == "cgroup":
            options = [o for o in fields[2].split(",")
                       if (o not in ("rw", "ro") and "=" not in o) or o.startswith("name=")]
            found[",".join(sorted(options))] = Path(left.split()[4])
        elif len(fields) >= 3 and fields[0] == "cgroup2":
            found["cgroup2"] = Path(left.split()[4])
    return found


def cpu_hierarchy() -> Path:
    """Mount point of the v1 hierarchy with the cpu controller (quota files), or LabError."""
    for controllers, mount in hierarchies().items():
        if "cpu" in controllers.split(",") and (mount / "cpu.cfs_quota_us").exists():
            return mount
    raise LabError("no cgroup v1 'cpu' hierarchy with cpu.cfs_quota_us is mounted (the lab "
                   "emulates slower nodes with a CFS quota on cgroup v1, as Debian machines of "
                   "this project have it): mount one, e.g. `mount -t cgroup -o cpu cgroup "
                   "/sys/fs/cgroup/cpu`")


def group_dirs(cgroup_name: str) -> list[Path]:
    """The lab's top group in every hierarchy where it exists."""
    return [mount / cgroup_name for mount in hierarchies().values()
            if (mount / cgroup_name).is_dir()]


def node_group(cgroup_name: str, node: str) -> str:
    """The cgroup parent (path inside each hierarchy) of a node's containers."""
    return f"/{cgroup_name}/{node}"


def create_node_group(cgroup_name: str, node: str, period_us: int,
                      quota_us: int | None) -> Path:
    """Create the node's group in the cpu hierarchy and set its quota (None: unlimited)."""
    path = cpu_hierarchy() / cgroup_name / node
    path.mkdir(parents=True, exist_ok=True)
    _write(path / "cpu.cfs_quota_us", "-1")
    _write(path / "cpu.cfs_period_us", str(period_us))
    if quota_us is not None:
        _write(path / "cpu.cfs_quota_us", str(quota_us))
    return path


def create_engine_group(cgroup_name: str, node: str, cpu_shares: int) -> list[Path]:
    """The groups an engine joins at start, as their ``cgroup.procs`` files: the tracking
    group (pids hierarchy, or any v1 one) and, in the cpu hierarchy, a group of
    ``cpu_shares`` CPU weight (a node's containers have the default 1024), so that the
    engine's own work (a task's start: network attachment, runc, shims) yields to the app's
    containers on the busy machine."""
    found = hierarchies()
    mount = found.get("pids") or next((m for k, m in found.items() if k != "cgroup2"), None)
    if mount is None:
        raise LabError("no cgroup v1 hierarchy is mounted; the lab needs cgroup v1")
    paths = [mount / cgroup_name / f"engine-{node}"]
    weighted = cpu_hierarchy() / cgroup_name / f"engine-{node}"
    if weighted not in paths:
        paths.append(weighted)
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
    _write(weighted / "cpu.shares", str(cpu_shares))
    return [path / "cgroup.procs" for path in paths]


def read_quota(cgroup_name: str, node: str) -> tuple[int, int] | None:
    """(quota_us, period_us) set on a node's group, None if unlimited or absent."""
    path = cpu_hierarchy() / cgroup_name / node
    try:
        quota = int((path / "cpu.cfs_quota_us").read_text())
        period = int((path / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota < 0 else (quota, period)


def throttling(cgroup_name: str, node: str) -> dict[str, float]:
    """cpu.stat of a node's group: periods, throttled periods, throttled time (s)."""
    path = cpu_hierarchy() / cgroup_name / node / "cpu.stat"
    stats: dict[str, float] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            stats[key] = float(value)
    except OSError:
        return {}
    if "throttled_time" in stats:
        stats["throttled_time_s"] = stats.pop("throttled_time") / 1e9
    return stats


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise LabError(f"cannot write {value} to {path}: {exc.strerror}") from exc


def pids_in(cgroup_name: str) -> set[int]:
    """Every process in any group at or below the lab's top group, in any hierarchy."""
    pids: set[int] = set()
    for top in group_dirs(cgroup_name):
        for procs in top.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                continue
    return pids


def node_pids(cgroup_name: str, node: str) -> set[int]:
    """Every process of one node: its engine's tracking group and its containers' group."""
    pids: set[int] = set()
    for top in group_dirs(cgroup_name):
        for group in (top / node, top / f"engine-{node}"):
            for procs in group.rglob("cgroup.procs") if group.is_dir() else ():
                try:
                    pids.update(int(p) for p in procs.read_text().split())
                except OSError:
                    continue
    return pids


def kill_node(cgroup_name: str, node: str, timeout_s: float = 20.0,
              clock: Clock = SYSTEM_CLOCK) -> set[int]:
    """SIGKILL every process of one node (engine, containerd, shims, containers) until its
    groups are empty, as a machine that loses power; returns survivors."""
    deadline = clock.monotonic() + timeout_s
    pids = node_pids(cgroup_name, node)
    while pids and clock.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        clock.sleep(0.1)
        pids = node_pids(cgroup_name, node)
    return pids


def kill_all(cgroup_name: str, timeout_s: float = 20.0, clock: Clock = SYSTEM_CLOCK) -> set[int]:
    """SIGKILL every process in the lab's groups until they are empty; returns survivors."""
    deadline = clock.monotonic() + timeout_s
    pids = pids_in(cgroup_name)
    while pids and clock.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        clock.sleep(0.1)
        pids = pids_in(cgroup_name)
    return pids


def remove_groups(cgroup_name: str, timeout_s: float = 20.0,
                  clock: Clock = SYSTEM_CLOCK) -> list[Path]:
    """rmdir the lab's groups bottom-up in every hierarchy; returns the ones left."""
    deadline = clock.monotonic() + timeout_s
    while True:
        left = []
        for top in group_dirs(cgroup_name):
            for path in sorted((p for p in top.rglob("*") if p.is_dir()),
                               key=lambda p: -len(p.parts)) + [top]:
                try:
                    path.rmdir()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                        raise LabError(f"cannot remove cgroup {path}: {exc.strerror}") from exc
                    left.append(path)
        if not left or clock.monotonic() >= deadline:
            return left
        clock.sleep(0.2)
