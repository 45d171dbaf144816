"""Reading and writing the project's YAML files: topologies, hardware specs, profiles."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ecoscale.adapters.outputs import atomic_write_text
from ecoscale.config import DaemonConfig, parse_config
from ecoscale.errors import InputError
from ecoscale.model.carbon import Generation, Hardware
from ecoscale.model.latency import AppProfile, LatencyCurve, parse_replica_limits
from ecoscale.model.topology import Topology, parse_topology
from ecoscale.paths import profiles_dir
from ecoscale.planner.table import PolicyTable, table_from_data, table_to_data
from ecoscale.values import BadNumber, number, number_at

DEFAULT_HARDWARE = "cloudlab"
DEFAULT_PROFILE = "calibrated"
"""The profile `replay` and `plan` use unless told otherwise: the one calibrated to the papers'
servers (the hardware the method is about). The lab's own commands default to "lab"."""
LAB_PROFILE = "lab"
"""The profile measured on the lab by `ecoscale profile --pool lab`: the lab commands' default."""
LEGACY_DEFAULT = "default"
"""The name configs used for the default before it was "calibrated"; still accepted."""


MAX_INPUT_BYTES = 64 * 1024 * 1024
"""Largest YAML or CSV input read (bytes): a profile of thousands of services is a few MB."""

_SafeBase: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # libyaml when installed


class _Loader(_SafeBase):  # type: ignore[misc, valid-type]
    """The safe loader (libyaml), reading 1e3 and 2E-5 as numbers as YAML 1.2 does
    (YAML 1.1 wants a dot and a signed exponent, 1.0e+3, and reads 1e3 as text)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def read_text(path: Path, what: str = "file", limit_bytes: int = MAX_INPUT_BYTES) -> str:
    """A user's text file as str; missing, too large, compressed, binary or non-UTF-8 files
    become an InputError naming the file and saying what to do."""
    try:
        size = path.stat().st_size
        if size > limit_bytes:
            raise InputError(str(path), f"the {what} is {size / 2**20:.0f} MiB, more than the "
                                        f"{limit_bytes / 2**20:.0f} MiB ecoscale reads; cut it "
                                        "or split it")
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(str(path), "file not found; check the path") from None
    except IsADirectoryError:
        raise InputError(str(path), "is a folder, not a file; give the file's path") from None
    except OSError as exc:
        raise InputError(str(path), f"cannot read: {exc.strerror}") from None
    return decode_text(data, str(path), what)


def decode_text(data: bytes, source: str, what: str = "file") -> str:
    """UTF-8 text of a file's bytes, or an InputError that says what the bytes are."""
    if data[:2] == b"\x1f\x8b":
        raise InputError(source, f"the {what} is gzip-compressed; decompress it first "
                                 "(gunzip) and give the plain-text file")
    if data[:4] in (b"PK\x03\x04", b"BZh9") or data[:6] == b"\xfd7zXZ\x00":
        raise InputError(source, f"the {what} is an archive or compressed file; extract the "
                                 "plain-text file and give that")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise InputError(source, f"the {what} is UTF-16 text; save it as UTF-8")
    if b"\x00" in data[:8192]:
        raise InputError(source, f"the {what} is binary (it holds NUL bytes), not text; give "
                                 "the plain-text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InputError(source, f"line {line}: byte 0x{data[exc.start]:02x} is not UTF-8; "
                                 f"save the {what} as UTF-8 text") from None


def read_yaml(path: Path) -> Any:
    """Parse a user's YAML file with libyaml; a missing, binary or too-large file, bad syntax
    and aliases (``*name``: a bomb or a loop) become an InputError naming the file."""
    return parse_yaml_text(read_text(path, "YAML file"), str(path))


MAX_YAML_DEPTH = 64
"""Deepest nesting of mappings and lists accepted (libyaml composes recursively in C)."""


def parse_yaml_text(text: str, source: str) -> Any:
    """YAML text -> plain data. Aliases and nesting deeper than MAX_YAML_DEPTH are refused;
    both are checked on libyaml's event stream first, only when the text could hold them
    (an asterisk, or deep brackets or indentation), so that a large plain profile parses at
    libyaml's speed."""
    try:
        if _may_be_hostile(text):
            _check_events(text, source)
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        raise InputError(source, f"not valid YAML: {exc}") from None
    except RecursionError:
        raise InputError(source, "nested too deeply to be an ecoscale input") from None


def _may_be_hostile(text: str) -> bool:
    """Whether the text could hold an alias or deep nesting (cheap, may say yes wrongly)."""
    if "*" in text or "- " * (MAX_YAML_DEPTH // 2) in text:   # an alias, or "- - - ..."
        return True
    raw = np.frombuffer(text.encode("utf-8", "replace"), dtype=np.uint8)
    steps = (np.isin(raw, (ord("["), ord("{"))).astype(np.int64)
             - np.isin(raw, (ord("]"), ord("}"))).astype(np.int64))
    if len(steps) and int(np.cumsum(steps).max()) > MAX_YAML_DEPTH // 2:
        return True
    return any(len(line) - len(line.lstrip(" ")) > MAX_YAML_DEPTH
               for line in text.splitlines() if line.startswith(" " * MAX_YAML_DEPTH))


def _check_events(text: str, source: str) -> None:
    """Refuse aliases (a bomb or a loop) and nesting deeper than MAX_YAML_DEPTH."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        line = event.start_mark.line + 1 if event.start_mark else "?"
        if isinstance(event, yaml.AliasEvent):
            raise InputError(source, f"line {line}: YAML aliases (*{event.anchor}) are not "
                                     "accepted in ecoscale's inputs (they can expand without "
                                     "bound); write the value out")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise InputError(source, f"line {line}: nested more than {MAX_YAML_DEPTH} "
                                         "levels deep; no ecoscale input is")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def write_yaml(path: Path, data: Any, header: str = "") -> None:
    """Write YAML atomically (a temporary file renamed over the target): nothing half-written."""
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


MAX_CARBON_G_PER_KWH = 3000.0
"""Highest grid intensity accepted (gCO2e/kWh): lignite, the dirtiest fuel, is ~1,200."""


def parse_hardware(data: Any, source: str) -> Hardware:
    """Validate a hardware spec (every problem at once) and build the Hardware."""
    problems: list[str] = []
    if not isinstance(data, Mapping) or not isinstance(data.get("generations"), Mapping):
        raise InputError(source, "expected a mapping with 'generations' (name -> spec)")
    if not data["generations"]:
        raise InputError(source, "generations is empty; describe at least the newest "
                                 "generation and one other")
    generations = {}
    curve = _power_curve(data.get("power_curve"), "power_curve", problems)
    for name, spec in data["generations"].items():
        where = f"generations.{name}."
        if not isinstance(spec, Mapping):
            problems.append(f"generations.{name}: expected a mapping")
            continue
        slots = number_at(spec, "slots_per_node", problems, where=where, fallback=1,
                          integer=True, minimum=1, maximum=10_000)
        embodied = number_at(spec, "embodied_kg_per_node", problems, where=where, fallback=0.0,
                             minimum=0, maximum=1e6)
        lifetime = number_at(spec, "lifetime_years", problems, where=where, fallback=1.0,
                             above=0, maximum=100)
        peak = number_at(spec, "peak_w_per_slot", problems, where=where, fallback=1.0,
                         above=0, maximum=1e5)
        second_life = spec.get("second_life", False)
        if not isinstance(second_life, bool):
            problems.append(f"{where}second_life must be true or false, got {second_life!r}")
            second_life = False
        own_curve = _power_curve(spec.get("power_curve"), f"{where}power_curve", problems)
        own_curve = own_curve or curve
        if own_curve:
            idle = peak * own_curve[0][1]
        else:
            idle = number_at(spec, "idle_w_per_slot", problems, where=where, fallback=0.0,
                             minimum=0, maximum=peak if math.isfinite(peak) else None)
            if "idle_w_per_slot" not in spec:
                problems[-1] += " (or give a power_curve)"
        parts_raw = spec.get("embodied_parts_kg") or {}
        parts = {}
        if not isinstance(parts_raw, Mapping):
            problems.append(f"{where}embodied_parts_kg: expected part -> kgCO2e")
            parts_raw = {}
        for part in parts_raw:
            parts[str(part)] = number_at(parts_raw, part, problems,
                                         where=f"{where}embodied_parts_kg.", minimum=0)
        generations[str(name)] = Generation(
            name=str(name),
            server=str(spec.get("server", "")),
            slots_per_node=int(slots),
            second_life=second_life,
            embodied_kg_per_node=float(embodied),
            lifetime_years=float(lifetime),
            idle_w_per_slot=float(idle),
            peak_w_per_slot=float(peak),
            embodied_parts_kg=parts,
            power_curve=own_curve,
        )
    reference = data.get("reference") or {}
    if not isinstance(reference, Mapping):
        problems.append("reference: expected a mapping with carbon_intensity_g_per_kwh, "
                        "utilisation and newest")
        reference = {}
    pue = number_at(data, "pue", problems, default=1.0, fallback=1.0, minimum=1, maximum=5)
    newest = str(reference.get("newest", "new"))
    if generations and newest not in generations:
        problems.append(f"reference.newest '{newest}' is not a generation (generations: "
                        f"{', '.join(generations)})")
    ci = number_at(reference, "carbon_intensity_g_per_kwh", problems, where="reference.",
                   default=250.0, above=0, maximum=MAX_CARBON_G_PER_KWH)
    util = number_at(reference, "utilisation", problems, where="reference.", default=0.3,
                     minimum=0, maximum=1)
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
    """[[utilisation 0..1, fraction of peak 0..1], ...]: utilisation rising strictly from 0
    to 1, power never falling as utilisation rises."""
    if raw is None:
        return ()
    shape = f"{where}: expected [[utilisation, fraction of peak], ...]"
    if not isinstance(raw, list) or any(not isinstance(p, list) or len(p) != 2 for p in raw):
        problems.append(shape)
        return ()
    before = len(problems)
    pairs = []
    for i, (u, f) in enumerate(raw):
        try:
            pairs.append((number(u, f"{where}[{i}] utilisation", minimum=0, maximum=1),
                          number(f, f"{where}[{i}] fraction of peak", minimum=0, maximum=1)))
        except BadNumber as exc:
            problems.append(str(exc))
    if len(problems) > before:
        return ()
    points = tuple(pairs)
    us = [u for u, _ in points]
    if len(points) < 2 or us[0] != 0.0 or us[-1] != 1.0 or any(
        b <= a for a, b in zip(us, us[1:], strict=False)
    ):
        problems.append(f"{where}: utilisation must rise strictly from 0 to 1")
    falls = [i for i in range(1, len(points)) if points[i][1] < points[i - 1][1]]
    if falls:
        i = falls[0]
        problems.append(f"{where}: power falls from {points[i - 1][1]:g} to {points[i][1]:g} "
                        f"of peak as utilisation rises from {points[i - 1][0]:g} to "
                        f"{points[i][0]:g}; a power curve must not fall with utilisation")
    return points if len(problems) == before else ()


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
            where = f"services.{service}.{generation}"
            if not isinstance(spec, Mapping) or "points" not in spec or (
                    "saturation_qps" not in spec):
                problems.append(f"{where}: needs saturation_qps and points "
                                "[[load_qps, p99_ms, util], ...]")
                continue
            try:
                curves[str(service)][str(generation)] = LatencyCurve.from_points(
                    spec["points"], spec["saturation_qps"], where
                )
            except InputError as exc:
                problems.extend(f"{where}: {p}" for p in exc.problems)
    limits, limit_problems = parse_replica_limits(data.get("replica_limits"))
    problems.extend(limit_problems)
    calibration = number_at(data, "e2e_calibration", problems, default=1.0, above=0,
                            maximum=100)
    slo = number_at(data, "slo_ms", problems, default=None, above=0)
    slo_fraction = number_at(data, "slo_load_fraction", problems, default=0.75, above=0,
                             maximum=1)
    measured = data.get("measured")
    slo_load = (number_at(measured, "slo_load_qps", problems, where="measured.", default=None,
                          above=0) if isinstance(measured, Mapping) else None)
    if not curves or not any(curves.values()):
        problems.append("services: no latency curves; profile at least one service on "
                        "two generations")
    if problems:
        raise InputError(source, problems)
    provenance = data.get("provenance")
    return AppProfile(
        app=str(data.get("app", "")),
        name=str(data.get("name", Path(source).stem)),
        kind=str(data.get("kind", "measured")),
        curves=curves,
        e2e_calibration=float(calibration),
        slo_ms=float(slo) if slo is not None else None,
        slo_load_fraction=float(slo_fraction),
        slo_load_qps=float(slo_load) if slo_load is not None else None,
        provenance=dict(provenance) if isinstance(provenance, Mapping) else {},
        replica_limits=limits,
        file=source,
    )


def write_table(path: Path, table: PolicyTable) -> None:
    """Write a policy table as YAML, atomically."""
    header = (
        f"# ecoscale policy table for {table.app}: written by `ecoscale plan`, read by "
        "`ecoscale run` and `ecoscale replay --table`.\n"
        "# Each level: the placement planned to keep the SLO up to max_load_qps (and, when\n"
        "# ci_aware, up to max_ci_g_per_kwh of grid intensity), with the reason per service.\n"
    )
    write_yaml(path, table_to_data(table), header)


def load_table(path: str | Path) -> PolicyTable:
    """Read and validate a policy table file."""
    return table_from_data(read_yaml(Path(path)), str(path))


def load_config(path: str | Path) -> DaemonConfig:
    """The daemon's config file, its table path made absolute (relative to the file's folder)."""
    config = parse_config(read_yaml(Path(path)), str(path))
    table = Path(config.table)
    if not table.is_absolute():   # relative to the config file's folder
        table = Path(path).resolve().parent / table
    return DaemonConfig(**{**{f.name: getattr(config, f.name) for f in fields(DaemonConfig)},
                           "table": str(table)})
