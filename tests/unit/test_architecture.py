"""The pure core (model, planner, control) imports no I/O library and reads no wall clock."""

import ast
from pathlib import Path

import pytest

import ecoscale

PACKAGE = Path(ecoscale.__file__).parent
PURE = ["model", "planner", "control"]
FORBIDDEN_MODULES = {"docker", "requests", "prometheus_client", "http", "urllib", "socket",
                     "subprocess", "yaml", "pandas", "ecoscale.adapters", "ecoscale.daemon",
                     "ecoscale.lab", "ecoscale.emulator", "ecoscale.profiler"}
FORBIDDEN_CALLS = {("time", "time"), ("time", "monotonic"), ("datetime", "now"),
                   ("time", "sleep")}


def pure_files():
    return sorted(p for part in PURE for p in (PACKAGE / part).rglob("*.py"))


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_core_has_no_io_imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            for forbidden in FORBIDDEN_MODULES:
                assert not (name == forbidden or name.startswith(forbidden + ".")), (
                    f"{path.name} imports {name}: the core must stay pure; move I/O to adapters/"
                )
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert (node.value.id, node.attr) not in FORBIDDEN_CALLS, (
                f"{path.name} reads the clock ({node.value.id}.{node.attr}); pass `now` in"
            )


def test_there_is_a_core_to_check():
    assert len(pure_files()) >= 5
