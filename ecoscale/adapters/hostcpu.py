"""The host's CPU as the kernel accounts it (``/proc/stat``): how much of the CPU time this
machine's work wanted a hypervisor gave to someone else (steal).

On a shared virtual machine the two CPUs are not always two CPUs: on the machine this
was written on, the same test suite saw 1 % of its CPU demand stolen at one moment and half
of it ten minutes earlier. Every latency the lab measures is then measured on a slower
machine, so the lab's measurements say how much was stolen while they ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
STOLEN_NOTE_SHARE = 0.10
"""From this share of the CPU demand stolen, measurements say their machine was slowed."""


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative CPU time of all the host's CPUs since boot (s)."""

    busy_s: float
    """user + nice + system + irq + softirq."""
    idle_s: float
    """idle + iowait."""
    stolen_s: float
    """Time a runnable virtual CPU waited for the hypervisor (steal)."""


def parse_cpu_times(text: str, ticks_per_s: float = 100.0) -> CpuTimes:
    """The ``cpu`` line of a ``/proc/stat`` text (``ticks_per_s``: USER_HZ, 100 on Linux)."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(v) for v in fields[1:]] + [0] * 8   # old kernels: fewer fields
            user, nice, system, idle, iowait, irq, softirq, steal = ticks[:8]
            return CpuTimes(busy_s=(user + nice + system + irq + softirq) / ticks_per_s,
                            idle_s=(idle + iowait) / ticks_per_s,
                            stolen_s=steal / ticks_per_s)
    raise ValueError("no 'cpu' line in the /proc/stat text")


def read_cpu_times(path: Path = PROC_STAT) -> CpuTimes | None:
    """The host's CPU times now; None where there is no ``/proc/stat`` (not Linux)."""
    try:
        return parse_cpu_times(path.read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None


def stolen_share(before: CpuTimes | None, after: CpuTimes | None) -> float | None:
    """Of the CPU time the host's work wanted between two readings (ran + stolen), the share
    the hypervisor kept (0..1); None without both readings or without any demand."""
    if before is None or after is None:
        return None
    busy = after.busy_s - before.busy_s
    stolen = after.stolen_s - before.stolen_s
    if busy + stolen <= 0:
        return None
    return max(0.0, min(1.0, stolen / (busy + stolen)))


def stolen_text(share: float | None) -> str:
    """One phrase for a report: how much CPU the hypervisor took while the figures were
    measured."""
    if share is None:
        return "host CPU steal: not known (no /proc/stat)"
    text = (f"host CPU steal: {100 * share:.0f} % of this machine's CPU demand went to the "
            "hypervisor")
    if share >= STOLEN_NOTE_SHARE:
        text += " (a shared virtual machine: latencies were measured on a slowed machine)"
    return text
