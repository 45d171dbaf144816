"""The test suite's split: plain `pytest` runs tests/unit (fast, no root, no Docker), and
./test.sh runs tests/integration too, where every test is marked `integration` by its
conftest. A unit test that reaches for the lab (its fixtures, its helpers, root) fails here."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

TESTS = Path(__file__).parents[1]
UNIT, INTEGRATION = TESTS / "unit", TESTS / "integration"
ROOT = TESTS.parent


def integration_fixtures() -> set[str]:
    """Names of the fixtures tests/integration/conftest.py defines (the lab and its apps)."""
    tree = ast.parse((INTEGRATION / "conftest.py").read_text())

    def is_fixture(decorator: ast.expr) -> bool:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        return isinstance(target, ast.Attribute) and target.attr == "fixture"

    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)
            and any(is_fixture(d) for d in node.decorator_list)}


INTEGRATION_MODULES = {p.stem for p in INTEGRATION.glob("*.py")}
"""Modules of tests/integration (conftest, waiting, the test files): a unit test imports none."""


def lab_needs(source: str, fixtures: set[str]) -> list[str]:
    """What in a unit test's source needs the lab, root or Docker (empty: nothing)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""]
            found += [f"imports {n} (tests/integration)" for n in names
                      if n.split(".")[0] in INTEGRATION_MODULES or "integration" in n]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found += [f"{node.name} takes the lab fixture '{a.arg}'" for a in node.args.args
                      if a.arg in fixtures]
        elif isinstance(node, ast.Attribute) and node.attr in {"integration", "geteuid"}:
            found.append(f"uses {node.attr} (line {node.lineno})")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value in fixtures and node.value != "lab":
            found.append(f"names the lab fixture '{node.value}' (usefixtures?)")
    return found


def unit_files() -> list[Path]:
    """The unit tests' files but this one (whose examples name the lab on purpose)."""
    return sorted(p for p in UNIT.rglob("*.py") if p != Path(__file__))


@pytest.mark.parametrize("path", unit_files(), ids=lambda p: str(p.relative_to(UNIT)))
def test_no_unit_test_needs_the_lab_root_or_docker(path):
    needs = lab_needs(path.read_text(), integration_fixtures())
    assert not needs, (f"tests/unit/{path.relative_to(UNIT)} {'; '.join(needs)}: unit tests run "
                       "without root or Docker; move it to tests/integration")


@pytest.mark.parametrize("source,expected", [
    pytest.param("from conftest import APP\n", "imports conftest", id="integration-conftest"),
    pytest.param("from waiting import wait_for\n", "imports waiting", id="integration-helper"),
    pytest.param("def test_x(social_network):\n    pass\n", "lab fixture 'social_network'",
                 id="lab-fixture"),
    pytest.param("import pytest\npytestmark = pytest.mark.integration\n", "uses integration",
                 id="integration-marker"),
    pytest.param("import os\nassert os.geteuid() == 0\n", "uses geteuid", id="root"),
    pytest.param("import pytest\n@pytest.mark.usefixtures('cpu_heavy_lab')\ndef test_x():\n"
                 "    pass\n", "'cpu_heavy_lab'", id="usefixtures"),
    pytest.param("from ecoscale.lab.lab import Lab\ndef test_x(tmp_path):\n    Lab()\n", "",
                 id="the-lab-code-itself-is-fine"),
])
def test_the_lab_check_finds_what_needs_the_lab(source, expected):
    needs = "; ".join(lab_needs(source, integration_fixtures()))
    assert (expected in needs) if expected else not needs, needs


def test_the_lab_fixtures_are_found():
    assert {"lab", "social_network", "cpu_heavy_lab"} <= integration_fixtures()


def test_plain_pytest_runs_the_unit_tests_and_test_sh_runs_both():
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    assert options["ini_options"]["testpaths"] == ["tests/unit"]
    assert '-o testpaths="tests/unit tests/integration" "$@"' in (ROOT / "test.sh").read_text()


def test_every_integration_test_is_marked_integration():
    # collected without the mark, the integration tests leave nothing (pytest exit 5: none)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "-m", "not integration", str(INTEGRATION.relative_to(ROOT))],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 5 and "deselected" in done.stdout, done.stdout + done.stderr
