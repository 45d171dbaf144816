"""Host primitives of the lab: commands, waiting, packages, processes, mounts, namespaces, links.

Everything here acts on one named object (a pid read from our pidfile, a namespace or link
with our prefix, a mount under our state folder): nothing is ever found or killed by a
program's name.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from ecoscale.adapters.clock import SYSTEM_CLOCK
from ecoscale.errors import EcoscaleError
from ecoscale.ports import Clock

T = TypeVar("T")

PACKAGES = {"dockerd": "docker.io", "docker-proxy": "docker.io", "prometheus": "prometheus",
            "ip": "iproute2", "nsenter": "util-linux", "iptables": "iptables"}
"""Program the lab runs -> Debian package that provides it."""
NETNS_DIR = Path("/run/netns")
MNT_DETACH = 2


class LabError(EcoscaleError):
    """Something the lab needs is missing or failed; the message says what and how to fix."""


def require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise LabError(f"`ecoscale lab {action}` needs root (it starts Docker engines, network "
                       "namespaces and cgroups); run it with sudo or as root")


def run(args: Sequence[str], *, check: bool = True, timeout_s: float = 120.0,
        input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise LabError with its stderr."""
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout_s,
                              input=input_text, check=False)
    except FileNotFoundError as exc:
        raise LabError(f"{args[0]} not found; install it ({PACKAGES.get(args[0], args[0])})"
                       ) from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`{' '.join(args)}` did not finish in {timeout_s:g} s") from exc
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        raise LabError(f"`{' '.join(args)}` failed ({done.returncode}): {detail}")
    return done


def poll(check: Callable[[], T | None], timeout_s: float, what: str,
         interval_s: float = 0.5, max_interval_s: float = 3.0,
         clock: Clock = SYSTEM_CLOCK) -> T:
    """Call ``check`` until it returns something other than None/False; that is the result.

    The lab's one waiting helper: every readiness wait has a deadline (minutes on a busy CI
    machine) and never relies on a fixed sleep. ``check`` may raise ``NotYet(detail)`` to say
    why it is not ready; the last detail is in the timeout error. ``clock`` (s) is injected
    so that tests wait in virtual time.
    """
    deadline = clock.now() + timeout_s
    detail = ""
    while True:
        try:
            result = check()
            if result is not None and result is not False:
                return result
        except NotYet as exc:
            detail = str(exc)
        if clock.now() >= deadline:
            suffix = f": {detail}" if detail else ""
            raise LabError(f"timed out after {timeout_s:g} s waiting for {what}{suffix}")
        clock.sleep(min(interval_s, max(0.0, deadline - clock.now())))
        interval_s = min(max_interval_s, interval_s * 1.5)


class NotYet(Exception):
    """Raised inside a ``poll`` check: not ready yet, and why."""


def missing_programs() -> dict[str, str]:
    """Programs the lab needs that are not on PATH -> the Debian package that has them."""
    return {prog: pkg for prog, pkg in PACKAGES.items() if shutil.which(prog) is None}


def ensure_packages(install: bool) -> list[str]:
    """Install the Debian packages of missing programs (apt-get); returns what was installed."""
    missing = missing_programs()
    if not missing:
        return []
    packages = sorted(set(missing.values()))
    if not install:
        raise LabError(f"missing programs {', '.join(sorted(missing))}; install the Debian "
                       f"packages: apt-get install -y {' '.join(packages)}")
    if shutil.which("apt-get") is None:
        raise LabError(f"missing programs {', '.join(sorted(missing))} and no apt-get to "
                       f"install {' '.join(packages)}; install them by hand")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]):
        done = subprocess.run(args, capture_output=True, text=True, env=env, check=False,
                              timeout=900)
        if done.returncode != 0:
            raise LabError(f"`{' '.join(args)}` failed: {(done.stderr or done.stdout)[-800:]}")
    still = missing_programs()
    if still:
        raise LabError(f"after installing {' '.join(packages)}, still missing: "
                       f"{', '.join(sorted(still))}")
    return packages


# ---------------------------------------------------------------------- processes
def read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def pid_cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def signal_pid(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def stop_pids(pids: Sequence[int], grace_s: float, clock: Clock = SYSTEM_CLOCK) -> list[int]:
    """SIGTERM, wait up to ``grace_s`` (s, on ``clock``), then SIGKILL; returns pids still
    alive after that."""
    live = [p for p in pids if pid_alive(p)]
    for pid in live:
        signal_pid(pid, signal.SIGTERM)
    deadline = clock.monotonic() + grace_s
    while live and clock.monotonic() < deadline:
        clock.sleep(0.1)
        live = [p for p in live if pid_alive(p)]
    for pid in live:
        signal_pid(pid, signal.SIGKILL)
    deadline = clock.monotonic() + 10
    while live and clock.monotonic() < deadline:
        clock.sleep(0.05)
        live = [p for p in live if pid_alive(p)]
    return live


# ---------------------------------------------------------------------- mounts
def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
        .replace("\\134", "\\")


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root`` in this mount namespace, deepest first."""
    prefix = str(root).rstrip("/")
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


def unmount(point: str) -> None:
    """Detach one mount (lazy), ignoring one that is already gone."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(point.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise LabError(f"cannot unmount {point}: {os.strerror(err)}")


def unmount_all_under(root: Path) -> list[str]:
    """Unmount everything at or below ``root`` (repeats: a mount may hide another)."""
    done: list[str] = []
    for _ in range(10):
        points = mounts_under(root)
        if not points:
            break
        for point in points:
            unmount(point)
            done.append(point)
    return done


def remove_tree(path: Path) -> None:
    """rm -rf that refuses to cross a mount point (unmount first)."""
    if not path.exists() and not path.is_symlink():
        return
    left = mounts_under(path)
    if left:
        raise LabError(f"refusing to delete {path}: still mounted below it: {left[:3]}")
    shutil.rmtree(path, ignore_errors=False)


# ---------------------------------------------------------------------- netns and links
def netns_list() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def links() -> list[str]:
    """Names of the network links of the host namespace."""
    return sorted(p.name for p in Path("/sys/class/net").iterdir())


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def delete_link(name: str) -> None:
    if link_exists(name):
        run(["ip", "link", "del", name], check=False)


def delete_netns(name: str) -> None:
    if (NETNS_DIR / name).exists():
        run(["ip", "netns", "del", name], check=False)
        if (NETNS_DIR / name).exists():  # a stale bind mount whose namespace is gone
            unmount(str(NETNS_DIR / name))
            (NETNS_DIR / name).unlink(missing_ok=True)


def host_cpus() -> int:
    return len(os.sched_getaffinity(0))


def port_in_use(port: int) -> bool:
    """Whether something in the host namespace listens on TCP ``port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def stale_sockets(folder: Path) -> list[Path]:
    """Unix socket files below ``folder`` that no process listens on (a killed containerd
    shim leaves its socket behind in /run/containerd/s)."""
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return []
    bound = {fields[-1] for fields in (line.split() for line in lines) if len(fields) >= 8}
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*")
                  if p.is_socket() and str(p) not in bound)
