"""Reading and writing the project's YAML files: topologies, hardware specs, profiles."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ecoscale.errors import InputError
from ecoscale.model.carbon import Generation, Hardware
from ecoscale.model.latency import AppProfile, LatencyCurve, parse_replica_limits
from ecoscale.model.topology import Topology, parse_topology
from ecoscale.paths import profiles_dir

DEFAULT_HARDWARE = "cloudlab"
DEFAULT_PROFILE = "calibrated"
"""The profile `replay` and `plan` use unless told otherwise: the one calibrated to the papers'
servers (the hardware the method is about). The lab's own commands default to "lab"."""
LAB_PROFILE = "lab"
"""The profile measured on the lab by `ecoscale profile --pool lab`: the lab commands' default."""
LEGACY_DEFAULT = "default"
"""The name configs used for the default before it was "calibrated"; still accepted."""


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; a missing file or bad syntax becomes an InputError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(str(path), "file not found; check the path") from None
    except OSError as exc:
        raise InputError(str(path), f"cannot read: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(str(path), f"not valid YAML: {exc}") from None


def write_yaml(path: Path, data: Any, header: str = "") -> None:
    """Write YAML atomically (a temporary file renamed over the target): nothing half-written."""
    from ecoscale.adapters.outputs import atomic_write_text

    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
    atomic_write_text(path, header + body)


def resolve(name_or_path: str, folder: Path, suffix: str = ".yaml") -> Path:
    """A shipped file by name (``folder/name.yaml``) or a path given by the user."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    return folder / f"{name_or_path}{suffix}"


def app_names() -> list[str]:
    return sorted(p.parent.name for p in profiles_dir().glob("*/topology.yaml"))


def topology_path(app: str) -> Path:
    candidate = Path(app)
    if candidate.is_file():
        return candidate
    path = profiles_dir() / app / "topology.yaml"
    if not path.is_file():
        known = ", ".join(app_names())
        raise InputError(f"app '{app}'", f"no topology for it; shipped apps: {known}, "
                         "or give the path of a topology YAML file")
    return path


def load_topology(app: str) -> Topology:
    """A shipped app by name (profiles/<app>/topology.yaml) or a topology file path."""
    path = topology_path(app)
    return parse_topology(read_yaml(path), str(path))


def load_hardware(name_or_path: str = DEFAULT_HARDWARE) -> Hardware:
    path = resolve(name_or_path, profiles_dir() / "hardware")
    return parse_hardware(read_yaml(path), str(path))


def parse_hardware(data: Any, source: str) -> Hardware:
    problems: list[str] = []
    if not isinstance(data, Mapping) or not isinstance(data.get("generations"), Mapping):
        raise InputError(source, "expected a mapping with 'generations' (name -> spec)")
    generations = {}
    curve = _power_curve(data.get("power_curve"), "power_curve", problems)
    numeric = ("slots_per_node", "embodied_kg_per_node", "lifetime_years", "peak_w_per_slot")
    for name, spec in data["generations"].items():
        where = f"generation '{name}'"
        if not isinstance(spec, Mapping):
            problems.append(f"{where}: expected a mapping")
            continue
        values = {}
        for key in numeric:
            value = spec.get(key)
            if not isinstance(value, int | float) or value < 0:
                problems.append(f"{where}: {key} must be a number >= 0, got {value!r}")
                value = 1
            values[key] = value
        if values["slots_per_node"] < 1 or int(values["slots_per_node"]) != values[
            "slots_per_node"
        ]:
            problems.append(f"{where}: slots_per_node must be a whole number >= 1")
        if values["lifetime_years"] <= 0:
            problems.append(f"{where}: lifetime_years must be > 0")
        own_curve = _power_curve(spec.get("power_curve"), f"{where}: power_curve", problems)
        own_curve = own_curve or curve
        idle = spec.get("idle_w_per_slot")
        if own_curve:
            idle = values["peak_w_per_slot"] * own_curve[0][1]
        elif not isinstance(idle, int | float) or not 0 <= idle <= values["peak_w_per_slot"]:
            problems.append(f"{where}: without a power_curve, idle_w_per_slot must be a number "
                            "in 0..peak_w_per_slot")
            idle = 0.0
        parts = spec.get("embodied_parts_kg") or {}
        generations[str(name)] = Generation(
            name=str(name),
            server=str(spec.get("server", "")),
            slots_per_node=int(values["slots_per_node"]),
            second_life=bool(spec.get("second_life", False)),
            embodied_kg_per_node=float(values["embodied_kg_per_node"]),
            lifetime_years=float(values["lifetime_years"]),
            idle_w_per_slot=float(idle),
            peak_w_per_slot=float(values["peak_w_per_slot"]),
            embodied_parts_kg={str(k): float(v) for k, v in parts.items()},
            power_curve=own_curve,
        )
    reference = data.get("reference") or {}
    pue = data.get("pue", 1.0)
    if not isinstance(pue, int | float) or pue < 1:
        problems.append(f"pue must be a number >= 1, got {pue!r}")
        pue = 1.0
    newest = str(reference.get("newest", "new"))
    if generations and newest not in generations:
        problems.append(f"reference.newest '{newest}' is not a generation")
    ci = reference.get("carbon_intensity_g_per_kwh", 250.0)
    util = reference.get("utilisation", 0.3)
    if not isinstance(ci, int | float) or ci < 0:
        problems.append("reference.carbon_intensity_g_per_kwh must be a number >= 0")
    if not isinstance(util, int | float) or not 0 <= util <= 1:
        problems.append("reference.utilisation must lie in 0..1")
    if problems:
        raise InputError(source, problems)
    return Hardware(
        name=str(data.get("name", Path(source).stem)),
        generations=generations,
        pue=float(pue),
        reference_ci_g_per_kwh=float(ci),
        reference_utilisation=float(util),
        newest=newest,
        source=source,
    )


def _power_curve(raw: Any, where: str, problems: list[str]) -> tuple[tuple[float, float], ...]:
    """[[utilisation 0..1, fraction of peak 0..1], ...], utilisation rising from 0 to 1."""
    if raw is None:
        return ()
    try:
        points = tuple((float(u), float(f)) for u, f in raw)
    except (TypeError, ValueError):
        problems.append(f"{where}: expected [[utilisation, fraction of peak], ...]")
        return ()
    us = [u for u, _ in points]
    if len(points) < 2 or us[0] != 0.0 or us[-1] != 1.0 or any(
        b <= a for a, b in zip(us, us[1:], strict=False)
    ):
        problems.append(f"{where}: utilisation must rise strictly from 0 to 1")
    if any(not 0 <= f <= 1 for _, f in points):
        problems.append(f"{where}: fractions of peak must lie in 0..1")
    return points


def default_profile_name(app: str) -> str:
    """The default profile's name for every app: DEFAULT_PROFILE ('calibrated')."""
    return DEFAULT_PROFILE


def profile_path(app: str, name: str = DEFAULT_PROFILE) -> Path:
    if name == LEGACY_DEFAULT:
        name = default_profile_name(app)
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml"):
        return candidate
    return topology_path(app).parent / f"{name}.yaml"


def load_profile(app: str, name: str = DEFAULT_PROFILE) -> AppProfile:
    """profiles/<app>/<name>.yaml, or a profile file path."""
    path = profile_path(app, name)
    return parse_profile(read_yaml(path), str(path))


def parse_profile(data: Any, source: str) -> AppProfile:
    if not isinstance(data, Mapping) or not isinstance(data.get("services"), Mapping):
        raise InputError(source, "expected a mapping with 'services' (name -> generation -> "
                                 "{saturation_qps, points})")
    problems: list[str] = []
    curves: dict[str, dict[str, LatencyCurve]] = {}
    for service, per_gen in data["services"].items():
        if not isinstance(per_gen, Mapping):
            problems.append(f"service '{service}': expected generation -> curve")
            continue
        curves[str(service)] = {}
        for generation, spec in per_gen.items():
            where = f"{service} on {generation}"
            try:
                curves[str(service)][str(generation)] = LatencyCurve.from_points(
                    spec["points"], float(spec["saturation_qps"]), where
                )
            except InputError as exc:
                problems.extend(f"{where}: {p}" for p in exc.problems)
            except (KeyError, TypeError, ValueError):
                problems.append(f"{where}: needs saturation_qps and points "
                                "[[load_qps, p99_ms, util], ...]")
    limits, limit_problems = parse_replica_limits(data.get("replica_limits"))
    problems.extend(limit_problems)
    if problems:
        raise InputError(source, problems)
    slo = data.get("slo_ms")
    return AppProfile(
        app=str(data.get("app", "")),
        name=str(data.get("name", Path(source).stem)),
        kind=str(data.get("kind", "measured")),
        curves=curves,
        e2e_calibration=float(data.get("e2e_calibration", 1.0)),
        slo_ms=float(slo) if slo is not None else None,
        slo_load_fraction=float(data.get("slo_load_fraction", 0.75)),
        slo_load_qps=_measured_slo_load(data),
        provenance=dict(data.get("provenance") or {}),
        replica_limits=limits,
    )


def _measured_slo_load(data: Mapping[str, Any]) -> float | None:
    measured = data.get("measured")
    value = measured.get("slo_load_qps") if isinstance(measured, Mapping) else None
    return float(value) if isinstance(value, int | float) and value > 0 else None


def write_table(path: Path, table: Any) -> None:
    """Write a policy table (planner.table.PolicyTable) as YAML, atomically."""
    from ecoscale.planner.table import table_to_data

    header = (
        f"# ecoscale policy table for {table.app}: written by `ecoscale plan`, read by "
        "`ecoscale run` and `ecoscale replay --table`.\n"
        "# Each level: the placement planned to keep the SLO up to max_load_qps (and, when\n"
        "# ci_aware, up to max_ci_g_per_kwh of grid intensity), with the reason per service.\n"
    )
    write_yaml(path, table_to_data(table), header)


def load_table(path: str | Path) -> Any:
    """Read and validate a policy table file."""
    from ecoscale.planner.table import table_from_data

    return table_from_data(read_yaml(Path(path)), str(path))
