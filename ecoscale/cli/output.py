"""What every command shares about its output: --json and --quiet, where text, notes and
JSON go, and the check of an --out file before any work."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from ecoscale.adapters.outputs import beside, check_out_file, git_tracked


def add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="print the result as JSON on stdout and nothing else there (notes "
                        "and warnings go to stderr)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="print only errors (with --json, the JSON too)")


class Reporter:
    """Where a command's output goes: the human text on stdout, unless --json (JSON there,
    nothing else) or --quiet (only errors); notes and warnings on stderr unless --quiet."""

    def __init__(self, args: argparse.Namespace):
        self.json = bool(getattr(args, "json", False))
        self.quiet = bool(getattr(args, "quiet", False))

    def text(self, message: str = "") -> None:
        if not (self.json or self.quiet):
            print(message)

    def note(self, message: str) -> None:
        if not self.quiet:
            print(f"note: {message}", file=sys.stderr)

    def warn(self, message: str) -> None:
        if not self.quiet:
            print(f"warning: {message}", file=sys.stderr)

    def data(self, document: dict[str, Any]) -> None:
        if self.json:
            print(json.dumps(json_safe(document), indent=1))


def json_safe(value: Any) -> Any:
    """NaN and infinity become null (JSON has neither); numpy scalars become numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def checked_out_file(path: Path, force: bool, out: Reporter, flag: str = "--out") -> Path:
    """``path`` checked before any work, or the file beside it when git tracks ``path``
    and ``force`` is not given (a shipped file is never overwritten by accident)."""
    if git_tracked(path) and not force:
        instead = beside(path, "new")
        out.note(f"{flag} {path} is tracked by git: writing {instead} instead (--force "
                 "overwrites it)")
        path = instead
    for note in check_out_file(path, flag):
        out.note(note)
    return path
