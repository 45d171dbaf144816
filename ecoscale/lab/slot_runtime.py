"""The lab's container runtime: runc, with a short CFS period on a task's CPU limit.

Docker turns a CPU limit (Swarm ``NanoCPUs``) into a CFS quota per 100 ms period, and offers
no way to change the period for a service. A slot of 0.05 CPU would then run 5 ms and stall
95 ms, which no server core does. Every lab engine runs its containers through this program
(dockerd ``runtimes`` / ``default-runtime``, see ``engines.start_engine``): on ``create`` it
rewrites the bundle's ``config.json`` so that the same CPU share has a period of
``period_us`` (``LabConfig.slot_period_us``), then runs runc with the arguments unchanged.
Containers without a CPU limit are left as they are.

It is run as a script by the host's interpreter for every runc call, so it imports nothing
but the standard library.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

DOCKER_PERIOD_US = 100_000
MIN_QUOTA_US = 1000
"""The kernel refuses a CFS quota below 1 ms (also ``LabConfig``'s check)."""


def with_period(config: dict[str, Any], period_us: int) -> bool:
    """Give the CPU limit of an OCI ``config`` (if any) the period ``period_us`` at the same
    share of a CPU (quota at least the kernel's 1 ms); True when it changed. In place."""
    cpu = (((config.get("linux") or {}).get("resources") or {}).get("cpu")) or {}
    quota, period = cpu.get("quota"), cpu.get("period") or DOCKER_PERIOD_US
    if not isinstance(quota, int) or quota <= 0 or period == period_us:
        return False
    cpu["quota"] = max(MIN_QUOTA_US, round(quota * period_us / period))
    cpu["period"] = period_us
    return True


def bundle_of(args: list[str]) -> Path | None:
    """The bundle folder of a runc ``create``/``run`` call (its ``--bundle``/``-b``, else the
    working folder), None for every other command."""
    commands = [i for i, a in enumerate(args) if a in ("create", "run")]
    if not commands:
        return None
    rest = args[commands[0] + 1:]
    for i, arg in enumerate(rest):
        if arg in ("--bundle", "-b") and i + 1 < len(rest):
            return Path(rest[i + 1])
        if arg.startswith("--bundle="):
            return Path(arg.split("=", 1)[1])
    return Path.cwd()


def main(argv: list[str]) -> None:
    """``slot_runtime.py RUNC PERIOD_US RUNC-ARGS...``: adjust the bundle, exec runc."""
    runc, period_us, args = argv[0], int(argv[1]), argv[2:]
    bundle = bundle_of(args)
    if bundle is not None and (bundle / "config.json").is_file():
        path = bundle / "config.json"
        config = json.loads(path.read_text())
        if with_period(config, period_us):
            path.write_text(json.dumps(config))
    os.execv(runc, [runc, *args])


def wrapper_text(interpreter: str, runc: str, period_us: int) -> str:
    """The executable that dockerd is given as its runtime."""
    return (f"#!/bin/sh\n# ecoscale lab: runc with a CFS period of {period_us} us on CPU "
            f"limits\nexec {interpreter} -S -E {Path(__file__).resolve()} {runc} "
            f"{period_us} \"$@\"\n")


if __name__ == "__main__":
    main(sys.argv[1:])
