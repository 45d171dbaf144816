"""Cross-file consistency: a profile against its topology and hardware, a policy table
against the model it will drive. One place, shared by `replay`, `plan` and `run --check`.

Each check returns every problem found, each naming the files involved and the fix. Pure:
the files' paths come in as strings (``Topology.file``, ``AppProfile.file``,
``Hardware.source``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ecoscale.errors import InputError
from ecoscale.model.carbon import Hardware
from ecoscale.model.latency import AppProfile
from ecoscale.model.placement import Placement
from ecoscale.model.topology import Topology


class _Level(Protocol):
    @property
    def placement(self) -> Placement: ...


class TableLike(Protocol):
    """What the check reads of a policy table (planner.table.PolicyTable)."""

    @property
    def app(self) -> str: ...

    @property
    def newest(self) -> str: ...

    @property
    def levels(self) -> Sequence[_Level]: ...

    @property
    def ranking(self) -> Sequence[tuple[str, float]]: ...


def _named(kind: str, name: str, path: str) -> str:
    return f"{kind} {path}" if path else f"{kind} '{name}'"


def profile_problems(profile: AppProfile, topology: Topology, hardware: Hardware) -> list[str]:
    """A profile must cover every service of the topology, on generations the hardware
    describes, and nothing else."""
    profile_file = _named("profile", profile.name, profile.file)
    topology_file = _named("topology", topology.app, topology.file)
    hardware_file = _named("hardware", hardware.name, hardware.source)
    problems = []
    generations = set(profile.generations) if profile.curves else set()
    for name in topology.services:
        if name not in profile.curves:
            problems.append(f"{profile_file} has no curves for service '{name}' of the "
                            f"{topology_file}; profile it, or give the profile of this app")
            continue
        missing = generations - set(profile.curves[name])
        if missing:
            problems.append(f"{profile_file}: service '{name}' lacks generations "
                            f"{sorted(missing)}; every service needs a curve on each")
    extra = [name for name in profile.curves if name not in topology.services]
    if extra:
        problems.append(f"{profile_file} has curves for {', '.join(extra)}, which the "
                        f"{topology_file} does not have; is it the profile of another app?")
    unknown = sorted(generations - set(hardware.generations))
    if unknown:
        problems.append(f"{profile_file} uses generation(s) {', '.join(unknown)}, which the "
                        f"{hardware_file} does not describe (it has "
                        f"{', '.join(hardware.generations)}); the profile and the hardware "
                        "must name the same generations: fix the names in one of them")
    if hardware.newest not in generations:
        problems.append(f"the newest generation '{hardware.newest}' of the {hardware_file} "
                        f"has no curves in the {profile_file} (it has "
                        f"{', '.join(sorted(generations))})")
    return problems


def check_profile(profile: AppProfile, topology: Topology, hardware: Hardware) -> None:
    """:func:`profile_problems` as an InputError naming the profile."""
    problems = profile_problems(profile, topology, hardware)
    if problems:
        raise InputError(profile.file or f"profile {profile.name} for {profile.app}", problems)


def table_problems(table: TableLike, topology: Topology, generations: Sequence[str],
                   newest: str) -> list[str]:
    """A policy table must place exactly the topology's services (the front end among
    them) on generations of the profile and hardware (``generations``)."""
    topology_file = _named("topology", topology.app, topology.file)
    problems = []
    if table.app and table.app != topology.app:
        problems.append(f"the table is for app '{table.app}', the {topology_file} is for "
                        f"'{topology.app}'; plan a table for this app (`ecoscale plan`)")
    if table.newest != newest:
        problems.append(f"newest_generation '{table.newest}' is not the hardware's newest "
                        f"'{newest}'")
    known = set(generations)
    for index, level in enumerate(table.levels, start=1):
        placed = set(level.placement)
        ghosts = [s for s in level.placement if s not in topology.services]
        if ghosts:
            problems.append(f"level {index} places {', '.join(ghosts)}, which the "
                            f"{topology_file} does not have; re-plan the table for it")
        missing = [s for s in topology.services if s not in placed]
        if topology.frontend in missing:
            problems.append(f"level {index} does not place the front end "
                            f"'{topology.frontend}'; re-plan the table")
            missing.remove(topology.frontend)
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more"
                                              if len(missing) > 5 else "")
            problems.append(f"level {index} does not place {shown} of the {topology_file}")
        wrong = sorted({p.generation for _, p in level.placement.items} - known)
        if wrong:
            problems.append(f"level {index} uses generation(s) {', '.join(wrong)}, which the "
                            f"profile and hardware do not have (they have "
                            f"{', '.join(generations)})")
        if len(problems) > 8:   # the same mistake on every level: say it once
            problems.append("(further levels not checked)")
            break
    ranked = [s for s, _ in table.ranking if s not in topology.services]
    if ranked:
        problems.append(f"ranking names {', '.join(ranked)}, which the {topology_file} does "
                        "not have")
    return problems


def check_table(table: TableLike, topology: Topology, generations: Sequence[str],
                newest: str, source: str) -> None:
    """:func:`table_problems` as an InputError naming the table file ``source``."""
    problems = table_problems(table, topology, generations, newest)
    if problems:
        raise InputError(source, problems)

