"""The README's quick-start commands run as written.

Every fenced ``sh`` command of the quick-start sections is executed in order, in a temporary
folder, with ``ecoscale`` meaning this checkout's ``python -m ecoscale``, and must exit 0.
Commands that need the lab, install software or run the whole suite are left out by the
rules in SKIPPED, each with its reason; the test fails if a section has no command left.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
QUICK_START_SECTIONS = ("ecoscale", "What `ecoscale replay` shows", "Planning: `ecoscale plan`")
"""The title's section (the install line) and the sections a newcomer starts with."""
SKIPPED = {
    "python3 -m venv": "creates the venv (test.sh does, and this test runs in one)",
    ". .venv/bin/activate": "enters the venv",
    "pip install": "installs the package (test.sh does this, into the venv)",
    "./test.sh": "runs the whole suite, the lab included",
    "ecoscale lab": "needs the lab",
    "ecoscale profile": "needs the lab or a pool",
    "ecoscale run": "needs Docker and Prometheus",
}


def sections(text: str) -> dict[str, str]:
    """Heading (without '#'s; '' for the preamble) -> the section's text up to the next
    heading of level 1 or 2 (subsections stay in their section; fenced code is text)."""
    out: dict[str, str] = {}
    name = ""
    fenced = False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        heading = None if fenced else re.match(r"#{1,2} (.*)", line)
        if heading:
            name = heading.group(1).strip()
            out.setdefault(name, "")
            continue
        out[name] = out.get(name, "") + line
    return out


def sh_commands(section: str) -> list[str]:
    """The commands of the section's ```sh blocks: comments dropped, continuations joined."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            command = _without_comment(line).strip()
            if command:
                commands.append(command)
    return commands


def _without_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a '#' at the start or after a blank; the
    README's commands quote no '#')."""
    match = re.search(r"(^|\s)#", line)
    return line[:match.start()] if match else line


def _runnable(command: str) -> str:
    """``command`` without its ``&&``-joined parts that SKIPPED leaves out ('' if none is
    left): the install line's ``ecoscale replay`` still runs."""
    parts = [p.strip() for p in command.split("&&")]
    return " && ".join(p for p in parts if not any(rule in p for rule in SKIPPED))


def quick_start_commands() -> list[tuple[str, str]]:
    """(section, command) to run, in README order."""
    found = sections(README.read_text(encoding="utf-8"))
    picked = []
    for name in QUICK_START_SECTIONS:
        assert name in found, f"README has no section '{name}'"
        commands = [c for c in (_runnable(c) for c in sh_commands(found[name])) if c]
        assert commands, f"section '{name}' has no command left to run"
        picked.extend((name, c) for c in commands)
    return picked


def test_the_readme_parser_finds_the_commands():
    commands = [c for _, c in quick_start_commands()]
    assert commands[0] == "ecoscale replay"      # the install line's main job
    assert "ecoscale replay --out replay-out" in commands
    assert "ecoscale plan" in commands and "ecoscale replay --help" in commands
    assert not any("ecoscale lab" in c for c in commands)
    assert _without_comment("ecoscale plan   # a comment").strip() == "ecoscale plan"


def _run_section(section: str, commands: list[str], folder: Path) -> list[str]:
    """Run one section's commands in order in ``folder``; the failures, as text."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    prelude = f'ecoscale() {{ {shlex.quote(sys.executable)} -m ecoscale "$@"; }}\n'
    folder.mkdir()
    failures = []
    for command in commands:
        done = subprocess.run(["bash", "-c", prelude + command], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            failures.append(f"[{section}] {command}: exit {done.returncode}\n"
                            f"{done.stderr[-2000:]}")
    return failures


def test_the_readme_quick_start_commands_exit_0(tmp_path):
    """Each section runs in order in a folder of its own (a section's commands may use what
    an earlier one wrote, e.g. `replay --table policy-table.yaml`); sections run side by
    side."""
    by_section: dict[str, list[str]] = {}
    for section, command in quick_start_commands():
        by_section.setdefault(section, []).append(command)
    with ThreadPoolExecutor(max_workers=len(by_section)) as pool:
        results = pool.map(lambda item: _run_section(item[1][0], item[1][1],
                                                     tmp_path / f"section-{item[0]}"),
                           enumerate(by_section.items()))
        failures = [failure for result in results for failure in result]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("rule", sorted(SKIPPED))
def test_every_skip_rule_is_used(rule):
    """A rule that matches nothing any more is a rule to delete."""
    text = README.read_text(encoding="utf-8")
    assert rule in text, rule
