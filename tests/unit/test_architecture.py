"""The pure core (model, planner, control) reads no wall clock, and the layer graph holds.

What each package may import is import-linter's job (contracts in pyproject.toml, run by
./test.sh as `lint-imports`); this file checks what import-linter cannot see (clock reads)
and that the contracts themselves still cover the core.
"""

import ast
import tomllib
from pathlib import Path

import pytest

import ecoscale

PACKAGE = Path(ecoscale.__file__).parent
PURE = ["model", "planner", "control"]
FORBIDDEN_CALLS = {("time", "time"), ("time", "monotonic"), ("time", "perf_counter"),
                   ("datetime", "now"), ("datetime", "utcnow"), ("time", "sleep")}


def files_of(parts: list[str]) -> list[Path]:
    return sorted(p for part in parts for p in (PACKAGE / part).rglob("*.py"))


def clock_reads(path: Path) -> list[str]:
    """The clock reads (``time.time``, ``datetime.now``, ...) written in ``path``."""
    return [f"{node.value.id}.{node.attr}" for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and (node.value.id, node.attr) in FORBIDDEN_CALLS]


@pytest.mark.parametrize("path", files_of(PURE), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_core_reads_no_clock(path):
    assert not clock_reads(path), (
        f"{path.name} reads the clock ({clock_reads(path)}); pass the time in")


CLOCKED = ["lab"]
"""Packages that wait through an injected ``ports.Clock`` (the lab's), never on ``time``."""


@pytest.mark.parametrize("path", files_of(CLOCKED), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_lab_waits_on_its_clock(path):
    assert not clock_reads(path), (
        f"{path.name} reads the clock ({clock_reads(path)}); take a ports.Clock (default "
        "adapters.clock.SYSTEM_CLOCK) and use it")


def test_there_is_a_core_to_check():
    assert len(files_of(PURE)) >= 5


def test_the_import_contracts_cover_the_core_and_every_package():
    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    contracts = {c["id"]: c for c in config["tool"]["importlinter"]["contracts"]}
    pure = set(contracts["pure-core"]["source_modules"])
    assert {f"ecoscale.{p}" for p in PURE} <= pure
    assert {"docker", "requests", "yaml", "pandas", "socket"} <= set(
        contracts["pure-core"]["forbidden_modules"])
    layered = {name.strip() for layer in contracts["layers"]["layers"]
               for name in layer.replace(":", "|").split("|")}
    packages = {f"ecoscale.{p.name}" for p in PACKAGE.iterdir()
                if p.is_dir() and (p / "__init__.py").exists()}
    modules = {f"ecoscale.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert packages | modules <= layered, (
        f"not in any layer of pyproject.toml's import contracts: "
        f"{sorted(packages | modules - layered)}; add them where they belong")
