"""The running lab as a profiler pool (``ecoscale profile --pool lab``): its URLs, its
generations, one replica's CPUs, how it emulates each generation and its role queries
(``ecoscale.lab.queries``)."""

from __future__ import annotations

import os
from typing import Any

from ecoscale.lab.lab import Lab
from ecoscale.lab.queries import LAB_QUERIES
from ecoscale.profiler.experiments import PoolConfig, parse_pool


def lab_pool(overrides: dict[str, Any]) -> PoolConfig:
    """The pool of the running `ecoscale lab` (found as `ecoscale lab status` finds it)."""
    lab = Lab.attach()
    emulation = lab.config.emulation(os.cpu_count() or 1)
    raw: dict[str, Any] = {
        "name": "lab",
        "frontend_url": lab.frontend_url,
        "prometheus_url": lab.prometheus_url,
        "docker_host": lab.docker_host,
        "generations": [g.name for g in lab.config.generations],
        "slot_cpus": {g: float(spec["cpus_per_replica"]) for g, spec in emulation.items()},
        "replica_limits": replica_limits(emulation),
        "emulation": lab_emulation_text(emulation),
        "queries": LAB_QUERIES,
    }
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return parse_pool(raw, "ecoscale lab")


def replica_limits(emulation: dict[str, dict[str, Any]]) -> dict[str, int]:
    """generation -> replicas of one service that add capacity on the lab: the generation's
    CPUs (nodes x CPUs per node, and with slots at most the slot budget) over one replica's
    CPUs, at least 1."""
    limits = {}
    for generation, spec in emulation.items():
        cpus = spec["nodes"] * spec["cpus_per_node"]
        if spec.get("slot_cpus"):
            cpus = min(cpus, spec["slot_budget_cpus"])
        limits[generation] = max(1, int(cpus / spec["cpus_per_replica"] + 1e-9))
    return limits


def lab_emulation_text(emulation: dict[str, dict[str, Any]]) -> str:
    """How the lab emulates each generation, in one line for the profile's provenance."""
    parts = [f"{g}: {spec['speed']}; {spec['capacity']}" for g, spec in emulation.items()]
    return "EMULATED on one machine by `ecoscale lab`: " + " | ".join(parts)


NAMED_POOLS = {"lab": lab_pool}
"""The pools that are not files, for ``run_profile(named_pools=...)``."""
